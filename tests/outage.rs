//! A database outage: PostgreSQL is stopped under a running server and started again.
//!
//! This stops the cluster every test binary shares, which is safe only because cargo runs
//! test binaries one after another and this binary holds a single test.

#[path = "api/helpers.rs"]
mod helpers;

use std::time::{Duration, Instant};

use boardcast::config::ListenerMode;
use helpers::{SseClient, TestApp, eventually, listener_mode, spawn_app};
use serde_json::Value;

/// Runs `scripts/pgctl` (exported by scripts/test as `BOARDCAST_PGCTL`).
async fn pgctl(command: &str) {
    let script = std::env::var("BOARDCAST_PGCTL").expect("BOARDCAST_PGCTL");
    let status = tokio::process::Command::new(script)
        .arg(command)
        .status()
        .await
        .expect("runs scripts/pgctl");
    assert!(status.success(), "pgctl {command}");
}

/// Starts PostgreSQL again if the test fails while it is stopped, so the test binaries
/// that run after this one still have a database.
struct RestartOnDrop {
    armed: bool,
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.armed
            && let Ok(script) = std::env::var("BOARDCAST_PGCTL")
        {
            let _ = std::process::Command::new(script).arg("start").status();
        }
    }
}

/// Whether this run can stop the database; without scripts/test's cluster it cannot, and
/// the test fails unless `BOARDCAST_SKIP_OUTAGE_TESTS=1` says to skip it.
fn can_stop_the_database() -> bool {
    let have = std::env::var("BOARDCAST_PGCTL").is_ok() && std::env::var("PG_TEST_DIR").is_ok();
    if have {
        return true;
    }
    if std::env::var("BOARDCAST_SKIP_OUTAGE_TESTS").as_deref() == Ok("1") {
        eprintln!("outage test skipped: BOARDCAST_SKIP_OUTAGE_TESTS=1");
        return false;
    }
    panic!(
        "the outage test needs scripts/test's throwaway cluster (BOARDCAST_PGCTL and \
         PG_TEST_DIR); set BOARDCAST_SKIP_OUTAGE_TESTS=1 to skip it"
    );
}

