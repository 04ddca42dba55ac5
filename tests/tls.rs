//! TLS to PostgreSQL, against a real server with `ssl=on` and a certificate signed by a
//! private CA made for it (`TLS_DATABASE_URL` and the CA's PEM file `TLS_CA_FILE`, both
//! from scripts/lib/pg.sh, which scripts/test uses). Every connection here is made the way
//! production makes it: `Settings::from_lookup` parses the URL, `db::Database` connects.

use std::{collections::HashMap, time::Duration};

use boardcast::{config::Settings, db::Database, startup::Application};
use serde_json::{Value, json};
use uuid::Uuid;

#[path = "api/test_log.rs"]
mod test_log;

/// The TLS cluster's URL. Without one these tests fail, so a CI that forgot to start the
/// cluster cannot pass them silently; `BOARDCAST_SKIP_TLS_TESTS=1` skips them on purpose.
fn tls_url() -> Option<String> {
    match std::env::var("TLS_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("BOARDCAST_SKIP_TLS_TESTS").as_deref() == Ok("1") => {
            eprintln!("TLS tests skipped: BOARDCAST_SKIP_TLS_TESTS=1");
            None
        }
        _ => panic!(
            "TLS_DATABASE_URL is not set: these tests need a PostgreSQL with ssl=on \
             (scripts/test starts one); set BOARDCAST_SKIP_TLS_TESTS=1 to skip them"
        ),
    }
}

/// `url` with `sslmode` set (or left out when `None`).
fn with_sslmode(url: &str, sslmode: Option<&str>) -> String {
    match sslmode {
        None => url.to_string(),
        Some(mode) if url.contains('?') => format!("{url}&sslmode={mode}"),
        Some(mode) => format!("{url}?sslmode={mode}"),
    }
}

/// Settings as the server reads them from its environment, for a test server.
fn settings(database_url: &str) -> Settings {
    test_log::init();
    let listener = std::env::var("BOARDCAST_TEST_LISTENER").unwrap_or_else(|_| "per-stream".into());
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_string()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("HEARTBEAT_INTERVAL", "500ms".into()),
        ("WEB_CONCURRENCY", "2".into()),
        ("WRITE_RATE_LIMIT", "0".into()),
        ("DATABASE_POOL_SIZE", "4".into()),
        ("LISTENER", listener),
    ]);
    Settings::from_lookup(|name| env.get(name).cloned()).expect("the settings parse")
}

/// Whether this session is encrypted, and with which protocol, as the server sees it.
async fn session_tls(client: &tokio_postgres::Client) -> (bool, Option<String>) {
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn require_encrypts_dedicated_and_pooled_connections() {
    let Some(url) = tls_url() else { return };
    let settings = settings(&with_sslmode(&url, Some("require")));
    assert!(!settings.database_tls.verify, "require does not verify");
    let db = Database::new(&settings).expect("database handle");

    let dedicated = db.connect_driven().await.expect("connects with TLS");
    let (ssl, version) = session_tls(&dedicated).await;
    println!("sslmode=require: ssl={ssl} version={version:?}");
    assert!(ssl, "the dedicated connection is encrypted");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );

    let pooled = db.client().await.expect("a pooled connection");
    assert!(
        session_tls(&pooled).await.0,
        "the pool's connection is encrypted"
    );
}

#[tokio::test]
async fn disable_connects_in_plaintext() {
    let Some(url) = tls_url() else { return };
    let db = Database::new(&settings(&with_sslmode(&url, Some("disable")))).expect("handle");
    let client = db.connect_driven().await.expect("connects without TLS");
    let (ssl, _) = session_tls(&client).await;
    assert!(!ssl, "sslmode=disable is plaintext");
}

#[tokio::test]
async fn a_local_url_without_sslmode_uses_tls_when_the_server_offers_it() {
    let Some(url) = tls_url() else { return };
    // 127.0.0.1 without sslmode stays at tokio-postgres' `prefer`; with a TLS connector
    // configured, `prefer` encrypts whenever the server can.
    let db = Database::new(&settings(&with_sslmode(&url, None))).expect("handle");
    let client = db.connect_driven().await.expect("connects");
    assert!(session_tls(&client).await.0, "prefer chose TLS");
}

