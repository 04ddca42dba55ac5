//! Many boards on one stream (`GET /api/events?boards=…`): the cursor, resuming each board
//! from its own seq, a snapshot for one board alone, a board deleted mid-stream, auth and
//! 404 per board, capacity counted once, and the errors for a bad list or cursor.

use std::{collections::HashMap, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};

use crate::auth::{SECRET, Via, admin, claims, create_board, send, token};
use crate::helpers::{SseClient, SseEvent, TestApp, spawn_app, spawn_app_with, spawn_on};

const WAIT: Duration = Duration::from_secs(10);

/// `GET /api/events?boards=…` with an optional `Last-Event-ID`.
async fn open_many_raw(app: &TestApp, boards: &[&str], cursor: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .get(app.url(&format!("/api/events?boards={}", boards.join(","))))
        .timeout(Duration::from_secs(3600));
    if let Some(cursor) = cursor {
        request = request.header("Last-Event-ID", cursor);
    }
    request.send().await.expect("GET /api/events")
}

pub(crate) async fn open_many(app: &TestApp, boards: &[&str], cursor: Option<&str>) -> SseClient {
    let response = open_many_raw(app, boards, cursor).await;
    assert_eq!(response.status(), 200, "the stream opens");
    SseClient::new(response)
}

/// The next `count` events that are not heartbeats.
async fn next_events(stream: &mut SseClient, count: usize) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while out.len() < count {
        let event = stream
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} events arrived: {out:?}", out.len()));
        if event.event != "heartbeat" {
            out.push(event);
        }
    }
    out
}

fn board_of(event: &SseEvent) -> String {
    event.json()["board_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{} names no board_id: {}", event.event, event.data))
        .to_string()
}

fn seq_of(event: &SseEvent) -> i64 {
    event.json()["seq"].as_i64().expect("a seq")
}

/// What the stream says so far: each board's last seq, as the cursor has it.
struct Cursor {
    boards: Vec<String>,
    slots: Vec<Option<i64>>,
}

impl Cursor {
    fn new(boards: &[&str]) -> Cursor {
        Cursor {
            boards: boards.iter().map(|b| b.to_string()).collect(),
            slots: vec![None; boards.len()],
        }
    }

    /// Takes a sequenced event: its seq must follow its board's last one (or open it), and
    /// its id must be the whole cursor after it.
    fn take(&mut self, event: &SseEvent) {
        let board = board_of(event);
        let slot = self
            .boards
            .iter()
            .position(|b| *b == board)
            .expect("a listed board");
        let seq = seq_of(event);
        if event.event != "snapshot"
            && let Some(last) = self.slots[slot]
        {
            assert_eq!(
                seq,
                last + 1,
                "board {slot}: consecutive, once each: {event:?}"
            );
        }
        self.slots[slot] = Some(seq);
        assert_eq!(
            event.id,
            self.text(),
            "the id is the whole cursor: {event:?}"
        );
    }

    fn text(&self) -> String {
        let slots: Vec<String> = self
            .slots
            .iter()
            .map(|s| s.map(|s| s.to_string()).unwrap_or_default())
            .collect();
        slots.join(",")
    }
}

