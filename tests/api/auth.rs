//! Auth on (`JWT_SECRET` set): every outcome of the contract's Auth section, for REST and
//! the stream, with the token in the header and in the query.
//!
//! The tests sign their own tokens with `hmac` + `sha2` (see [`sign`]), never through the
//! server's jsonwebtoken code path, so a bug there cannot make the tests agree with it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::{Method, header};
use serde_json::{Value, json};
use sha2::{Sha256, Sha512};
use uuid::Uuid;

use crate::errors::expect_error;
use crate::helpers::{ServerProcess, SseClient, TestApp, create_database, spawn_app_with};

pub const SECRET: &str = "boardcast-test-secret-0123456789abcdef";
const SOON: Duration = Duration::from_secs(2);

// ---- tokens, made here ----------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with this exact header and claims, signed with `alg` (`HS256`, `HS512` or `none`).
pub fn sign(alg: &str, header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = match alg {
        "HS256" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(input.as_bytes());
            b64(&mac.finalize().into_bytes())
        }
        "HS512" => {
            let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
            mac.update(input.as_bytes());
            b64(&mac.finalize().into_bytes())
        }
        "none" => String::new(),
        other => panic!("no signer for {other}"),
    };
    format!("{input}.{signature}")
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// An HS256 token with the test secret.
pub fn token(claims: Value) -> String {
    sign(
        "HS256",
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &claims,
        SECRET.as_bytes(),
    )
}

/// Claims for `sub`, valid for an hour.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600 })
}

/// A token for every board, valid for an hour.
pub fn admin() -> String {
    token(claims("admin"))
}

/// Every way a token can be wrong, named: each must get 401.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });
    vec![
        ("garbage", "not-a-token".to_string()),
        ("three dots of nothing", "..".to_string()),
        ("not base64", "a$b.c$d.e$f".to_string()),
        (
            "payload not JSON",
            format!("{}.{}.sig", b64(hs256.to_string().as_bytes()), b64(b"nope")),
        ),
        (
            "expired a minute ago",
            token(json!({ "sub": "ana", "exp": now() - 60 })),
        ),
        (
            "wrong key",
            sign(
                "HS256",
                &hs256,
                &claims("ana"),
                b"another-secret-0123456789abcdef0123",
            ),
        ),
        (
            "HS512 with the right key",
            sign(
                "HS512",
                &json!({ "alg": "HS512", "typ": "JWT" }),
                &claims("ana"),
                SECRET.as_bytes(),
            ),
        ),
        (
            "alg none",
            sign(
                "none",
                &json!({ "alg": "none", "typ": "JWT" }),
                &claims("ana"),
                b"",
            ),
        ),
        (
            "alg none signed anyway",
            sign(
                "HS256",
                &json!({ "alg": "none", "typ": "JWT" }),
                &claims("ana"),
                SECRET.as_bytes(),
            ),
        ),
        (
            "header says HS256, signed with HS512",
            sign("HS512", &hs256, &claims("ana"), SECRET.as_bytes()),
        ),
        ("tampered payload", {
            let good = token(claims("ana"));
            let parts: Vec<&str> = good.split('.').collect();
            let evil = b64(json!({ "sub": "root", "exp": now() + 3600 })
                .to_string()
                .as_bytes());
            format!("{}.{}.{}", parts[0], evil, parts[2])
        }),
        ("no sub", token(json!({ "exp": now() + 3600 }))),
        ("no exp", token(json!({ "sub": "ana" }))),
        (
            "empty sub",
            token(json!({ "sub": "", "exp": now() + 3600 })),
        ),
        (
            "exp is a string",
            token(json!({ "sub": "ana", "exp": "tomorrow" })),
        ),
        (
            "boards is not a list of ids",
            token(json!({ "sub": "ana", "exp": now() + 3600, "boards": ["nope"] })),
        ),
    ]
}

// ---- requests --------------------------------------------------------------------------

