//! The test harness: every test gets its own database (NOTIFY channels are per database)
//! and a real server on a random port.

#![allow(dead_code)]

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use boardcast::{
    config::{ListenerMode, Settings},
    db::{Database, migrations},
    realtime::Stats,
    startup::Application,
};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "test_log.rs"]
mod test_log;

pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The listener mode under test: `BOARDCAST_TEST_LISTENER` (scripts/test runs both).
pub fn listener_mode() -> ListenerMode {
    match std::env::var("BOARDCAST_TEST_LISTENER").as_deref() {
        Ok("shared") => ListenerMode::Shared,
        _ => ListenerMode::PerStream,
    }
}

pub fn base_settings() -> Settings {
    test_log::init();
    let mut settings =
        Settings::from_env().expect("tests need DATABASE_URL (scripts/test sets it)");
    settings.host = "127.0.0.1".into();
    settings.port = 0;
    settings.heartbeat = HEARTBEAT;
    settings.listener = listener_mode();
    settings.pool_size = 8;
    settings.workers = Some(2);
    settings.shutdown_grace = Duration::from_secs(5);
    settings.max_streams_per_client = 10_000;
    settings.write_rate_limit = 0;
    settings
}

/// A connection to the cluster's own database (`DATABASE_URL`), for DDL on test databases.
pub async fn admin_client() -> tokio_postgres::Client {
    let (admin, connection) = base_settings()
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects to the admin database");
    tokio::spawn(connection);
    admin
}

/// A fresh database with the schema applied; returns its name.
pub async fn create_database() -> String {
    let settings = base_settings();
    let name = format!("test_{}", Uuid::new_v4().simple());
    let admin = admin_client().await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creates the test database");
    let mut settings = settings;
    settings.database.dbname(&name);
    let db = Database::new(&settings).expect("database handle");
    let mut client = db
        .connect_driven()
        .await
        .expect("connects to the test database");
    migrations::migrate(&mut client)
        .await
        .expect("migrations apply");
    name
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub db_name: String,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub stats: Arc<Stats>,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let db_name = create_database().await;
    spawn_on(&db_name, adjust).await
}

/// A server on an existing test database (a second instance of the same deployment).
pub async fn spawn_on(db_name: &str, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = base_settings();
    settings.database.dbname(db_name);
    adjust(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("the app starts");
    let port = app.port();
    let shutdown = app.shutdown_token();
    let stats = app.stats();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db_name: db_name.to_string(),
        settings,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        shutdown,
        stats,
        server,
    }
}

/// One SSE event as a client sees it.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }

    pub fn seq(&self) -> i64 {
        self.id.parse().expect("a numeric id")
    }
}

pub struct SseClient {
    events: std::pin::Pin<Box<dyn Stream<Item = SseEvent> + Send>>,
}

impl SseClient {
    pub fn new(response: reqwest::Response) -> SseClient {
        let events = response
            .bytes_stream()
            .eventsource()
            .filter_map(|e| async move {
                e.ok().map(|e| SseEvent {
                    id: e.id,
                    event: e.event,
                    data: e.data,
                })
            });
        SseClient {
            events: Box::pin(events),
        }
    }

    /// The next event of any kind, or `None` if the stream ended or `wait` passed.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.events.next())
            .await
            .ok()
            .flatten()
    }

    /// The next event that is not a heartbeat or presence event.
    pub async fn next_change(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next(left).await?;
            if event.event != "heartbeat" && !event.event.starts_with("presence") {
                return Some(event);
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next(left).await?;
            if event.event == name {
                return Some(event);
            }
        }
    }

    /// Whether the stream ends (the server closed it) within `wait`, skipping events.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match tokio::time::timeout(left, self.events.next()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GETs `path` and reads the answer as JSON (any status).
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET answered")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// `GET /metrics` as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// `127.0.0.1:<port>`, for raw TCP clients.
    pub fn socket_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn create_board(&self, title: &str) -> Value {
        let response = self
            .http
            .post(self.url("/api/boards"))
            .json(&json!({ "title": title }))
            .send()
            .await
            .expect("POST /api/boards");
        assert_eq!(response.status(), 201, "board created");
        response.json().await.expect("board JSON")
    }

    pub async fn board_id(&self) -> String {
        self.create_board("Test board").await["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    pub async fn create_note(&self, board: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.url(&format!("/api/boards/{board}/notes")))
            .json(&body)
            .send()
            .await
            .expect("POST notes");
        assert_eq!(response.status(), 201, "note created");
        response.json().await.expect("note JSON")
    }

    pub async fn add_note(&self, board: &str, text: &str) -> Value {
        self.create_note(board, json!({ "text": text, "x": 10, "y": 20 }))
            .await
    }

    pub async fn patch_note(&self, board: &str, note: &str, body: Value) -> reqwest::Response {
        self.http
            .patch(self.url(&format!("/api/boards/{board}/notes/{note}")))
            .json(&body)
            .send()
            .await
            .expect("PATCH note")
    }

    /// Opens the event stream; `query` is appended as is (e.g. `?last_event_id=3`).
    pub async fn open_stream_raw(
        &self,
        board: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .get(self.url(&format!("/api/boards/{board}/events{query}")))
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("GET events")
    }

    pub async fn open_stream(&self, board: &str) -> SseClient {
        let response = self.open_stream_raw(board, "", None).await;
        assert_eq!(response.status(), 200, "stream opens");
        SseClient::new(response)
    }

    pub async fn resume_stream(&self, board: &str, last_event_id: i64) -> SseClient {
        let response = self
            .open_stream_raw(board, "", Some(&last_event_id.to_string()))
            .await;
        assert_eq!(response.status(), 200, "stream resumes");
        SseClient::new(response)
    }

    /// A plain connection to this test's database, for looking behind the API.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .settings
            .database
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connects to the test database");
        tokio::spawn(connection);
        client
    }

    /// Listener connections to this test's database (`application_name` says so).
    pub async fn listening_backends(&self, sql: &tokio_postgres::Client) -> i64 {
        sql.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
            &[&self.db_name],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

/// The response's `Content-Type`, or "" without one.
pub fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Waits until `check` holds, polling; false if it never did within `wait`.
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `boardcast` binary as a child process on a test database.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    pub address: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    pub async fn start(db_name: &str, env: &[(&str, &str)]) -> ServerProcess {
        let mut settings = base_settings();
        settings.database.dbname(db_name);
        let url = database_url(&settings, db_name);
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_boardcast"));
        command
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "info")
            .env("HEARTBEAT_INTERVAL", format!("{}ms", HEARTBEAT.as_millis()))
            .env("LISTENER", listener_mode().as_str())
            .env("WEB_CONCURRENCY", "2")
            .env_remove("JWT_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starts the boardcast binary");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let lines_log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut port_tx = Some(port_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("listening on port ").nth(1)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(rest.trim().parse::<u16>().unwrap_or(0));
                }
                lines_log.lock().expect("log lock").push(line);
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(20), port_rx)
            .await
            .expect("the server reports its port in time")
            .expect("the server reports its port");
        ServerProcess {
            child,
            port,
            address: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// A `postgres://` URL for `db_name` on the test cluster.
pub fn database_url(settings: &Settings, db_name: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let _ = settings;
    match base.rfind('/') {
        Some(i) if base[..i].contains("://") && base[i + 1..].chars().all(|c| c != '@') => {
            let (head, tail) = base.split_at(i + 1);
            let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
            format!("{head}{db_name}{query}")
        }
        _ => format!("{base}/{db_name}"),
    }
}
