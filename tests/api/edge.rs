//! The HTTP edge answers as the contract does: HEAD wherever GET, media types as RFC 9110
//! writes them, refusals made before routing in the JSON envelope, the order in which
//! rules answer, `If-Match` as opaque entity tags, and bodies an HTTP/1.0 client can read.

use std::time::Duration;

use reqwest::{Method, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::auth::{SECRET, Via, admin, claims, create_board, send, token};
use crate::errors::{board_with_note, expect_error};
use crate::helpers::{TestApp, content_type, spawn_app, spawn_app_with};

/// Sends `request` as raw bytes on a new connection; returns all the server said until it
/// closed the connection (or `wait` passed).
async fn raw(app: &TestApp, request: &[u8], wait: Duration) -> String {
    let stream = tokio::net::TcpStream::connect(app.socket_addr())
        .await
        .expect("connects");
    let (mut read, mut write) = stream.into_split();
    // The server may answer and close before the whole request is written.
    let _ = write.write_all(request).await;
    let mut said = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => said.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// Splits a raw HTTP/1 answer into its status, its lower-cased header lines and its body.
fn parse_raw(said: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = said.split_once("\r\n\r\n").unwrap_or((said, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {said:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Asserts a raw answer is the contract's error with `status` and `code`.
fn expect_raw_error(said: &str, status: u16, code: &str) {
    let (got, headers, body) = parse_raw(said);
    assert_eq!(got, status, "status of {said:?}");
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(content_type, Some("application/json"), "{said:?}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {said:?}"));
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

// ---- HEAD ------------------------------------------------------------------------------

/// Header fields a HEAD answer must share with its GET (`date` and per-answer ids aside).
const SAME: [&str; 6] = [
    "content-type",
    "content-length",
    "etag",
    "cache-control",
    "allow",
    "content-security-policy",
];

#[tokio::test]
async fn head_is_answered_wherever_get_is_with_the_same_headers_and_no_body() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    app.add_note(&board, "hello").await;
    let missing = Uuid::new_v4();
    for path in [
        "/healthz".to_string(),
        "/readyz".to_string(),
        "/api/boards".to_string(),
        "/api/boards?limit=1".to_string(),
        format!("/api/boards/{board}"),
        format!("/api/boards/{board}/notes"),
        format!("/api/boards/{board}/presence"),
        "/".to_string(),
        format!("/b/{board}"),
        "/static/app.css".to_string(),
        // Errors too: HEAD answers what GET would, without the body.
        format!("/api/boards/{missing}"),
        "/api/boards/nope".to_string(),
        "/api/boards?limit=0".to_string(),
        "/api/nothing".to_string(),
        "/static/nothing.js".to_string(),
    ] {
        let get = app.http.get(app.url(&path)).send().await.expect("GET");
        let head = app.http.head(app.url(&path)).send().await.expect("HEAD");
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        for name in SAME {
            assert_eq!(
                head.headers().get(name),
                get.headers().get(name),
                "{name} of HEAD {path}"
            );
        }
        assert!(
            head.bytes().await.expect("HEAD body").is_empty(),
            "HEAD {path} has no body"
        );
    }
    // /metrics changes between two scrapes (it counts them), so only its type is compared.
    let head = app
        .http
        .head(app.url("/metrics"))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert!(content_type(&head).starts_with("application/openmetrics-text"));
    assert!(head.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn head_of_a_stream_answers_its_headers_and_opens_nothing() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let sql = app.sql().await;
    let path = format!("/api/boards/{board}/events?name=Ana");
    // Shared mode keeps its one listener whatever happens; per-stream mode has none yet.
    let listeners = app.listening_backends(&sql).await;
    for _ in 0..3 {
        let head = app
            .http
            .head(app.url(&path))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("HEAD answers at once");
        assert_eq!(head.status(), 200);
        assert_eq!(content_type(&head), "text/event-stream");
        assert_eq!(
            head.headers()
                .get(header::CACHE_CONTROL)
                .map(|v| v.as_bytes()),
            Some(&b"no-cache"[..])
        );
        assert_eq!(
            head.headers()
                .get("x-accel-buffering")
                .map(|v| v.as_bytes()),
            Some(&b"no"[..])
        );
        assert!(head.bytes().await.expect("body").is_empty());
    }
    assert_eq!(app.stats.opened_total(), 0, "no stream was opened");
    assert_eq!(
        app.listening_backends(&sql).await,
        listeners,
        "no listener connected"
    );
    let viewers = app.get_json(&format!("/api/boards/{board}/presence")).await;
    assert_eq!(viewers["viewers"], json!([]), "no viewer joined");

    // HEAD refuses what GET refuses, in the same order.
    let missing = Uuid::new_v4();
    for (path, status) in [
        (format!("/api/boards/{missing}/events"), 404),
        ("/api/boards/nope/events".to_string(), 400),
        (format!("/api/boards/{board}/events?last_event_id=x"), 422),
    ] {
        let head = app.http.head(app.url(&path)).send().await.expect("HEAD");
        assert_eq!(head.status(), status, "HEAD {path}");
        assert!(content_type(&head).starts_with("application/json"));
    }
    // And a GET right after still opens a real stream.
    let mut stream = app.open_stream(&board).await;
    let first = stream.next(Duration::from_secs(5)).await.expect("snapshot");
    assert_eq!(first.event, "snapshot");
    assert_eq!(app.stats.opened_total(), 1);
}

// ---- media types -----------------------------------------------------------------------

#[tokio::test]
async fn media_types_are_compared_as_rfc_9110_says() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let post = |content_type: &'static str| {
        app.http
            .post(app.url(&format!("/api/boards/{board}/notes")))
            .header(header::CONTENT_TYPE, content_type)
            .body(r#"{"text":"t","x":0,"y":0}"#)
            .send()
    };
    for json in [
        "application/json ; charset=utf-8",
        "application/json;charset=utf-8",
        "application/json\t;\tcharset=UTF-8",
        "APPLICATION/JSON",
        "Application/Json; Charset=\"utf-8\"",
        "application/json;",
        "application/json; foo=\"a;b\"",
        "application/merge-patch+json",
    ] {
        let response = post(json).await.expect("POST");
        assert_eq!(response.status(), 201, "Content-Type: {json}");
    }
    for not_json in [
        "application/json; charset=latin1",
        "application/jsonx",
        "application / json",
        "application/json charset=utf-8",
        "application/json; charset = utf-8",
        "text/json",
        "json",
    ] {
        let response = post(not_json).await.expect("POST");
        expect_error(response, 415, "unsupported_media_type").await;
    }
}

// ---- refusals before routing -----------------------------------------------------------

#[tokio::test]
async fn a_request_target_over_8_kib_answers_414_in_json() {
    let app = spawn_app().await;
    let long = "a".repeat(9 * 1024);
    for path in [
        format!("/api/boards?cursor={long}"),
        format!("/api/{long}"),
        format!("/healthz?{long}"),
    ] {
        let response = app.http.get(app.url(&path)).send().await.expect("GET");
        expect_error(response, 414, "uri_too_long").await;
    }
    let fits = app
        .http
        .get(app.url(&format!("/healthz?{}", "a".repeat(7 * 1024))))
        .send()
        .await
        .expect("GET");
    assert_eq!(fits.status(), 200);
}

#[tokio::test]
async fn too_many_header_fields_or_too_large_a_head_answers_431_in_json() {
    let app = spawn_app().await;
    // Counts from just over this server's limit (64) to actix-http's own (96).
    for fields in [65, 80, 94] {
        let extra: String = (0..fields).map(|i| format!("X-H{i}: v\r\n")).collect();
        let said = raw(
            &app,
            format!("GET /api/boards HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        expect_raw_error(&said, 431, "headers_too_large");
    }
    for big in [33 * 1024, 100 * 1024] {
        let said = raw(
            &app,
            format!(
                "GET /api/boards HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                "a".repeat(big)
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        expect_raw_error(&said, 431, "headers_too_large");
    }
    // Through an ordinary client as well, and the server carries on.
    let mut request = app.http.get(app.url("/api/boards"));
    for i in 0..70 {
        request = request.header(format!("x-h{i}"), "v");
    }
    expect_error(request.send().await.expect("GET"), 431, "headers_too_large").await;
    let fine = app.http.get(app.url("/healthz")).send().await.expect("GET");
    assert_eq!(fine.status(), 200);
}

const ALLOWED: &str = "https://app.example.com";

#[tokio::test]
async fn cors_preflights_allow_the_contracts_headers_and_refuse_in_json() {
    let app = spawn_app_with(|s| s.cors_origins = vec![ALLOWED.into()]).await;
    let board = app.board_id().await;
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let mut request = app
            .http
            .request(
                Method::OPTIONS,
                app.url(&format!("/api/boards/{board}/events")),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", method);
        if !headers.is_empty() {
            request = request.header("Access-Control-Request-Headers", headers);
        }
        request.send()
    };
    // What EventSource polyfills send, and every header of the contract's list.
    for headers in [
        "cache-control, last-event-id",
        "Cache-Control,Last-Event-ID",
        "accept",
        "authorization, content-type, if-match, x-display-name",
        "authorization,content-type,if-match,last-event-id,cache-control,accept,x-display-name",
    ] {
        let response = preflight(ALLOWED, "GET", headers).await.expect("preflight");
        assert!(
            response.status().is_success(),
            "{headers}: {}",
            response.status()
        );
        assert_eq!(
            response
                .headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(ALLOWED)
        );
    }
    // Refusals: another origin, a header or a method not allowed.
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", "cache-control"),
        ("null", "POST", ""),
        (ALLOWED, "GET", "x-secret"),
        (ALLOWED, "PUT", ""),
        (ALLOWED, "TRACE", ""),
    ] {
        let response = preflight(origin, method, headers).await.expect("preflight");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin} {method} {headers}"
        );
        expect_error(response, 403, "forbidden").await;
    }
}

#[tokio::test]
async fn an_http_1_0_client_gets_bodies_it_can_read() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let said = raw(
        &app,
        b"GET /healthz HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (status, headers, body) = parse_raw(&said);
    assert_eq!(status, 200);
    assert!(!headers.iter().any(|(n, _)| n == "transfer-encoding"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({ "status": "ok" })
    );

    // The stream: unchunked, ended by closing the connection.
    let request = format!("GET /api/boards/{board}/events HTTP/1.0\r\n\r\n");
    let said = raw(&app, request.as_bytes(), Duration::from_secs(2)).await;
    let (status, headers, body) = parse_raw(&said);
    assert_eq!(status, 200, "{said}");
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "no chunked coding for HTTP/1.0: {said}"
    );
    assert!(
        body.starts_with("retry:"),
        "the body is plain SSE: {body:?}"
    );
    assert!(body.contains("event: snapshot\n"), "{body:?}");

    // An error to an HTTP/1.0 client is readable too.
    let said = raw(
        &app,
        b"GET /api/boards/nope HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    expect_raw_error(&said, 400, "invalid_id");
}

// ---- the order rules answer in ---------------------------------------------------------

#[tokio::test]
async fn a_malformed_path_id_answers_before_the_body_is_read() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let note_body = json!({ "text": "t", "x": 0, "y": 0 });
    for (method, path, content_type, body) in [
        // The issue's input: a note body where a board title belongs, on a bad id.
        (
            Method::PATCH,
            "/api/boards/nope".to_string(),
            "application/json",
            note_body.to_string(),
        ),
        (
            Method::PATCH,
            "/api/boards/nope".to_string(),
            "text/plain",
            "x".into(),
        ),
        (
            Method::PATCH,
            "/api/boards/nope".to_string(),
            "application/json",
            "x".repeat(70_000),
        ),
        (
            Method::POST,
            "/api/boards/nope/notes".to_string(),
            "application/json",
            "{".into(),
        ),
        (
            Method::POST,
            "/api/boards/nope/notes".to_string(),
            "text/plain",
            "{}".into(),
        ),
        (
            Method::PATCH,
            format!("/api/boards/{board}/notes/nope"),
            "application/json",
            json!({ "colour": 1 }).to_string(),
        ),
        (
            Method::PATCH,
            format!("/api/boards/nope/notes/{note}"),
            "application/json",
            "[]".into(),
        ),
    ] {
        let response = app
            .http
            .request(method.clone(), app.url(&path))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("answered");
        expect_error(response, 400, "invalid_id").await;
    }
    // The route and the method come first of all.
    let response = app
        .http
        .put(app.url("/api/boards/nope"))
        .body("x")
        .send()
        .await
        .expect("PUT");
    expect_error(response, 405, "method_not_allowed").await;
}

/// A request of the order test: token, path, content type, body, then the answer expected.
type Case<'a> = (Option<&'a str>, String, &'a str, String, u16, &'a str);

#[tokio::test]
async fn rules_answer_in_the_contracts_order_with_auth_on() {
    let app = spawn_app_with(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.write_rate_limit = 0;
    })
    .await;
    let board = create_board(&app, &admin(), "Plans").await;
    let missing = Uuid::new_v4().to_string();
    let reader = token(json!({ "sub": "rita", "exp": crate::auth::now() + 60, "readonly": true }));
    let other =
        token(json!({ "sub": "olga", "exp": crate::auth::now() + 60, "boards": [missing] }));
    let writer = token(claims("wanda"));
    let big = "x".repeat(70_000);
    let notes = |b: &str| format!("/api/boards/{b}/notes");
    // (token, board, content type, body) → (status, code)
    let cases: Vec<Case<'_>> = vec![
        (
            None,
            notes("nope"),
            "text/plain",
            big.clone(),
            400,
            "invalid_id",
        ),
        (
            Some(&reader),
            notes("nope"),
            "application/json",
            "{}".into(),
            400,
            "invalid_id",
        ),
        (
            None,
            notes(&board),
            "text/plain",
            big.clone(),
            401,
            "unauthorized",
        ),
        (
            Some("junk"),
            notes(&missing),
            "text/plain",
            "{".into(),
            401,
            "unauthorized",
        ),
        (
            Some(&reader),
            notes(&board),
            "text/plain",
            big.clone(),
            403,
            "forbidden",
        ),
        (
            Some(&other),
            notes(&board),
            "text/plain",
            big.clone(),
            403,
            "forbidden",
        ),
        (
            Some(&writer),
            notes(&board),
            "text/plain",
            big.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            Some(&writer),
            notes(&board),
            "application/json",
            big.clone(),
            413,
            "payload_too_large",
        ),
        (
            Some(&writer),
            notes(&missing),
            "application/json",
            "{".into(),
            400,
            "invalid_json",
        ),
        (
            Some(&writer),
            notes(&missing),
            "application/json",
            json!({ "text": "t", "x": 5e6, "y": 0 }).to_string(),
            422,
            "validation_failed",
        ),
        (
            Some(&writer),
            notes(&missing),
            "application/json",
            json!({ "text": "t", "x": 0, "y": 0 }).to_string(),
            404,
            "not_found",
        ),
    ];
    for (who, path, content_type, body, status, code) in cases {
        let mut request = app
            .http
            .post(app.url(&path))
            .header(header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(who) = who {
            request = request.bearer_auth(who);
        }
        let response = request.send().await.expect("answered");
        expect_error(response, status, code).await;
    }
    // The stream too: a bad id before a missing token.
    let response = send(
        &app,
        Method::GET,
        "/api/boards/nope/events",
        None,
        Via::Nothing,
    )
    .await;
    expect_error(response, 400, "invalid_id").await;
}

#[tokio::test]
async fn a_stale_if_match_loses_to_a_body_error_and_a_missing_note() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let patch = |body: Value, path: String| {
        app.http
            .patch(app.url(&path))
            .header(header::IF_MATCH, "\"7\"")
            .json(&body)
            .send()
    };
    let one = format!("/api/boards/{board}/notes/{note}");
    let response = patch(json!({ "x": 5e6 }), one.clone())
        .await
        .expect("PATCH");
    expect_error(response, 422, "validation_failed").await;
    let response = patch(
        json!({ "x": 1 }),
        format!("/api/boards/{board}/notes/{}", Uuid::new_v4()),
    )
    .await
    .expect("PATCH");
    expect_error(response, 404, "not_found").await;
    let response = patch(json!({ "x": 1 }), one).await.expect("PATCH");
    expect_error(response, 412, "version_mismatch").await;
}

// ---- If-Match --------------------------------------------------------------------------

#[tokio::test]
async fn if_match_compares_entity_tags_as_opaque_text() {
    let app = spawn_app().await;
    let (board, note) = board_with_note(&app).await;
    let path = format!("/api/boards/{board}/notes/{note}");
    let patch = |tag: &'static str| {
        app.http
            .patch(app.url(&path))
            .header(header::IF_MATCH, tag)
            .json(&json!({ "text": "changed" }))
            .send()
    };
    // At version 1: none of these is the tag "1".
    for tag in [
        "\"01\"", "\"+1\"", "\"1.0\"", "\" 1\"", "W/\"1\"", "1", "\"1", "\"2\"",
    ] {
        let response = patch(tag).await.expect("PATCH");
        let body = expect_error(response, 412, "version_mismatch").await;
        assert_eq!(body["note"]["version"], 1, "If-Match: {tag}");
    }
    let response = patch("\"1\"").await.expect("PATCH");
    assert_eq!(response.status(), 200);
    // At version 2, the issue's "+2" and its siblings.
    for tag in ["\"+2\"", "\"02\"", "\"2 \"", "\"0x2\""] {
        let response = patch(tag).await.expect("PATCH");
        expect_error(response, 412, "version_mismatch").await;
    }
    let response = patch("\"1\", \"2\"").await.expect("PATCH");
    assert_eq!(response.status(), 200, "a list matching one tag");
}
