//! Nchan in the same run (`--only nchan`): exactly the shared-mode fan-out job's
//! measurement against nginx + Nchan. N subscribers on one channel with the same raw
//! client, the same `MESSAGES` messages 100 ms apart published over HTTP, latency from
//! "publish request sent" to "message received", nginx's CPU (master and workers, from
//! /proc) per delivery. Issue 11's target: our p99 no worse than Nchan's at each N.

use std::{sync::Arc, time::Duration};

use chrono::{SecondsFormat, Utc};
use tokio::time::sleep;

use crate::{
    Ctx, Res,
    clock::log,
    crowd::Crowd,
    jobs::fanout::{FanoutRow, MESSAGES, measure, publish_all},
    nchan::{Nchan, NchanSetup},
    procfs::{CpuMark, children, open_fds, pss_tree_kib},
    subscriber::{Framing, Target},
};

/// A note event as boardcast sends it in `data:` (the same fields, formats and size: a
/// frame read from `GET /api/boards/{id}/events` after `POST …/notes` with the text
/// `bench note <seq>`), so both servers carry the same bytes.
fn note_event(seq: usize, board: &str, note: &str) -> String {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    format!(
        r##"{{"seq":{seq},"type":"note.created","board_id":"{board}","at":"{now}","note":{{"id":"{note}","board_id":"{board}","text":"bench note {seq}","x":10.0,"y":20.0,"color":"#fde68a","width":200.0,"height":160.0,"version":1,"author":null,"created_at":"{now}","updated_at":"{now}"}}}}"##
    )
}

pub async fn nchan(ctx: &mut Ctx, setup: &NchanSetup, n: usize) -> Res<FanoutRow> {
    let label = format!("fanout_nchan_{n}");
    log(format!(
        "== fan-out, Nchan ({} workers), {n} subscribers",
        setup.workers
    ));
    let nchan = Nchan::start(ctx, setup, &label).await?;
    // One channel per board id, as a board would be.
    let board = uuid::Uuid::new_v4().to_string();
    let mem0 = pss_tree_kib(nchan.pid);
    let target = Target {
        addr: nchan.addr,
        request: Arc::new(nchan.sub_request(&board)),
        framing: Framing::Nchan,
    };
    let crowd = Crowd::open_to(ctx, nchan.pid, &[target], n, MESSAGES, ctx.open_budget).await;
    let ready = crowd.ready();
    let mem1 = pss_tree_kib(nchan.pid);
    let workers = children(nchan.pid);
    let fds: Vec<usize> = workers.iter().map(|&w| open_fds(w)).collect();
    log(format!(
        "{ready}/{n} open in {:.1} s; nginx PSS (master + workers) {mem0} → {mem1} KiB; open fds per worker {fds:?}",
        crowd.open_secs,
    ));
    // The same pause as the fan-out job's before the clock starts.
    sleep(Duration::from_millis(500)).await;

    let cpu0 = CpuMark::take(nchan.pid, ctx.cluster.postmaster);
    let published = publish_all(&[201, 202], |k| {
        let note = uuid::Uuid::new_v4().to_string();
        nchan.publish(&board, note_event(k, &board, &note))
    })
    .await;
    crowd
        .wait_for(MESSAGES as i64, Duration::from_secs(10 + n as u64 / 1000))
        .await;
    let cpu1 = CpuMark::take(nchan.pid, ctx.cluster.postmaster);
    let open_secs = crowd.open_secs;
    let open_line = crowd.opening_line();
    let subs = crowd.finish().await;
    nchan.stop().await;
    let cpu = (cpu1.server_secs(&cpu0), cpu1.since(&cpu0));
    let mut measured = measure("nchan", &subs, &published, open_secs, cpu);
    measured.row.rss_per_stream_kib = if ready > 0 {
        (mem1 as f64 - mem0 as f64) / ready as f64
    } else {
        0.0
    };
    ctx.out(measured.summary(&published, "nginx stopped"));
    ctx.out(format!(
        "  memory: nginx PSS (master + {} workers, `worker_processes {}`) {mem0} KiB before, {mem1} KiB with {ready} streams ({:.1} KiB/stream); CPU during the writes {} (\"server\" is nginx)",
        workers.len(), setup.workers, measured.row.rss_per_stream_kib, measured.row.cpu
    ));
    ctx.out(open_line);
    Ok(measured.row)
}
