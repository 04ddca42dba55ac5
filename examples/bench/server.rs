//! The server under test: `boardcast migrate` then `boardcast serve` on a fresh database
//! and a free loopback port, its REST calls, and its graceful stop.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    time::{Instant, sleep, timeout},
};

use crate::{Ctx, Res, WRITERS, clock::log};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Shared,
    PerStream,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::PerStream => "per-stream",
        }
    }
}

pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub base: String,
    pub db: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

pub fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn log_file(path: &PathBuf) -> Res<Stdio> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(f))
}

pub fn server_command(bin: &PathBuf, url: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        // Anything the caller's environment might set that changes what is measured.
        .env_remove("JWT_SECRET")
        .env_remove("WEB_CONCURRENCY")
        .env_remove("CORS_ORIGINS")
        .env_remove("TRUST_PROXY")
        .env_remove("DYNO")
        .env_remove("EVENT_RETENTION")
        .env_remove("SHUTDOWN_GRACE")
        .kill_on_drop(true);
    cmd
}

/// Waits until `child` gives `url` an answer `up` accepts, up to 30 s; fails with its
/// log's text if it exits first.
pub async fn wait_until_up(
    child: &mut Child,
    http: &reqwest::Client,
    url: &str,
    up: impl Fn(&reqwest::Response) -> bool,
    log: &Path,
) -> Res<()> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{} exited ({status}) at start:\n{tail}", log.display()).into());
        }
        let answer = http.get(url).timeout(Duration::from_secs(1)).send().await;
        if answer.is_ok_and(|r| up(&r)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{url} did not answer within 30 s").into());
        }
        sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    pub async fn start(ctx: &Ctx, label: &str, mode: Mode, heartbeat: &str) -> Res<Server> {
        let db = format!("bench_{label}").replace(['-', '.'], "_");
        let url = ctx.cluster.fresh_db(&db).await?;
        let log = ctx.log_dir.join(format!("{label}.log"));
        let _ = std::fs::remove_file(&log);
        let status = server_command(&ctx.bin, &url)
            .arg("migrate")
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .status()
            .await?;
        if !status.success() {
            return Err(
                format!("boardcast migrate failed ({status}); see {}", log.display()).into(),
            );
        }
        let port = free_port()?;
        let child = server_command(&ctx.bin, &url)
            .arg("serve")
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("LISTENER", mode.as_str())
            .env("MAX_STREAMS", "20000")
            .env("MAX_STREAMS_PER_CLIENT", "20000")
            .env("WRITE_RATE_LIMIT", "0")
            .env("HEARTBEAT_INTERVAL", heartbeat)
            .env("DATABASE_POOL_SIZE", "10")
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .spawn()?;
        let pid = child.id().ok_or("server exited at once")?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(WRITERS * 2)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            base: format!("http://127.0.0.1:{port}"),
            db,
            log,
            http,
        };
        let url = format!("{}/healthz", server.base);
        let healthy = |r: &reqwest::Response| r.status().is_success();
        wait_until_up(&mut server.child, &server.http, &url, healthy, &server.log).await?;
        Ok(server)
    }

    pub async fn create_board(&self) -> Res<String> {
        let r = self
            .http
            .post(format!("{}/api/boards", self.base))
            .json(&json!({ "title": "bench" }))
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            return Err(format!("create board: {}", r.status()).into());
        }
        let v: Value = r.json().await?;
        Ok(v["id"].as_str().ok_or("board without id")?.to_string())
    }

    /// POSTs one note; returns the status.
    pub async fn post_note(&self, board: &str, k: usize) -> Res<u16> {
        let r = self
            .http
            .post(format!("{}/api/boards/{board}/notes", self.base))
            .json(&json!({ "text": format!("bench note {k}"), "x": 10.0, "y": 20.0 }))
            .send()
            .await?;
        let status = r.status().as_u16();
        // Read the body so the connection goes back to the pool.
        let _ = r.bytes().await;
        Ok(status)
    }

    pub async fn board_seq(&self, board: &str) -> Res<i64> {
        let v: Value = self
            .http
            .get(format!("{}/api/boards/{board}", self.base))
            .send()
            .await?
            .json()
            .await?;
        v["seq"].as_i64().ok_or_else(|| "board without seq".into())
    }

    /// The server's `/metrics` text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// How presence was written: transactions and changes (joins + leaves) from /metrics,
    /// and the round trips each transaction makes (`db::presence::apply`: BEGIN, the row
    /// lock, INSERT, UPDATE, one SELECT of every pg_notify, COMMIT; a DELETE with leaves).
    pub async fn presence_writes(&self) -> String {
        let text = self.metrics().await;
        if text.is_empty() {
            return "metrics unavailable".into();
        }
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let writes = value("boardcast_presence_writes_total");
        let changes = value("boardcast_presence_changes_total");
        format!(
            "presence writes: {changes} joins/leaves in {writes} transactions ({:.1} per transaction, {:.2} statements per change)",
            changes / writes.max(1.0),
            6.0 * writes / changes.max(1.0)
        )
    }

    /// `boardcast_streams_closed_total` by reason and `boardcast_streams_open`, from /metrics.
    pub async fn stream_counts(&self) -> String {
        let text = self.metrics().await;
        if text.is_empty() {
            return "metrics unavailable".into();
        }
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let value: f64 = value.parse().unwrap_or(0.0);
            if name == "boardcast_streams_open" {
                let _ = write!(out, "open {value} ");
            } else if let Some(labels) = name.strip_prefix("boardcast_streams_closed_total")
                && value > 0.0
            {
                let reason = labels.split('"').nth(1).unwrap_or(labels).to_string();
                let _ = write!(out, "closed[{reason}] {value} ");
            }
        }
        out.trim_end().to_string()
    }

    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }

    /// SIGTERM, up to 15 s for a graceful exit, then SIGKILL; drops the database.
    pub async fn stop(mut self, ctx: &Ctx) {
        match terminate(&mut self.child, self.pid).await {
            Some((status, took)) => log(format!(
                "server {} stopped: {status} after {took:.1} s; {} warning/error lines in {}",
                self.pid,
                self.warnings(),
                self.log.display()
            )),
            None => {
                log(format!(
                    "server {} did not stop in 15 s; killing it",
                    self.pid
                ));
                let _ = self.child.kill().await;
            }
        }
        ctx.cluster.drop_db(&self.db).await;
    }
}

/// Sends `pid` (the `child`) SIGTERM and waits up to 15 s for it to exit: its status and
/// the seconds it took, or `None` if it did not (the caller kills it).
pub async fn terminate(child: &mut Child, pid: u32) -> Option<(std::process::ExitStatus, f64)> {
    let started = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await;
    match timeout(Duration::from_secs(15), child.wait()).await {
        Ok(Ok(status)) => Some((status, started.elapsed().as_secs_f64())),
        _ => None,
    }
}
