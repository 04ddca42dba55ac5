//! The event stream: snapshot and replay, live changes, heartbeats, framing, dead and slow
//! clients, a lost listener, capacity, deletion, shutdown.

use std::time::{Duration, Instant};

use boardcast::realtime::CloseReason;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    HEARTBEAT, ServerProcess, SseClient, SseEvent, TestApp, create_database, eventually, spawn_app,
    spawn_app_with, spawn_on,
};
use crate::many::{delete_board, open_many};

const SOON: Duration = Duration::from_secs(1);

/// A raw TCP client that sends the stream request and reads only the response head.
async fn raw_stream(
    app: &TestApp,
    board: &str,
    receive_buffer: Option<u32>,
) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let mut stream = socket
        .connect(app.socket_addr().parse().expect("addr"))
        .await
        .expect("connects");
    let request = format!(
        "GET /api/boards/{board}/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("sends the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .await
            .expect("reads the response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

async fn changes(stream: &mut SseClient, count: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = stream
            .next_change(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("only {} of {count} events arrived", events.len()));
        events.push(event);
    }
    events
}

fn seqs(events: &[SseEvent]) -> Vec<i64> {
    events.iter().map(SseEvent::seq).collect()
}

#[tokio::test]
async fn the_stream_opens_with_retry_then_a_snapshot_equal_to_the_board() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    app.add_note(&board, "first").await;
    app.add_note(&board, "second").await;

    let response = app.open_stream_raw(&board, "", None).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(
        headers
            .get("content-encoding")
            .is_none_or(|v| v == "identity")
    );

    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a first chunk").expect("bytes");
    assert!(
        first.starts_with(b"retry: 2000\n\n"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );

    let mut stream = app.open_stream(&board).await;
    let snapshot = stream.next(SOON).await.expect("snapshot");
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id, "2");
    let board_now: Value = app.get_json(&format!("/api/boards/{board}")).await;
    let data = snapshot.json();
    assert_eq!(data["seq"], 2);
    assert_eq!(data["board"]["id"], board_now["id"]);
    assert_eq!(data["board"]["seq"], board_now["seq"]);
    assert_eq!(data["notes"], board_now["notes"]);
}

#[tokio::test]
async fn every_change_type_arrives_live_with_its_seq_as_id() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = app.open_stream(&board).await;
    assert_eq!(
        stream.next_change(SOON).await.expect("snapshot").event,
        "snapshot"
    );

    let started = Instant::now();
    let note = app.add_note(&board, "hello").await;
    let created = stream
        .next_change(SOON)
        .await
        .expect("note.created within 1 s");
    assert!(started.elapsed() < SOON);
    assert_eq!(
        (created.event.as_str(), created.id.as_str()),
        ("note.created", "1")
    );
    let data = created.json();
    assert_eq!(data["seq"], 1);
    assert_eq!(data["type"], "note.created");
    assert_eq!(data["board_id"], board.as_str());
    assert_eq!(data["note"], note);

    let note_id = note["id"].as_str().expect("id");
    let updated = app.patch_note(&board, note_id, json!({ "x": 99 })).await;
    assert_eq!(updated.status(), 200);
    let event = stream.next_change(SOON).await.expect("note.updated");
    assert_eq!((event.event.as_str(), event.seq()), ("note.updated", 2));
    assert_eq!(event.json()["note"]["x"], 99.0);

    let renamed = app
        .http
        .patch(app.url(&format!("/api/boards/{board}")))
        .json(&json!({ "title": "Renamed" }))
        .send()
        .await
        .expect("PATCH board");
    assert_eq!(renamed.status(), 200);
    let event = stream.next_change(SOON).await.expect("board.updated");
    assert_eq!((event.event.as_str(), event.seq()), ("board.updated", 3));
    assert_eq!(event.json()["board"]["title"], "Renamed");

    let deleted = app
        .http
        .delete(app.url(&format!("/api/boards/{board}/notes/{note_id}")))
        .send()
        .await
        .expect("DELETE note");
    assert_eq!(deleted.status(), 204);
    let event = stream.next_change(SOON).await.expect("note.deleted");
    assert_eq!((event.event.as_str(), event.seq()), ("note.deleted", 4));
    assert_eq!(event.json()["note"], json!({ "id": note_id }));

    let gone = app
        .http
        .delete(app.url(&format!("/api/boards/{board}")))
        .send()
        .await
        .expect("DELETE board");
    assert_eq!(gone.status(), 204);
    let event = stream.next_change(SOON).await.expect("board.deleted");
    assert_eq!((event.event.as_str(), event.seq()), ("board.deleted", 5));
    assert_eq!(event.json()["board"], json!({ "id": board }));
    assert!(
        stream.ends_within(SOON).await,
        "the stream ends after board.deleted"
    );

    let reopened = app.open_stream_raw(&board, "", None).await;
    assert_eq!(reopened.status(), 404);
}