/// How a request carries its token.
#[derive(Clone, Copy, Debug)]
pub enum Via<'a> {
    Nothing,
    Header(&'a str),
    Query(&'a str),
    /// An `Authorization` header exactly as given.
    RawAuthorization(&'a str),
}

pub async fn spawn_auth_app() -> TestApp {
    spawn_app_with(|s| s.jwt_secret = Some(SECRET.into())).await
}

/// Sends `method path` with `body`, carrying a token `via`. Streams are sent with a long
/// timeout: only their status and headers are awaited.
pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    via: Via<'_>,
) -> reqwest::Response {
    let url = match via {
        Via::Query(token) => {
            let joiner = if path.contains('?') { '&' } else { '?' };
            app.url(&format!("{path}{joiner}access_token={token}"))
        }
        _ => app.url(path),
    };
    let mut request = app
        .http
        .request(method, url)
        .timeout(Duration::from_secs(3600));
    match via {
        Via::Header(token) => request = request.bearer_auth(token),
        Via::RawAuthorization(value) => request = request.header(header::AUTHORIZATION, value),
        Via::Nothing | Via::Query(_) => {}
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("answered within 10 s")
        .expect("request is answered")
}

pub async fn create_board(app: &TestApp, token: &str, title: &str) -> String {
    let response = send(
        app,
        Method::POST,
        "/api/boards",
        Some(&json!({ "title": title })),
        Via::Header(token),
    )
    .await;
    assert_eq!(response.status(), 201, "board created");
    let board: Value = response.json().await.expect("board JSON");
    board["id"].as_str().expect("id").to_string()
}

async fn create_note(app: &TestApp, token: &str, board: &str) -> String {
    let response = send(
        app,
        Method::POST,
        &format!("/api/boards/{board}/notes"),
        Some(&json!({ "text": "hi", "x": 1, "y": 2 })),
        Via::Header(token),
    )
    .await;
    assert_eq!(response.status(), 201, "note created");
    let note: Value = response.json().await.expect("note JSON");
    note["id"].as_str().expect("id").to_string()
}

/// Every `/api` route, with a body where it takes one.
pub fn api_routes(board: &str, note: &str) -> Vec<(Method, String, Option<Value>)> {
    let title = Some(json!({ "title": "renamed" }));
    let new_note = Some(json!({ "text": "t", "x": 0, "y": 0 }));
    vec![
        (Method::GET, "/api/boards".into(), None),
        (Method::POST, "/api/boards".into(), title.clone()),
        (Method::GET, format!("/api/boards/{board}"), None),
        (Method::PATCH, format!("/api/boards/{board}"), title),
        (Method::GET, format!("/api/boards/{board}/notes"), None),
        (Method::POST, format!("/api/boards/{board}/notes"), new_note),
        (
            Method::PATCH,
            format!("/api/boards/{board}/notes/{note}"),
            Some(json!({ "x": 5 })),
        ),
        (Method::GET, format!("/api/boards/{board}/events"), None),
        (Method::GET, format!("/api/boards/{board}/presence"), None),
        (
            Method::DELETE,
            format!("/api/boards/{board}/notes/{note}"),
            None,
        ),
        (Method::DELETE, format!("/api/boards/{board}"), None),
    ]
}

async fn expect_unauthorized(response: reqwest::Response, what: &str) {
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(response.status(), 401, "{what}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{what}: WWW-Authenticate: Bearer, got {challenge:?}"
    );
    expect_error(response, 401, "unauthorized").await;
}

async fn expect_forbidden(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 403, "{what}");
    expect_error(response, 403, "forbidden").await;
}

/// Reads a stream's events until `snapshot`.
async fn snapshot_of(response: reqwest::Response, what: &str) -> Value {
    assert_eq!(response.status(), 200, "{what}: the stream opens");
    let mut stream = SseClient::new(response);
    stream
        .next_named("snapshot", SOON)
        .await
        .unwrap_or_else(|| panic!("{what}: a snapshot"))
        .json()
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test]
async fn every_api_route_refuses_a_missing_or_bad_token_with_401() {
    let app = spawn_auth_app().await;
    let admin = admin();
    let board = create_board(&app, &admin, "Plans").await;
    let note = create_note(&app, &admin, &board).await;
    let bad = bad_tokens();
    for (method, path, body) in api_routes(&board, &note) {
        let what = format!("{method} {path}");
        expect_unauthorized(
            send(&app, method.clone(), &path, body.as_ref(), Via::Nothing).await,
            &format!("{what} without a token"),
        )
        .await;
        for raw in ["Basic YW5hOnB3", "Bearer", "Bearer ", "bearer", "Token abc"] {
            expect_unauthorized(
                send(
                    &app,
                    method.clone(),
                    &path,
                    body.as_ref(),
                    Via::RawAuthorization(raw),
                )
                .await,
                &format!("{what} with Authorization: {raw}"),
            )
            .await;
        }
        for (name, token) in &bad {
            for via in [Via::Header(token), Via::Query(token)] {
                let response = send(&app, method.clone(), &path, body.as_ref(), via).await;
                expect_unauthorized(response, &format!("{what}: {name} via {via:?}")).await;
            }
        }
    }
    // Nothing above changed anything.
    let response = send(
        &app,
        Method::GET,
        &format!("/api/boards/{board}"),
        None,
        Via::Header(&admin),
    )
    .await;
    let body: Value = response.json().await.expect("board JSON");
    assert_eq!(body["title"], "Plans");
    assert_eq!(body["notes"][0]["version"], 1);
}

#[tokio::test]
async fn a_valid_token_opens_every_route_in_the_header_or_the_query() {
    let app = spawn_auth_app().await;
    for form in ["header", "query"] {
        let token = token(claims(&format!("user-{form}")));
        let via = if form == "header" {
            Via::Header(&token)
        } else {
            Via::Query(&token)
        };
        let created = send(
            &app,
            Method::POST,
            "/api/boards",
            Some(&json!({ "title": form })),
            via,
        )
        .await;
        assert_eq!(created.status(), 201, "{form}: POST /api/boards");
        let board = created.json::<Value>().await.expect("board")["id"]
            .as_str()
            .expect("id")
            .to_string();
        let note = create_note(&app, &admin(), &board).await;
        let expected = [200, 201, 200, 200, 200, 201, 200, 200, 200, 204, 204];
        for ((method, path, body), status) in api_routes(&board, &note).into_iter().zip(expected) {
            let response = send(&app, method.clone(), &path, body.as_ref(), via).await;
            assert_eq!(response.status(), status, "{form}: {method} {path}");
            if path.ends_with("/events") {
                snapshot_of(response, &format!("{form} stream")).await;
            }
        }
    }
}

#[tokio::test]
async fn the_header_wins_over_the_query() {
    let app = spawn_auth_app().await;
    let good = admin();
    let expired = token(json!({ "sub": "ana", "exp": now() - 60 }));
    let response = app
        .http
        .get(app.url(&format!("/api/boards?access_token={expired}")))
        .bearer_auth(&good)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "a good header, a bad query");
    let response = app
        .http
        .get(app.url(&format!("/api/boards?access_token={good}")))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("answered");
    expect_unauthorized(response, "a bad header, a good query").await;
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_still_works_and_one_past_it_does_not() {
    let app = spawn_auth_app().await;
    let recent = token(json!({ "sub": "ana", "exp": now() - 1 }));
    let response = send(&app, Method::GET, "/api/boards", None, Via::Header(&recent)).await;
    assert_eq!(
        response.status(),
        200,
        "1 s past exp is inside the 5 s leeway"
    );
    let old = token(json!({ "sub": "ana", "exp": now() - 10 }));
    let response = send(&app, Method::GET, "/api/boards", None, Via::Header(&old)).await;
    expect_unauthorized(response, "10 s past exp").await;
}

#[tokio::test]
async fn a_token_limited_to_some_boards_sees_and_touches_only_those() {
    let app = spawn_auth_app().await;
    let admin = admin();
    let mine = create_board(&app, &admin, "mine").await;
    let other = create_board(&app, &admin, "other").await;
    let other_note = create_note(&app, &admin, &other).await;
    let limited = token(json!({ "sub": "ana", "exp": now() + 3600, "boards": [mine] }));

    for via in [Via::Header(&limited), Via::Query(&limited)] {
        // The list shows only the granted board.
        let listed: Value = send(&app, Method::GET, "/api/boards", None, via)
            .await
            .json()
            .await
            .expect("list JSON");
        let ids: Vec<&str> = listed["boards"]
            .as_array()
            .expect("boards")
            .iter()
            .map(|b| b["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [mine.as_str()], "{via:?}");

        // Its own board works, stream included.
        let response = send(
            &app,
            Method::GET,
            &format!("/api/boards/{mine}/events"),
            None,
            via,
        )
        .await;
        snapshot_of(response, "granted stream").await;

        // Every route of the other board is 403, whether or not the thing exists.
        for (method, path, body) in api_routes(&other, &other_note).into_iter().skip(2) {
            let response = send(&app, method.clone(), &path, body.as_ref(), via).await;
            expect_forbidden(response, &format!("{via:?} {method} {path}")).await;
        }
        let missing = Uuid::new_v4();
        let response = send(
            &app,
            Method::GET,
            &format!("/api/boards/{missing}"),
            None,
            via,
        )
        .await;
        expect_forbidden(response, "a board that does not exist and is not granted").await;

        // And it may not create boards.
        let response = send(
            &app,
            Method::POST,
            "/api/boards",
            Some(&json!({ "title": "new" })),
            via,
        )
        .await;
        expect_forbidden(response, "POST /api/boards with a board list").await;
    }
    let response = send(
        &app,
        Method::POST,
        &format!("/api/boards/{mine}/notes"),
        Some(&json!({ "text": "ok", "x": 0, "y": 0 })),
        Via::Header(&limited),
    )
    .await;
    assert_eq!(response.status(), 201, "writing to a granted board");

    // An empty list grants nothing.
    let nothing = token(json!({ "sub": "ana", "exp": now() + 3600, "boards": [] }));
    let listed: Value = send(
        &app,
        Method::GET,
        "/api/boards",
        None,
        Via::Header(&nothing),
    )
    .await
    .json()
    .await
    .expect("list JSON");
    assert_eq!(listed["boards"], json!([]));
    let response = send(
        &app,
        Method::GET,
        &format!("/api/boards/{mine}"),
        None,
        Via::Header(&nothing),
    )
    .await;
    expect_forbidden(response, "an empty board list").await;
}

#[tokio::test]
async fn a_read_only_token_reads_and_streams_but_cannot_write() {
    let app = spawn_auth_app().await;
    let admin = admin();
    let board = create_board(&app, &admin, "Plans").await;
    let note = create_note(&app, &admin, &board).await;
    let reader = token(json!({ "sub": "rita", "exp": now() + 3600, "readonly": true }));
    for via in [Via::Header(&reader), Via::Query(&reader)] {
        for (method, path, body) in api_routes(&board, &note) {
            let response = send(&app, method.clone(), &path, body.as_ref(), via).await;
            let what = format!("{via:?} {method} {path}");
            if method == Method::GET {
                if path.ends_with("/events") {
                    snapshot_of(response, &what).await;
                } else {
                    assert_eq!(response.status(), 200, "{what}");
                }
            } else {
                expect_forbidden(response, &what).await;
            }
        }
    }
    // `readonly: false` is an ordinary token.
    let writer = token(json!({ "sub": "wim", "exp": now() + 3600, "readonly": false }));
    create_note(&app, &writer, &board).await;
}

#[tokio::test]
async fn the_author_and_the_viewer_name_come_from_the_token() {
    let app = spawn_auth_app().await;
    let admin = admin();
    let board = create_board(&app, &admin, "Plans").await;
    let named = token(json!({ "sub": "u-17", "name": "Ana", "exp": now() + 3600 }));
    let unnamed = token(claims("u-18"));
    for (token, author) in [(&named, "Ana"), (&unnamed, "u-18")] {
        let note: Value = app
            .http
            .post(app.url(&format!("/api/boards/{board}/notes")))
            .bearer_auth(token)
            // Ignored with auth on: the token says who writes.
            .header("X-Display-Name", "Mallory")
            .json(&json!({ "text": "hi", "x": 0, "y": 0 }))
            .send()
            .await
            .expect("POST note")
            .json()
            .await
            .expect("note JSON");
        assert_eq!(note["author"], author);
    }
    // `?name=` is ignored too: presence shows the token's name.
    let response = send(
        &app,
        Method::GET,
        &format!("/api/boards/{board}/events?name=Mallory"),
        None,
        Via::Query(&named),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::new(response);
    let presence = stream
        .next_named("presence", SOON)
        .await
        .expect("presence")
        .json();
    assert_eq!(presence["viewers"][0]["name"], "Ana", "{presence}");
}

#[tokio::test]
async fn a_stream_is_closed_with_retry_when_its_token_expires() {
    let app = spawn_auth_app().await;
    let board = create_board(&app, &admin(), "Plans").await;
    let short = token(json!({ "sub": "ana", "exp": now() + 2 }));
    let opened = Instant::now();
    let response = send(
        &app,
        Method::GET,
        &format!("/api/boards/{board}/events"),
        None,
        Via::Query(&short),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends at expiry; got {text}");
    let elapsed = opened.elapsed();
    assert!(
        elapsed < Duration::from_millis(3500),
        "closed within about 3 s of opening (exp is at most 2 s out), took {elapsed:?}"
    );
    let snapshot_at = text.find("event: snapshot").expect("a snapshot first");
    let last_retry = text.rfind("retry:").expect("a retry line");
    assert!(
        last_retry > snapshot_at,
        "the stream's last frames tell the client when to come back: {text}"
    );
    // Coming back with the same token is refused once the leeway has passed too; a fresh
    // token works.
    let fresh = token(claims("ana"));
    let response = send(
        &app,
        Method::GET,
        &format!("/api/boards/{board}/events"),
        None,
        Via::Query(&fresh),
    )
    .await;
    snapshot_of(response, "a fresh token").await;
}

#[tokio::test]
async fn the_health_routes_and_the_pages_need_no_token() {
    let app = spawn_auth_app().await;
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/b/6f1c0000-0000-4000-8000-000000000000",
        "/static/board.js",
    ] {
        let response = app.http.get(app.url(path)).send().await.expect("answered");
        assert_eq!(response.status(), 200, "{path}");
    }
}

// ---- the token command -----------------------------------------------------------------

fn run_token_command(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
    command
        .arg("token")
        .args(args)
        // The command needs only the secret, not a database.
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET");
    if let Some(secret) = secret {
        command.env("JWT_SECRET", secret);
    }
    command.output().expect("runs boardcast token")
}

/// The claims of `token` after checking its HS256 signature with `key`, independently.
fn verified_claims(token: &str, key: &[u8]) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("base64url header"))
            .expect("header JSON");
    assert_eq!(header["alg"], "HS256");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    mac.verify_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[2])
            .expect("base64url signature"),
    )
    .expect("the signature verifies with JWT_SECRET");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url claims"))
        .expect("claims JSON")
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_server_accepts() {
    let board = Uuid::new_v4().to_string();
    let output = run_token_command(
        &[
            "--sub",
            "ana",
            "--name",
            "Ana",
            "--board",
            &board,
            "--readonly",
            "--ttl",
            "2h",
        ],
        Some(SECRET),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    let minted = stdout.trim();
    let claims = verified_claims(minted, SECRET.as_bytes());
    assert_eq!(claims["sub"], "ana");
    assert_eq!(claims["name"], "Ana");
    assert_eq!(claims["boards"], json!([board]));
    assert_eq!(claims["readonly"], true);
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        (exp - (now() + 7200)).abs() <= 5,
        "exp two hours out: {claims}"
    );

    // The default lifetime is 24 h, for every board, writable.
    let output = run_token_command(&["--sub", "bob"], Some(SECRET));
    assert!(output.status.success());
    let plain = String::from_utf8(output.stdout).expect("UTF-8");
    let claims = verified_claims(plain.trim(), SECRET.as_bytes());
    assert!((claims["exp"].as_i64().expect("exp") - (now() + 86_400)).abs() <= 5);
    assert!(claims.get("boards").is_none() && claims.get("readonly").is_none());

    // The server takes it.
    let app = spawn_auth_app().await;
    let response = send(
        &app,
        Method::GET,
        "/api/boards",
        None,
        Via::Header(plain.trim()),
    )
    .await;
    assert_eq!(response.status(), 200);
    create_board(&app, plain.trim(), "from the command").await;
}

#[tokio::test]
async fn the_token_command_explains_what_is_wrong() {
    for (args, secret, says) in [
        (&["--sub", "ana"][..], None, "JWT_SECRET"),
        (
            &["--sub", "ana", "--board", "nope"][..],
            Some(SECRET),
            "--board",
        ),
        (&["--sub", "ana", "--ttl", "soon"][..], Some(SECRET), "ttl"),
        (&["--sub", ""][..], Some(SECRET), "sub"),
        (&["--name", "Ana"][..], Some(SECRET), "--sub"),
    ] {
        let output = run_token_command(args, secret);
        assert!(!output.status.success(), "{args:?} fails");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

// ---- tokens stay out of the log ---------------------------------------------------------

#[tokio::test]
async fn no_token_reaches_the_server_log() {
    let db = create_database().await;
    let server = ServerProcess::start(&db, &[("JWT_SECRET", SECRET), ("RUST_LOG", "debug")]).await;
    let http = reqwest::Client::new();
    let good = token(json!({ "sub": "ana", "exp": now() + 3600, "name": "Ana" }));
    let mut tokens: Vec<String> = bad_tokens().into_iter().map(|(_, t)| t).collect();
    tokens.push(good.clone());

    let created: Value = http
        .post(server.url("/api/boards"))
        .bearer_auth(&good)
        .json(&json!({ "title": "Plans" }))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("board");
    let board = created["id"].as_str().expect("id").to_string();
    // Every answer's body, to check that no error message echoes a token either.
    let mut answers = Vec::new();
    for token in &tokens {
        for path in [
            format!("/api/boards/{board}"),
            format!("/api/boards/{board}/notes"),
            "/api/boards/not-a-uuid".to_string(),
            "/api/nothing".to_string(),
            "/api/boards?limit=0&cursor=x".to_string(),
        ] {
            let response = http
                .get(server.url(&path))
                .bearer_auth(token)
                .send()
                .await
                .expect("answered");
            answers.push(response.text().await.expect("body"));
            for key in ["access_token", "access%5Ftoken", "ACCESS_TOKEN"] {
                let joiner = if path.contains('?') { '&' } else { '?' };
                let response = http
                    .get(server.url(&format!("{path}{joiner}name=x&{key}={token}")))
                    .send()
                    .await
                    .expect("answered");
                answers.push(response.text().await.expect("body"));
            }
        }
        // A stream: opened, then dropped.
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            http.get(server.url(&format!("/api/boards/{board}/events?access_token={token}")))
                .send(),
        )
        .await
        .expect("stream answered in time")
        .expect("stream answered");
        drop(response);
        let response = http
            .post(server.url(&format!("/api/boards/{board}/notes?access_token={token}")))
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"text\": \"hi\", \"x\": 1, \"y\": 1}")
            .send()
            .await
            .expect("answered");
        answers.push(response.text().await.expect("body"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    assert!(
        log.contains("REDACTED"),
        "the request log ran (and redacted): {log}"
    );
    for token in &tokens {
        // The signature is the secret part; the whole token must not appear either.
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(token.as_str()), "a token reached the log");
        if signature.len() >= 16 {
            assert!(
                !log.contains(signature),
                "a token's signature reached the log"
            );
        }
    }
    assert!(!log.contains(SECRET), "the secret reached the log");
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap_or_default();
        for answer in &answers {
            assert!(!answer.contains(token.as_str()), "an answer echoed a token");
            if signature.len() >= 16 {
                assert!(!answer.contains(signature), "an answer echoed a signature");
            }
        }
    }
}
