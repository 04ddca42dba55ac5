//! The ceiling: INSERT + NOTIFY straight through tokio-postgres, no boardcast in the way
//! (`--only raw`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::json;
use tokio::time::sleep;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{Ctx, Res, WRITE_FOR, WRITERS, clock::log, cluster::connect, procfs::CpuMark};

pub struct RawRow {
    pub listeners: usize,
    pub per_sec: f64,
    pub received: u64,
    pub commits: u64,
    pub cpu: String,
}

/// INSERT + NOTIFY transactions straight through tokio-postgres, `WRITERS` connections for
/// `WRITE_FOR`, with `listeners` connections LISTENing on the channel.
pub async fn raw(ctx: &mut Ctx, listeners: usize) -> Res<RawRow> {
    log(format!("== raw INSERT + NOTIFY, {listeners} listener(s)"));
    let db = format!("bench_raw_{listeners}");
    let url = ctx.cluster.fresh_db(&db).await?;
    let setup = connect(&url).await?;
    setup
        .batch_execute(
            "CREATE TABLE raw_notes (id bigserial PRIMARY KEY, board_id uuid NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut listener_clients = Vec::new();
    for _ in 0..listeners {
        let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await?;
        let received = received.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(_) = m {
                    received.fetch_add(1, Relaxed);
                }
            }
        });
        client.batch_execute("LISTEN raw_bench").await?;
        listener_clients.push(client);
    }
    // A payload shaped like a note.created event.
    let payload = json!({
        "seq": 1, "type": "note.created", "board_id": uuid::Uuid::new_v4(),
        "at": "2026-01-01T00:00:00.000000Z",
        "note": {"id": uuid::Uuid::new_v4(), "board_id": uuid::Uuid::new_v4(), "text": "bench note 1",
                 "x": 10.0, "y": 20.0, "color": "#ffd54f", "width": 200.0, "height": 120.0,
                 "version": 1, "author": null, "created_at": "2026-01-01T00:00:00.000000Z",
                 "updated_at": "2026-01-01T00:00:00.000000Z"}
    })
    .to_string();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(connect(&url).await?);
    }
    let cpu0 = CpuMark::take(0, ctx.cluster.postmaster);
    let started = Instant::now();
    let deadline = started + WRITE_FOR;
    let mut tasks = Vec::new();
    for mut client in writers {
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO raw_notes (board_id, body) VALUES ($1, $2)")
                .await?;
            let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
            let board = uuid::Uuid::new_v4();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let tx = client.transaction().await?;
                tx.execute(&insert, &[&board, &"bench note"]).await?;
                tx.execute(&notify, &[&"raw_bench", &payload]).await?;
                tx.commit().await?;
                n += 1;
            }
            // The connection is handed back: its backend's CPU is read before it closes.
            Ok::<_, tokio_postgres::Error>((n, client))
        }));
    }
    let mut commits = 0;
    let mut open = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok((n, client))) => {
                commits += n;
                open.push(client);
            }
            Ok(Err(e)) => log(format!("raw writer: {e}")),
            Err(e) => log(format!("raw writer: {e}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuMark::take(0, ctx.cluster.postmaster);
    drop(open);
    // Let the listeners drain.
    let expect = commits * listeners as u64;
    for _ in 0..200 {
        if received.load(Relaxed) >= expect {
            break;
        }
        sleep(Duration::from_millis(25)).await;
    }
    drop(listener_clients);
    drop(setup);
    ctx.cluster.drop_db(&db).await;
    let row = RawRow {
        listeners,
        per_sec: commits as f64 / elapsed,
        received: received.load(Relaxed),
        commits,
        cpu: cpu1.since(&cpu0),
    };
    ctx.out(format!(
        "raw INSERT+NOTIFY, {WRITERS} writers, {listeners} listener(s): {commits} commits in {elapsed:.1} s = {:.0}/s; notifications received {} of {}; CPU {}",
        row.per_sec, row.received, expect, row.cpu
    ));
    Ok(row)
}