#[tokio::test]
async fn heartbeats_come_at_the_configured_interval_without_an_id() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = app.open_stream(&board).await;
    let first = stream
        .next_named("heartbeat", HEARTBEAT * 3)
        .await
        .expect("a heartbeat");
    let at = Instant::now();
    let second = stream
        .next_named("heartbeat", HEARTBEAT * 3)
        .await
        .expect("another heartbeat");
    let gap = at.elapsed();
    assert!(first.json()["at"].is_string() && second.json()["at"].is_string());
    assert!(
        gap > HEARTBEAT / 2 && gap < HEARTBEAT * 2,
        "heartbeat gap {gap:?}"
    );
}

#[tokio::test]
async fn only_change_events_and_snapshots_carry_an_id_field() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let response = app.open_stream_raw(&board, "?name=Ana", None).await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut wrote = false;
    while text.matches("event: heartbeat").count() < 2 {
        let chunk = tokio::time::timeout(HEARTBEAT * 3, body.next())
            .await
            .expect("frames keep coming")
            .expect("open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if !wrote && text.contains("event: presence") {
            app.add_note(&board, "one").await;
            wrote = true;
        }
    }
    // Clients keep the last id they saw, so only the raw frames tell whether one was sent.
    let mut named = 0;
    for frame in text.split("\n\n").filter(|f| f.contains("event: ")) {
        let has_id = frame.lines().any(|l| l.starts_with("id:"));
        let sequenced = frame.contains("event: snapshot") || frame.contains("event: note.");
        assert_eq!(has_id, sequenced, "{frame:?}");
        named += 1;
    }
    assert!(
        named >= 5,
        "snapshot, presence, note.created and two heartbeats: {text}"
    );
}

#[tokio::test]
async fn hostile_text_arrives_as_one_event_with_the_text_intact() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = app.open_stream(&board).await;
    stream.next_change(SOON).await.expect("snapshot");
    for text in [
        "\n\nevent: board.deleted\ndata: x\n\nid: 999",
        "lone\rcarriage\r\rreturn",
        "data: x\r\n:comment",
    ] {
        app.add_note(&board, text).await;
        let event = stream.next_change(SOON).await.expect("the note's event");
        assert_eq!(event.event, "note.created");
        assert_eq!(event.json()["note"]["text"], text);
    }
    // The stream is still healthy: the next event is the server's own.
    stream
        .next_named("heartbeat", HEARTBEAT * 3)
        .await
        .expect("heartbeat");
    let listed = app.add_note(&board, "after").await;
    let event = stream.next_change(SOON).await.expect("next event");
    assert_eq!(
        (event.seq(), event.json()["note"]["id"].clone()),
        (4, listed["id"].clone())
    );
}

