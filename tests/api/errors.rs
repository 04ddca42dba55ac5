//! Every error row of the contract that exists with auth off: status, `code`, and the
//! `{"error": {"code", "message"}}` shape, from every kind of route.

use std::time::Duration;

use reqwest::{Method, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, base_settings, content_type, eventually, spawn_app};

/// Asserts `response` is the contract's error answer with `status` and `code`; returns the
/// body. Only `version_mismatch` may carry more than `error` (the current `note`).
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let what = format!("{} {}", response.status(), response.url().path());
    assert_eq!(response.status(), status, "status of {what}");
    let content_type = content_type(&response);
    assert!(
        content_type.starts_with("application/json"),
        "{what}: errors are JSON, got Content-Type {content_type:?}"
    );
    let body: Value = response.json().await.expect("the error body is JSON");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no `error` object in {body}"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message"], "{what}: error members in {body}");
    assert_eq!(error["code"], code, "{what}: code in {body}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: a human message in {body}");
    let allowed: &[&str] = if code == "version_mismatch" {
        &["error", "note"]
    } else {
        &["error"]
    };
    let top = body.as_object().expect("an object");
    assert!(
        top.keys().all(|k| allowed.contains(&k.as_str())),
        "{what}: unexpected members in {body}"
    );
    body
}

/// The `message` of an error body.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().expect("a message")
}

/// A board with one note: `(board id, note id)`.
pub async fn board_with_note(app: &TestApp) -> (String, String) {
    let board = app.board_id().await;
    let note = app.add_note(&board, "hello").await["id"]
        .as_str()
        .expect("note id")
        .to_string();
    (board, note)
}

/// Sends `method path` with a JSON body (or none).
async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request is answered")
}

/// Sends `body` as raw bytes with `content_type` (or no Content-Type at all).
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app.http.request(method, app.url(path)).body(body);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.send().await.expect("request is answered")
}

#[tokio::test]
async fn a_malformed_id_answers_400_invalid_id_on_every_route() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let some_uuid = Uuid::new_v4().to_string();
    let title = json!({ "title": "t" });
    let new_note = json!({ "text": "t", "x": 0, "y": 0 });
    let patch = json!({ "x": 1 });
    for bad in [
        "nope",
        "123",
        &Uuid::new_v4().simple().to_string(),
        &some_uuid[..35],
        &format!("{some_uuid}0"),
    ] {
        let cases = [
            (Method::GET, format!("/api/boards/{bad}"), None),
            (Method::PATCH, format!("/api/boards/{bad}"), Some(&title)),
            (Method::DELETE, format!("/api/boards/{bad}"), None),
            (Method::GET, format!("/api/boards/{bad}/notes"), None),
            (
                Method::POST,
                format!("/api/boards/{bad}/notes"),
                Some(&new_note),
            ),
            (
                Method::PATCH,
                format!("/api/boards/{bad}/notes/{note}"),
                Some(&patch),
            ),
            (
                Method::DELETE,
                format!("/api/boards/{bad}/notes/{note}"),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/boards/{board}/notes/{bad}"),
                Some(&patch),
            ),
            (
                Method::DELETE,
                format!("/api/boards/{board}/notes/{bad}"),
                None,
            ),
            (Method::GET, format!("/api/boards/{bad}/events"), None),
        ];
        for (method, path, body) in cases {
            let response = send(&app, method, &path, body.cloned()).await;
            expect_error(response, 400, "invalid_id").await;
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_answers_400_invalid_json() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    for (method, path) in [
        (Method::POST, "/api/boards".to_string()),
        (Method::PATCH, format!("/api/boards/{board}")),
        (Method::POST, format!("/api/boards/{board}/notes")),
        (Method::PATCH, format!("/api/boards/{board}/notes/{note}")),
    ] {
        for body in [
            "not json",
            "{\"title\":",
            "",
            "[1, 2",
            "{\"title\":\"a\"} trailing",
        ] {
            let response = send_raw(
                &app,
                method.clone(),
                &path,
                Some("application/json"),
                body.to_string(),
            )
            .await;
            expect_error(response, 400, "invalid_json").await;
        }
    }
}

#[tokio::test]
async fn a_missing_unknown_or_mistyped_field_answers_400_naming_it() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let notes = format!("/api/boards/{board}/notes");
    let one_note = format!("/api/boards/{board}/notes/{note}");
    let cases = [
        (Method::POST, "/api/boards", json!({}), "title"),
        (Method::POST, "/api/boards", json!({ "title": 5 }), "title"),
        (
            Method::POST,
            "/api/boards",
            json!({ "title": "a", "owner": "me" }),
            "owner",
        ),
        (
            Method::PATCH,
            &format!("/api/boards/{board}"),
            json!({ "name": "b" }),
            "name",
        ),
        (Method::POST, &notes, json!({ "x": 0, "y": 0 }), "text"),
        (Method::POST, &notes, json!({ "text": "a", "y": 0 }), "`x`"),
        (
            Method::POST,
            &notes,
            json!({ "text": "a", "x": "1", "y": 0 }),
            "`x`",
        ),
        (
            Method::POST,
            &notes,
            json!({ "text": 7, "x": 0, "y": 0 }),
            "text",
        ),
        (
            Method::POST,
            &notes,
            json!({ "text": "a", "x": 0, "y": 0, "colour": "#000000" }),
            "colour",
        ),
        (
            Method::POST,
            &notes,
            json!({ "text": "a", "x": 0, "y": 0, "width": "wide" }),
            "width",
        ),
        (Method::PATCH, &one_note, json!({ "x": null }), "`x`"),
        (Method::PATCH, &one_note, json!({ "text": null }), "text"),
        (Method::PATCH, &one_note, json!({ "height": [1] }), "height"),
        (Method::PATCH, &one_note, json!({ "z": 1 }), "`z`"),
    ];
    for (method, path, body, field) in cases {
        let response = send(&app, method.clone(), path, Some(body.clone())).await;
        let error = expect_error(response, 400, "invalid_json").await;
        assert!(
            message(&error).contains(field),
            "{method} {path} {body}: the message names {field}: {error}"
        );
    }
}

