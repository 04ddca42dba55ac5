//! Signals: live motion sent as a stream's viewer, delivered to every stream of the board on
//! every instance, coalesced latest-wins, rate limited, and never stored or replayed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{SECRET, claims, token};
use crate::helpers::{
    HEARTBEAT, SseClient, TestApp, create_database, spawn_app, spawn_app_with, spawn_on,
};

const SOON: Duration = Duration::from_secs(5);

/// Opens a named stream on `board` and returns it with its viewer id (the opening
/// presence event's `you`, or the viewer listed under this unique name; with a token the
/// name is the token's). A signal's frame has no `id:` line (see the unit tests of
/// `realtime::signals`); the SSE parser here repeats the last id seen, as EventSource does.
async fn viewer(
    app: &TestApp,
    board: &str,
    name: &str,
    token: Option<&str>,
) -> (SseClient, String) {
    let mut request = app
        .http
        .get(app.url(&format!("/api/boards/{board}/events?name={name}")))
        .timeout(Duration::from_secs(3600));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET events");
    assert_eq!(response.status(), 200, "the stream opens");
    let mut stream = SseClient::new(response);
    let presence = stream
        .next_named("presence", SOON)
        .await
        .expect("the opening presence")
        .json();
    let id = match presence["you"]["id"].as_str() {
        Some(id) => id.to_string(),
        None => presence["viewers"]
            .as_array()
            .expect("viewers")
            .iter()
            .rev()
            .find(|v| v["name"] == name)
            .and_then(|v| v["id"].as_str())
            .expect("this stream's viewer is listed")
            .to_string(),
    };
    (stream, id)
}

async fn send(app: &TestApp, board: &str, body: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(&format!("/api/boards/{board}/signals")))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST signals")
}

fn cursor(viewer: &str, x: i64) -> Value {
    json!({ "viewer": viewer, "kind": "cursor", "data": { "x": x, "y": 7 } })
}

async fn expect_error(response: reqwest::Response, status: u16, code: &str, what: &str) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}");
}

/// Every `signal` event that arrives within `wait`.
async fn signals_within(stream: &mut SseClient, wait: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match stream.next_named("signal", left).await {
            Some(event) => got.push(event.json()),
            None => break,
        }
    }
    got
}

