//! Hostile input: generated bodies, query strings, path segments and tokens thrown at every
//! route of one running server (odd unicode, U+0000, huge numbers, deep nesting, wrong
//! types, 1 MB strings). No answer is a 500, none takes longer than 10 s, every `/api` error
//! is the contract's JSON, and the server still answers afterwards. Also: text that looks
//! like SSE framing never changes the stream's framing.
//!
//! The property test runs a fixed number of cases from a fixed seed, so a failure
//! reproduces, and shrinks a little (bounded) so it reports a small case.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use reqwest::{Method, header};
use serde_json::{Value, json};

use crate::auth::{SECRET, Via, admin, create_board, send, sign, spawn_auth_app};
use crate::helpers::{HEARTBEAT, TestApp, spawn_app};

/// Generated cases: about 3 s of requests (debug build), so CI can afford it on every run.
const CASES: u32 = 1000;
/// Boards to aim at; a few get deleted along the way (DELETE is one of the routes).
const BOARDS: usize = 16;
const PER_REQUEST: Duration = Duration::from_secs(10);

/// One request to throw.
#[derive(Clone)]
struct Throw {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    auth: Auth,
}

/// Short enough to read in a failure report: a 1 MB body is shown by its start and size.
impl std::fmt::Debug for Throw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = |text: &str| text.chars().take(300).collect::<String>();
        let body = self
            .body
            .as_ref()
            .map(|b| format!("{} bytes: {}", b.len(), cut(&String::from_utf8_lossy(b))));
        f.debug_struct("Throw")
            .field("method", &self.method)
            .field("path", &cut(&self.path))
            .field("content_type", &self.content_type)
            .field("auth", &self.auth)
            .field("body", &body)
            .finish()
    }
}

#[derive(Clone, Debug)]
enum Auth {
    /// The valid token for every board.
    Admin,
    /// This `Authorization` header value.
    Header(String),
    /// This `access_token` query value (already encoded).
    Query(String),
}

// ---- strategies ------------------------------------------------------------------------

/// Strings a careless parser trips on.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => Just(String::new()),
        1 => Just("\u{0}".to_string()),
        1 => Just("a\u{0}b".to_string()),
        1 => "[\\x00-\\x1f\\x7f]{1,8}",
        1 => Just("\u{202e}evil\u{200b}\u{feff}\u{fffd}".to_string()),
        1 => Just("𝕳𝖊𝖑𝖑𝖔 🧨 ﷽ ⸻ \u{10ffff}".to_string()),
        1 => Just("\r\n\r\nevent: board.deleted\ndata: x\n\nid: 999".to_string()),
        1 => Just("' OR 1=1; --".to_string()),
        1 => Just("%00%ff%c0%af..%2f".to_string()),
        1 => "[a-z]{150,260}",
    ]
}

/// Numbers at and past every edge, as JSON text.
fn odd_number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        Just("1e400".to_string()),
        Just("-1e400".to_string()),
        Just("1e-400".to_string()),
        Just("123456789012345678901234567890".to_string()),
        Just("-0".to_string()),
        Just("0.0000000000000000000001".to_string()),
        Just("1000000.0000001".to_string()),
        Just("18446744073709551616".to_string()),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(odd_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one field of a board or note: often the right type at an edge, often not.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        odd_number(),
        odd_string().prop_map(|s| Value::String(s).to_string()),
        json_value().prop_map(|v| v.to_string()),
        Just("\"#ffffff\"".to_string()),
        Just("\"#GGGGGG\"".to_string()),
        Just("\"\\u0000\"".to_string()),
        Just("\"\\ud800\"".to_string()),
    ]
}

/// Objects with the API's field names (and some others), each with a generated value.
fn shaped_object() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "title",
        "text",
        "x",
        "y",
        "color",
        "width",
        "height",
        "id",
        "version",
        "author",
        "__proto__",
        "",
    ]);
    prop::collection::vec((names, field_text()), 0..7).prop_map(|fields| {
        let members: Vec<String> = fields
            .into_iter()
            .map(|(name, value)| format!("{}:{value}", Value::String(name.into())))
            .collect();
        format!("{{{}}}", members.join(",")).into_bytes()
    })
}

