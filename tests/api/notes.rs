//! Notes: create with defaults and author, list, partial update, `ETag` / `If-Match`,
//! delete, and text that comes back exactly as it was sent.

use reqwest::header;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::errors::expect_error;
use crate::helpers::{TestApp, spawn_app};

/// The `ETag` header of a response, if any.
fn etag(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A PATCH or DELETE of one note with an optional `If-Match`.
async fn write_note(
    app: &TestApp,
    method: reqwest::Method,
    board: &str,
    note: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.http.request(
        method,
        app.url(&format!("/api/boards/{board}/notes/{note}")),
    );
    if let Some(tag) = if_match {
        request = request.header(header::IF_MATCH, tag);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("note write is answered")
}

async fn notes_of(app: &TestApp, board: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url(&format!("/api/boards/{board}/notes")))
        .send()
        .await
        .expect("GET notes");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("notes JSON");
    body["notes"].as_array().expect("a `notes` list").clone()
}

fn id_of(note: &Value) -> &str {
    note["id"].as_str().expect("note id")
}

#[tokio::test]
async fn creating_a_note_answers_201_with_etag_and_defaults() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let response = app
        .http
        .post(app.url(&format!("/api/boards/{board}/notes")))
        .json(&json!({ "text": "Ship it", "x": 10.5, "y": -20 }))
        .send()
        .await
        .expect("POST note");
    assert_eq!(response.status(), 201);
    assert_eq!(etag(&response).as_deref(), Some("\"1\""));
    let note: Value = response.json().await.expect("note JSON");
    let mut keys: Vec<&str> = note
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "author",
            "board_id",
            "color",
            "created_at",
            "height",
            "id",
            "text",
            "updated_at",
            "version",
            "width",
            "x",
            "y"
        ]
    );
    Uuid::parse_str(id_of(&note)).expect("id is a UUID");
    assert_eq!(note["board_id"], board);
    assert_eq!(note["text"], "Ship it");
    assert_eq!(
        (note["x"].as_f64(), note["y"].as_f64()),
        (Some(10.5), Some(-20.0))
    );
    assert_eq!(note["color"], "#fde68a");
    assert_eq!(note["width"].as_f64(), Some(200.0));
    assert_eq!(note["height"].as_f64(), Some(160.0));
    assert_eq!(note["version"], 1);
    assert_eq!(note["author"], Value::Null, "no X-Display-Name, no author");
}

#[tokio::test]
async fn a_note_keeps_the_color_and_size_it_was_given() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app
        .create_note(
            &board,
            json!({ "text": "", "x": 1e6, "y": -1e6, "color": "#0a0B0c", "width": 20, "height": 2000 }),
        )
        .await;
    assert_eq!(note["text"], "");
    assert_eq!(note["color"], "#0a0b0c");
    assert_eq!(
        (note["width"].as_f64(), note["height"].as_f64()),
        (Some(20.0), Some(2000.0))
    );
    assert_eq!(
        (note["x"].as_f64(), note["y"].as_f64()),
        (Some(1e6), Some(-1e6))
    );
}

#[tokio::test]
async fn the_author_is_the_percent_decoded_display_name() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    for (header, author) in [
        ("Ana", "Ana"),
        ("Ana%20%C3%A9", "Ana é"),
        ("%E2%9C%8F%EF%B8%8F Bo", "✏️ Bo"),
    ] {
        let response = app
            .http
            .post(app.url(&format!("/api/boards/{board}/notes")))
            .header("X-Display-Name", header)
            .json(&json!({ "text": "signed", "x": 0, "y": 0 }))
            .send()
            .await
            .expect("POST note");
        assert_eq!(response.status(), 201);
        let note: Value = response.json().await.expect("note JSON");
        assert_eq!(note["author"], author, "X-Display-Name: {header}");
    }
    let authors: Vec<Value> = notes_of(&app, &board)
        .await
        .iter()
        .map(|n| n["author"].clone())
        .collect();
    assert_eq!(authors, [json!("Ana"), json!("Ana é"), json!("✏️ Bo")]);
}

