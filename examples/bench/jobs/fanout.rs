//! Fan-out latency: a crowd on one board, `MESSAGES` notes 100 ms apart, write sent →
//! event received for every subscriber (`--only per-stream`, `--only shared`). What does
//! not depend on the server (the writes' clock, the latencies, the table) is shared with
//! the Nchan job (`jobs/nchan.rs`), so both are measured the same way.

use std::{future::Future, process::Stdio, time::Duration};

use tokio::{
    process::Command,
    time::{MissedTickBehavior, interval, sleep, timeout},
};

use crate::{
    Ctx, Res,
    clock::{log, ms, now_ns, pct},
    crowd::{Completeness, Crowd, OpenSummary, completeness, failures, open_summary},
    procfs::{CpuMark, open_fds, rss_kib, threads},
    server::{Mode, Server},
    subscriber::SubOutcome,
};

/// Notes written per fan-out run, 100 ms apart.
pub const MESSAGES: usize = 50;
const MESSAGE_GAP: Duration = Duration::from_millis(100);

pub struct FanoutRow {
    /// `per-stream`, `shared` or `nchan`.
    pub system: &'static str,
    pub n: usize,
    pub opened: usize,
    pub open_secs: f64,
    pub open_p50: u64,
    pub open_p99: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub slowest_median: u64,
    pub slowest_max: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub ended: usize,
    pub post_p50: u64,
    pub rss_per_stream_kib: f64,
    /// PostgreSQL listener connections (none for Nchan).
    pub listeners: Option<i64>,
    pub cpu: String,
    /// Server CPU (nginx: master and workers) per event received over the writes, in µs.
    pub us_per_delivery: f64,
}

/// The `MESSAGES` writes of a run, 100 ms apart: when each was sent (index = seq; the
/// clock is read just before the request goes out), their round trips (sorted), and how
/// many failed.
pub struct Published {
    pub sent: Vec<u64>,
    pub rtts: Vec<u64>,
    pub bad: usize,
}

/// Sends `MESSAGES` writes 100 ms apart through `post(seq)`, which answers the HTTP
/// status; one of `ok` counts as written.
pub async fn publish_all<F, Fut>(ok: &[u16], mut post: F) -> Published
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Res<u16>>,
{
    let mut sent = vec![0u64; MESSAGES + 1];
    let mut rtts = Vec::with_capacity(MESSAGES);
    let mut bad = 0;
    let mut ticker = interval(MESSAGE_GAP);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for (k, slot) in sent.iter_mut().enumerate().skip(1) {
        ticker.tick().await;
        let t = now_ns();
        *slot = t;
        match post(k).await {
            Ok(s) if ok.contains(&s) => {}
            Ok(s) => {
                bad += 1;
                log(format!("write {k}: status {s}"));
            }
            Err(e) => {
                bad += 1;
                log(format!("write {k}: {e}"));
            }
        }
        rtts.push(now_ns() - t);
    }
    rtts.sort_unstable();
    Published { sent, rtts, bad }
}

/// What a crowd's outcomes add up to after the writes: the table's row, the opening and
/// the exactly-once check.
pub struct Measured {
    pub row: FanoutRow,
    pub opening: OpenSummary,
    pub done: Completeness,
}

/// The figures of a run from its subscribers' outcomes: the latency of every delivery
/// (write sent → event received), the slowest subscriber of each message, missing and
/// duplicated; `cpu` is the server's CPU seconds over the writes and the whole CPU line.
pub fn measure(
    system: &'static str,
    subs: &[SubOutcome],
    published: &Published,
    open_secs: f64,
    cpu: (f64, String),
) -> Measured {
    let opening = open_summary(subs);
    let done = completeness(subs, MESSAGES);
    let mut all = Vec::with_capacity(done.subscribers * MESSAGES);
    let mut slowest = vec![0u64; MESSAGES + 1];
    for s in subs.iter().filter(|s| s.snapshot_ns > 0) {
        for (k, at) in s.times.iter().enumerate().skip(1) {
            let sent = published.sent[k];
            if *at > 0 && sent > 0 {
                let lat = at.saturating_sub(sent);
                all.push(lat);
                slowest[k] = slowest[k].max(lat);
            }
        }
    }
    all.sort_unstable();
    let mut slow: Vec<u64> = slowest[1..].to_vec();
    slow.sort_unstable();
    let row = FanoutRow {
        system,
        n: subs.len(),
        opened: opening.opened,
        open_secs,
        open_p50: opening.p50_ns,
        open_p99: opening.p99_ns,
        p50: pct(&all, 50.0),
        p99: pct(&all, 99.0),
        max: pct(&all, 100.0),
        slowest_median: pct(&slow, 50.0),
        slowest_max: pct(&slow, 100.0),
        missing: done.missing,
        duplicated: done.duplicated,
        ended: done.ended.values().sum(),
        post_p50: pct(&published.rtts, 50.0),
        rss_per_stream_kib: 0.0,
        listeners: None,
        cpu: cpu.1,
        us_per_delivery: cpu.0 * 1e6 / done.received.max(1) as f64,
    };
    Measured { row, opening, done }
}