#[tokio::test]
async fn three_boards_across_two_instances_arrive_once_each_with_the_cursor() {
    let one = spawn_app().await;
    let two = spawn_on(&one.db_name, |_| {}).await;
    let boards = [
        one.board_id().await,
        one.board_id().await,
        one.board_id().await,
    ];
    one.add_note(&boards[1], "before").await;
    let listed: Vec<&str> = boards.iter().map(String::as_str).collect();
    let mut stream = open_many(&one, &listed, None).await;
    let mut on_two = open_many(&two, &listed, None).await;

    // Each board's snapshot in the order listed, each filling its slot of the cursor.
    let opening = next_events(&mut stream, 6).await;
    let ids: Vec<&str> = opening[..3].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["0,,", "0,1,", "0,1,0"]);
    for (i, snapshot) in opening[..3].iter().enumerate() {
        assert_eq!(snapshot.event, "snapshot");
        assert_eq!(snapshot.json()["board"]["id"], boards[i].as_str());
    }
    // Then each board's presence, each with its own `you`, and no id.
    let mut yous = Vec::new();
    for (i, presence) in opening[3..].iter().enumerate() {
        assert_eq!(presence.event, "presence");
        // No id of its own: an SSE client keeps the last one.
        assert_eq!(presence.id, "0,1,0", "presence carries no id");
        assert_eq!(board_of(presence), boards[i]);
        yous.push(presence.json()["you"]["id"].clone());
    }
    assert!(
        yous[0] != yous[1] && yous[1] != yous[2],
        "a viewer per board: {yous:?}"
    );
    next_events(&mut on_two, 6).await;

    // Writes on both instances, interleaved across the boards.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for round in 0..4 {
        for (i, board) in boards.iter().enumerate() {
            let writer = if (round + i) % 2 == 0 { &one } else { &two };
            writer.add_note(board, &format!("r{round} b{i}")).await;
            *expected.entry(board.clone()).or_default() += 1;
        }
    }
    let total: usize = expected.values().sum();
    for client in [&mut stream, &mut on_two] {
        let mut cursor = Cursor::new(&listed);
        cursor.slots = vec![Some(0), Some(1), Some(0)];
        let mut got: HashMap<String, usize> = HashMap::new();
        while got.values().sum::<usize>() < total {
            let event = client
                .next_change(WAIT)
                .await
                .expect("every change arrives");
            assert_eq!(event.event, "note.created", "{event:?}");
            cursor.take(&event);
            *got.entry(board_of(&event)).or_default() += 1;
        }
        assert_eq!(got, expected, "every change of each board, once");
        assert_eq!(cursor.text(), "4,5,4");
        // Nothing more (no duplicate) within a moment.
        assert!(
            client
                .next_change(Duration::from_millis(500))
                .await
                .is_none()
        );
    }
}

#[tokio::test]
async fn resuming_with_the_cursor_replays_each_board_from_its_own_seq() {
    let app = spawn_app().await;
    let boards = [
        app.board_id().await,
        app.board_id().await,
        app.board_id().await,
    ];
    let listed: Vec<&str> = boards.iter().map(String::as_str).collect();
    let mut stream = open_many(&app, &listed, None).await;
    next_events(&mut stream, 6).await;
    app.add_note(&boards[0], "a1").await;
    app.add_note(&boards[2], "c1").await;
    let mut last = String::new();
    for _ in 0..2 {
        last = stream.next_change(WAIT).await.expect("a change").id;
    }
    assert_eq!(last, "1,0,1");
    drop(stream);

    // Missed meanwhile: two on the first board, one on the second, none on the third.
    app.add_note(&boards[0], "a2").await;
    app.add_note(&boards[1], "b1").await;
    app.add_note(&boards[0], "a3").await;

    // By the header, then by the query parameter (after one more change on the third).
    for via_query in [false, true] {
        let mut resumed = if via_query {
            let response = app
                .http
                .get(app.url(&format!(
                    "/api/events?boards={}&last_event_id={last}",
                    listed.join(",")
                )))
                .timeout(Duration::from_secs(3600))
                .send()
                .await
                .expect("GET");
            assert_eq!(response.status(), 200);
            SseClient::new(response)
        } else {
            open_many(&app, &listed, Some(&last)).await
        };
        let mut expected = vec![
            ("note.created", "2,0,1".to_string(), 2),
            ("note.created", "3,0,1".to_string(), 3),
            ("note.created", "3,1,1".to_string(), 1),
        ];
        if via_query {
            expected.push(("note.created", "3,1,2".to_string(), 2));
        }
        // Each board's replay in the order listed, then each board's presence.
        let events = next_events(&mut resumed, expected.len() + 3).await;
        let replayed: Vec<(&str, String, i64)> = events[..expected.len()]
            .iter()
            .map(|e| (e.event.as_str(), e.id.clone(), seq_of(e)))
            .collect();
        assert_eq!(replayed, expected, "no snapshot, nothing twice");
        assert_eq!(board_of(&events[2]), boards[1]);
        for (i, presence) in events[expected.len()..].iter().enumerate() {
            assert_eq!(presence.event, "presence");
            assert_eq!(board_of(presence), boards[i]);
        }
        // Then live, from the resumed cursor.
        app.add_note(&boards[2], "live").await;
        let live = resumed.next_change(WAIT).await.expect("live");
        let third = if via_query { 3 } else { 2 };
        assert_eq!(live.id, format!("3,1,{third}"));
    }
}