#[tokio::test]
async fn an_unknown_board_note_or_route_answers_404() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let other_board = app.board_id().await;
    let missing = Uuid::new_v4();
    let cases = [
        (Method::GET, format!("/api/boards/{missing}"), None),
        (
            Method::PATCH,
            format!("/api/boards/{missing}"),
            Some(json!({ "title": "t" })),
        ),
        (Method::DELETE, format!("/api/boards/{missing}"), None),
        (Method::GET, format!("/api/boards/{missing}/notes"), None),
        (
            Method::POST,
            format!("/api/boards/{missing}/notes"),
            Some(json!({ "text": "", "x": 0, "y": 0 })),
        ),
        (Method::GET, format!("/api/boards/{missing}/events"), None),
        (
            Method::PATCH,
            format!("/api/boards/{board}/notes/{missing}"),
            Some(json!({ "x": 1 })),
        ),
        (
            Method::DELETE,
            format!("/api/boards/{board}/notes/{missing}"),
            None,
        ),
        // A note is only reachable through its own board.
        (
            Method::PATCH,
            format!("/api/boards/{other_board}/notes/{note}"),
            Some(json!({ "x": 1 })),
        ),
        (
            Method::DELETE,
            format!("/api/boards/{other_board}/notes/{note}"),
            None,
        ),
        (Method::GET, "/api".to_string(), None),
        (Method::GET, "/api/".to_string(), None),
        (Method::GET, "/api/nothing".to_string(), None),
        (
            Method::POST,
            "/api/nothing/here".to_string(),
            Some(json!({})),
        ),
        (Method::GET, format!("/api/boards/{board}/nothing"), None),
        (
            Method::GET,
            format!("/api/boards/{board}/notes/{note}/more"),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let response = send(&app, method, &path, body).await;
        expect_error(response, 404, "not_found").await;
    }
    // Nothing above touched the note.
    let notes: Value = app.get_json(&format!("/api/boards/{board}/notes")).await;
    assert_eq!(notes["notes"][0]["version"], 1);
}

