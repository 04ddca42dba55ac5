//! Sessions (`?session=`): a viewer that reconnects with its session within two heartbeat
//! intervals keeps its id and nobody hears it leave and rejoin; later, it leaves and a new
//! viewer joins. For a board's stream and a many-board stream, on one instance or another.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::auth::{SECRET, Via, admin, claims, create_board, send, token};
use crate::helpers::{HEARTBEAT, SseClient, TestApp, spawn_app, spawn_app_with, spawn_on};

const WAIT: Duration = Duration::from_secs(10);

/// Opens `path` (a stream) and returns it with the `you.id` of its opening `presence`
/// events, in order.
async fn open(app: &TestApp, path: &str, presences: usize) -> (SseClient, Vec<String>) {
    let response = app
        .http
        .get(app.url(path))
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("GET stream");
    assert_eq!(response.status(), 200, "{path}");
    let mut stream = SseClient::new(response);
    let mut yous = Vec::new();
    while yous.len() < presences {
        let presence = stream.next_named("presence", WAIT).await.expect("presence");
        yous.push(
            presence.json()["you"]["id"]
                .as_str()
                .expect("you")
                .to_string(),
        );
    }
    (stream, yous)
}

/// The presence announcements an observer gets within `wait`: (event, viewer id).
async fn announcements(observer: &mut SseClient, wait: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
        let Some(event) = observer.next(left).await else {
            break;
        };
        if event.event == "presence.joined" || event.event == "presence.left" {
            let viewer = event.json()["viewer"]["id"]
                .as_str()
                .expect("id")
                .to_string();
            out.push((event.event, viewer));
        }
    }
    out
}

#[tokio::test]
async fn a_viewer_back_within_two_intervals_keeps_its_id_and_nothing_is_announced() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (mut observer, _) = open(&app, &format!("/api/boards/{board}/events"), 1).await;
    let path = format!("/api/boards/{board}/events?session=tab-1_A&name=Ana");
    let (first, yous) = open(&app, &path, 1).await;
    assert_eq!(
        announcements(&mut observer, HEARTBEAT).await,
        [("presence.joined".to_string(), yous[0].clone())]
    );

    drop(first);
    let (_again, again) = open(&app, &path, 1).await;
    assert_eq!(again, yous, "the same viewer id");
    assert_eq!(
        announcements(&mut observer, HEARTBEAT * 4).await,
        [],
        "no presence.left / presence.joined for the gap"
    );
    let listed = app.get_json(&format!("/api/boards/{board}/presence")).await;
    assert_eq!(listed["viewers"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_viewer_back_after_two_intervals_leaves_then_joins_as_new() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (mut observer, _) = open(&app, &format!("/api/boards/{board}/events"), 1).await;
    let path = format!("/api/boards/{board}/events?session=s1");
    let (first, yous) = open(&app, &path, 1).await;
    announcements(&mut observer, HEARTBEAT / 2).await;

    drop(first);
    // Kept for two intervals, then gone (announced within another half interval).
    assert_eq!(
        announcements(&mut observer, HEARTBEAT * 3 / 2).await,
        [],
        "held, not announced, within the window"
    );
    tokio::time::sleep(HEARTBEAT).await;
    let (_again, again) = open(&app, &path, 1).await;
    assert_ne!(again, yous, "a new viewer");
    let heard = announcements(&mut observer, HEARTBEAT * 2).await;
    assert_eq!(
        heard,
        [
            ("presence.left".to_string(), yous[0].clone()),
            ("presence.joined".to_string(), again[0].clone()),
        ],
        "left, then joined"
    );
}

#[tokio::test]
async fn a_session_back_under_another_name_leaves_and_joins_at_once() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (mut observer, _) = open(&app, &format!("/api/boards/{board}/events"), 1).await;
    let (first, yous) = open(
        &app,
        &format!("/api/boards/{board}/events?session=s&name=Guest"),
        1,
    )
    .await;
    announcements(&mut observer, HEARTBEAT / 2).await;
    drop(first);
    tokio::time::sleep(HEARTBEAT / 2).await;
    let (_again, again) = open(
        &app,
        &format!("/api/boards/{board}/events?session=s&name=Ana"),
        1,
    )
    .await;
    assert_ne!(again, yous);
    assert_eq!(
        announcements(&mut observer, HEARTBEAT).await,
        [
            ("presence.left".to_string(), yous[0].clone()),
            ("presence.joined".to_string(), again[0].clone()),
        ],
        "the old name leaves at once, the new one joins"
    );
}