#[tokio::test]
async fn a_board_past_its_retention_gets_a_snapshot_alone() {
    let app = spawn_app_with(|s| s.event_retention = 64).await;
    let old = app.board_id().await;
    let kept = app.board_id().await;
    for i in 0..130 {
        app.add_note(&old, &format!("n{i}")).await;
    }
    app.add_note(&kept, "k1").await;
    app.add_note(&kept, "k2").await;
    // Events up to 66 of the first board were pruned (retention 64, pruned at seq 128).
    let mut stream = open_many(&app, &[&old, &kept], Some("1,1")).await;
    let events = next_events(&mut stream, 4).await;
    assert_eq!(
        (events[0].event.as_str(), events[0].id.as_str()),
        ("snapshot", "130,1"),
        "the pruned board gets a snapshot"
    );
    assert_eq!(
        events[0].json()["notes"].as_array().map(Vec::len),
        Some(130)
    );
    assert_eq!(
        (
            events[1].event.as_str(),
            events[1].id.as_str(),
            seq_of(&events[1])
        ),
        ("note.created", "130,2", 2),
        "the other board replays"
    );
    assert_eq!(board_of(&events[1]), kept);

    // An empty slot means a snapshot of that board alone; a cursor with another number of
    // slots, a snapshot of every board.
    let mut stream = open_many(&app, &[&old, &kept], Some(",1")).await;
    let events = next_events(&mut stream, 2).await;
    assert_eq!(
        (events[0].event.as_str(), events[0].id.as_str()),
        ("snapshot", "130,1")
    );
    assert_eq!(
        (events[1].event.as_str(), events[1].id.as_str()),
        ("note.created", "130,2")
    );
    let mut stream = open_many(&app, &[&old, &kept], Some("129")).await;
    let events = next_events(&mut stream, 2).await;
    let ids: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str()))
        .collect();
    assert_eq!(ids, [("snapshot", "130,"), ("snapshot", "130,2")]);
}

pub(crate) async fn delete_board(app: &TestApp, board: &str) {
    let deleted = app
        .http
        .delete(app.url(&format!("/api/boards/{board}")))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn a_board_deleted_mid_stream_keeps_its_seq_and_the_stream_goes_on() {
    let app = spawn_app().await;
    let gone = app.board_id().await;
    let stays = app.board_id().await;
    let mut stream = open_many(&app, &[&gone, &stays], None).await;
    next_events(&mut stream, 4).await;
    app.add_note(&gone, "soon gone").await;
    assert_eq!(stream.next_change(WAIT).await.expect("note").id, "1,0");

    delete_board(&app, &gone).await;
    let event = stream.next_change(WAIT).await.expect("board.deleted");
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("board.deleted", "2,0")
    );
    assert_eq!(board_of(&event), gone);

    app.add_note(&stays, "still here").await;
    let event = stream.next_change(WAIT).await.expect("the stream goes on");
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("note.created", "2,1")
    );
    assert_eq!(app.stats.open_streams(), 1);

    // Its last board deleted, the stream ends.
    delete_board(&app, &stays).await;
    let event = stream.next_change(WAIT).await.expect("board.deleted");
    assert_eq!(
        (event.event.as_str(), event.id.as_str()),
        ("board.deleted", "2,2")
    );
    assert!(
        stream.ends_within(WAIT).await,
        "no board left: the stream ends"
    );
}

