//! What one client can take: writes per second, streams at once, slow requests, big
//! heads, bodies that are not objects; and which origins may call the API from a browser.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::{SECRET, Via, admin, claims, create_board, send, token};
use crate::errors::expect_error;
use crate::helpers::{TestApp, spawn_app, spawn_app_with};

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in whole seconds")
}

async fn post_note(app: &TestApp, board: &str, via: Via<'_>) -> reqwest::Response {
    send(
        app,
        Method::POST,
        &format!("/api/boards/{board}/notes"),
        Some(&json!({ "text": "n", "x": 0, "y": 0 })),
        via,
    )
    .await
}

/// Writes as `client` (an `X-Forwarded-For` address) until one is refused; returns how many
/// passed and the refusal.
async fn write_until_refused(
    app: &TestApp,
    board: &str,
    forwarded_for: &str,
) -> (usize, reqwest::Response) {
    for passed in 0..50 {
        let response = app
            .http
            .post(app.url(&format!("/api/boards/{board}/notes")))
            .header("X-Forwarded-For", forwarded_for)
            .json(&json!({ "text": "n", "x": 0, "y": 0 }))
            .send()
            .await
            .expect("answered");
        if response.status() != StatusCode::CREATED {
            return (passed, response);
        }
    }
    panic!("50 writes in a row passed a limit of 2 per second");
}

#[tokio::test]
async fn a_burst_of_writes_past_the_limit_gets_429_and_the_limit_recovers() {
    let app = spawn_app_with(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.write_rate_limit = 2;
    })
    .await;
    let board = create_board(&app, &admin(), "Plans").await;
    let ana = token(claims("ana"));
    let bob = token(claims("bob"));

    let mut passed = 0;
    let refused = loop {
        let response = post_note(&app, &board, Via::Header(&ana)).await;
        if response.status() != StatusCode::CREATED {
            break response;
        }
        passed += 1;
        assert!(
            passed < 50,
            "50 writes in a row passed a limit of 2 per second"
        );
    };
    // A burst is twice the rate; a write or so may refill while the burst is sent.
    assert!((4..=6).contains(&passed), "{passed} writes passed");
    let wait = retry_after(&refused);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    expect_error(refused, 429, "rate_limited").await;

    // The limit is per client whichever way the token comes (a cell may refill meanwhile),
    // and counts only writes.
    let mut passed_by_query = 0;
    for _ in 0..5 {
        if post_note(&app, &board, Via::Query(&ana)).await.status() == StatusCode::CREATED {
            passed_by_query += 1;
        }
    }
    assert!(passed_by_query <= 1, "{passed_by_query} passed by query");
    assert_eq!(
        post_note(&app, &board, Via::Header(&bob)).await.status(),
        201
    );
    for _ in 0..10 {
        let read = send(
            &app,
            Method::GET,
            &format!("/api/boards/{board}"),
            None,
            Via::Header(&ana),
        )
        .await;
        assert_eq!(read.status(), 200, "reads are not limited");
    }

    // After the wait it says, the client may write again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        post_note(&app, &board, Via::Header(&ana)).await.status(),
        201
    );
}

#[tokio::test]
async fn with_auth_off_writes_are_limited_per_address_and_only_the_proxys_hop_counts() {
    let app = spawn_app_with(|s| {
        s.write_rate_limit = 2;
        s.trust_proxy = true;
    })
    .await;
    let board = app.board_id().await; // one write from 127.0.0.1

    let (passed, refused) = write_until_refused(&app, &board, "203.0.113.7").await;
    assert!((4..=6).contains(&passed), "{passed} writes passed");
    assert!(retry_after(&refused) >= 1);
    expect_error(refused, 429, "rate_limited").await;

    // Inventing an earlier hop does not make a new client: the router's hop is the last.
    let (passed, _) = write_until_refused(&app, &board, "198.51.100.1, 203.0.113.7").await;
    assert!(passed <= 1, "the same client behind a forged first hop");

    // Another address is another client.
    let (passed, _) = write_until_refused(&app, &board, "203.0.113.8").await;
    assert!(passed >= 4);
}

/// Opens streams with `open` until one is refused; keeps the open ones.
async fn open_until_refused<F, Fut>(mut open: F) -> (Vec<reqwest::Response>, reqwest::Response)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let mut open_streams = Vec::new();
    for _ in 0..20 {
        let response = open().await;
        if response.status() != StatusCode::OK {
            return (open_streams, response);
        }
        open_streams.push(response);
    }
    panic!("20 streams opened under a cap of 3");
}