/// A valid board or note body with one field replaced by a generated value: most of the
/// body is right, so the odd field is what the server has to judge.
fn one_field_off() -> impl Strategy<Value = Vec<u8>> {
    let bases = prop::sample::select(vec![
        json!({ "title": "t" }),
        json!({ "text": "t", "x": 0, "y": 0 }),
        json!({ "text": "t", "x": 0, "y": 0, "color": "#ffcc00", "width": 200, "height": 150 }),
        json!({ "x": 5 }),
    ]);
    let field = prop::sample::select(vec!["title", "text", "x", "y", "color", "width", "height"]);
    (bases, field, field_text()).prop_map(|(base, field, value)| {
        let mut members: Vec<String> = base
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(name, _)| name.as_str() != field)
            .map(|(name, v)| format!("{}:{v}", Value::String(name.clone())))
            .collect();
        members.push(format!("{}:{value}", Value::String(field.into())));
        format!("{{{}}}", members.join(",")).into_bytes()
    })
}

fn nested(depth: usize, open: &str, close: &str) -> Vec<u8> {
    format!("{}1{}", open.repeat(depth), close.repeat(depth)).into_bytes()
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        3 => shaped_object().prop_map(Some),
        4 => one_field_off().prop_map(Some),
        2 => json_value().prop_map(|v| Some(v.to_string().into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Some),
        1 => Just(Some(br#"{"text":"a","x":1e400,"y":0}"#.to_vec())),
        1 => Just(Some(nested(10_000, "[", "]"))),
        1 => Just(Some(nested(10_000, "{\"a\":", "}"))),
        // As deep as fits under the 64 KiB body limit.
        1 => Just(Some(nested(32_000, "[", "]"))),
        1 => Just(Some([&b"{\"title\":"[..], &nested(32_000, "[", "]"), b"}"].concat())),
        1 => Just(Some(
            json!({ "title": "x".repeat(1 << 20) }).to_string().into_bytes()
        )),
        1 => Just(Some(br#"["a", 1, 2]"#.to_vec())),
    ]
}

fn percent_encoded(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A path segment: a real id, a missing one, or something that is no id at all.
fn segment(real: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        10 => prop::sample::select(real),
        1 => Just(uuid::Uuid::new_v4().to_string()),
        1 => Just("00000000-0000-0000-0000-000000000000".to_string()),
        2 => odd_string().prop_map(|s| percent_encoded(&s)),
        1 => Just("%00".to_string()),
        1 => Just("..%2F..%2Fetc%2Fpasswd".to_string()),
        1 => Just("a".repeat(5000)),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "limit",
            "cursor",
            "last_event_id",
            "name",
            "access_token",
            "title",
        ])
        .prop_map(str::to_string),
        odd_string().prop_map(|s| percent_encoded(&s)),
    ];
    let value = prop_oneof![
        odd_number(),
        odd_string().prop_map(|s| percent_encoded(&s)),
        Just("%ff%fe".to_string()),
        Just("%".to_string()),
        Just(String::new()),
    ];
    prop::collection::vec((key, value), 0..4).prop_map(|pairs| {
        if pairs.is_empty() {
            return String::new();
        }
        let joined: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("?{}", joined.join("&"))
    })
}

fn auth() -> impl Strategy<Value = Auth> {
    let signed_claims = json_value().prop_map(|claims| {
        // Arbitrary claims, correctly signed: only the claim checks stand in the way.
        let token = sign(
            "HS256",
            &json!({ "alg": "HS256", "typ": "JWT" }),
            &claims,
            SECRET.as_bytes(),
        );
        Auth::Header(format!("Bearer {token}"))
    });
    prop_oneof![
        8 => Just(Auth::Admin),
        1 => odd_string()
            .prop_filter("a header value", |s| s.bytes().all(|b| b >= 0x20 && b != 0x7f))
            .prop_map(|s| Auth::Header(format!("Bearer {s}"))),
        1 => signed_claims,
        1 => odd_string().prop_map(|s| Auth::Query(percent_encoded(&s))),
    ]
}

fn throw(boards: Vec<String>, notes: Vec<String>) -> impl Strategy<Value = Throw> {
    let templates = vec![
        ("/api/boards", vec![Method::GET, Method::POST]),
        (
            "/api/boards/{b}",
            vec![Method::GET, Method::PATCH, Method::DELETE],
        ),
        ("/api/boards/{b}/notes", vec![Method::GET, Method::POST]),
        (
            "/api/boards/{b}/notes/{n}",
            vec![Method::PATCH, Method::DELETE],
        ),
        ("/api/boards/{b}/events", vec![Method::GET]),
        ("/api/boards/{b}/presence", vec![Method::GET]),
        ("/api/{b}", vec![Method::GET]),
        ("/healthz", vec![Method::GET]),
        ("/readyz", vec![Method::GET]),
        ("/", vec![Method::GET]),
        ("/b/{b}", vec![Method::GET]),
        ("/static/{b}", vec![Method::GET]),
    ];
    let any_method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
    ]);
    let content_type = prop::sample::select(vec![
        Some("application/json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/json; charset=latin1"),
        None,
    ]);
    (
        prop::sample::select(templates),
        any::<prop::sample::Index>(),
        prop::option::weighted(0.15, any_method),
        segment(boards),
        segment(notes),
        query(),
        body(),
        content_type,
        auth(),
    )
        .prop_map(
            |((template, methods), pick, other_method, b, n, query, body, content_type, auth)| {
                let method = other_method.unwrap_or_else(|| pick.get(&methods).clone());
                Throw {
                    method,
                    path: format!("{}{query}", template.replace("{b}", &b).replace("{n}", &n)),
                    body,
                    content_type,
                    auth,
                }
            },
        )
}