#[tokio::test]
/// `Allow` lists the methods the route table registers (HEAD with every GET).
async fn a_wrong_method_answers_405_with_allow() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let cases = [
        (Method::PUT, "/api/boards".to_string(), "GET, HEAD, POST"),
        (Method::DELETE, "/api/boards".to_string(), "GET, HEAD, POST"),
        (
            Method::PUT,
            format!("/api/boards/{board}"),
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            Method::POST,
            format!("/api/boards/{board}"),
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            Method::PUT,
            format!("/api/boards/{board}/notes"),
            "GET, HEAD, POST",
        ),
        (
            Method::GET,
            format!("/api/boards/{board}/notes/{note}"),
            "PATCH, DELETE",
        ),
        (
            Method::PUT,
            format!("/api/boards/{board}/notes/{note}"),
            "PATCH, DELETE",
        ),
        (
            Method::POST,
            format!("/api/boards/{board}/events"),
            "GET, HEAD",
        ),
        (Method::DELETE, "/healthz".to_string(), "GET, HEAD"),
        (Method::POST, "/".to_string(), "GET, HEAD"),
        (Method::PUT, "/static/app.css".to_string(), "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let response = send(&app, method.clone(), &path, Some(json!({ "title": "t" }))).await;
        let header = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        expect_error(response, 405, "method_not_allowed").await;
        assert_eq!(header.as_deref(), Some(allow), "Allow of {method} {path}");
    }
}