async fn check_resume(app: &TestApp, by_query: bool) {
    let board = app.board_id().await;
    let mut stream = app.open_stream(&board).await;
    stream.next_change(SOON).await.expect("snapshot");
    app.add_note(&board, "seen").await;
    let seen = stream.next_change(SOON).await.expect("seen").seq();
    drop(stream);

    for i in 0..20 {
        app.add_note(&board, &format!("missed {i}")).await;
    }
    let mut resumed = if by_query {
        let response = app
            .open_stream_raw(&board, &format!("?last_event_id={seen}"), None)
            .await;
        assert_eq!(response.status(), 200);
        SseClient::new(response)
    } else {
        app.resume_stream(&board, seen).await
    };
    let replayed = changes(&mut resumed, 20).await;
    assert_eq!(seqs(&replayed), (seen + 1..=seen + 20).collect::<Vec<_>>());
    assert!(replayed.iter().all(|e| e.event == "note.created"));
    assert_eq!(replayed[0].json()["note"]["text"], "missed 0");

    app.add_note(&board, "live again").await;
    let live = resumed
        .next_change(SOON)
        .await
        .expect("live after the replay");
    assert_eq!(live.seq(), seen + 21);
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_exactly_what_was_missed() {
    let app = spawn_app().await;
    check_resume(&app, false).await;
}

#[tokio::test]
async fn reconnecting_with_the_last_event_id_query_parameter_replays_too() {
    let app = spawn_app().await;
    check_resume(&app, true).await;
}

#[tokio::test]
async fn the_last_event_id_header_wins_over_the_query_parameter() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    for i in 0..3 {
        app.add_note(&board, &format!("n{i}")).await;
    }
    let response = app
        .open_stream_raw(&board, "?last_event_id=0", Some("2"))
        .await;
    let mut stream = SseClient::new(response);
    let first = stream.next_change(SOON).await.expect("replay");
    assert_eq!((first.event.as_str(), first.seq()), ("note.created", 3));
}

