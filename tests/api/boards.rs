//! Boards: create, list and page, read with notes, rename, delete.

use std::collections::HashSet;

use chrono::DateTime;
use reqwest::header;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, content_type, spawn_app};

/// `GET path` answered 200; its JSON body.
async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.http.get(app.url(path)).send().await.expect("GET");
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("a JSON body")
}

/// Asserts `board` has exactly the contract's members, with RFC 3339 times.
fn assert_board_shape(board: &Value) {
    let mut keys: Vec<&str> = board
        .as_object()
        .expect("a board is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "seq", "title", "updated_at"],
        "{board}"
    );
    Uuid::parse_str(board["id"].as_str().expect("id is a string")).expect("id is a UUID");
    for time in ["created_at", "updated_at"] {
        let text = board[time].as_str().expect("times are strings");
        DateTime::parse_from_rfc3339(text).expect("times are RFC 3339");
    }
}

fn ids(boards: &Value) -> Vec<String> {
    boards
        .as_array()
        .expect("a list of boards")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn creating_a_board_answers_201_with_location_and_the_board() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/api/boards"))
        .json(&json!({ "title": "Sprint 12 retro" }))
        .send()
        .await
        .expect("POST /api/boards");
    assert_eq!(response.status(), 201);
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_string();
    let content_type = content_type(&response);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let board: Value = response.json().await.expect("board JSON");
    assert_board_shape(&board);
    assert_eq!(board["title"], "Sprint 12 retro");
    assert_eq!(board["seq"], 0);
    let id = board["id"].as_str().expect("id");
    assert_eq!(location, format!("/api/boards/{id}"));

    // The Location leads to the board.
    let fetched = get_json(&app, &location).await;
    assert_eq!(fetched["id"], id);
    assert_eq!(fetched["title"], "Sprint 12 retro");
}

#[tokio::test]
async fn listing_boards_answers_newest_first() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for title in ["first", "second", "third"] {
        created.push(
            app.create_board(title).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let page = get_json(&app, "/api/boards").await;
    for board in page["boards"].as_array().expect("boards") {
        assert_board_shape(board);
    }
    created.reverse();
    assert_eq!(ids(&page["boards"]), created);
    assert_eq!(page["next"], Value::Null, "one page holds them all");
}

#[tokio::test]
async fn paging_with_a_cursor_visits_every_board_once_in_order() {
    let app = spawn_app().await;
    for n in 0..7 {
        app.create_board(&format!("board {n}")).await;
    }
    let everything = ids(&get_json(&app, "/api/boards?limit=200").await["boards"]);
    assert_eq!(everything.len(), 7);

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/api/boards?limit=3".to_string();
    loop {
        let page = get_json(&app, &path).await;
        let page_ids = ids(&page["boards"]);
        sizes.push(page_ids.len());
        seen.extend(page_ids);
        match page["next"].as_str() {
            Some(cursor) => path = format!("/api/boards?limit=3&cursor={cursor}"),
            None => break,
        }
        assert!(sizes.len() <= 3, "paging ends");
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(
        seen, everything,
        "pages continue without duplicates or gaps"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    // A board created while paging appears on the first page, not in the middle.
    let page = get_json(&app, "/api/boards?limit=3").await;
    let cursor = page["next"].as_str().expect("a next cursor").to_string();
    let newest = app.create_board("newest").await;
    let second = get_json(&app, &format!("/api/boards?limit=3&cursor={cursor}")).await;
    assert_eq!(ids(&second["boards"]), everything[3..6]);
    assert_eq!(
        ids(&get_json(&app, "/api/boards?limit=1").await["boards"]),
        [newest["id"].as_str().expect("id")]
    );
}

#[tokio::test]
async fn getting_a_board_answers_it_with_its_notes_and_seq() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let empty = get_json(&app, &format!("/api/boards/{board}")).await;
    assert_eq!(empty["notes"], json!([]));
    assert_eq!(empty["seq"], 0);

    let first = app.add_note(&board, "first").await;
    let second = app.add_note(&board, "second").await;
    let full = get_json(&app, &format!("/api/boards/{board}")).await;
    assert_eq!(full["id"], board);
    assert_eq!(full["title"], "Test board");
    assert_eq!(full["seq"], 2, "one event per note");
    assert_eq!(full["notes"], json!([first, second]));
    let mut without_notes = full.clone();
    without_notes
        .as_object_mut()
        .expect("an object")
        .remove("notes");
    assert_board_shape(&without_notes);
}

#[tokio::test]
async fn renaming_a_board_answers_200_and_advances_seq_by_one() {
    let app = spawn_app().await;
    let created = app.create_board("Old name").await;
    let id = created["id"].as_str().expect("id");
    for (title, seq) in [("New name", 1), ("  Newer name  ", 2)] {
        let response = app
            .http
            .patch(app.url(&format!("/api/boards/{id}")))
            .json(&json!({ "title": title }))
            .send()
            .await
            .expect("PATCH board");
        assert_eq!(response.status(), 200);
        let board: Value = response.json().await.expect("board JSON");
        assert_board_shape(&board);
        assert_eq!(board["title"], title.trim());
        assert_eq!(board["seq"], seq);
        assert_eq!(board["created_at"], created["created_at"]);
        assert_ne!(board["updated_at"], created["updated_at"]);
    }
    let fetched = get_json(&app, &format!("/api/boards/{id}")).await;
    assert_eq!(fetched["title"], "Newer name");
    assert_eq!(fetched["seq"], 2);
}

#[tokio::test]
async fn deleting_a_board_answers_204_and_takes_its_notes_and_events() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let kept = app.board_id().await;
    for text in ["one", "two"] {
        app.add_note(&board, text).await;
        app.add_note(&kept, text).await;
    }
    let response = app
        .http
        .delete(app.url(&format!("/api/boards/{board}")))
        .send()
        .await
        .expect("DELETE board");
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.expect("body").is_empty());

    let response = app
        .http
        .get(app.url(&format!("/api/boards/{board}")))
        .send()
        .await
        .expect("GET board");
    assert_eq!(response.status(), 404);
    assert!(!ids(&get_json(&app, "/api/boards").await["boards"]).contains(&board));

    let sql = app.sql().await;
    let count = |table: &'static str, id: &str| {
        let sql = &sql;
        let id: Uuid = id.parse().expect("uuid");
        async move {
            sql.query_one(
                &format!("SELECT count(*) FROM {table} WHERE board_id = $1"),
                &[&id],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
        }
    };
    assert_eq!(count("notes", &board).await, 0, "its notes are gone");
    assert_eq!(count("events", &board).await, 0, "its events are gone");
    assert_eq!(count("notes", &kept).await, 2, "other boards keep theirs");
    assert_eq!(count("events", &kept).await, 2);
}
