//! Fan-out latency: a crowd on one board, `MESSAGES` notes 100 ms apart, write sent →
//! event received for every subscriber (`--only per-stream`, `--only shared`).

use std::{
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    process::Command,
    time::{MissedTickBehavior, interval, sleep, timeout},
};

use crate::{
    Ctx, Res,
    clock::{log, ms, now_ns, pct},
    crowd::{Crowd, completeness, failures, open_summary},
    procfs::{CpuMark, open_fds, rss_kib, threads},
    server::{Mode, Server},
};

/// Notes written per fan-out run, 100 ms apart.
pub const MESSAGES: usize = 50;
const MESSAGE_GAP: Duration = Duration::from_millis(100);

pub struct FanoutRow {
    pub mode: Mode,
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
    pub listeners: i64,
    pub cpu: String,
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

    let sent: Vec<AtomicU64> = (0..=MESSAGES).map(|_| AtomicU64::new(0)).collect();
    let mut post_rtts = Vec::with_capacity(MESSAGES);
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
    let mut ticker = interval(MESSAGE_GAP);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut bad_posts = 0;
    for (k, slot) in sent.iter().enumerate().skip(1) {
        ticker.tick().await;
        let t = now_ns();
        slot.store(t, Relaxed);
        match server.post_note(&board, k).await {
            Ok(201) => {}
            Ok(s) => {
                bad_posts += 1;
                log(format!("POST {k}: status {s}"));
            }
            Err(e) => {
                bad_posts += 1;
                log(format!("POST {k}: {e}"));
            }
        }
        post_rtts.push(now_ns() - t);
    }
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
    let open_line = format!(
        "  opening: subscribers had received {:.1} MiB when the last opened; CPU {}",
        crowd.open_bytes as f64 / 1048576.0,
        crowd.open_cpu
    );
    let subs = crowd.finish().await;
    server.stop(ctx).await;
    let presence_events: u64 = subs.iter().map(|s| s.presence).sum();
    let presence_bytes: u64 = subs.iter().map(|s| s.presence_bytes).sum();
    let most_presence = subs.iter().map(|s| s.presence_bytes).max().unwrap_or(0);

    if seq != MESSAGES as i64 || bad_posts > 0 {
        log(format!(
            "warning: board seq {seq} after {MESSAGES} posts ({bad_posts} failed)"
        ));
    }
    let opening = open_summary(&subs);
    let done = completeness(&subs, MESSAGES);
    // Latency of every delivery, and the slowest subscriber of each message.
    let mut all = Vec::with_capacity(done.subscribers * MESSAGES);
    let mut slowest = vec![0u64; MESSAGES + 1];
    for s in subs.iter().filter(|s| s.snapshot_ns > 0) {
        for (k, at) in s.times.iter().enumerate().skip(1) {
            let sent = sent[k].load(Relaxed);
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
    post_rtts.sort_unstable();
    let cpu = cpu1.since(&cpu0);
    let row = FanoutRow {
        mode,
        n,
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
        post_p50: pct(&post_rtts, 50.0),
        rss_per_stream_kib: if ready > 0 {
            (rss1 as f64 - rss0 as f64) / ready as f64
        } else {
            0.0
        },
        listeners,
        cpu: cpu.clone(),
    };
    ctx.out(format!(
        "fan-out {} N={n}: opened {}/{n} in {open_secs:.1} s (open p50 {} ms, p99 {} ms; failed: {}); deliveries {} of {}, missing {}, duplicated {}, streams ended early: {}; latency p50 {} ms, p99 {} ms, max {} ms; slowest subscriber per message: median {} ms, max {} ms; POST p50 {} ms, p99 {} ms; server after: {counts}",
        mode.as_str(),
        opening.opened,
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
        ms(pct(&post_rtts, 99.0)),
    ));
    ctx.out(format!(
        "  memory: RSS {rss0} KiB before, {rss1} KiB with {ready} streams ({:.1} KiB/stream); listener backends {listeners} (PSS {listener_pss:.0} KiB each), {backends} PostgreSQL backends in all; CPU during the writes {cpu}",
        row.rss_per_stream_kib
    ));
    ctx.out(format!(
        "{open_line}; presence events received in all: {presence_events} ({:.0} per subscriber); presence bytes per subscriber: mean {:.1} KiB, most {:.1} KiB; {}",
        presence_events as f64 / subs.len().max(1) as f64,
        presence_bytes as f64 / subs.len().max(1) as f64 / 1024.0,
        most_presence as f64 / 1024.0,
        presence_writes,
    ));
    Ok(row)
}

/// The fan-out table of the report, and the CPU figure of each run under it.
pub fn table(ctx: &mut Ctx, fans: &[FanoutRow]) {
    if fans.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out(format!(
        "Fan-out: {MESSAGES} notes 100 ms apart, write sent → event received (ms)"
    ));
    ctx.out("");
    ctx.out("| mode | subscribers | opened | open all (s) | open p50 / p99 (ms) | p50 | p99 | max | slowest sub/msg median | slowest sub/msg max | missing | duplicated | ended early | POST p50 | RSS/stream (KiB) | listener conns |");
    ctx.out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in fans {
        ctx.out(format!(
            "| {} | {} | {} | {:.1} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            f.mode.as_str(),
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
            f.listeners
        ));
    }
    ctx.out("");
    for f in fans {
        ctx.out(format!("- CPU, {} N={}: {}", f.mode.as_str(), f.n, f.cpu));
    }
}