#[tokio::test]
async fn stale_and_future_ids_get_a_fresh_snapshot() {
    let app = spawn_app_with(|s| s.event_retention = 64).await;
    let board = app.board_id().await;
    for i in 0..130 {
        app.add_note(&board, &format!("n{i}")).await;
    }
    // Events up to 66 were pruned (retention 64, pruned at seq 128).
    for last in [1, 130 + 50] {
        let mut stream = app.resume_stream(&board, last).await;
        let first = stream.next_change(SOON).await.expect("an opening");
        assert_eq!(first.event, "snapshot", "last id {last}");
        assert_eq!(first.seq(), 130);
        assert_eq!(first.json()["notes"].as_array().expect("notes").len(), 130);
    }
    // A kept id still replays.
    let mut stream = app.resume_stream(&board, 120).await;
    let replayed = changes(&mut stream, 10).await;
    assert_eq!(seqs(&replayed), (121..=130).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_stream_requests_get_clear_errors() {
    let app = spawn_app().await;
    let missing = app
        .open_stream_raw("6f1c2a9e-3b1d-4c55-9a3e-0d2f4b7c8e91", "", None)
        .await;
    assert_eq!(missing.status(), 404);
    let board = app.board_id().await;
    for (query, header) in [
        ("?last_event_id=abc", None),
        ("?last_event_id=-1", None),
        ("", Some("x1")),
    ] {
        let response = app.open_stream_raw(&board, query, header).await;
        assert_eq!(response.status(), 422, "{query} {header:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "validation_failed");
    }
}

#[tokio::test]
async fn writers_on_two_instances_give_every_subscriber_the_same_consecutive_ids() {
    let one = spawn_app().await;
    let two = spawn_on(&one.db_name, |_| {}).await;
    let board = one.board_id().await;
    let mut on_one = one.open_stream(&board).await;
    let mut on_two = two.open_stream(&board).await;
    on_one.next_change(SOON).await.expect("snapshot");
    on_two.next_change(SOON).await.expect("snapshot");

    let mut writers = Vec::new();
    for i in 0..50 {
        let target = if i % 2 == 0 { one.url("") } else { two.url("") };
        let http = one.http.clone();
        let board = board.clone();
        writers.push(tokio::spawn(async move {
            let response = http
                .post(format!("{target}/api/boards/{board}/notes"))
                .json(&json!({ "text": format!("w{i}"), "x": 0, "y": 0 }))
                .send()
                .await
                .expect("write");
            assert_eq!(response.status(), 201);
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let a = changes(&mut on_one, 50).await;
    let b = changes(&mut on_two, 50).await;
    assert_eq!(seqs(&a), (1..=50).collect::<Vec<_>>());
    assert_eq!(seqs(&a), seqs(&b));
    let data = |events: &[SseEvent]| events.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
    assert_eq!(data(&a), data(&b));
}

#[tokio::test]
async fn abruptly_killed_clients_are_reclaimed_within_two_heartbeats() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let sql = app.sql().await;
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(raw_stream(&app, &board, None).await);
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.stats.open_streams() == 200
        })
        .await,
        "200 streams open"
    );
    // Per-stream: one listener connection per stream. Shared: the instance's one.
    let per_stream = app.settings.listener == boardcast::config::ListenerMode::PerStream;
    let (listening, idle) = if per_stream { (200, 0) } else { (1, 1) };
    assert_eq!(app.listening_backends(&sql).await, listening);
    for (i, client) in clients.into_iter().enumerate() {
        if i % 2 == 0 {
            // SO_LINGER 0: the kernel answers with RST instead of FIN.
            client.set_zero_linger().expect("SO_LINGER");
        }
        drop(client);
    }
    let killed = Instant::now();
    assert!(
        eventually(HEARTBEAT * 2, || async { app.stats.open_streams() == 0 }).await,
        "open streams back to zero, {} left",
        app.stats.open_streams()
    );
    assert!(
        eventually(HEARTBEAT * 2, || async {
            app.listening_backends(&sql).await == idle
        })
        .await,
        "listener connections gone from pg_stat_activity ({} left, {idle} expected)",
        app.listening_backends(&sql).await
    );
    assert!(killed.elapsed() <= HEARTBEAT * 4);
    // All 200 are reclaimed dead clients; one killed while a heartbeat was still queued
    // for it counts as `slow` rather than `client_gone`.
    let reclaimed =
        app.stats.closed_total(CloseReason::ClientGone) + app.stats.closed_total(CloseReason::Slow);
    assert_eq!(reclaimed, 200);
    let viewers = || async {
        let row = sql
            .query_one("SELECT count(*) FROM viewers", &[])
            .await
            .expect("viewers");
        row.get::<_, i64>(0)
    };
    assert!(
        eventually(HEARTBEAT * 2, || async { viewers().await == 0 }).await,
        "their presence is reclaimed too ({} left)",
        viewers().await
    );
}

#[tokio::test]
async fn terminated_listener_connections_lose_no_event() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let sql = app.sql().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = app.open_stream(&board).await;
        stream.next_change(SOON).await.expect("snapshot");
        streams.push(stream);
    }
    assert!(terminate_listeners(&app, &sql).await >= 1);
    for i in 0..10 {
        app.add_note(&board, &format!("after kill {i}")).await;
    }
    for stream in &mut streams {
        let events = changes(stream, 10).await;
        assert_eq!(seqs(&events), (1..=10).collect::<Vec<_>>());
        // Nothing more: no duplicate.
        assert!(stream.next_change(HEARTBEAT * 2).await.is_none());
    }
    assert!(app.stats.listener_reconnects_total() >= 1);
}

/// Found by the soak: a listener connection the database closed was logged as "lost (db
/// error)", which says nothing. The log line must carry the server's reason and SQLSTATE.
#[tokio::test]
async fn a_lost_listener_is_logged_with_the_databases_reason() {
    let db = create_database().await;
    let server = ServerProcess::start(&db, &[]).await;
    let http = reqwest::Client::new();
    let board = server.create_board("Listener").await;
    let stream = http
        .get(server.url(&format!("/api/boards/{board}/events")))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let mut body = stream.bytes_stream();
    body.next().await.expect("first bytes").expect("read");
    let (admin, connection) = crate::helpers::base_settings()
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    let name: &str = &db;
    let listening = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&name],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
            > 0
    };
    assert!(
        eventually(Duration::from_secs(5), listening).await,
        "a listener"
    );
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'boardcast listener'",
            &[&name],
        )
        .await
        .expect("terminate");
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.log_text().lines().any(|line| {
                line.contains("lost (")
                    && line.contains("administrator command")
                    && line.contains("57P01")
            })
        })
        .await,
        "the log says why the listener was lost:\n{}",
        server.log_text()
    );
    drop(body);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_others_keep_up() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    // A small receive window, never read: the server's queue fills.
    let stuck = raw_stream(&app, &board, Some(4096)).await;
    let mut reader = app.open_stream(&board).await;
    reader.next_change(SOON).await.expect("snapshot");

    let text = "é".repeat(5_000);
    let total = 2_000;
    let writer = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/boards/{board}/notes"));
        tokio::spawn(async move {
            let mut last_write = Instant::now();
            for chunk in 0..total / 8 {
                let mut batch = Vec::new();
                for i in 0..8 {
                    let http = http.clone();
                    let url = url.clone();
                    let body =
                        json!({ "text": format!("{text}{}", chunk * 8 + i), "x": 0, "y": 0 });
                    batch.push(async move { http.post(url).json(&body).send().await });
                }
                for result in futures_util::future::join_all(batch).await {
                    assert_eq!(result.expect("write").status(), 201);
                }
                last_write = Instant::now();
            }
            last_write
        })
    };
    let mut received = Vec::new();
    let mut last_arrival = Instant::now();
    while received.len() < total {
        let event = reader
            .next_change(Duration::from_secs(10))
            .await
            .expect("the reading client keeps getting events");
        received.push(event.seq());
        last_arrival = Instant::now();
    }
    let last_write = writer.await.expect("writer");
    assert_eq!(received, (1..=total as i64).collect::<Vec<_>>());
    assert!(
        last_arrival.saturating_duration_since(last_write) < SOON,
        "the last event arrived within 1 s of its write"
    );
    // The stuck client is closed. Which rule fires first depends on timing: the queue
    // overflowing or stalling (`slow`), or the kernel aborting the zero window after
    // TCP_USER_TIMEOUT while the kernel's send buffer still had room, so nothing was
    // left pending in the queue (`client_gone`).
    let closed = || {
        app.stats.closed_total(CloseReason::Slow) + app.stats.closed_total(CloseReason::ClientGone)
    };
    assert!(
        eventually(HEARTBEAT * 4, || async { closed() == 1 }).await,
        "the stuck client was closed ({} closes)",
        closed()
    );
    assert_eq!(
        app.stats.open_streams(),
        1,
        "the reading client is still open"
    );
    drop(stuck);
}