#[tokio::test]
async fn a_missing_board_is_404_and_no_viewer_is_left_behind() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let missing = "6f1c2a9e-3b1d-4c55-9a3e-0d2f4b7c8e91";
    let response = open_many_raw(&app, &[&board, missing], None).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(missing)),
        "the message names the board: {body}"
    );
    let presence = app.get_json(&format!("/api/boards/{board}/presence")).await;
    assert_eq!(presence["viewers"], json!([]), "nobody joined");
    assert_eq!(app.stats.open_streams(), 0);

    let head = app
        .http
        .head(app.url(&format!("/api/events?boards={board},{missing}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 404);
    let head = app
        .http
        .head(app.url(&format!("/api/events?boards={board}")))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(app.stats.opened_total(), 0, "HEAD opens nothing");
}

#[tokio::test]
async fn with_auth_on_the_token_must_grant_every_board() {
    let app = spawn_app_with(|s| s.jwt_secret = Some(SECRET.into())).await;
    let mine = create_board(&app, &admin(), "Mine").await;
    let theirs = create_board(&app, &admin(), "Theirs").await;
    let limited = token(json!({
        "sub": "ana", "exp": crate::auth::now() + 3600, "boards": [mine],
    }));
    let both = format!("/api/events?boards={mine},{theirs}");
    let response = send(&app, Method::GET, &both, None, Via::Query(&limited)).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&theirs)),
        "the message names the board: {body}"
    );
    let response = send(&app, Method::GET, &both, None, Via::Nothing).await;
    assert_eq!(response.status(), 401);

    let only_mine = format!("/api/events?boards={mine}");
    let response = send(&app, Method::GET, &only_mine, None, Via::Query(&limited)).await;
    assert_eq!(response.status(), 200);
    let everyone = token(claims("bob"));
    let response = send(&app, Method::GET, &both, None, Via::Header(&everyone)).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_stream_of_many_boards_counts_once_against_the_caps() {
    let app = spawn_app_with(|s| {
        s.max_streams = Some(2);
        s.max_streams_per_client = 2;
    })
    .await;
    let boards = [
        app.board_id().await,
        app.board_id().await,
        app.board_id().await,
    ];
    let listed: Vec<&str> = boards.iter().map(String::as_str).collect();
    let sql = app.sql().await;
    let before = app.listening_backends(&sql).await;
    let mut many = open_many(&app, &listed, None).await;
    next_events(&mut many, 6).await;
    assert_eq!(app.stats.open_streams(), 1, "three boards, one stream");
    let listening = app.listening_backends(&sql).await;
    match crate::helpers::listener_mode() {
        // Per-stream mode: one dedicated connection LISTENs on all three channels.
        boardcast::config::ListenerMode::PerStream => assert_eq!((before, listening), (0, 1)),
        boardcast::config::ListenerMode::Shared => assert_eq!((before, listening), (1, 1)),
    }
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("boardcast_streams_open 1"), "{metrics}");

    let _second = open_many(&app, &listed[..1], None).await;
    let refused = open_many_raw(&app, &listed, None).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    drop(many);
    assert!(
        crate::helpers::eventually(WAIT, || async {
            open_many_raw(&app, &listed, None).await.status() == 200
        })
        .await,
        "the slot frees up"
    );
}

#[tokio::test]
async fn bad_lists_and_cursors_get_clear_errors() {
    let app = spawn_app_with(|s| s.max_boards_per_stream = 3).await;
    let a = app.board_id().await;
    let b = app.board_id().await;
    let many: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let cases: Vec<(String, Option<&str>, u16, &str, &str)> = vec![
        (
            "/api/events".into(),
            None,
            422,
            "validation_failed",
            "`boards`",
        ),
        (
            "/api/events?boards=".into(),
            None,
            422,
            "validation_failed",
            "`boards`",
        ),
        (
            format!("/api/events?boards={a},nope"),
            None,
            400,
            "invalid_id",
            "nope",
        ),
        (
            format!("/api/events?boards={a},"),
            None,
            400,
            "invalid_id",
            "`boards`",
        ),
        (
            format!("/api/events?boards={a},{b},{a}"),
            None,
            422,
            "validation_failed",
            "twice",
        ),
        (
            format!("/api/events?boards={}", many.join(",")),
            None,
            422,
            "validation_failed",
            "1 to 3",
        ),
        (
            format!("/api/events?boards={a},{b}"),
            Some("x,1"),
            422,
            "validation_failed",
            "cursor",
        ),
        (
            format!("/api/events?boards={a},{b}"),
            Some("1,-1"),
            422,
            "validation_failed",
            "cursor",
        ),
        (
            format!("/api/events?boards={a},{b}&last_event_id=1;2"),
            None,
            422,
            "validation_failed",
            "cursor",
        ),
    ];
    for (path, cursor, status, code, says) in cases {
        let mut request = app.http.get(app.url(&path));
        if let Some(cursor) = cursor {
            request = request.header("Last-Event-ID", cursor);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), status, "{path} {cursor:?}");
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], code, "{path} {cursor:?}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{path} {cursor:?}: {message}");
    }
    assert_eq!(app.stats.opened_total(), 0);
}