#[tokio::test]
async fn a_client_opening_streams_in_a_loop_hits_its_cap_and_others_are_unaffected() {
    let app = spawn_app_with(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.max_streams_per_client = 3;
    })
    .await;
    let board = create_board(&app, &admin(), "Plans").await;
    let path = format!("/api/boards/{board}/events");
    let ana = token(claims("ana"));
    // Another token for the same subject is the same client.
    let ana_again = token(json!({ "sub": "ana", "exp": crate::auth::now() + 60 }));
    let (mut streams, refused) = open_until_refused(|| {
        let (path, app, via) = (&path, &app, Via::Query(&ana));
        async move { send(app, Method::GET, path, None, via).await }
    })
    .await;
    assert_eq!(streams.len(), 3);
    assert!(retry_after(&refused) >= 1);
    let body = expect_error(refused, 503, "unavailable").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("3 open streams")),
        "a clear answer: {body}"
    );
    let again = send(&app, Method::GET, &path, None, Via::Header(&ana_again)).await;
    assert_eq!(again.status(), 503, "the cap is per subject, not per token");

    // Bob is another client.
    let bob = token(claims("bob"));
    let response = send(&app, Method::GET, &path, None, Via::Header(&bob)).await;
    assert_eq!(response.status(), 200, "another client opens a stream");

    // Closing one of Ana's frees its slot.
    streams.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = send(&app, Method::GET, &path, None, Via::Header(&ana)).await;
        if response.status() == StatusCode::OK {
            streams.push(response);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed stream's slot is released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(streams.len(), 3);
}

#[tokio::test]
async fn with_auth_off_the_stream_cap_counts_per_address() {
    let app = spawn_app_with(|s| {
        s.max_streams_per_client = 3;
        s.trust_proxy = true;
    })
    .await;
    let board = app.board_id().await;
    let open = |address: &'static str| {
        let request = app
            .http
            .get(app.url(&format!("/api/boards/{board}/events")))
            .header("X-Forwarded-For", address)
            .timeout(Duration::from_secs(3600));
        async move { request.send().await.expect("answered") }
    };
    let (streams, refused) = open_until_refused(|| open("203.0.113.7")).await;
    assert_eq!(streams.len(), 3);
    expect_error(refused, 503, "unavailable").await;
    assert_eq!(open("203.0.113.8").await.status(), 200);
}

// ---- CORS ------------------------------------------------------------------------------

const ALLOWED: &str = "https://app.example.com";