#[tokio::test]
async fn past_max_streams_a_stream_gets_503_and_a_closed_one_frees_its_slot() {
    let app = spawn_app_with(|s| s.max_streams = Some(2)).await;
    let board = app.board_id().await;
    let first = app.open_stream(&board).await;
    let _second = app.open_stream(&board).await;
    let refused = app.open_stream_raw(&board, "", None).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    drop(first);
    assert!(
        eventually(HEARTBEAT * 2, || async {
            app.open_stream_raw(&board, "", None).await.status() == 200
        })
        .await,
        "a slot frees up"
    );
}

#[tokio::test]
async fn sigterm_tells_every_stream_to_retry_and_exits_cleanly() {
    let db = create_database().await;
    let mut server = ServerProcess::start(&db, &[]).await;
    let http = reqwest::Client::new();
    let board = server.create_board("Shutdown").await;
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let response = http
            .get(server.url(&format!("/api/boards/{board}/events")))
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        bodies.push(tokio::spawn(async move {
            let mut text = String::new();
            let mut body = response.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal("TERM");
    for body in bodies {
        let text = tokio::time::timeout(Duration::from_secs(10), body)
            .await
            .expect("the stream ends")
            .expect("reader");
        let last = text
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let delay: u64 = last
            .strip_prefix("retry: ")
            .unwrap_or_else(|| panic!("the stream ends with retry:, got {last:?}"))
            .parse()
            .expect("milliseconds");
        assert!((1000..=5000).contains(&delay), "jittered retry {delay}");
    }
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("exits within 10 s")
        .expect("exit status");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(!server.log_text().contains("panicked"));
}

#[tokio::test]
async fn curl_prints_the_snapshot_and_heartbeats_as_they_happen() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sN", &app.url(&format!("/api/boards/{board}/events"))])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs");
    let stdout = curl.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|l: &&String| l.as_str() == "event: heartbeat")
        .count()
        < 2
    {
        let line = tokio::time::timeout(HEARTBEAT * 3, lines.next_line())
            .await
            .expect("curl prints promptly")
            .expect("reads")
            .expect("a line");
        seen.push(line);
    }
    assert!(seen.contains(&"event: snapshot".to_string()));
    assert!(started.elapsed() < HEARTBEAT * 4);
    curl.kill().await.expect("curl stops");
}

