//! Idle cost: RSS, threads and descriptors per open stream in shared mode (`--only idle`).

use std::time::Duration;

use tokio::time::sleep;

use crate::{
    Ctx, Res,
    clock::log,
    crowd::Crowd,
    procfs::{open_fds, proc_status_kib, rss_kib, threads},
    server::{Mode, Server},
};

pub struct IdleRow {
    pub n: usize,
    pub opened: usize,
    pub rss0: u64,
    pub rss1: u64,
    pub hwm: u64,
    pub threads0: u64,
    pub threads1: u64,
    pub fds0: usize,
    pub fds1: usize,
    pub heartbeats_min: u32,
    pub per_stream: f64,
}

/// RSS per idle stream: `n` streams, `per_board` to a board, after heartbeats have run.
///
/// The streams are spread over boards because opening thousands on one board is quadratic
/// in presence traffic (the fan-out runs measure that, and their RSS column is the
/// one-board figure); what is left here is the cost of a stream itself.
pub async fn idle(ctx: &mut Ctx, n: usize, per_board: usize) -> Res<IdleRow> {
    let per_board = per_board.max(1);
    log(format!(
        "== idle cost, shared mode, {n} streams ({per_board} a board), heartbeat 5 s"
    ));
    let server = Server::start(ctx, "idle_shared", Mode::Shared, "5s").await?;
    let board = server.create_board().await?;
    // Warm the pool and the code paths once, so the baseline is a running server.
    let _ = server.post_note(&board, 0).await;
    let _ = server.board_seq(&board).await;
    sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(server.pid);
    let threads0 = threads(server.pid);
    let fds0 = open_fds(server.pid);
    // Spread over boards: on one board every open is announced to every stream already
    // there (presence), which is quadratic and measured by the fan-out runs instead.
    let mut boards = vec![board];
    while boards.len() * per_board < n {
        boards.push(server.create_board().await?);
    }
    let crowd = Crowd::open(ctx, &server, &boards, n, 0, ctx.open_budget).await;
    let opened = crowd.ready();
    log(format!(
        "{opened}/{n} open in {:.1} s; RSS now {} KiB; idling 12 s",
        crowd.open_secs,
        rss_kib(server.pid)
    ));
    sleep(Duration::from_secs(12)).await;
    let rss1 = rss_kib(server.pid);
    let hwm = proc_status_kib(server.pid, "VmHWM:");
    let threads1 = threads(server.pid);
    let fds1 = open_fds(server.pid);
    let counts = server.stream_counts().await;
    let subs = crowd.finish().await;
    server.stop(ctx).await;
    let mut beats: Vec<u32> = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0)
        .map(|s| s.heartbeats)
        .collect();
    beats.sort_unstable();
    let ended: usize = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0 && s.ended.is_some())
        .count();
    let per_stream = if opened > 0 {
        (rss1 as f64 - rss0 as f64) / opened as f64
    } else {
        0.0
    };
    let row = IdleRow {
        n,
        opened,
        rss0,
        rss1,
        hwm,
        threads0,
        threads1,
        fds0,
        fds1,
        heartbeats_min: beats.first().copied().unwrap_or(0),
        per_stream,
    };
    ctx.out(format!(
        "idle {n}: opened {opened}; RSS {rss0} KiB → {rss1} KiB (peak {hwm} KiB) = {per_stream:.2} KiB per idle stream; threads {threads0} → {threads1}; fds {fds0} → {fds1}; heartbeats per stream min {} median {}; ended early {ended}; server: {counts}",
        row.heartbeats_min,
        beats.get(beats.len() / 2).copied().unwrap_or(0),
    ));
    Ok(row)
}

/// The idle-cost table of the report.
pub fn table(ctx: &mut Ctx, idles: &[IdleRow]) {
    if idles.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out("Idle cost (shared mode, heartbeat 5 s, measured 12 s after the last open)");
    ctx.out("");
    ctx.out("| streams | opened | RSS before (KiB) | RSS after (KiB) | peak RSS (KiB) | KiB per idle stream | threads | open fds | heartbeats each (min) |");
    ctx.out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for i in idles {
        ctx.out(format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} → {} | {} → {} | {} |",
            i.n,
            i.opened,
            i.rss0,
            i.rss1,
            i.hwm,
            i.per_stream,
            i.threads0,
            i.threads1,
            i.fds0,
            i.fds1,
            i.heartbeats_min
        ));
    }
}
