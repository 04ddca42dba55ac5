//! A crowd of subscribers opened together, and what their outcomes add up to: opening
//! figures and the exactly-once check.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinHandle, time::sleep};
use tokio_util::sync::CancellationToken;

use crate::{
    Ctx,
    clock::{log, pct},
    procfs::{CpuMark, rss_kib},
    server::Server,
    subscriber::{Framing, Slot, SubOutcome, Target, subscribe_to},
};

/// A crowd of subscribers, spread evenly over one or more boards.
pub struct Crowd {
    pub slots: Vec<Arc<Slot>>,
    pub handles: Vec<JoinHandle<SubOutcome>>,
    pub stop: CancellationToken,
    pub open_secs: f64,
    /// Bytes the subscribers had received when the last one opened, and the CPU spent.
    pub open_bytes: u64,
    pub open_cpu: String,
}

impl Crowd {
    /// Opens `n` streams, `--open-concurrency` at a time, and waits until each has its
    /// snapshot (or has failed), or until `limit`.
    pub async fn open(
        ctx: &Ctx,
        server: &Server,
        boards: &[String],
        n: usize,
        track: usize,
        limit: Duration,
    ) -> Crowd {
        let targets: Vec<Target> = boards
            .iter()
            .map(|board| Target {
                addr: server.addr,
                request: Arc::new(
                    format!("GET /api/boards/{board}/events HTTP/1.1\r\nHost: x\r\n\r\n")
                        .into_bytes(),
                ),
                framing: Framing::Boardcast,
            })
            .collect();
        Crowd::open_to(ctx, server.pid, &targets, n, track, limit).await
    }

    /// `open` against any EventSource server (`pid`: the process whose CPU and memory
    /// the opening is charged to); subscriber `i` goes to `targets[i % targets.len()]`.
    pub async fn open_to(
        ctx: &Ctx,
        pid: u32,
        targets: &[Target],
        n: usize,
        track: usize,
        limit: Duration,
    ) -> Crowd {
        let pg = ctx.cluster.postmaster;
        let cpu0 = CpuMark::take(pid, pg);
        let gate = Arc::new(Semaphore::new(ctx.open_concurrency));
        let stop = CancellationToken::new();
        let give_up = CancellationToken::new();
        let started = Instant::now();
        let mut slots = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let slot = Arc::new(Slot::default());
            slots.push(slot.clone());
            handles.push(tokio::spawn(subscribe_to(
                targets[i % targets.len()].clone(),
                slot,
                Some(gate.clone()),
                stop.clone(),
                give_up.clone(),
                track,
            )));
        }
        let mut last_report = Instant::now();
        loop {
            let ready = slots.iter().filter(|s| s.ready.load(Relaxed)).count();
            let failed = slots
                .iter()
                .filter(|s| !s.ready.load(Relaxed) && s.ended.load(Relaxed))
                .count();
            if ready + failed >= n {
                break;
            }
            if started.elapsed() > limit {
                log(format!(
                    "open: gave up after {:.0} s with {ready}/{n} streams open, {failed} failed; abandoning the rest",
                    limit.as_secs_f64()
                ));
                give_up.cancel();
                // The abandoned opens close their sockets; let that settle.
                for _ in 0..500 {
                    if slots
                        .iter()
                        .all(|s| s.ready.load(Relaxed) || s.ended.load(Relaxed))
                    {
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                break;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                log(format!(
                    "open: {ready}/{n} streams open, {failed} failed, server RSS {} MiB",
                    rss_kib(pid) / 1024
                ));
            }
            sleep(Duration::from_millis(10)).await;
        }
        let open_secs = started.elapsed().as_secs_f64();
        let open_cpu = CpuMark::take(pid, pg).since(&cpu0);
        let open_bytes = slots.iter().map(|s| s.bytes.load(Relaxed)).sum();
        Crowd {
            slots,
            handles,
            stop,
            open_secs,
            open_bytes,
            open_cpu,
        }
    }

    /// The report's line on the opening: bytes received by then, and the CPU it took.
    pub fn opening_line(&self) -> String {
        format!(
            "  opening: subscribers had received {:.1} MiB when the last opened; CPU {}",
            self.open_bytes as f64 / 1048576.0,
            self.open_cpu
        )
    }

    pub fn ready(&self) -> usize {
        self.slots.iter().filter(|s| s.ready.load(Relaxed)).count()
    }

    /// Waits until every open subscriber has seen `seq` (or has ended), up to `limit`.
    pub async fn wait_for(&self, seq: i64, limit: Duration) -> bool {
        self.wait_for_each(&[seq], limit).await
    }

    /// `wait_for` with a seq per board (subscriber `i` is on board `i % targets.len()`).
    pub async fn wait_for_each(&self, targets: &[i64], limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            let behind = self
                .slots
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    s.ready.load(Relaxed)
                        && !s.ended.load(Relaxed)
                        && s.last.load(Relaxed) < targets[i % targets.len()]
                })
                .count();
            if behind == 0 {
                return true;
            }
            if started.elapsed() > limit {
                log(format!(
                    "{behind} subscribers had not seen their board's last seq after {limit:?}"
                ));
                return false;
            }
            sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn finish(self) -> Vec<SubOutcome> {
        self.stop.cancel();
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            // Keep the order: subscriber `i` is on board `i % boards`.
            out.push(h.await.unwrap_or_else(|e| SubOutcome {
                ended: Some(format!("task failed: {e}")),
                ..SubOutcome::default()
            }));
        }
        out
    }
}