#[tokio::test]
async fn verify_full_without_sslrootcert_refuses_a_private_cas_certificate_with_a_clear_message() {
    let Some(url) = tls_url() else { return };
    let settings = settings(&with_sslmode(&url, Some("verify-full")));
    assert!(settings.database_tls.verify, "verify-full verifies");
    let db = Database::new(&settings).expect("handle");
    let error = db
        .connect_driven()
        .await
        .expect_err("a certificate no public root signed is refused")
        .to_string();
    println!("sslmode=verify-full, no sslrootcert, private CA: {error}");
    assert!(
        error.contains("certificate"),
        "names the certificate: {error}"
    );
    assert!(
        error.contains("sslrootcert=") && error.contains("sslmode=require"),
        "says what to do: {error}"
    );

    // The server refuses to start on it, saying why.
    let start = Application::build(settings).await;
    let Err(error) = start else {
        panic!("the server must not start without a verified certificate");
    };
    let error = error.to_string();
    println!("Application::build: {error}");
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn the_server_migrates_serves_and_streams_over_tls() {
    let Some(url) = tls_url() else { return };
    let require = with_sslmode(&url, Some("require"));

    // A database of its own, created over TLS.
    let admin = Database::new(&settings(&require))
        .expect("handle")
        .connect_driven()
        .await
        .expect("connects");
    let name = format!("tls_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creates the database");

    // `boardcast migrate`, as Heroku's release phase runs it, over TLS.
    let mut settings = settings(&require);
    settings.database.dbname(&name);
    let database_url = match url.rfind('/') {
        Some(i) => with_sslmode(&format!("{}/{name}", &url[..i]), Some("require")),
        None => panic!("TLS_DATABASE_URL has no database name: {url}"),
    };
    let migrate = tokio::process::Command::new(env!("CARGO_BIN_EXE_boardcast"))
        .arg("migrate")
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("runs boardcast migrate");
    assert!(
        migrate.status.success(),
        "migrate over TLS: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let app = Application::build(settings)
        .await
        .expect("the server starts over TLS");
    let port = app.port();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");

    let created = http
        .post(format!("{base}/api/boards"))
        .json(&json!({ "title": "Over TLS" }))
        .send()
        .await
        .expect("POST /api/boards");
    assert_eq!(created.status(), 201);
    let board: Value = created.json().await.expect("board JSON");
    let board = board["id"].as_str().expect("id").to_string();

    // A stream holds a listener connection (per-stream mode) while it is open.
    let mut stream = http
        .get(format!("{base}/api/boards/{board}/events"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("GET events");
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("the stream starts in time")
        .expect("a chunk");
    assert!(first.is_some());

    let note = http
        .post(format!("{base}/api/boards/{board}/notes"))
        .json(&json!({ "text": "sent over TLS", "x": 1, "y": 2 }))
        .send()
        .await
        .expect("POST note");
    assert_eq!(note.status(), 201);
    let mut seen = String::new();
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("sent over TLS") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(delivered, "the note arrives on the stream: {seen}");

    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);

    // Every session the server holds on its database is encrypted.
    let sessions = admin
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1",
            &[&name],
        )
        .await
        .expect("pg_stat_activity");
    let summary: Vec<(String, bool)> = sessions.iter().map(|r| (r.get(0), r.get(1))).collect();
    println!("server sessions over TLS: {summary:?}");
    assert!(summary.len() >= 2, "the pool and a listener: {summary:?}");
    assert!(summary.iter().all(|(_, ssl)| *ssl), "{summary:?}");

    drop(stream);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

// ---- private CAs -----------------------------------------------------------------------

/// The private CA that signed the TLS cluster's certificate (scripts/lib/pg.sh).
fn cluster_ca() -> String {
    std::env::var("TLS_CA_FILE")
        .ok()
        .filter(|p| std::path::Path::new(p).is_file())
        .expect("TLS_CA_FILE names the CA of the TLS cluster (scripts/test exports it)")
}

/// `url` on host `host` with `params` added to its query.
fn with_params(url: &str, host: &str, params: &str) -> String {
    let url = url.replacen("127.0.0.1", host, 1);
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{params}")
}

/// A CA of the test's own, which signed nothing the cluster presents; its PEM file.
fn another_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let cert = dir.join("other-ca.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-nodes",
            "-subj",
            "/CN=not the CA",
        ])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made a CA");
    cert
}

#[tokio::test]
async fn sslrootcert_trusts_a_private_ca_with_verify_ca_and_verify_full() {
    let Some(url) = tls_url() else { return };
    let ca = cluster_ca();
    for (host, mode) in [
        ("127.0.0.1", "verify-full"),
        ("localhost", "verify-full"),
        ("127.0.0.1", "verify-ca"),
        ("localhost", "verify-ca"),
    ] {
        let settings = settings(&with_params(
            &url,
            host,
            &format!("sslmode={mode}&sslrootcert={ca}"),
        ));
        assert!(settings.database_tls.verify);
        let db = Database::new(&settings).expect("handle");
        let client = db
            .connect_driven()
            .await
            .unwrap_or_else(|e| panic!("{mode} to {host} with the cluster's CA: {e}"));
        assert!(
            session_tls(&client).await.0,
            "{mode} to {host} is encrypted"
        );
        let pooled = db.client().await.expect("a pooled connection");
        assert!(session_tls(&pooled).await.0);
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some(url) = tls_url() else { return };
    let ca = cluster_ca();
    // The certificate is for localhost and 127.0.0.1. `hostaddr` reaches the same server
    // while `host`, the name TLS checks, is one the certificate does not hold.
    let elsewhere = |mode: &str| {
        settings(&with_params(
            &url,
            "db.example.com",
            &format!("hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={ca}"),
        ))
    };
    let full = elsewhere("verify-full");
    assert!(full.database_tls.host_name);
    let error = Database::new(&full)
        .expect("handle")
        .connect_driven()
        .await
        .expect_err("verify-full refuses a certificate for another name")
        .to_string();
    println!("verify-full to another name: {error}");
    assert!(error.contains("db.example.com"), "names the host: {error}");
    assert!(error.contains("verify-ca"), "says what else to do: {error}");
    let chain = Database::new(&elsewhere("verify-ca"))
        .expect("handle")
        .connect_driven()
        .await
        .expect("verify-ca checks the chain only");
    assert!(session_tls(&chain).await.0, "verify-ca is encrypted");
    // As in libpq, `require` with a root certificate verifies the chain, not the name.
    let require = elsewhere("require");
    assert!(require.database_tls.verify && !require.database_tls.host_name);
    Database::new(&require)
        .expect("handle")
        .connect_driven()
        .await
        .expect("require with sslrootcert acts as verify-ca");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_a_message_naming_the_file() {
    let Some(url) = tls_url() else { return };
    let dir = std::env::temp_dir().join(format!("boardcast-tls-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let wrong = another_ca(&dir);
    let wrong = wrong.display().to_string();
    for mode in ["verify-full", "verify-ca"] {
        let settings = settings(&with_params(
            &url,
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={wrong}"),
        ));
        let error = Database::new(&settings)
            .expect("handle")
            .connect_driven()
            .await
            .expect_err("a certificate from another CA is refused")
            .to_string();
        println!("{mode} with the wrong CA: {error}");
        assert!(error.contains("certificate"), "{error}");
        assert!(error.contains(&wrong), "names the file: {error}");
        assert!(error.contains(mode), "names the mode: {error}");
        let start = Application::build(settings).await;
        let Err(error) = start else {
            panic!("the server must not start on an unverified certificate");
        };
        assert!(error.to_string().contains(&wrong), "{error}");
    }
    // A file that is missing or holds no certificate stops the start, naming it.
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("writes");
    for path in [
        empty.display().to_string(),
        format!("{}/missing.pem", dir.display()),
    ] {
        let settings = settings(&with_params(
            &url,
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={path}"),
        ));
        let error = match Database::new(&settings) {
            Err(error) => error,
            Ok(_) => panic!("{path}: an unusable sslrootcert is refused at start"),
        };
        assert!(
            error.contains("sslrootcert") && error.contains(&path),
            "{error}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