#[tokio::test]
async fn a_signal_reaches_every_stream_of_the_board_on_every_instance_stamped_with_its_sender() {
    let db = create_database().await;
    let one = spawn_on(&db, |_| {}).await;
    let two = spawn_on(&db, |_| {}).await;
    let board = one.board_id().await;
    let other_board = one.board_id().await;
    let (mut ana, ana_id) = viewer(&one, &board, "Ana", None).await;
    let (mut bo, _) = viewer(&two, &board, "Bo", None).await;
    let (mut cy, _) = viewer(&two, &board, "Cy", None).await;
    let (mut elsewhere, _) = viewer(&one, &other_board, "Dee", None).await;

    // Sent to the instance that does not hold Ana's stream: it finds her in PostgreSQL.
    let response = send(&two, &board, &cursor(&ana_id, 120), None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(
        response.bytes().await.expect("body").is_empty(),
        "202 has no body"
    );

    for (name, stream) in [("Ana", &mut ana), ("Bo", &mut bo), ("Cy", &mut cy)] {
        let event = stream
            .next_named("signal", SOON)
            .await
            .unwrap_or_else(|| panic!("{name} gets the signal"));
        let signal = event.json();
        assert_eq!(signal["kind"], "cursor", "{name}");
        assert_eq!(
            signal["viewer"],
            json!({ "id": ana_id, "name": "Ana" }),
            "{name}"
        );
        assert_eq!(signal["data"], json!({ "x": 120, "y": 7 }), "{name}");
        let at = signal["at"].as_str().expect("at");
        chrono::DateTime::parse_from_rfc3339(at).expect("at is RFC 3339");
    }
    assert!(
        signals_within(&mut elsewhere, HEARTBEAT * 2)
            .await
            .is_empty(),
        "another board's stream gets nothing"
    );
    let received = one.stats.signals_received_total() + two.stats.signals_received_total();
    assert_eq!(received, 1);
    let delivered = one.stats.signals_delivered_total() + two.stats.signals_delivered_total();
    assert_eq!(delivered, 3, "one delivery per stream of the board");
}

#[tokio::test]
async fn the_last_position_wins_within_the_window_and_notes_do_not_coalesce_together() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_ana, ana_id) = viewer(&app, &board, "Ana", None).await;
    let (mut bo, _) = viewer(&app, &board, "Bo", None).await;

    for x in 0..20 {
        let response = send(&app, &board, &cursor(&ana_id, x), None).await;
        assert_eq!(response.status(), 202);
    }
    for note in ["a", "b"] {
        let moving = json!({ "viewer": ana_id, "kind": "note.moving",
                             "data": { "note_id": note, "x": 1, "y": 2, "width": 200, "height": 160 } });
        assert_eq!(send(&app, &board, &moving, None).await.status(), 202);
    }

    let got = signals_within(&mut bo, Duration::from_secs(2)).await;
    let xs: Vec<i64> = got
        .iter()
        .filter(|s| s["kind"] == "cursor")
        .map(|s| s["data"]["x"].as_i64().expect("x"))
        .collect();
    assert_eq!(xs.last(), Some(&19), "the last position arrives: {xs:?}");
    assert!(
        xs.len() < 20,
        "positions within a window were coalesced: {xs:?}"
    );
    assert!(
        xs.windows(2).all(|w| w[0] < w[1]),
        "never an older position after a newer: {xs:?}"
    );
    let notes: Vec<&str> = got
        .iter()
        .filter(|s| s["kind"] == "note.moving")
        .map(|s| s["data"]["note_id"].as_str().expect("note_id"))
        .collect();
    assert_eq!(
        notes,
        ["a", "b"],
        "one viewer dragging two notes: both arrive"
    );

    let metrics = crate::metrics::scrape(&app).await;
    let value = |name: &str, labels: &[(&str, &str)]| metrics.get(name, labels);
    assert_eq!(value("boardcast_signals_received_total", &[]), 22.0);
    let coalesced = value(
        "boardcast_signals_dropped_total",
        &[("reason", "coalesced")],
    );
    assert_eq!(coalesced as usize, 20 - xs.len());
    // Two streams, each got every signal that was not coalesced.
    assert_eq!(
        value("boardcast_signals_delivered_total", &[]) as usize,
        2 * (xs.len() + 2)
    );
}

#[tokio::test]
async fn only_the_callers_own_stream_may_be_sent_as() {
    let app = spawn_app_with(|s| s.jwt_secret = Some(SECRET.into())).await;
    let ana_token = token(claims("ana"));
    let bo_token = token(claims("bo"));
    let mut readonly = claims("ro");
    readonly["readonly"] = json!(true);
    let readonly = token(readonly);
    let created = app
        .http
        .post(app.url("/api/boards"))
        .bearer_auth(&ana_token)
        .json(&json!({ "title": "signals" }))
        .send()
        .await
        .expect("POST board");
    let board = created.json::<Value>().await.expect("board")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_ana, ana_id) = viewer(&app, &board, "ana", Some(&ana_token)).await;
    let (mut ro, ro_id) = viewer(&app, &board, "ro", Some(&readonly)).await;

    let response = send(&app, &board, &cursor(&ana_id, 1), Some(&bo_token)).await;
    expect_error(response, 403, "forbidden", "Bo sending as Ana").await;
    let response = send(&app, &board, &cursor(&ana_id, 1), None).await;
    expect_error(response, 401, "unauthorized", "no token").await;
    let response = send(&app, &board, &cursor(&ana_id, 1), Some(&ana_token)).await;
    assert_eq!(response.status(), 202, "Ana sending as herself");
    let response = send(&app, &board, &cursor(&ro_id, 2), Some(&readonly)).await;
    assert_eq!(response.status(), 202, "a read-only token may send signals");
    let names: Vec<Value> = signals_within(&mut ro, Duration::from_secs(1))
        .await
        .iter()
        .map(|s| s["viewer"]["name"].clone())
        .collect();
    assert!(names.contains(&json!("ana")), "{names:?}");
    assert!(names.contains(&json!("ro")), "{names:?}");

    let limited = token(json!({ "sub": "ana", "exp": crate::auth::now() + 3600,
                                "boards": [Uuid::new_v4()] }));
    let response = send(&app, &board, &cursor(&ana_id, 3), Some(&limited)).await;
    expect_error(response, 403, "forbidden", "a token without the board").await;
}