async fn readyz(app: &TestApp) -> u16 {
    match app
        .http
        .get(app.url("/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// The next `n` change events, as `(seq, event name, note text)`.
async fn changes(stream: &mut SseClient, n: usize, wait: Duration) -> Vec<(i64, String, String)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < n {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let Some(event) = stream.next_change(left).await else {
            break;
        };
        let text = event.json()["note"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((event.seq(), event.event.clone(), text));
    }
    out
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The viewer a stream was opened as: `you.id` of its opening presence.
async fn you(stream: &mut SseClient) -> String {
    let presence = stream
        .next_named("presence", Duration::from_secs(5))
        .await
        .expect("the opening presence");
    presence.json()["you"]["id"]
        .as_str()
        .expect("you.id")
        .to_string()
}

/// POSTs a cursor signal as `viewer` every 20 ms for `during`; returns how many got 202.
async fn send_signals(app: &TestApp, board: &str, viewer: &str, during: Duration) -> usize {
    let until = Instant::now() + during;
    let mut accepted = 0;
    let mut x = 0;
    while Instant::now() < until {
        x += 1;
        let answer = app
            .http
            .post(app.url(&format!("/api/boards/{board}/signals")))
            .json(&serde_json::json!({ "viewer": viewer, "kind": "cursor", "data": { "x": x, "y": 0 } }))
            .send()
            .await
            .expect("POST a signal");
        if answer.status() == 202 {
            accepted += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    accepted
}

#[tokio::test]
async fn a_database_outage_turns_readyz_and_writes_to_503_and_streams_miss_nothing() {
    if !can_stop_the_database() {
        return;
    }
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = app.open_stream(&board).await;
    stream
        .next_named("snapshot", Duration::from_secs(5))
        .await
        .expect("a snapshot");
    let viewer = you(&mut stream).await;
    for i in 1..=3 {
        app.add_note(&board, &format!("before {i}")).await;
    }
    let before = changes(&mut stream, 3, Duration::from_secs(10)).await;
    assert_eq!(before.len(), 3, "{before:?}");
    let last_seen = before[2].0;
    assert_eq!(readyz(&app).await, 200);

    // Down.
    let mut guard = RestartOnDrop { armed: true };
    pgctl("stop").await;
    let stopped = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            readyz(&app).await == 503
        })
        .await,
        "/readyz turns 503 within 5 s of the database stopping"
    );
    println!("outage: /readyz 503 after {:?}", stopped.elapsed());

    let refused = app
        .http
        .post(app.url(&format!("/api/boards/{board}/notes")))
        .json(&serde_json::json!({ "text": "during", "x": 0, "y": 0 }))
        .send()
        .await
        .expect("POST during the outage");
    assert_eq!(refused.status(), 503);
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "Retry-After: {retry_after:?}"
    );
    let body: Value = refused.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let board_write = app
        .http
        .post(app.url("/api/boards"))
        .json(&serde_json::json!({ "title": "during" }))
        .send()
        .await
        .expect("POST a board during the outage");
    assert_eq!(board_write.status(), 503);

    // Signals go on meanwhile (the viewer is known in memory, so they are accepted); their
    // flushes fail, and the flusher backs off instead of knocking on every 5 ms tick. This
    // also gives the stream's listener time to notice and back off.
    let signals_sent = send_signals(&app, &board, &viewer, Duration::from_secs(3)).await;
    assert!(
        signals_sent > 20,
        "{signals_sent} signals accepted while down"
    );
    let failed = metric(&app, "boardcast_signal_flushes_failed_total").await;
    println!("outage: {signals_sent} signals accepted, {failed} flushes failed in 3 s");
    // Backing off from 50–100 ms and doubling: at most 6 attempts in 3 s. One per window
    // (50 ms), as without backoff, would be 60.
    assert!(
        (1.0..=8.0).contains(&failed),
        "{failed} failed flushes in 3 s"
    );

    // Up.
    pgctl("start").await;
    guard.armed = false;
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async {
            readyz(&app).await == 200
        })
        .await,
        "/readyz is 200 again within 10 s of the database returning"
    );
    println!("outage: /readyz 200 again after {:?}", started.elapsed());

    for i in 1..=3 {
        app.add_note(&board, &format!("after {i}")).await;
    }
    let mut after = changes(&mut stream, 3, Duration::from_secs(20)).await;
    let stream_stayed_open = after.len() == 3;
    if !stream_stayed_open {
        // The stream ended: a client resumes from the last id it saw.
        let resume_from = after.last().map_or(last_seen, |e| e.0);
        let mut resumed = app.resume_stream(&board, resume_from).await;
        after.extend(changes(&mut resumed, 3 - after.len(), Duration::from_secs(10)).await);
        stream = resumed;
    }
    println!(
        "outage: after recovery the stream {} and delivered {:?}",
        if stream_stayed_open {
            "stayed open"
        } else {
            "ended and was resumed"
        },
        after
    );
    let expected: Vec<(i64, String, String)> = (1..=3)
        .map(|i| {
            (
                last_seen + i,
                "note.created".to_string(),
                format!("after {i}"),
            )
        })
        .collect();
    assert_eq!(after, expected, "exactly the new events, once, in order");
    // Signals flow again once the flusher's wait is over (from a new stream: in shared
    // mode the first one may have been resumed under another viewer).
    let mut fresh = app.open_stream(&board).await;
    let fresh_viewer = you(&mut fresh).await;
    let again = send_signals(&app, &board, &fresh_viewer, Duration::from_millis(300)).await;
    assert!(again > 0);
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(&app, "boardcast_signals_delivered_total").await >= 1.0
        })
        .await,
        "a signal is delivered after the outage"
    );
    let extra = changes(&mut stream, 1, Duration::from_secs(1)).await;
    assert!(extra.is_empty(), "nothing twice: {extra:?}");

    if listener_mode() == ListenerMode::PerStream {
        // The per-stream listener re-LISTENs (backoff up to 5 s) and catches up from the
        // log, keeping the stream open.
        assert!(
            stream_stayed_open,
            "the per-stream listener keeps the stream open"
        );
        let reconnects = metric(&app, "boardcast_listener_reconnects_total").await;
        println!("outage: listener reconnects {reconnects}");
        assert!(reconnects >= 1.0, "the listener reconnect is counted");
    }
    assert_eq!(readyz(&app).await, 200);
    app.stop().await;
}