#[tokio::test]
async fn listing_notes_answers_every_note_of_the_board_oldest_first() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let other = app.board_id().await;
    assert!(notes_of(&app, &board).await.is_empty());
    let first = app.add_note(&board, "first").await;
    app.add_note(&other, "elsewhere").await;
    let second = app.add_note(&board, "second").await;
    assert_eq!(notes_of(&app, &board).await, [first, second]);
}

#[tokio::test]
async fn patching_a_subset_changes_only_it_and_bumps_version_and_etag() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "draft").await;
    let response = app
        .patch_note(
            &board,
            id_of(&note),
            json!({ "x": 300, "color": "#FFFFFF" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response).as_deref(), Some("\"2\""));
    let patched: Value = response.json().await.expect("note JSON");
    assert_eq!(patched["version"], 2);
    assert_eq!(patched["x"].as_f64(), Some(300.0));
    assert_eq!(patched["color"], "#ffffff");
    for unchanged in [
        "id",
        "board_id",
        "text",
        "y",
        "width",
        "height",
        "author",
        "created_at",
    ] {
        assert_eq!(patched[unchanged], note[unchanged], "{unchanged} is kept");
    }
    assert_ne!(patched["updated_at"], note["updated_at"]);

    let response = app
        .patch_note(&board, id_of(&note), json!({ "text": "final" }))
        .await;
    assert_eq!(etag(&response).as_deref(), Some("\"3\""));
    assert_eq!(notes_of(&app, &board).await[0]["text"], "final");
}

#[tokio::test]
async fn if_match_with_the_current_version_or_a_star_is_accepted() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "v1").await;
    let id = id_of(&note);
    // A weak tag is skipped (If-Match compares strongly, RFC 9110 §13.1.1); a list matches
    // if any of its strong tags does.
    for (tag, version) in [
        ("\"1\"", 2),
        ("W/\"2\", \"2\"", 3),
        ("*", 4),
        ("\"0\", \"4\"", 5),
    ] {
        let response = write_note(
            &app,
            reqwest::Method::PATCH,
            &board,
            id,
            Some(tag),
            Some(json!({ "text": format!("v{version}") })),
        )
        .await;
        assert_eq!(response.status(), 200, "If-Match: {tag}");
        assert_eq!(etag(&response), Some(format!("\"{version}\"")));
    }
}

#[tokio::test]
async fn a_stale_if_match_answers_412_with_the_current_note() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "mine").await;
    let id = id_of(&note);
    let response = app
        .patch_note(&board, id, json!({ "text": "theirs" }))
        .await;
    assert_eq!(response.status(), 200);

    for tag in ["\"1\"", "\"3\"", "banana"] {
        let response = write_note(
            &app,
            reqwest::Method::PATCH,
            &board,
            id,
            Some(tag),
            Some(json!({ "text": "mine again" })),
        )
        .await;
        assert_eq!(etag(&response).as_deref(), Some("\"2\""), "If-Match: {tag}");
        let body = expect_error(response, 412, "version_mismatch").await;
        assert_eq!(body["note"]["id"], id);
        assert_eq!(body["note"]["version"], 2);
        assert_eq!(body["note"]["text"], "theirs");
    }
    let now = &notes_of(&app, &board).await[0];
    assert_eq!(
        (now["version"].clone(), now["text"].clone()),
        (json!(2), json!("theirs"))
    );
    let seq = app.sql().await;
    let events: i64 = seq
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count events")
        .get(0);
    assert_eq!(events, 2, "a refused write logs no event");
}