#[tokio::test]
async fn a_viewer_that_is_no_open_stream_of_the_board_is_refused() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let other = app.board_id().await;
    let (ana, ana_id) = viewer(&app, &board, "Ana", None).await;
    let (_dee, dee_id) = viewer(&app, &other, "Dee", None).await;

    let response = send(&app, &board, &cursor(&dee_id, 1), None).await;
    expect_error(response, 403, "forbidden", "a viewer of another board").await;
    let response = send(&app, &board, &cursor(&Uuid::new_v4().to_string(), 1), None).await;
    expect_error(response, 403, "forbidden", "a viewer that never was").await;

    drop(ana);
    let gone = crate::helpers::eventually(SOON, || async {
        send(&app, &board, &cursor(&ana_id, 1), None).await.status() == 403
    })
    .await;
    assert!(gone, "a closed stream's viewer may no longer send");
}

#[tokio::test]
async fn bad_paths_and_bodies_get_the_contracts_errors() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (_ana, ana_id) = viewer(&app, &board, "Ana", None).await;

    let missing = Uuid::new_v4().to_string();
    let response = send(&app, &missing, &cursor(&ana_id, 1), None).await;
    expect_error(response, 404, "not_found", "an unknown board").await;
    let response = send(&app, "not-a-uuid", &cursor(&ana_id, 1), None).await;
    expect_error(response, 400, "invalid_id", "a malformed board id").await;
    let response = app
        .http
        .get(app.url(&format!("/api/boards/{board}/signals")))
        .send()
        .await
        .expect("GET");
    expect_error(response, 405, "method_not_allowed", "GET").await;

    let long_kind = "k".repeat(33);
    let big = "x".repeat(1100);
    let cases = [
        (
            json!({ "viewer": ana_id, "kind": "cursor" }),
            400,
            "invalid_json",
            "no data",
        ),
        (
            json!({ "viewer": ana_id, "data": {} }),
            400,
            "invalid_json",
            "no kind",
        ),
        (
            json!({ "kind": "cursor", "data": {} }),
            400,
            "invalid_json",
            "no viewer",
        ),
        (
            json!({ "viewer": "ana", "kind": "cursor", "data": {} }),
            400,
            "invalid_json",
            "viewer not a uuid",
        ),
        (
            json!({ "viewer": ana_id, "kind": "cursor", "data": [1, 2] }),
            400,
            "invalid_json",
            "data an array",
        ),
        (
            json!({ "viewer": ana_id, "kind": 5, "data": {} }),
            400,
            "invalid_json",
            "kind a number",
        ),
        (
            json!({ "viewer": ana_id, "kind": "cursor", "data": {}, "extra": 1 }),
            400,
            "invalid_json",
            "unknown field",
        ),
        (
            json!({ "viewer": ana_id, "kind": "", "data": {} }),
            422,
            "validation_failed",
            "empty kind",
        ),
        (
            json!({ "viewer": ana_id, "kind": "Cursor!", "data": {} }),
            422,
            "validation_failed",
            "kind with capitals",
        ),
        (
            json!({ "viewer": ana_id, "kind": long_kind, "data": {} }),
            422,
            "validation_failed",
            "kind of 33",
        ),
        (
            json!({ "viewer": ana_id, "kind": "cursor", "data": { "s": big } }),
            422,
            "validation_failed",
            "data over 1 KiB",
        ),
    ];
    for (body, status, code, what) in cases {
        let response = send(&app, &board, &body, None).await;
        expect_error(response, status, code, what).await;
    }
    let response = app
        .http
        .post(app.url(&format!("/api/boards/{board}/signals")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    expect_error(response, 400, "invalid_json", "not JSON").await;
    let response = app
        .http
        .post(app.url(&format!("/api/boards/{board}/signals")))
        .header("content-type", "text/plain")
        .body(cursor(&ana_id, 1).to_string())
        .send()
        .await
        .expect("POST");
    expect_error(response, 415, "unsupported_media_type", "text/plain").await;
}

#[tokio::test]
async fn a_viewer_past_the_signal_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(|s| s.signal_rate_limit = 2).await;
    let board = app.board_id().await;
    let (_ana, ana_id) = viewer(&app, &board, "Ana", None).await;
    let (_bo, bo_id) = viewer(&app, &board, "Bo", None).await;

    let mut statuses = Vec::new();
    for x in 0..8 {
        statuses.push(send(&app, &board, &cursor(&ana_id, x), None).await);
    }
    let accepted = statuses.iter().filter(|r| r.status() == 202).count();
    assert!(
        (4..=5).contains(&accepted),
        "a burst of twice the rate passes: {accepted}"
    );
    let refused = statuses
        .into_iter()
        .find(|r| r.status() == 429)
        .expect("past the burst: 429");
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    expect_error(refused, 429, "rate_limited", "past the rate").await;

    let response = send(&app, &board, &cursor(&bo_id, 1), None).await;
    assert_eq!(
        response.status(),
        202,
        "another viewer has its own allowance"
    );
    // Signals do not use the write allowance, nor the other way round.
    app.add_note(&board, "still writable").await;
}