impl Measured {
    /// The run's first report line, the same for every system.
    pub fn summary(&self, published: &Published, after: &str) -> String {
        let (row, opening, done) = (&self.row, &self.opening, &self.done);
        format!(
            "fan-out {} N={}: opened {}/{} in {:.1} s (open p50 {} ms, p99 {} ms; failed: {}); deliveries {} of {}, missing {}, duplicated {}, streams ended early: {}; latency p50 {} ms, p99 {} ms, max {} ms; slowest subscriber per message: median {} ms, max {} ms; write p50 {} ms, p99 {} ms ({} failed); server CPU {:.1} µs per delivery; server after: {after}",
            row.system,
            row.n,
            opening.opened,
            row.n,
            row.open_secs,
            ms(opening.p50_ns),
            ms(opening.p99_ns),
            failures(&opening.failed),
            done.received,
            done.expected,
            done.missing,
            done.duplicated,
            failures(&done.ended),
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            ms(row.slowest_median),
            ms(row.slowest_max),
            ms(row.post_p50),
            ms(pct(&published.rtts, 99.0)),
            published.bad,
            row.us_per_delivery,
        )
    }
}

pub async fn fanout(ctx: &mut Ctx, mode: Mode, n: usize) -> Res<FanoutRow> {
    let label = format!("fanout_{}_{n}", mode.as_str());
    log(format!(
        "== fan-out, {} mode, {n} subscribers",
        mode.as_str()
    ));
    let server = Server::start(ctx, &label, mode, "15s").await?;
    let board = server.create_board().await?;
    let rss0 = rss_kib(server.pid);
    let open_limit = ctx.open_budget;
    let crowd = Crowd::open(
        ctx,
        &server,
        std::slice::from_ref(&board),
        n,
        MESSAGES,
        open_limit,
    )
    .await;
    let ready = crowd.ready();
    let rss1 = rss_kib(server.pid);
    let listeners = ctx.cluster.listener_backends(&server.db).await;
    let backends = ctx.cluster.backends(&server.db).await;
    let listener_pss = ctx.cluster.listener_pss_kib(&server.db).await;
    log(format!(
        "{ready}/{n} open in {:.1} s; server RSS {} → {} KiB, {} threads, {} fds; {listeners} listener backends, {backends} backends in all",
        crowd.open_secs,
        rss0,
        rss1,
        threads(server.pid),
        open_fds(server.pid)
    ));
    // Let the opening's presence traffic settle before the clock starts.
    sleep(Duration::from_millis(500)).await;

    let perf = if ctx.perf {
        let path = ctx.log_dir.join(format!("{label}.perf.data"));
        Command::new("perf")
            // DWARF unwinding: the release build keeps no frame pointers.
            .args([
                "record",
                "-F",
                "499",
                "--call-graph",
                "dwarf,8192",
                "-q",
                "-o",
            ])
            .arg(&path)
            .args(["-p", &server.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    } else {
        None
    };
    let cpu0 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    let published = publish_all(&[201], |k| server.post_note(&board, k)).await;
    crowd
        .wait_for(MESSAGES as i64, Duration::from_secs(10 + n as u64 / 1000))
        .await;
    let cpu1 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    if let Some(mut perf) = perf {
        if let Some(pid) = perf.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = timeout(Duration::from_secs(30), perf.wait()).await;
    }
    let seq = server.board_seq(&board).await.unwrap_or(-1);
    let counts = server.stream_counts().await;
    let presence_writes = server.presence_writes().await;
    let open_secs = crowd.open_secs;
    let open_line = crowd.opening_line();
    let subs = crowd.finish().await;
    server.stop(ctx).await;
    let presence_events: u64 = subs.iter().map(|s| s.presence).sum();
    let presence_bytes: u64 = subs.iter().map(|s| s.presence_bytes).sum();
    let most_presence = subs.iter().map(|s| s.presence_bytes).max().unwrap_or(0);

    if seq != MESSAGES as i64 || published.bad > 0 {
        log(format!(
            "warning: board seq {seq} after {MESSAGES} posts ({} failed)",
            published.bad
        ));
    }
    let cpu = (cpu1.server_secs(&cpu0), cpu1.since(&cpu0));
    let mut measured = measure(mode.as_str(), &subs, &published, open_secs, cpu);
    measured.row.rss_per_stream_kib = if ready > 0 {
        (rss1 as f64 - rss0 as f64) / ready as f64
    } else {
        0.0
    };
    measured.row.listeners = Some(listeners);
    ctx.out(measured.summary(&published, &counts));
    ctx.out(format!(
        "  memory: RSS {rss0} KiB before, {rss1} KiB with {ready} streams ({:.1} KiB/stream); listener backends {listeners} (PSS {listener_pss:.0} KiB each), {backends} PostgreSQL backends in all; CPU during the writes {}",
        measured.row.rss_per_stream_kib, measured.row.cpu
    ));
    ctx.out(format!(
        "{open_line}; presence events received in all: {presence_events} ({:.0} per subscriber); presence bytes per subscriber: mean {:.1} KiB, most {:.1} KiB; {}",
        presence_events as f64 / subs.len().max(1) as f64,
        presence_bytes as f64 / subs.len().max(1) as f64 / 1024.0,
        most_presence as f64 / 1024.0,
        presence_writes,
    ));
    Ok(measured.row)
}

/// The fan-out table of the report (Nchan's rows in it, measured the same way), the two
/// side by side when both ran, and the CPU figure of each run under it.
pub fn table(ctx: &mut Ctx, fans: &[FanoutRow]) {
    if fans.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out(format!(
        "Fan-out: {MESSAGES} notes 100 ms apart, write sent → event received (ms); Nchan: the same messages published over HTTP"
    ));
    ctx.out("");
    ctx.out("| mode | subscribers | opened | open all (s) | open p50 / p99 (ms) | p50 | p99 | max | slowest sub/msg median | slowest sub/msg max | missing | duplicated | ended early | write p50 | RSS/stream (KiB) | listener conns | server CPU µs/delivery |");
    ctx.out(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for f in fans {
        ctx.out(format!(
            "| {} | {} | {} | {:.1} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.1} |",
            f.system,
            f.n,
            f.opened,
            f.open_secs,
            ms(f.open_p50),
            ms(f.open_p99),
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            ms(f.slowest_median),
            ms(f.slowest_max),
            f.missing,
            f.duplicated,
            f.ended,
            ms(f.post_p50),
            f.rss_per_stream_kib,
            f.listeners.map_or("-".to_string(), |l| l.to_string()),
            f.us_per_delivery,
        ));
    }
    side_by_side(ctx, fans);
    ctx.out("");
    for f in fans {
        ctx.out(format!("- CPU, {} N={}: {}", f.system, f.n, f.cpu));
    }
}

/// Shared mode and Nchan at each size both ran at, one line each: issue 11's fan-out
/// target is "p99 at each N no worse than Nchan's on the same machine".
fn side_by_side(ctx: &mut Ctx, fans: &[FanoutRow]) {
    let pairs: Vec<(&FanoutRow, &FanoutRow)> = fans
        .iter()
        .filter(|f| f.system == Mode::Shared.as_str())
        .filter_map(|ours| {
            let theirs = fans.iter().find(|f| f.system == "nchan" && f.n == ours.n)?;
            Some((ours, theirs))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out("Shared mode beside Nchan in this run (ms; ours / Nchan's):");
    ctx.out("");
    ctx.out("| subscribers | p50 | p99 | max | slowest sub/msg max | missing | duplicated | server CPU µs/delivery | p99 no worse than Nchan's |");
    ctx.out("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (ours, theirs) in pairs {
        ctx.out(format!(
            "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.1} / {:.1} | {} |",
            ours.n,
            ms(ours.p50),
            ms(theirs.p50),
            ms(ours.p99),
            ms(theirs.p99),
            ms(ours.max),
            ms(theirs.max),
            ms(ours.slowest_max),
            ms(theirs.slowest_max),
            ours.missing,
            theirs.missing,
            ours.duplicated,
            theirs.duplicated,
            ours.us_per_delivery,
            theirs.us_per_delivery,
            if ours.p99 <= theirs.p99 { "yes" } else { "no" },
        ));
    }
}
