//! Time to open a stream: request → snapshot received, one open after another
//! (`--only open`).

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::{
    Ctx, Res,
    clock::{log, ms, pct},
    crowd::failures,
    server::{Mode, Server},
    subscriber::{Slot, subscribe},
};

/// Sequential opens for the open-time figure.
pub const SEQUENTIAL_OPENS: usize = 100;

pub struct OpenRow {
    pub mode: Mode,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub ok: usize,
}

/// `SEQUENTIAL_OPENS` streams opened one after another on one board, each closed once its
/// snapshot is in: request → snapshot received.
pub async fn open_time(ctx: &mut Ctx, mode: Mode) -> Res<OpenRow> {
    log(format!("== time to open a stream, {} mode", mode.as_str()));
    let server = Server::start(ctx, &format!("open_{}", mode.as_str()), mode, "15s").await?;
    let board = server.create_board().await?;
    for k in 1..=5 {
        server.post_note(&board, k).await?;
    }
    let request = Arc::new(
        format!("GET /api/boards/{board}/events HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
    );
    let mut times = Vec::new();
    let mut failed = BTreeMap::new();
    for _ in 0..SEQUENTIAL_OPENS {
        let slot = Arc::new(Slot::default());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(subscribe(
            server.addr,
            request.clone(),
            slot.clone(),
            None,
            stop.clone(),
            CancellationToken::new(),
            0,
        ));
        let started = Instant::now();
        while !slot.ready.load(Relaxed)
            && !slot.ended.load(Relaxed)
            && started.elapsed() < Duration::from_secs(10)
        {
            sleep(Duration::from_micros(200)).await;
        }
        stop.cancel();
        if let Ok(s) = handle.await {
            if s.snapshot_ns > 0 {
                times.push(s.snapshot_ns - s.open_ns);
            } else {
                let why = s.ended.unwrap_or_else(|| "no snapshot in 10 s".into());
                *failed.entry(why).or_insert(0) += 1;
            }
        }
        // Let the close (and, per stream, the listener's disconnect) finish.
        sleep(Duration::from_millis(20)).await;
    }
    server.stop(ctx).await;
    times.sort_unstable();
    let row = OpenRow {
        mode,
        p50: pct(&times, 50.0),
        p99: pct(&times, 99.0),
        max: pct(&times, 100.0),
        ok: times.len(),
    };
    ctx.out(format!(
        "open time {}: {} of {SEQUENTIAL_OPENS} sequential opens (board with 5 notes): p50 {} ms, p99 {} ms, max {} ms; failed: {}",
        mode.as_str(),
        row.ok,
        ms(row.p50),
        ms(row.p99),
        ms(row.max),
        failures(&failed)
    ));
    Ok(row)
}

/// The open-time table of the report.
pub fn table(ctx: &mut Ctx, opens: &[OpenRow]) {
    if opens.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out(format!(
        "Time to open a stream: request → snapshot received, {SEQUENTIAL_OPENS} sequential opens"
    ));
    ctx.out("");
    ctx.out("| mode | opens | p50 (ms) | p99 (ms) | max (ms) |");
    ctx.out("|---|---:|---:|---:|---:|");
    for o in opens {
        ctx.out(format!(
            "| {} | {} | {} | {} | {} |",
            o.mode.as_str(),
            o.ok,
            ms(o.p50),
            ms(o.p99),
            ms(o.max)
        ));
    }
}