#[tokio::test]
async fn max_streams_defaults_to_what_postgres_leaves_or_ten_thousand_when_shared() {
    let app = spawn_app_with(|s| s.max_streams = None).await;
    let sql = app.sql().await;
    let setting = |name: &'static str| {
        let sql = &sql;
        async move {
            let row = sql
                .query_one(&format!("SELECT current_setting('{name}')::int"), &[])
                .await
                .expect("setting");
            i64::from(row.get::<_, i32>(0))
        }
    };
    let expected = match app.settings.listener {
        // The pool, the superuser reserve and a margin of 10 stay free.
        boardcast::config::ListenerMode::PerStream => {
            setting("max_connections").await
                - setting("superuser_reserved_connections").await
                - app.settings.pool_size as i64
                - 10
        }
        boardcast::config::ListenerMode::Shared => 10_000,
    };
    let metrics = app.metrics_text().await;
    let max: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("boardcast_streams_max "))
        .expect("boardcast_streams_max is exported")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(max, expected);
}

#[tokio::test]
async fn an_event_whose_notification_never_came_is_read_from_the_log_before_the_next() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = opened(&app, &board).await;
    app.add_note(&board, "one").await;
    let first = stream.next_change(SOON * 5).await.expect("event 1");
    assert_eq!((first.seq(), first.event.as_str()), (1, "note.created"));
    // In shared mode the stream is live now: the hub puts its next events in its outbox.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Event 2 is logged, but its NOTIFY is lost (as when a listener misses one): only the
    // log has it.
    let sql = app.sql().await;
    sql.execute(
        "WITH next AS (UPDATE boards SET seq = seq + 1 WHERE id = $1::text::uuid RETURNING seq)
         INSERT INTO events (board_id, seq, type, payload, at)
         SELECT $1::text::uuid, seq, 'board.updated',
                json_build_object('seq', seq, 'type', 'board.updated'), now()
         FROM next",
        &[&board],
    )
    .await
    .expect("log an event without a notification");
    app.add_note(&board, "three").await;

    // Event 3's notification shows the gap: 2 comes from the log, then 3, once each.
    let second = stream.next_change(SOON * 5).await.expect("event 2");
    assert_eq!((second.seq(), second.event.as_str()), (2, "board.updated"));
    let third = stream.next_change(SOON * 5).await.expect("event 3");
    assert_eq!((third.seq(), third.event.as_str()), (3, "note.created"));
    assert_eq!(third.json()["note"]["text"], "three");

    // And the stream is live again after it: the next event follows at once.
    app.add_note(&board, "four").await;
    let fourth = stream.next_change(SOON * 5).await.expect("event 4");
    assert_eq!(fourth.seq(), 4);
    assert!(
        stream
            .next_change(Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// A board watched by its own stream and by a many-board stream with another board.
struct DeletionWatch {
    board: String,
    other: String,
    own: SseClient,
    many: SseClient,
}

impl DeletionWatch {
    async fn open(app: &TestApp) -> DeletionWatch {
        let board = app.board_id().await;
        let other = app.board_id().await;
        let own = opened(app, &board).await;
        let mut many = open_many(app, &[&board, &other], None).await;
        // One snapshot per board.
        for _ in 0..2 {
            let first = many.next_change(SOON * 5).await.expect("snapshot");
            assert_eq!(first.event, "snapshot");
        }
        DeletionWatch {
            board,
            other,
            own,
            many,
        }
    }

    /// Both streams say `board.deleted` (the own stream with `seq`), the board's own stream
    /// ends, and the many-board stream goes on for the other board.
    async fn told_deleted(mut self, app: &TestApp, seq: i64) {
        let event = self
            .own
            .next_change(SOON * 10)
            .await
            .expect("board.deleted");
        assert_eq!((event.event.as_str(), event.seq()), ("board.deleted", seq));
        assert_eq!(event.json()["board"]["id"], self.board.as_str());
        assert!(
            self.own.ends_within(SOON * 5).await,
            "the board's own stream ends"
        );
        let event = self
            .many
            .next_change(SOON * 10)
            .await
            .expect("board.deleted");
        assert_eq!(event.event, "board.deleted");
        app.add_note(&self.other, "still here").await;
        let event = self
            .many
            .next_change(SOON * 10)
            .await
            .expect("the other board's event");
        assert_eq!(event.event, "note.created");
        assert_eq!(event.json()["board_id"], self.other.as_str());
    }
}

#[tokio::test]
async fn a_board_deleted_right_after_an_event_only_its_reference_announced_still_says_deleted() {
    // A note over 8,000 bytes is announced by reference and read from the log; when its
    // board is deleted before the read, the log no longer has it. The stream must still
    // tell its client `board.deleted`, not end as `history_gone`.
    let app = spawn_app().await;
    let watch = DeletionWatch::open(&app).await;
    let board = watch.board.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Seq 1 is taken and announced by reference, but its log row is gone (as the delete
    // below would have taken it)...
    let sql = app.sql().await;
    sql.execute(
        "WITH next AS (UPDATE boards SET seq = seq + 1 WHERE id = $1::text::uuid RETURNING seq)
         SELECT pg_notify('boards_' || $1, json_build_object('seq', seq,
                'type', 'note.updated', 'board_id', $1, 'ref', true)::text)
         FROM next",
        &[&board],
    )
    .await
    .expect("announce an event the log does not have");
    // ...and then the board is deleted: seq 2.
    delete_board(&app, &board).await;
    watch.told_deleted(&app, 2).await;
}

#[tokio::test]
async fn a_board_deleted_while_nobody_listened_is_still_announced_deleted() {
    let app = spawn_app().await;
    let mut watch = DeletionWatch::open(&app).await;
    let board = watch.board.clone();
    app.add_note(&board, "one").await;
    assert_eq!(
        watch
            .own
            .next_change(SOON * 5)
            .await
            .expect("event 1")
            .seq(),
        1
    );
    let event = watch.many.next_change(SOON * 5).await.expect("event 1");
    assert_eq!(event.event, "note.created");

    // The board goes without a NOTIFY anyone hears (as when it is deleted while the
    // listener connections are down), then the listeners are lost and come back.
    let sql = app.sql().await;
    sql.execute("DELETE FROM boards WHERE id = $1::text::uuid", &[&board])
        .await
        .expect("delete unheard");
    assert!(terminate_listeners(&app, &sql).await >= 1);
    watch.told_deleted(&app, 2).await;
}

/// Terminates the app's LISTEN connections from the database side; how many there were.
async fn terminate_listeners(app: &TestApp, sql: &tokio_postgres::Client) -> i64 {
    sql.query_one(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = $1 AND application_name = 'boardcast listener'",
        &[&app.db_name],
    )
    .await
    .expect("terminate")
    .get(0)
}

#[tokio::test]
async fn a_stream_that_sent_commits_the_database_then_lost_starts_over() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut stream = opened(&app, &board).await;
    for text in ["one", "two", "three"] {
        app.add_note(&board, text).await;
    }
    for seq in 1..=3 {
        assert_eq!(
            stream.next_change(SOON * 5).await.expect("event").seq(),
            seq
        );
    }
    // The database comes back without commits 2 and 3 (as after a crash with
    // synchronous_commit=off, or a failover to an asynchronous standby), and the
    // listeners with it.
    let sql = app.sql().await;
    sql.batch_execute(&format!(
        "DELETE FROM notes WHERE board_id = '{board}' AND text <> 'one';
         DELETE FROM events WHERE board_id = '{board}' AND seq > 1;
         UPDATE boards SET seq = 1 WHERE id = '{board}';"
    ))
    .await
    .expect("lose commits 2 and 3");
    assert!(terminate_listeners(&app, &sql).await >= 1);

    // Seqs 2 and 3 will be given to other events: the stream ends rather than skip them...
    assert!(stream.ends_within(SOON * 10).await, "the stream ends");
    // ...and the client's resume, past the board's seq, gets the board as it is.
    let mut resumed = app.resume_stream(&board, 3).await;
    let snapshot = resumed.next_change(SOON * 5).await.expect("snapshot");
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.json()["seq"], 1);
    app.add_note(&board, "two again").await;
    let event = resumed.next_change(SOON * 5).await.expect("event 2");
    assert_eq!((event.seq(), event.event.as_str()), (2, "note.created"));
    assert_eq!(event.json()["note"]["text"], "two again");
}

/// The board's stream, its snapshot read.
async fn opened(app: &TestApp, board: &str) -> SseClient {
    let mut stream = app.open_stream(board).await;
    let first = stream.next_change(SOON * 5).await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    stream
}
