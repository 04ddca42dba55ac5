//! The OpenAPI document: served without a token, the same as `boardcast openapi`, and the
//! events a real stream sends fit the schemas it documents.

use std::time::Duration;

use boardcast::routes::openapi;
use serde_json::{Value, json};

use crate::auth::{spawn_auth_app, token};
use crate::helpers::{content_type, spawn_app};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_document_is_served_without_a_token_even_with_auth_on() {
    let app = spawn_auth_app().await;
    let response = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET openapi.json");
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    let served: Value = response.json().await.expect("JSON");
    let generated: Value = serde_json::from_str(&openapi::to_json()).expect("JSON");
    assert_eq!(
        served, generated,
        "the server serves what `boardcast openapi` prints"
    );
    // The rest of /api still needs one.
    let boards = app
        .http
        .get(app.url("/api/boards"))
        .send()
        .await
        .expect("GET boards");
    assert_eq!(boards.status(), 401);
    let with_token = app
        .http
        .get(app.url("/api/boards"))
        .bearer_auth(token(json!({ "sub": "ana", "exp": 4_102_444_800_u64 })))
        .send()
        .await
        .expect("GET boards");
    assert_eq!(with_token.status(), 200);
}

#[tokio::test]
async fn every_event_a_stream_sends_fits_its_documented_schema() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let mut first = app.open_stream(&board).await;
    // A second viewer makes presence.joined and presence.left on the first stream.
    let second = app.open_stream(&board).await;
    let note = app.add_note(&board, "hello").await;
    let note_id = note["id"].as_str().expect("note id");
    assert_eq!(
        app.patch_note(&board, note_id, json!({ "x": 99 }))
            .await
            .status(),
        200
    );
    let deleted = app
        .http
        .delete(app.url(&format!("/api/boards/{board}/notes/{note_id}")))
        .send()
        .await
        .expect("DELETE note");
    assert_eq!(deleted.status(), 204);
    let renamed = app
        .http
        .patch(app.url(&format!("/api/boards/{board}")))
        .json(&json!({ "title": "Renamed" }))
        .send()
        .await
        .expect("PATCH board");
    assert_eq!(renamed.status(), 200);
    drop(second);
    let mut seen = Vec::new();
    while let Some(event) = first.next(WAIT).await {
        openapi::stream::check(&event.event, &event.data).unwrap_or_else(|e| panic!("{e}"));
        seen.push(event.event.clone());
        if event.event == "presence.left" {
            break;
        }
    }
    let gone = app
        .http
        .delete(app.url(&format!("/api/boards/{board}")))
        .send()
        .await
        .expect("DELETE board");
    assert_eq!(gone.status(), 204);
    while let Some(event) = first.next(WAIT).await {
        openapi::stream::check(&event.event, &event.data).unwrap_or_else(|e| panic!("{e}"));
        seen.push(event.event.clone());
    }
    for name in [
        "snapshot",
        "presence",
        "presence.joined",
        "note.created",
        "note.updated",
        "note.deleted",
        "board.updated",
        "presence.left",
        "board.deleted",
    ] {
        assert!(seen.iter().any(|e| e == name), "no {name} in {seen:?}");
    }
}

#[test]
fn an_undocumented_event_is_named_with_what_to_add() {
    let err = openapi::stream::check("signal", "{}").expect_err("not documented");
    assert!(err.contains("src/routes/openapi/stream.rs"), "{err}");
    let err = openapi::stream::check("heartbeat", "{\"at\":\"x\",\"extra\":1}")
        .expect_err("extra member");
    assert!(err.contains("HeartbeatEvent"), "{err}");
}

#[tokio::test]
async fn a_crowds_count_event_fits_its_documented_schema() {
    let app = crate::helpers::spawn_app_with(|s| s.presence_list_limit = 1).await;
    let board = app.board_id().await;
    let mut first = app.open_stream(&board).await;
    let _second = app.open_stream(&board).await;
    let count = first
        .next_named("presence.count", WAIT)
        .await
        .expect("a crowd of two past a limit of one gets presence.count");
    openapi::stream::check(&count.event, &count.data).unwrap_or_else(|e| panic!("{e}"));
}
