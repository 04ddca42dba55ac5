//! The instances under soak: release `boardcast serve` processes on one database, each on
//! a fixed loopback port so clients find it again after it is killed and restarted.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    process::{Child, Command},
    time::{Instant, sleep, timeout},
};

use crate::Res;

pub struct Instance {
    pub label: &'static str,
    /// `shared` or `per-stream`
    pub mode: &'static str,
    pub port: u16,
    pub max_streams: usize,
    pub heartbeat: Duration,
    pub child: Option<Child>,
    pub pid: u32,
    pub log: PathBuf,
    pub starts: u32,
}

pub fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn append(path: &Path) -> Res<Stdio> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(f))
}

/// `boardcast migrate` on the soak's database.
pub async fn migrate(bin: &Path, url: &str, log: &Path) -> Res<()> {
    let status = Command::new(bin)
        .arg("migrate")
        .env("DATABASE_URL", url)
        .stdout(append(log)?)
        .stderr(append(log)?)
        .status()
        .await?;
    if !status.success() {
        return Err(format!("boardcast migrate failed ({status}); see {}", log.display()).into());
    }
    Ok(())
}

impl Instance {
    pub fn new(
        label: &'static str,
        mode: &'static str,
        max_streams: usize,
        heartbeat: Duration,
        log_dir: &Path,
    ) -> Res<Instance> {
        Ok(Instance {
            label,
            mode,
            port: free_port()?,
            max_streams,
            heartbeat,
            child: None,
            pid: 0,
            log: log_dir.join(format!("{label}.log")),
            starts: 0,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spawns the server and waits (≤ 30 s) until `/readyz` answers 200.
    pub async fn start(&mut self, bin: &Path, url: &str, http: &reqwest::Client) -> Res<()> {
        let child = Command::new(bin)
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("LISTENER", self.mode)
            .env("MAX_STREAMS", self.max_streams.to_string())
            .env("MAX_STREAMS_PER_CLIENT", "100000")
            .env("WRITE_RATE_LIMIT", "0")
            .env("DATABASE_POOL_SIZE", "10")
            .env(
                "HEARTBEAT_INTERVAL",
                format!("{}s", self.heartbeat.as_secs()),
            )
            .env_remove("JWT_SECRET")
            .env_remove("WEB_CONCURRENCY")
            .env_remove("EVENT_RETENTION")
            .env_remove("SHUTDOWN_GRACE")
            .env_remove("DYNO")
            .stdout(append(&self.log)?)
            .stderr(append(&self.log)?)
            .kill_on_drop(true)
            .spawn()?;
        self.pid = child.id().ok_or("server exited at once")?;
        self.child = Some(child);
        self.starts += 1;
        self.ready_within(http, Duration::from_secs(30))
            .await
            .map(|_| ())
    }

    /// Polls `/readyz` until 200; returns how long that took.
    pub async fn ready_within(&mut self, http: &reqwest::Client, limit: Duration) -> Res<Duration> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "{} exited ({status}); see {}",
                    self.label,
                    self.log.display()
                )
                .into());
            }
            let ok = http
                .get(format!("{}/readyz", self.base()))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!("{} not ready within {limit:?}", self.label).into());
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM and wait up to 35 s; the exit status and how long it took.
    pub async fn terminate(&mut self) -> Res<(ExitStatus, Duration)> {
        let mut child = self.child.take().ok_or("not running")?;
        let started = Instant::now();
        Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await?;
        match timeout(Duration::from_secs(35), child.wait()).await {
            Ok(status) => Ok((status?, started.elapsed())),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("{} did not exit within 35 s of SIGTERM", self.label).into())
            }
        }
    }

    /// SIGKILL: the instance dies without a goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Lines at WARN or ERROR in this instance's log, and the lines that say "panicked".
    pub fn log_counts(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warn = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count();
        let panics = text.lines().filter(|l| l.contains("panicked")).count();
        (warn, panics)
    }
}