/// Opening figures of a crowd: how many opened, failed (by reason), open-time percentiles.
pub struct OpenSummary {
    pub opened: usize,
    pub failed: BTreeMap<String, usize>,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

pub fn open_summary(subs: &[SubOutcome]) -> OpenSummary {
    let mut times: Vec<u64> = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0)
        .map(|s| s.snapshot_ns - s.open_ns)
        .collect();
    times.sort_unstable();
    let mut failed = BTreeMap::new();
    for s in subs.iter().filter(|s| s.snapshot_ns == 0) {
        let why = s
            .ended
            .clone()
            .unwrap_or_else(|| "no snapshot in time".into());
        *failed.entry(why).or_insert(0) += 1;
    }
    OpenSummary {
        opened: times.len(),
        failed,
        p50_ns: pct(&times, 50.0),
        p99_ns: pct(&times, 99.0),
    }
}

pub fn failures(f: &BTreeMap<String, usize>) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, v)| format!("{v}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exactly-once check over seqs 1..=upto for every subscriber that opened.
pub struct Completeness {
    pub subscribers: usize,
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Subscribers whose stream ended before they were stopped, by reason.
    pub ended: BTreeMap<String, usize>,
}

pub fn completeness(subs: &[SubOutcome], upto: usize) -> Completeness {
    completeness_each(subs, &[upto])
}

/// `completeness` with a last seq per board (subscriber `i` is on board `i % upto.len()`).
pub fn completeness_each(subs: &[SubOutcome], upto: &[usize]) -> Completeness {
    let mut c = Completeness {
        subscribers: 0,
        expected: 0,
        received: 0,
        missing: 0,
        duplicated: 0,
        ended: BTreeMap::new(),
    };
    for (i, s) in subs.iter().enumerate() {
        if s.snapshot_ns == 0 {
            continue;
        }
        let upto = upto[i % upto.len()];
        c.subscribers += 1;
        c.expected += upto as u64;
        for seq in 1..=upto {
            let n = s.seen.get(seq).copied().unwrap_or(0) as u64;
            c.received += n;
            if n == 0 {
                c.missing += 1;
            } else {
                c.duplicated += n - 1;
            }
        }
        if let Some(why) = &s.ended {
            *c.ended.entry(why.clone()).or_insert(0) += 1;
        }
    }
    c
}