#[tokio::test]
async fn deleting_a_note_answers_204_then_404() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "bye").await;
    let keep = app.add_note(&board, "stay").await;
    let id = id_of(&note);
    let response = write_note(&app, reqwest::Method::DELETE, &board, id, None, None).await;
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.expect("body").is_empty());
    assert_eq!(notes_of(&app, &board).await, [keep]);

    let again = write_note(&app, reqwest::Method::DELETE, &board, id, None, None).await;
    expect_error(again, 404, "not_found").await;
    let patch = app.patch_note(&board, id, json!({ "x": 1 })).await;
    expect_error(patch, 404, "not_found").await;
}

#[tokio::test]
async fn deleting_with_if_match_checks_the_version() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "guarded").await;
    let id = id_of(&note);
    app.patch_note(&board, id, json!({ "y": 5 })).await;

    let stale = write_note(
        &app,
        reqwest::Method::DELETE,
        &board,
        id,
        Some("\"1\""),
        None,
    )
    .await;
    let body = expect_error(stale, 412, "version_mismatch").await;
    assert_eq!(body["note"]["version"], 2);
    assert_eq!(
        notes_of(&app, &board).await.len(),
        1,
        "the note is still there"
    );

    let current = write_note(
        &app,
        reqwest::Method::DELETE,
        &board,
        id,
        Some("\"2\""),
        None,
    )
    .await;
    assert_eq!(current.status(), 204);
    assert!(notes_of(&app, &board).await.is_empty());
}

#[tokio::test]
async fn text_comes_back_byte_for_byte() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let texts = [
        "line one\nline two\n\nline four\n",
        "carriage\r\nreturn\rtab\there",
        "\"double\" 'single' `back` \\ backslash \\n not a newline </script>",
        "emoji 😀 👩‍👩‍👧 🇫🇷 and a combining é (e\u{301})",
        "שלום עולם — مرحبا بالعالم — mixed עם English",
        "  leading and trailing spaces  ",
        "\u{feff}BOM, zero\u{200b}width, \u{7f} DEL, \u{1b}[31m escape",
    ];
    let sql = app.sql().await;
    for text in texts {
        let created = app
            .create_note(&board, json!({ "text": text, "x": 0, "y": 0 }))
            .await;
        assert_eq!(created["text"], text, "POST answer");
        let id = id_of(&created);
        let stored: String = sql
            .query_one(
                "SELECT text FROM notes WHERE id = $1",
                &[&id.parse::<Uuid>().expect("uuid")],
            )
            .await
            .expect("the row")
            .get(0);
        assert_eq!(stored.as_bytes(), text.as_bytes(), "stored");

        let reversed: String = text.chars().rev().collect();
        let response = app
            .patch_note(&board, id, json!({ "text": reversed }))
            .await;
        let patched: Value = response.json().await.expect("note JSON");
        assert_eq!(patched["text"], reversed.as_str(), "PATCH answer");
    }
    let listed: Vec<String> = notes_of(&app, &board)
        .await
        .iter()
        .map(|n| n["text"].as_str().expect("text").to_string())
        .collect();
    let expected: Vec<String> = texts.iter().map(|t| t.chars().rev().collect()).collect();
    assert_eq!(listed, expected, "GET answer");
}

#[tokio::test]
async fn an_if_match_with_bytes_beyond_ascii_never_matches_and_answers_412() {
    // Found by hostile testing: such a tag was refused as 422 before it was compared.
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "v1").await;
    let id = id_of(&note);
    for raw in [&b"\"\xc3\xa9\""[..], &b"\"1\xff\""[..]] {
        let response = reqwest::Client::new()
            .patch(app.url(&format!("/api/boards/{board}/notes/{id}")))
            .header(
                "If-Match",
                reqwest::header::HeaderValue::from_bytes(raw).expect("obs-text header"),
            )
            .json(&json!({ "text": "v2" }))
            .send()
            .await
            .expect("PATCH note");
        let body = expect_error(response, 412, "version_mismatch").await;
        assert_eq!(body["note"]["version"], 1);
    }
}