fn header_of<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_get_none() {
    let app = spawn_app_with(|s| s.cors_origins = vec![ALLOWED.into()]).await;
    let board = app.board_id().await;

    // The preflight of a write with a token and JSON.
    let preflight = app
        .http
        .request(
            Method::OPTIONS,
            app.url(&format!("/api/boards/{board}/notes")),
        )
        .header("Origin", ALLOWED)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header_of(&preflight, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let allowed_headers = header_of(&preflight, "access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "if-match",
        "last-event-id",
        "cache-control",
        "accept",
        "x-display-name",
    ] {
        assert!(
            allowed_headers.contains(name),
            "{name} in {allowed_headers}"
        );
    }
    let methods = header_of(&preflight, "access-control-allow-methods").unwrap_or_default();
    for method in ["GET", "POST", "PATCH", "DELETE"] {
        assert!(methods.contains(method), "{method} in {methods}");
    }

    // An answer exposes the headers a page needs.
    let created = app
        .http
        .post(app.url(&format!("/api/boards/{board}/notes")))
        .header("Origin", ALLOWED)
        .json(&json!({ "text": "t", "x": 0, "y": 0 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    assert_eq!(
        header_of(&created, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    let exposed = header_of(&created, "access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in ["etag", "location", "retry-after"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }

    // The stream, as EventSource opens it, and an error answer.
    let stream = app
        .http
        .get(app.url(&format!("/api/boards/{board}/events")))
        .header("Origin", ALLOWED)
        .header("Last-Event-ID", "0")
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        header_of(&stream, "access-control-allow-origin"),
        Some(ALLOWED)
    );
    drop(stream);
    let missing = app
        .http
        .get(app.url("/api/boards/not-an-id"))
        .header("Origin", ALLOWED)
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 400);
    assert_eq!(
        header_of(&missing, "access-control-allow-origin"),
        Some(ALLOWED)
    );

    // Another origin is served (a same-origin page sends Origin on POST) but gets no CORS
    // headers, so a browser keeps the answer from that origin's page.
    for origin in ["https://evil.example.com", "http://app.example.com", "null"] {
        let response = app
            .http
            .post(app.url("/api/boards"))
            .header("Origin", origin)
            .json(&json!({ "title": "t" }))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201, "{origin}");
        assert!(
            header_of(&response, "access-control-allow-origin").is_none(),
            "{origin}"
        );
        let preflight = app
            .http
            .request(Method::OPTIONS, app.url("/api/boards"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .expect("preflight");
        assert!(
            header_of(&preflight, "access-control-allow-origin").is_none(),
            "{origin}"
        );
        expect_error(preflight, 403, "forbidden").await;
    }
}

#[tokio::test]
async fn without_cors_origins_no_origin_gets_cors_headers() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/api/boards"))
        .header("Origin", ALLOWED)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    assert!(header_of(&response, "access-control-allow-origin").is_none());
    let preflight = app
        .http
        .request(Method::OPTIONS, app.url("/api/boards"))
        .header("Origin", ALLOWED)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(header_of(&preflight, "access-control-allow-origin").is_none());
    expect_error(preflight, 405, "method_not_allowed").await;
}

// ---- slow and oversized requests -------------------------------------------------------

/// Reads from `stream` until EOF, an error or `wait`; returns what arrived and when it
/// ended (`None`: still open after `wait`).
async fn read_until_closed(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    wait: Duration,
) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let Some(left) = wait.checked_sub(started.elapsed()) else {
            return (String::from_utf8_lossy(&received).into(), None);
        };
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Sends `first` at once, then one byte of `rest` every `every`, until the server hangs
/// up; returns what the server said and how long after `first` it closed.
async fn trickle(
    app: &TestApp,
    first: &str,
    rest: &str,
    every: Duration,
    wait: Duration,
) -> (String, Option<Duration>) {
    let stream = tokio::net::TcpStream::connect(app.socket_addr())
        .await
        .expect("connects");
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(first.as_bytes())
        .await
        .expect("sends the start");
    let rest = rest.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        for byte in rest {
            tokio::time::sleep(every).await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let outcome = read_until_closed(&mut read, wait).await;
    writer.abort();
    outcome
}

#[tokio::test]
async fn headers_that_trickle_in_are_cut_off_after_five_seconds() {
    let app = spawn_app().await;
    let started = Instant::now();
    let headers = "X-Slow: a\r\n".repeat(20);
    let slow = trickle(
        &app,
        "GET /healthz HTTP/1.1\r\nHost: test\r\n",
        &headers,
        Duration::from_millis(300),
        Duration::from_secs(15),
    );
    // Meanwhile the server serves everyone else.
    let others = async {
        for _ in 0..5 {
            let response = app.http.get(app.url("/healthz")).send().await.expect("GET");
            assert_eq!(response.status(), 200);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let ((said, closed_after), ()) = tokio::join!(slow, others);
    let closed_after = closed_after.expect("the server hangs up on a slow head");
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(8),
        "after about 5 s: {closed_after:?} ({:?} in all)",
        started.elapsed()
    );
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "a 408 or nothing: {said:?}"
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_with_408() {
    let app = spawn_app().await;
    let body = r#"{"title": "a title that arrives one byte at a time"}"#;
    let head = format!(
        "POST /api/boards HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    );
    let (said, closed_after) = trickle(
        &app,
        &head,
        &body[5..],
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .await;
    let closed_after = closed_after.expect("the server gives up on the body");
    assert!(
        closed_after >= Duration::from_secs(9) && closed_after < Duration::from_secs(13),
        "after about 10 s: {closed_after:?}"
    );
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(said.contains("\"request_timeout\""), "a JSON error: {said}");
    // Nothing was created.
    let boards: Value = app.get_json("/api/boards").await;
    assert_eq!(boards["boards"], json!([]));
}

#[tokio::test]
async fn an_oversized_head_is_refused_and_the_server_carries_on() {
    let app = spawn_app().await;
    let stream = tokio::net::TcpStream::connect(app.socket_addr())
        .await
        .expect("connects");
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "GET /api/boards HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    // The server may hang up before the whole head is written.
    let _ = write.write_all(head.as_bytes()).await;
    let (said, closed_after) = read_until_closed(&mut read, Duration::from_secs(10)).await;
    assert!(closed_after.is_some(), "the connection is closed");
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 431"),
        "431 or nothing: {said:?}"
    );
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let stream = tokio::net::TcpStream::connect(app.socket_addr())
        .await
        .expect("connects");
    let (mut read, mut write) = stream.into_split();
    let _ = write
        .write_all(
            format!("GET /api/boards HTTP/1.1\r\nHost: test\r\n{many_headers}\r\n").as_bytes(),
        )
        .await;
    let (said, _) = read_until_closed(&mut read, Duration::from_secs(10)).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 431"),
        "431 or nothing for 200 headers: {said:?}"
    );
    let response = app.http.get(app.url("/healthz")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_answers_400_invalid_json() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "keep").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    for (method, path) in [
        (Method::POST, "/api/boards".to_string()),
        (Method::PATCH, format!("/api/boards/{board}")),
        (Method::POST, format!("/api/boards/{board}/notes")),
        (Method::PATCH, format!("/api/boards/{board}/notes/{note}")),
    ] {
        for body in [
            r#"["a", 1, 2]"#,
            r#"["a title"]"#,
            "[]",
            r#""a string""#,
            "42",
            "null",
            "true",
        ] {
            let response = app
                .http
                .request(method.clone(), app.url(&path))
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .expect("answered");
            expect_error(response, 400, "invalid_json").await;
        }
    }
    let notes: Value = app.get_json(&format!("/api/boards/{board}/notes")).await;
    let notes = notes["notes"].as_array().expect("notes");
    assert_eq!(notes.len(), 1, "no note was made from an array");
    assert_eq!(notes[0]["version"], 1, "and none was changed");
}

#[tokio::test]
async fn a_read_only_token_is_refused_before_the_write_limit_counts() {
    let app = spawn_app_with(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.write_rate_limit = 1;
    })
    .await;
    let board = create_board(&app, &admin(), "Plans").await;
    let reader = token(json!({ "sub": "rita", "exp": crate::auth::now() + 60, "readonly": true }));
    for _ in 0..5 {
        let response = post_note(&app, &board, Via::Header(&reader)).await;
        expect_error(response, 403, "forbidden").await;
    }
}