#[tokio::test]
async fn a_session_moves_to_another_instance_and_to_a_many_board_stream_without_flicker() {
    let one = spawn_app().await;
    let two = spawn_on(&one.db_name, |_| {}).await;
    let a = one.board_id().await;
    let b = one.board_id().await;
    let (mut watch_a, _) = open(&one, &format!("/api/boards/{a}/events"), 1).await;
    let (mut watch_b, _) = open(&two, &format!("/api/boards/{b}/events"), 1).await;
    // Two boards' own streams of one page (one session)...
    let (on_a, you_a) = open(&one, &format!("/api/boards/{a}/events?session=page"), 1).await;
    let (on_b, you_b) = open(&one, &format!("/api/boards/{b}/events?session=page"), 1).await;
    announcements(&mut watch_a, HEARTBEAT / 2).await;
    announcements(&mut watch_b, HEARTBEAT / 2).await;

    // ...move to one stream of both boards, on the other instance.
    drop(on_a);
    drop(on_b);
    let (_many, yous) = open(&two, &format!("/api/events?boards={a},{b}&session=page"), 2).await;
    assert_eq!(
        yous,
        [you_a[0].clone(), you_b[0].clone()],
        "each board keeps its viewer"
    );
    assert_eq!(announcements(&mut watch_a, HEARTBEAT * 4).await, []);
    assert_eq!(announcements(&mut watch_b, HEARTBEAT).await, []);
}

#[tokio::test]
async fn with_auth_on_only_the_same_subject_takes_a_session_over() {
    let app = spawn_app_with(|s| s.jwt_secret = Some(SECRET.into())).await;
    let board = create_board(&app, &admin(), "Plans").await;
    let path = format!("/api/boards/{board}/events?session=s");
    let (ana, bob) = (token(claims("ana")), token(claims("bob")));
    let response = send(&app, Method::GET, &path, None, Via::Header(&ana)).await;
    assert_eq!(response.status(), 200);
    let mut first = SseClient::new(response);
    let you = first
        .next_named("presence", WAIT)
        .await
        .expect("presence")
        .json()["you"]["id"]
        .clone();
    drop(first);
    let response = send(&app, Method::GET, &path, None, Via::Header(&bob)).await;
    let mut other = SseClient::new(response);
    let bobs = other
        .next_named("presence", WAIT)
        .await
        .expect("presence")
        .json()["you"]["id"]
        .clone();
    assert_ne!(bobs, you, "another subject gets a viewer of its own");
    let response = send(&app, Method::GET, &path, None, Via::Query(&ana)).await;
    let mut again = SseClient::new(response);
    let anas = again
        .next_named("presence", WAIT)
        .await
        .expect("presence")
        .json()["you"]["id"]
        .clone();
    assert_eq!(anas, you, "the same subject takes its viewer back");
}

#[tokio::test]
async fn a_bad_session_is_422() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let long = "x".repeat(65);
    for session in ["", "a b", "é", "a.b", long.as_str()] {
        for path in [
            format!("/api/boards/{board}/events?session={session}"),
            format!("/api/events?boards={board}&session={session}"),
        ] {
            let response = app.http.get(app.url(&path)).send().await.expect("answered");
            assert_eq!(response.status(), 422, "{path}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "validation_failed");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("`session`")),
                "{body}"
            );
        }
    }
    assert_eq!(app.stats.opened_total(), 0);
}