#[tokio::test]
async fn a_body_over_64_kib_answers_413() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let big = json!({ "title": "x".repeat(64 * 1024) }).to_string();
    let paths = [
        "/api/boards".to_string(),
        format!("/api/boards/{board}/notes"),
    ];
    for path in &paths {
        let response = send_raw(
            &app,
            Method::POST,
            path,
            Some("application/json"),
            big.clone(),
        )
        .await;
        expect_error(response, 413, "payload_too_large").await;
    }
    // Without a Content-Length (chunked), the limit holds as the body arrives.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(big[..40_000].to_string()), Ok(big[40_000..].to_string())];
    let response = send_raw(
        &app,
        Method::POST,
        "/api/boards",
        Some("application/json"),
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    expect_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_body_that_is_not_application_json_answers_415() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    for (method, path, body) in [
        (Method::POST, "/api/boards".to_string(), r#"{"title":"t"}"#),
        (
            Method::PATCH,
            format!("/api/boards/{board}"),
            r#"{"title":"t"}"#,
        ),
        (
            Method::POST,
            format!("/api/boards/{board}/notes"),
            r#"{"text":"","x":0,"y":0}"#,
        ),
        (
            Method::PATCH,
            format!("/api/boards/{board}/notes/{note}"),
            r#"{"x":1}"#,
        ),
    ] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let response = send_raw(&app, method.clone(), &path, content_type, body).await;
            expect_error(response, 415, "unsupported_media_type").await;
        }
    }
    // A charset parameter is still JSON.
    let response = send_raw(
        &app,
        Method::POST,
        "/api/boards",
        Some("application/json; charset=utf-8"),
        r#"{"title":"t"}"#,
    )
    .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn values_that_break_a_limit_answer_422_naming_the_field() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let notes = format!("/api/boards/{board}/notes");
    let one_note = format!("/api/boards/{board}/notes/{note}");
    let new_note = |field: &str, value: Value| {
        let mut body = json!({ "text": "t", "x": 0, "y": 0 });
        body[field] = value;
        body
    };
    let long_text = "é".repeat(10_001);
    let cases = [
        (Method::POST, "/api/boards", json!({ "title": "" }), "title"),
        (
            Method::POST,
            "/api/boards",
            json!({ "title": "   " }),
            "title",
        ),
        (
            Method::POST,
            "/api/boards",
            json!({ "title": "x".repeat(201) }),
            "title",
        ),
        (
            Method::POST,
            "/api/boards",
            json!({ "title": "a\u{0}b" }),
            "title",
        ),
        (
            Method::PATCH,
            &format!("/api/boards/{board}"),
            json!({ "title": "" }),
            "title",
        ),
        (
            Method::PATCH,
            &format!("/api/boards/{board}"),
            json!({ "title": "é".repeat(201) }),
            "title",
        ),
        (
            Method::POST,
            &notes,
            new_note("text", json!(long_text)),
            "text",
        ),
        (
            Method::POST,
            &notes,
            new_note("text", json!("a\u{0}b")),
            "text",
        ),
        (
            Method::POST,
            &notes,
            new_note("x", json!(1_000_000.5)),
            "`x`",
        ),
        (
            Method::POST,
            &notes,
            new_note("x", json!(-1_000_001)),
            "`x`",
        ),
        (Method::POST, &notes, new_note("y", json!(2e6)), "`y`"),
        (Method::POST, &notes, new_note("width", json!(19)), "width"),
        (
            Method::POST,
            &notes,
            new_note("width", json!(2001)),
            "width",
        ),
        (
            Method::POST,
            &notes,
            new_note("height", json!(19.9)),
            "height",
        ),
        (
            Method::POST,
            &notes,
            new_note("height", json!(2000.5)),
            "height",
        ),
        (
            Method::POST,
            &notes,
            new_note("color", json!("red")),
            "color",
        ),
        (
            Method::POST,
            &notes,
            new_note("color", json!("#12345g")),
            "color",
        ),
        (
            Method::POST,
            &notes,
            new_note("color", json!("#fff")),
            "color",
        ),
        (Method::PATCH, &one_note, json!({}), "field"),
        (
            Method::PATCH,
            &one_note,
            json!({ "text": long_text }),
            "text",
        ),
        (Method::PATCH, &one_note, json!({ "text": "\u{0}" }), "text"),
        (
            Method::PATCH,
            &one_note,
            json!({ "x": -1_000_000.01 }),
            "`x`",
        ),
        (Method::PATCH, &one_note, json!({ "width": 19 }), "width"),
        (Method::PATCH, &one_note, json!({ "color": "red" }), "color"),
    ];
    for (method, path, body, field) in cases {
        let response = send(&app, method.clone(), path, Some(body.clone())).await;
        let error = expect_error(response, 422, "validation_failed").await;
        assert!(
            message(&error).contains(field),
            "{method} {path}: the message names {field}: {error}"
        );
    }
    // The JSON escape `\u0000` itself, as a browser would send it.
    let response = send_raw(
        &app,
        Method::POST,
        &notes,
        Some("application/json"),
        r#"{"text":"nul \u0000 here","x":0,"y":0}"#,
    )
    .await;
    expect_error(response, 422, "validation_failed").await;
    let response = send_raw(
        &app,
        Method::POST,
        "/api/boards",
        Some("application/json"),
        r#"{"title":"\u0000"}"#,
    )
    .await;
    expect_error(response, 422, "validation_failed").await;

    // No refused write left a trace: the board is as it was after the first note.
    let sql = app.sql().await;
    let board_uuid: Uuid = board.parse().expect("uuid");
    let row = sql
        .query_one(
            "SELECT b.seq, b.title, (SELECT count(*) FROM notes n WHERE n.board_id = b.id),
                    (SELECT max(version) FROM notes n WHERE n.board_id = b.id)
             FROM boards b WHERE b.id = $1",
            &[&board_uuid],
        )
        .await
        .expect("the board row");
    assert_eq!(row.get::<_, i64>(0), 1, "seq");
    assert_eq!(row.get::<_, String>(1), "Test board");
    assert_eq!(row.get::<_, i64>(2), 1, "notes");
    assert_eq!(row.get::<_, i64>(3), 1, "version");
    let boards: i64 = sql
        .query_one("SELECT count(*) FROM boards", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(boards, 1, "no board was created");
}

