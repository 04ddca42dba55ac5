//! API write throughput: `WRITERS` writers POSTing notes, with and without subscribers
//! (`--only throughput`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::time::sleep;

use crate::{
    Ctx, Res, WRITE_FOR, WRITERS,
    clock::{log, ms, pct},
    crowd::{Crowd, completeness_each, failures},
    jobs::raw::RawRow,
    procfs::CpuMark,
    server::{Mode, Server},
};

pub struct ThroughputRow {
    pub label: String,
    pub subscribers: usize,
    pub notes: u64,
    pub per_sec: f64,
    pub errors: BTreeMap<String, u64>,
    pub post_p50: u64,
    pub post_p99: u64,
    pub complete: String,
    pub cpu: String,
}

/// `WRITERS` writers POSTing notes for `WRITE_FOR`, to one board (with `subscribers` on it)
/// or each to a board of its own.
pub async fn throughput(
    ctx: &mut Ctx,
    mode: Mode,
    subscribers: usize,
    board_each: bool,
) -> Res<ThroughputRow> {
    let label = format!(
        "api {}, {subscribers} subscribers{}",
        mode.as_str(),
        match (board_each, subscribers > 0) {
            (true, true) => ", a board per writer, subscribers spread over the 32 boards",
            (true, false) => ", a board per writer",
            (false, true) => ", all on the one board written",
            (false, false) => ", one board",
        }
    );
    log(format!("== write throughput: {label}"));
    let server = Server::start(
        ctx,
        &format!(
            "write_{}_{subscribers}{}",
            mode.as_str(),
            if board_each { "_boards" } else { "" }
        ),
        mode,
        "15s",
    )
    .await?;
    let board = server.create_board().await?;
    let mut boards = vec![board.clone(); WRITERS];
    if board_each {
        for b in boards.iter_mut() {
            *b = server.create_board().await?;
        }
    }
    // The subscribers are on the boards being written: one, or spread over all 32.
    let watched: Vec<String> = if board_each {
        boards.clone()
    } else {
        vec![board.clone()]
    };
    let crowd = if subscribers > 0 {
        let c = Crowd::open(
            ctx,
            &server,
            &watched,
            subscribers,
            0,
            Duration::from_secs(180),
        )
        .await;
        sleep(Duration::from_millis(500)).await;
        Some(c)
    } else {
        None
    };
    let server = Arc::new(server);
    let cpu0 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    let started = Instant::now();
    let deadline = started + WRITE_FOR;
    let mut tasks = Vec::new();
    for (w, board) in boards.into_iter().enumerate() {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut rtts = Vec::new();
            let mut k = w * 1_000_000;
            while Instant::now() < deadline {
                k += 1;
                let t = Instant::now();
                match server.post_note(&board, k).await {
                    Ok(201) => {
                        ok += 1;
                        rtts.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(s) => *errors.entry(format!("status {s}")).or_insert(0) += 1,
                    Err(e) => *errors.entry(e.to_string()).or_insert(0) += 1,
                }
            }
            (ok, errors, rtts)
        }));
    }
    let mut notes = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut rtts = Vec::new();
    for t in tasks {
        if let Ok((ok, e, r)) = t.await {
            notes += ok;
            for (k, v) in e {
                *errors.entry(k).or_insert(0) += v;
            }
            rtts.extend(r);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    rtts.sort_unstable();
    let mut complete = "no subscribers".to_string();
    if let Some(crowd) = crowd {
        let mut seqs = Vec::with_capacity(watched.len());
        for b in &watched {
            seqs.push(server.board_seq(b).await.unwrap_or(0));
        }
        let caught_up_at = Instant::now();
        let all = crowd.wait_for_each(&seqs, Duration::from_secs(30)).await;
        let lag = caught_up_at.elapsed().as_secs_f64();
        let opened = crowd.ready();
        let subs = crowd.finish().await;
        let uptos: Vec<usize> = seqs.iter().map(|s| (*s).max(0) as usize).collect();
        let c = completeness_each(&subs, &uptos);
        complete = format!(
            "{opened}/{subscribers} subscribers; {} of {} deliveries, missing {}, duplicated {}, streams ended: {}; all caught up {:.1} s after the last write{}",
            c.received,
            c.expected,
            c.missing,
            c.duplicated,
            failures(&c.ended),
            lag,
            if all { "" } else { " (NOT all)" }
        );
    }
    let counts = server.stream_counts().await;
    let server = Arc::into_inner(server).ok_or("server still shared")?;
    server.stop(ctx).await;
    let row = ThroughputRow {
        label: label.clone(),
        subscribers,
        notes,
        per_sec: notes as f64 / elapsed,
        errors,
        post_p50: pct(&rtts, 50.0),
        post_p99: pct(&rtts, 99.0),
        complete,
        cpu: cpu1.since(&cpu0),
    };
    ctx.out(format!(
        "throughput {label}: {} notes in {elapsed:.1} s = {:.0}/s; POST p50 {} ms, p99 {} ms; errors: {}; {}; server after: {counts}",
        row.notes,
        row.per_sec,
        ms(row.post_p50),
        ms(row.post_p99),
        if row.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", row.errors)
        },
        row.complete
    ));
    ctx.out(format!("  CPU {}", row.cpu));
    Ok(row)
}

/// The write-throughput table of the report: the raw ceiling (`raw`) and the API runs,
/// their CPU figures, and each shared-mode run against the ceiling.
pub fn table(ctx: &mut Ctx, raws: &[RawRow], writes: &[ThroughputRow]) {
    if writes.is_empty() && raws.is_empty() {
        return;
    }
    ctx.out("");
    ctx.out(format!(
        "Write throughput: {WRITERS} writers for {} s",
        WRITE_FOR.as_secs()
    ));
    ctx.out("");
    ctx.out("| what | subscribers / listeners | writes/s | POST p50 (ms) | POST p99 (ms) | errors | deliveries |");
    ctx.out("|---|---:|---:|---:|---:|---|---|");
    for r in raws {
        ctx.out(format!(
            "| raw INSERT + NOTIFY (tokio-postgres) | {} | {:.0} | | | | {} of {} notifications |",
            r.listeners,
            r.per_sec,
            r.received,
            r.commits * r.listeners as u64
        ));
    }
    for w in writes {
        ctx.out(format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            w.label,
            w.subscribers,
            w.per_sec,
            ms(w.post_p50),
            ms(w.post_p99),
            if w.errors.is_empty() {
                "0".to_string()
            } else {
                format!("{:?}", w.errors)
            },
            w.complete
        ));
    }
    ctx.out("");
    for r in raws {
        ctx.out(format!("- CPU, raw {} listener(s): {}", r.listeners, r.cpu));
    }
    for w in writes {
        ctx.out(format!("- CPU, {}: {}", w.label, w.cpu));
    }
    let raw1 = raws.iter().find(|r| r.listeners == 1).map(|r| r.per_sec);
    if let Some(raw1) = raw1 {
        ctx.out("");
        for w in writes
            .iter()
            .filter(|w| w.label.starts_with("api shared") || w.subscribers == 0)
        {
            ctx.out(format!(
                "- ratio {} / raw INSERT+NOTIFY with one listener: {:.0}%",
                w.label,
                100.0 * w.per_sec / raw1
            ));
        }
    }
}
