//! The test harness: every test gets its own database (NOTIFY channels are per database)
//! and a real server on a random port.

#![allow(dead_code)]

use std::{
    hash::{Hash, Hasher},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use boardcast::{
    config::{ListenerMode, Settings},
    db::migrations,
    realtime::Stats,
    startup::Application,
};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::error::SqlState;
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

/// The migrated database every test database is copied from: copying a database is
/// quicker than migrating one. Named by a hash of the migrations, so it is made once per
/// cluster and schema and shared by the test binaries; it is the one database tests leave
/// behind (scripts/test deletes its throwaway cluster anyway).
async fn template() -> &'static str {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let mut hash = std::hash::DefaultHasher::new();
            for migration in migrations::MIGRATIONS {
                (migration.version, migration.sql).hash(&mut hash);
            }
            let name = format!("test_template_{:016x}", hash.finish());
            let admin = admin_client().await;
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .expect("reads pg_database")
                .is_some();
            if !exists {
                build_template(&admin, &name).await;
            }
            name
        })
        .await
}

/// Migrates a database of its own and renames it `name` when complete, so a test binary
/// running beside this one never copies a half-migrated template; when two race, the
/// second rename finds the name taken and its copy is dropped.
async fn build_template(admin: &tokio_postgres::Client, name: &str) {
    let building = format!("test_building_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {building}"))
        .await
        .expect("creates the template database");
    let mut settings = base_settings();
    settings.database.dbname(&building);
    let (mut client, connection) = settings
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connects to the template database");
    let driver = tokio::spawn(connection);
    migrations::migrate(&mut client)
        .await
        .expect("migrations apply");
    // Dropping the client ends its session; the driver ends once it has.
    drop(client);
    let _ = driver.await;
    match while_in_use(
        admin,
        &format!("ALTER DATABASE {building} RENAME TO {name}"),
    )
    .await
    {
        Ok(()) => {}
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {
            drop_database(admin, &building).await;
        }
        Err(e) => panic!("cannot rename {building} to {name}: {e}"),
    }
}

/// Runs DDL that needs a database nobody is connected to, retrying while a session that
/// just ended is still closing on the server's side (55006 `object_in_use`).
async fn while_in_use(
    admin: &tokio_postgres::Client,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut tries = 0;
    loop {
        match admin.batch_execute(sql).await {
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            done => return done,
        }
    }
}

/// `FORCE` ends the sessions of servers a test left running.
async fn drop_database(admin: &tokio_postgres::Client, name: &str) {
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("cannot drop test database {name}: {e}");
    }
}

/// A test's own database (NOTIFY channels are per database, so tests cannot hear each
/// other), dropped when this value is: at the end of the test, passed or failed. Derefs
/// to its name.
pub struct TestDatabase {
    name: String,
}

impl std::ops::Deref for TestDatabase {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl TestDatabase {
    /// A plain connection to this database, as the cluster's admin user.
    pub async fn client(&self) -> tokio_postgres::Client {
        let mut settings = base_settings();
        settings.database.dbname(&self.name);
        let (client, connection) = settings
            .database
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connects to the test database");
        tokio::spawn(connection);
        client
    }
}

impl std::fmt::Display for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // A drop inside a test's runtime cannot wait on a future of that runtime: a thread
        // with a runtime of its own does the work, and the test waits for it.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database")
                .block_on(async { drop_database(&admin_client().await, &name).await })
        })
        .join();
    }
}

/// A fresh database with the schema applied: a copy of the template.
pub async fn create_database() -> TestDatabase {
    let template = template().await;
    let name = format!("test_{}", Uuid::new_v4().simple());
    let admin = admin_client().await;
    while_in_use(
        &admin,
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    )
    .await
    .unwrap_or_else(|e| panic!("creates the test database from {template}: {e}"));
    TestDatabase { name }
}

/// An empty database (no schema), dropped like [`create_database`]'s.
pub async fn create_empty_database() -> TestDatabase {
    let name = format!("test_{}", Uuid::new_v4().simple());
    admin_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creates an empty database");
    TestDatabase { name }
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
    /// The database this app made for itself (`spawn_app`), dropped with it (after the
    /// fields above); `None` for a second instance on another app's database (`spawn_on`).
    pub database: Option<TestDatabase>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let database = create_database().await;
    let mut app = spawn_on(&database, adjust).await;
    app.database = Some(database);
    app
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
        database: None,
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

    /// The next event that is not a heartbeat, presence event or signal.
    pub async fn next_change(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = self.next(left).await?;
            if event.event != "heartbeat"
                && event.event != "signal"
                && !event.event.starts_with("presence")
            {
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

    /// POST /api/boards with `title` (auth off); the new board's id.
    pub async fn create_board(&self, title: &str) -> String {
        let board: serde_json::Value = reqwest::Client::new()
            .post(self.url("/api/boards"))
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await
            .expect("create board")
            .json()
            .await
            .expect("json");
        board["id"].as_str().expect("id").to_string()
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