// ---- running ---------------------------------------------------------------------------

/// Sends one throw and checks the answer; returns its status (0: the connection was cut),
/// or what was wrong.
async fn check(app: &TestApp, admin: &str, throw: &Throw) -> Result<u16, String> {
    let mut url = app.url(&throw.path);
    let mut request_auth = None;
    match &throw.auth {
        Auth::Admin => request_auth = Some(format!("Bearer {admin}")),
        Auth::Header(value) => request_auth = Some(value.clone()),
        Auth::Query(token) => {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("access_token={token}"));
        }
    }
    let mut request = app
        .http
        .request(throw.method.clone(), &url)
        .timeout(Duration::from_secs(3600));
    if let Some(value) = request_auth {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(content_type) = throw.content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    if let Some(body) = &throw.body {
        request = request.body(body.clone());
    }
    let started = Instant::now();
    let response = match tokio::time::timeout(PER_REQUEST, request.send()).await {
        Err(_) => return Err(format!("no answer within {PER_REQUEST:?}")),
        // A head over actix's 128 KiB is cut off; nothing else may fail to answer.
        Ok(Err(_)) if url.len() > 100_000 => return Ok(0),
        Ok(Err(e)) => return Err(format!("no HTTP answer: {e}")),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let is_stream = throw.path.contains("/events");
    if status.is_server_error() && !(status == 503 && (is_stream || throw.path == "/readyz")) {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{status} after {:?}: {body}", started.elapsed()));
    }
    if throw.path.starts_with("/api")
        && status.is_client_error()
        && throw.method != Method::HEAD
        && status != 431
    {
        let body = tokio::time::timeout(PER_REQUEST, response.bytes())
            .await
            .map_err(|_| "the error body did not arrive".to_string())?
            .map_err(|e| format!("the error body: {e}"))?;
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|_| format!("{status}: not JSON: {}", String::from_utf8_lossy(&body)))?;
        if !parsed["error"]["code"].is_string() || !parsed["error"]["message"].is_string() {
            return Err(format!("{status}: not the error shape: {parsed}"));
        }
    }
    // A stream that opened is dropped here, closing it.
    Ok(status.as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_at_every_route_never_gets_a_500_or_a_hang() {
    let started = Instant::now();
    let app = spawn_auth_app().await;
    let admin = admin();
    let mut boards = Vec::new();
    let mut notes = Vec::new();
    for i in 0..BOARDS {
        let board = create_board(&app, &admin, &format!("board {i}")).await;
        let response = send(
            &app,
            Method::POST,
            &format!("/api/boards/{board}/notes"),
            Some(&json!({ "text": "n", "x": 0, "y": 0 })),
            Via::Header(&admin),
        )
        .await;
        let note: Value = response.json().await.expect("note");
        notes.push(note["id"].as_str().expect("id").to_string());
        boards.push(board);
    }

    // The extremes, once each.
    let huge = "x".repeat(1 << 20);
    let fixed = [
        (Method::GET, format!("/api/boards?limit={huge}")),
        (
            Method::GET,
            format!("/api/boards?cursor={}", "9".repeat(5000)),
        ),
        (Method::GET, "/api/boards?limit=1e400".into()),
        (Method::GET, "/api/boards?limit=99999999999999999999".into()),
        (
            Method::GET,
            format!("/api/boards/{}/events?last_event_id=1e400", boards[0]),
        ),
        (
            Method::GET,
            format!(
                "/api/boards/{}/events?last_event_id=99999999999999999999",
                boards[0]
            ),
        ),
        (
            Method::GET,
            format!("/api/boards/{}/events?name=%00", boards[0]),
        ),
        (
            Method::GET,
            format!("/api/boards/{}", "%F0%9F%92%A5".repeat(100)),
        ),
    ];
    for (method, path) in fixed {
        let case = Throw {
            method,
            path,
            body: None,
            content_type: None,
            auth: Auth::Admin,
        };
        if let Err(e) = check(&app, &admin, &case).await.map(|_| ()) {
            let shown: String = case.path.chars().take(120).collect();
            panic!("{} {shown}: {e}", case.method);
        }
    }

    let config = Config {
        cases: CASES,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]));
    let strategy = throw(boards.clone(), notes.clone());
    let handle = tokio::runtime::Handle::current();
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = tokio::task::block_in_place(|| {
        // As text: the failing case is in it, shortened by `Throw`'s Debug.
        runner
            .run(&strategy, |throw| {
                let status = handle.block_on(check(&app, &admin, &throw)).map_err(|e| {
                    let shown: String = throw.path.chars().take(200).collect();
                    TestCaseError::fail(format!("{} {shown}: {e}", throw.method))
                })?;
                *statuses
                    .lock()
                    .expect("not poisoned")
                    .entry(status)
                    .or_default() += 1;
                Ok(())
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let statuses = statuses.into_inner().expect("not poisoned");
    eprintln!("fuzz: statuses {statuses:?} in {:?}", started.elapsed());
    // The cases reach past the front door: some succeed, many are refused for what they say.
    let count =
        |range: std::ops::Range<u16>| -> u32 { statuses.range(range).map(|(_, n)| n).sum() };
    assert!(count(200..300) >= 20, "successes: {statuses:?}");
    assert!(
        count(400..401) + count(413..416) + count(422..423) >= 50,
        "{statuses:?}"
    );

    // Still serving, and still the same server.
    let response = app.http.get(app.url("/healthz")).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    let response = send(&app, Method::GET, "/api/boards", None, Via::Header(&admin)).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the fuzz test took {:?}",
        started.elapsed()
    );
}

// ---- framing ---------------------------------------------------------------------------

/// Titles and texts that look like SSE framing.
const HOSTILE: [&str; 5] = [
    "a\n\nevent: board.deleted\ndata: x\n\nid: 999 z",
    "lone\rcarriage\r\rreturn",
    "data: x\r\n:comment z",
    "retry: 1\nevent: note.deleted",
    "line\u{2028}separator\u{85}next",
];

#[tokio::test]
async fn hostile_titles_and_texts_never_change_the_streams_framing() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let note = app.add_note(&board, "plain").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut stream = app.open_stream(&board).await;
    let snapshot = stream
        .next_change(Duration::from_secs(2))
        .await
        .expect("snapshot");
    let mut seq = snapshot.seq();
    for text in HOSTILE {
        let renamed = app
            .http
            .patch(app.url(&format!("/api/boards/{board}")))
            .json(&json!({ "title": text }))
            .send()
            .await
            .expect("PATCH board");
        assert_eq!(renamed.status(), 200, "{text:?}");
        let renamed: Value = renamed.json().await.expect("board JSON");
        let event = stream
            .next_change(Duration::from_secs(2))
            .await
            .expect("board.updated");
        seq += 1;
        assert_eq!(
            (event.event.as_str(), event.seq()),
            ("board.updated", seq),
            "{text:?}"
        );
        assert_eq!(event.json()["board"]["title"], renamed["title"], "{text:?}");

        let patched = app.patch_note(&board, &note, json!({ "text": text })).await;
        assert_eq!(patched.status(), 200, "{text:?}");
        let event = stream
            .next_change(Duration::from_secs(2))
            .await
            .expect("note.updated");
        seq += 1;
        assert_eq!(
            (event.event.as_str(), event.seq()),
            ("note.updated", seq),
            "{text:?}"
        );
        assert_eq!(event.json()["note"]["text"], text, "{text:?}");
    }
    // The stream is still healthy: the next events are the server's own.
    stream
        .next_named("heartbeat", HEARTBEAT * 3)
        .await
        .expect("heartbeat");
    app.add_note(&board, "after").await;
    let event = stream
        .next_change(Duration::from_secs(2))
        .await
        .expect("next event");
    assert_eq!(
        (event.event.as_str(), event.seq()),
        ("note.created", seq + 1)
    );
}