#[tokio::test]
async fn query_parameters_out_of_range_answer_422() {
    let app = spawn_app().await;
    for query in [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=99999999999999999999",
        "cursor=junk",
        "cursor=12_notauuid",
        "cursor=99999999999999999999_6f1c2a9e-3b1d-4c55-9a3e-0d2f4b7c8e91",
    ] {
        let response = app
            .http
            .get(app.url(&format!("/api/boards?{query}")))
            .send()
            .await
            .expect("GET boards");
        let error = expect_error(response, 422, "validation_failed").await;
        let field = query.split('=').next().expect("a name");
        assert!(
            message(&error).contains(field),
            "?{query}: the message names {field}: {error}"
        );
    }
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_and_the_api_recovers() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let (admin, connection) = base_settings()
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects to the admin database");
    tokio::spawn(connection);
    let db = &app.db_name;
    // Only this test's database goes down; the cluster keeps serving the other tests.
    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .await
        .expect("disallows connections");
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[db],
        )
        .await
        .expect("terminates the pool's connections");

    // /readyz says so in the error envelope, with what is down next to it.
    let ready = send(&app, Method::GET, "/readyz", None).await;
    assert!(ready.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(!message(&body).is_empty());
    assert_eq!(body["database"], "unreachable", "{body}");

    let requests = [
        (Method::GET, "/api/boards".to_string(), None),
        (Method::GET, format!("/api/boards/{board}"), None),
        (
            Method::POST,
            format!("/api/boards/{board}/notes"),
            Some(json!({ "text": "", "x": 0, "y": 0 })),
        ),
        (
            Method::POST,
            "/api/boards".to_string(),
            Some(json!({ "title": "t" })),
        ),
    ];
    for (method, path, body) in requests {
        let response = send(&app, method, &path, body).await;
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        expect_error(response, 503, "unavailable").await;
        assert!(retry_after.is_some_and(|s| s > 0), "Retry-After on {path}");
    }

    admin
        .batch_execute(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .await
        .expect("allows connections again");
    let recovered = eventually(Duration::from_secs(15), || async {
        send(&app, Method::GET, &format!("/api/boards/{board}"), None)
            .await
            .status()
            == 200
    })
    .await;
    assert!(recovered, "the API answers again once the database is back");
    let response = send(
        &app,
        Method::POST,
        &format!("/api/boards/{board}/notes"),
        Some(json!({ "text": "back", "x": 0, "y": 0 })),
    )
    .await;
    assert_eq!(response.status(), 201, "writes work again");
}

/// A statement the database refuses for a reason that is not an outage (here a CHECK the
/// schema gained behind the server's back) is a 500. Its log line names the SQLSTATE and
/// the line of boardcast that met it; the client gets neither, nor any SQL.
#[tokio::test]
async fn a_database_error_is_a_500_whose_cause_is_logged_and_never_sent() {
    let db = crate::helpers::create_database().await;
    let server = crate::helpers::ServerProcess::start(&db, &[]).await;
    let http = reqwest::Client::new();
    let board: Value = http
        .post(server.url("/api/boards"))
        .json(&json!({ "title": "drift" }))
        .send()
        .await
        .expect("POST /api/boards")
        .json()
        .await
        .expect("the board");
    let mut settings = base_settings();
    settings.database.dbname(&*db);
    let (sql, connection) = settings
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects to the test database");
    tokio::spawn(connection);
    sql.batch_execute("ALTER TABLE notes ADD CONSTRAINT drifted CHECK (text <> 'refused')")
        .await
        .expect("adds the constraint");

    let response = http
        .post(server.url(&format!(
            "/api/boards/{}/notes",
            board["id"].as_str().expect("id")
        )))
        .json(&json!({ "text": "refused", "x": 10, "y": 20 }))
        .send()
        .await
        .expect("POST a note");
    let body = expect_error(response, 500, "internal").await;
    let sent = body.to_string();
    for secret in [
        "SQLSTATE",
        "23514",
        "drifted",
        "constraint",
        "notes",
        "src/",
    ] {
        assert!(
            !sent.contains(secret),
            "{secret:?} reached the client: {sent}"
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.log_text().lines().any(|line| {
                line.contains("ERROR")
                    && line.contains("[SQLSTATE 23514]")
                    && line.contains(" at src/db/notes.rs:")
            })
        })
        .await,
        "the log names the SQLSTATE and where it was raised:\n{}",
        server.log_text()
    );
}