#[tokio::test]
async fn a_signal_never_appears_in_a_replay() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (mut ana, ana_id) = viewer(&app, &board, "Ana", None).await;
    let first = app.add_note(&board, "before").await;
    let before = ana.next_change(SOON).await.expect("note.created").seq();
    assert_eq!(
        send(&app, &board, &cursor(&ana_id, 5), None).await.status(),
        202
    );
    ana.next_named("signal", SOON)
        .await
        .expect("the signal live");
    app.patch_note(
        &board,
        first["id"].as_str().expect("id"),
        json!({ "x": 50 }),
    )
    .await;

    let mut resumed = app.resume_stream(&board, before - 1).await;
    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + HEARTBEAT * 3;
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        match resumed.next(left).await {
            Some(event) if event.event != "heartbeat" => names.push(event.event),
            Some(_) => {}
            None => break,
        }
    }
    assert!(names.contains(&"note.updated".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "signal"),
        "no signal replayed: {names:?}"
    );
}

#[tokio::test]
async fn change_events_keep_their_order_and_ids_under_a_signal_flood() {
    let app = spawn_app_with(|s| s.signal_rate_limit = 0).await;
    let board = app.board_id().await;
    let mut senders = Vec::new();
    for name in ["Ana", "Bo", "Cy"] {
        senders.push(viewer(&app, &board, name, None).await);
    }
    let (mut watcher, _) = viewer(&app, &board, "Watcher", None).await;
    let ids: Vec<String> = senders.iter().map(|(_, id)| id.clone()).collect();

    let flood = {
        let http = app.http.clone();
        let url = app.url(&format!("/api/boards/{board}/signals"));
        tokio::spawn(async move {
            let mut sent = 0u64;
            for round in 0..400 {
                for (i, id) in ids.iter().enumerate() {
                    let body = json!({ "viewer": id, "kind": "note.moving",
                                       "data": { "note_id": format!("n{}", round % 7), "x": round, "y": i } });
                    let response = http.post(&url).json(&body).send().await.expect("POST");
                    assert_eq!(response.status(), 202);
                    sent += 1;
                }
            }
            sent
        })
    };
    for i in 0..50 {
        app.add_note(&board, &format!("note {i}")).await;
    }
    let sent = flood.await.expect("the flood ends");

    let mut seqs = Vec::new();
    let mut signals = 0;
    while seqs.len() < 50 {
        let event = watcher
            .next(SOON)
            .await
            .unwrap_or_else(|| panic!("change {} arrives (got {seqs:?})", seqs.len() + 1));
        match event.event.as_str() {
            "note.created" => seqs.push(event.seq()),
            "signal" => signals += 1,
            _ => {}
        }
    }
    let expected: Vec<i64> = (1..=50).collect();
    assert_eq!(seqs, expected, "every change, in order, ids consecutive");
    assert!(signals > 0, "signals flowed too");
    assert_eq!(app.stats.signals_received_total(), sent);
}
