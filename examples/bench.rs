//! The boardcast benchmark: fan-out latency, idle cost, write throughput and the
//! per-stream mode, each against a fresh server process and a fresh database.
//!
//! Run it through `scripts/bench`, which starts a throwaway PostgreSQL, builds the release
//! binary and this example, and raises the open-file limit. By hand:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:54329/postgres \
//!   cargo run --release --example bench -- [--only shared,idle] [--quick]
//! ```
//!
//! `DATABASE_URL` is an admin URL: every scenario creates its own database on that cluster
//! (`CREATE DATABASE`), runs `boardcast migrate` on it, starts `boardcast serve` on a free
//! loopback port, and drops the database afterwards.
//!
//! Subscribers are raw TCP clients: they send the request line, decode the chunked body and
//! pick the `id:` lines out of it, so the client costs as little as possible and no SSE
//! library sits between the socket and the clock. Every loop is bounded in count and time.
//!
//! Options:
//!   --server PATH           the boardcast binary (default target/release/boardcast)
//!   --only LIST             scenarios, comma-separated: raw, open, per-stream, throughput,
//!                           shared, idle (default: all, in that order)
//!   --sizes LIST            shared fan-out sizes (default 1,100,1000,5000,15000)
//!   --per-stream-sizes LIST per-stream fan-out sizes (default 1,10,100)
//!   --idle N                idle streams (default 15000)
//!   --idle-per-board N      idle streams per board (default 100; see `idle`)
//!   --open-concurrency N    subscribers connecting at once (default 50)
//!   --open-budget SECS      the longest one crowd may take to open (default 900); the
//!                           streams not open by then are abandoned and the run goes on
//!   --perf                  `perf record` the server during each fan-out's writes
//!   --quick                 small sizes, for trying the program out
//!   --log-dir DIR           server logs, profiles and report.md (default target/bench-logs)
//!
//! Opening a crowd on one board costs the server O(N²) today: every open is announced to
//! every stream already there (`presence.joined`) and gets the whole viewer list. 15,000
//! streams on one board take about 11 minutes to open on a 2-core machine, which is most
//! of a full run; docs/PERFORMANCE.md has the figures.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::{MissedTickBehavior, interval, sleep, timeout},
};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

/// Notes written per fan-out run, 100 ms apart.
const MESSAGES: usize = 50;
const MESSAGE_GAP: Duration = Duration::from_millis(100);
/// Subscribers connecting at once (well under the accept backlog); `--open-concurrency`.
static OPEN_CONCURRENCY: AtomicUsize = AtomicUsize::new(50);
/// The longest one crowd may take to open (`--open-budget`, seconds); what has not opened
/// by then is abandoned and the run goes on with the streams that did.
static OPEN_BUDGET: AtomicU64 = AtomicU64::new(900);
/// Record a CPU profile of the server during each fan-out's writes (`--perf`).
static PERF: AtomicBool = AtomicBool::new(false);
/// Writers and duration of a throughput run.
const WRITERS: usize = 32;
const WRITE_FOR: Duration = Duration::from_secs(5);
/// Sequential opens for the open-time figure.
const SEQUENTIAL_OPENS: usize = 100;

// ---------------------------------------------------------------------------------------
// Clock and small statistics

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the benchmark started (never 0 after the first call).
fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64 + 1
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[{:>7.1}s] {}",
        base().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

// ---------------------------------------------------------------------------------------
// /proc: memory, threads, fds, CPU time

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn threads(pid: u32) -> u64 {
    proc_status_kib(pid, "Threads:")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// (ppid, utime + stime in clock ticks) of a process.
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, ppid 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU jiffies of the whole machine from the first line of /proc/stat: (user + nice +
/// system, irq + softirq, steal, all).
fn machine_jiffies() -> (u64, u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    (
        at(0) + at(1) + at(2),
        at(5) + at(6),
        at(7),
        v.iter().take(8).sum(),
    )
}

/// CPU used by each party over a window: the server, the benchmark, PostgreSQL (the
/// postmaster and its children), every other process, interrupts, and steal.
#[derive(Clone)]
struct CpuMark {
    at: Instant,
    server: u64,
    bench: u64,
    pg: u64,
    others: std::collections::HashMap<u32, u64>,
    tasks: u64,
    irq: u64,
    steal: u64,
    total: u64,
}

impl CpuMark {
    fn take(server_pid: u32, pg_pid: u32) -> CpuMark {
        let (tasks, irq, steal, total) = machine_jiffies();
        let me = std::process::id();
        let mut mark = CpuMark {
            at: Instant::now(),
            server: 0,
            bench: 0,
            pg: 0,
            others: std::collections::HashMap::new(),
            tasks,
            irq,
            steal,
            total,
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return mark;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((ppid, ticks)) = proc_stat(pid) else {
                continue;
            };
            if pid == server_pid {
                mark.server = ticks;
            } else if pid == me {
                mark.bench = ticks;
            } else if pg_pid != 0 && (pid == pg_pid || ppid == pg_pid) {
                mark.pg += ticks;
            } else {
                mark.others.insert(pid, ticks);
            }
        }
        mark
    }

    /// Seconds of CPU each party used between `start` and this mark.
    fn since(&self, start: &CpuMark) -> String {
        let hz = clock_ticks();
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        let wall = self.at.duration_since(start.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let server = secs(self.server, start.server);
        let bench = secs(self.bench, start.bench);
        let pg = secs(self.pg, start.pg);
        // A process born in the window counts from zero; one that died in it is missed
        // (it lands in "unattributed").
        let others: u64 = self
            .others
            .iter()
            .map(|(pid, t)| t.saturating_sub(start.others.get(pid).copied().unwrap_or(0)))
            .sum();
        let others = others as f64 / hz;
        let tasks = secs(self.tasks, start.tasks);
        // Interrupt time: partly inside the processes' own system time already.
        let irq = secs(self.irq, start.irq);
        let steal = secs(self.steal, start.steal);
        let total = secs(self.total, start.total);
        let unattributed = (tasks - server - bench - pg - others).max(0.0);
        let busy = if total > 0.0 {
            // busy = everything but idle and iowait
            (tasks + irq + steal) / total
        } else {
            0.0
        };
        format!(
            "over {wall:.1} s wall, CPU s: server {server:.2}, bench {bench:.2}, postgres {pg:.2}, other processes {others:.2}, unattributed {unattributed:.2}, steal {steal:.2}; machine busy {:.0}% of {cores:.0} cores",
            busy * 100.0
        )
    }
}

// ---------------------------------------------------------------------------------------
// The database cluster

struct Cluster {
    admin_url: String,
    admin: tokio_postgres::Client,
    postmaster: u32,
    version: String,
}

fn db_url(admin: &str, name: &str) -> Res<String> {
    let scheme_end = admin.find("://").ok_or("DATABASE_URL must be a URL")? + 3;
    let (head, query) = match admin.find('?') {
        Some(i) => (&admin[..i], &admin[i..]),
        None => (admin, ""),
    };
    let rest = &head[scheme_end..];
    let authority = rest.find('/').map_or(rest, |i| &rest[..i]);
    Ok(format!("{}{authority}/{name}{query}", &head[..scheme_end]))
}

async fn connect(url: &str) -> Res<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Cluster {
    async fn open(admin_url: String) -> Res<Cluster> {
        let admin = connect(&admin_url).await?;
        let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
        let data_dir: String = admin.query_one("SHOW data_directory", &[]).await?.get(0);
        let postmaster = std::fs::read_to_string(format!("{data_dir}/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        Ok(Cluster {
            admin_url,
            admin,
            postmaster,
            version,
        })
    }

    /// A new empty database; returns its URL.
    async fn fresh_db(&self, name: &str) -> Res<String> {
        self.drop_db(name).await;
        self.admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        db_url(&self.admin_url, name)
    }

    async fn drop_db(&self, name: &str) {
        if let Err(e) = self
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
        {
            log(format!("drop database {name}: {e}"));
        }
    }

    async fn listener_backends(&self, db: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&db],
            )
            .await
            .map_or(-1, |r| r.get(0))
    }

    /// Proportional set size of the listener backends, KiB each (0 if none).
    async fn listener_pss_kib(&self, db: &str) -> f64 {
        let Ok(rows) = self
            .admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&db],
            )
            .await
        else {
            return 0.0;
        };
        if rows.is_empty() {
            return 0.0;
        }
        let total: u64 = rows
            .iter()
            .map(|r| {
                let pid: i32 = r.get(0);
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("Pss:"))
                            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            })
            .sum();
        total as f64 / rows.len() as f64
    }

    async fn backends(&self, db: &str) -> i64 {
        self.admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .map_or(-1, |r| r.get(0))
    }
}

// ---------------------------------------------------------------------------------------
// The server under test

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Shared,
    PerStream,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::PerStream => "per-stream",
        }
    }
}

struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    base: String,
    db: String,
    log: PathBuf,
    http: reqwest::Client,
}

fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn log_file(path: &PathBuf) -> Res<Stdio> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(f))
}

fn server_command(bin: &PathBuf, url: &str) -> Command {
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

impl Server {
    async fn start(ctx: &Ctx, label: &str, mode: Mode, heartbeat: &str) -> Res<Server> {
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
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let tail = std::fs::read_to_string(&server.log).unwrap_or_default();
                return Err(format!("server exited ({status}) at start:\n{tail}").into());
            }
            let ok = server
                .http
                .get(format!("{}/healthz", server.base))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("server did not answer /healthz within 30 s".into());
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    async fn create_board(&self) -> Res<String> {
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
    async fn post_note(&self, board: &str, k: usize) -> Res<u16> {
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

    async fn board_seq(&self, board: &str) -> Res<i64> {
        let v: Value = self
            .http
            .get(format!("{}/api/boards/{board}", self.base))
            .send()
            .await?
            .json()
            .await?;
        v["seq"].as_i64().ok_or_else(|| "board without seq".into())
    }

    /// `boardcast_streams_closed_total` by reason and `boardcast_streams_open`, from /metrics.
    async fn stream_counts(&self) -> String {
        let Ok(r) = self.http.get(format!("{}/metrics", self.base)).send().await else {
            return "metrics unavailable".into();
        };
        let text = r.text().await.unwrap_or_default();
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

    fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }

    /// SIGTERM, up to 15 s for a graceful exit, then SIGKILL; drops the database.
    async fn stop(mut self, ctx: &Ctx) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(status)) => log(format!(
                "server {} stopped: {status} after {:.1} s; {} warning/error lines in {}",
                self.pid,
                started.elapsed().as_secs_f64(),
                self.warnings(),
                self.log.display()
            )),
            _ => {
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

// ---------------------------------------------------------------------------------------
// Subscribers: raw TCP, chunked decoding, `id:` lines

/// What the coordinator can see of a subscriber while it runs.
#[derive(Default)]
struct Slot {
    ready: AtomicBool,
    ended: AtomicBool,
    last: AtomicI64,
    bytes: AtomicU64,
}

#[derive(Default)]
struct SubOutcome {
    status: Option<u16>,
    /// Why the stream ended before it was told to stop.
    ended: Option<String>,
    /// When the request went out, and when the snapshot event was complete (0: never).
    open_ns: u64,
    snapshot_ns: u64,
    /// Deliveries of each seq (index = seq).
    seen: Vec<u8>,
    /// Receive time of seqs 1..=track (index = seq; 0: not received).
    times: Vec<u64>,
    heartbeats: u32,
    /// `presence`, `presence.joined` and `presence.left` events.
    presence: u64,
    bytes: u64,
}

#[derive(Clone, Copy)]
enum Body {
    Head,
    Plain,
    ChunkSize,
    ChunkData(usize),
    ChunkEnd(u8),
    Done,
}

const PREFIX: usize = 24;

struct Sub {
    out: SubOutcome,
    slot: Arc<Slot>,
    permit: Option<OwnedSemaphorePermit>,
    track: usize,
    now: u64,
    body: Body,
    head: Vec<u8>,
    size_line: Vec<u8>,
    /// The start of the current line (all that matters: `id:`, `event:` or empty) and its
    /// full length so far.
    line: [u8; PREFIX],
    line_prefix: usize,
    line_len: usize,
    /// 0: no event with an id yet; 1: inside the first (the snapshot); 2: snapshot done.
    snapshot: u8,
}

impl Sub {
    fn new(slot: Arc<Slot>, permit: Option<OwnedSemaphorePermit>, track: usize) -> Sub {
        Sub {
            out: SubOutcome {
                times: vec![0; track + 1],
                ..SubOutcome::default()
            },
            slot,
            permit,
            track,
            now: 0,
            body: Body::Head,
            head: Vec::new(),
            size_line: Vec::new(),
            line: [0; PREFIX],
            line_prefix: 0,
            line_len: 0,
            snapshot: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) -> Result<(), String> {
        self.out.bytes += data.len() as u64;
        self.slot.bytes.fetch_add(data.len() as u64, Relaxed);
        if let Body::Head = self.body {
            self.head.extend_from_slice(data);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.head.len() > 65536 {
                    return Err("response head too long".into());
                }
                return Ok(());
            };
            let rest = self.head.split_off(end + 4);
            let head = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            self.out.status = Some(status);
            if status != 200 {
                return Err(format!("status {status}"));
            }
            self.body = if head.contains("transfer-encoding: chunked") {
                Body::ChunkSize
            } else {
                Body::Plain
            };
            self.head = Vec::new();
            return self.body_bytes(&rest);
        }
        self.body_bytes(data)
    }

    fn body_bytes(&mut self, data: &[u8]) -> Result<(), String> {
        let mut i = 0;
        while i < data.len() {
            match self.body {
                Body::Head | Body::Done => return Ok(()),
                Body::Plain => {
                    self.sse(&data[i..]);
                    i = data.len();
                }
                Body::ChunkSize => match data[i..].iter().position(|&b| b == b'\n') {
                    None => {
                        self.size_line.extend_from_slice(&data[i..]);
                        i = data.len();
                    }
                    Some(p) => {
                        self.size_line.extend_from_slice(&data[i..i + p]);
                        i += p + 1;
                        let text = String::from_utf8_lossy(&self.size_line);
                        let hex = text.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(hex, 16)
                            .map_err(|_| format!("bad chunk size {hex:?}"))?;
                        self.size_line.clear();
                        if size == 0 {
                            self.body = Body::Done;
                            return Err("end of body".into());
                        }
                        self.body = Body::ChunkData(size);
                    }
                },
                Body::ChunkData(left) => {
                    let take = left.min(data.len() - i);
                    self.sse(&data[i..i + take]);
                    i += take;
                    self.body = if take == left {
                        Body::ChunkEnd(2)
                    } else {
                        Body::ChunkData(left - take)
                    };
                }
                Body::ChunkEnd(left) => {
                    let take = (left as usize).min(data.len() - i);
                    i += take;
                    self.body = if take == left as usize {
                        Body::ChunkSize
                    } else {
                        Body::ChunkEnd(left - take as u8)
                    };
                }
            }
        }
        Ok(())
    }

    /// SSE text: only the first bytes of each line are kept, carried across reads.
    fn sse(&mut self, mut data: &[u8]) {
        while let Some(p) = data.iter().position(|&b| b == b'\n') {
            self.line_part(&data[..p]);
            self.line_done();
            data = &data[p + 1..];
        }
        self.line_part(data);
    }

    fn line_part(&mut self, part: &[u8]) {
        let room = PREFIX - self.line_prefix;
        let take = room.min(part.len());
        self.line[self.line_prefix..self.line_prefix + take].copy_from_slice(&part[..take]);
        self.line_prefix += take;
        self.line_len += part.len();
    }

    fn line_done(&mut self) {
        let len = self.line_len;
        let prefix = self.line_prefix;
        self.line_len = 0;
        self.line_prefix = 0;
        if len == 0 || (len == 1 && self.line[0] == b'\r') {
            if self.snapshot == 1 {
                self.snapshot = 2;
                self.out.snapshot_ns = self.now;
                self.slot.ready.store(true, Relaxed);
                self.permit = None;
            }
            return;
        }
        let line = &self.line[..prefix];
        if let Some(id) = line.strip_prefix(b"id:") {
            let seq = std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .unwrap_or(-1);
            if self.snapshot == 0 {
                self.snapshot = 1;
            } else if seq >= 0 {
                self.delivered(seq as usize);
            }
        } else if line.starts_with(b"event: heartbeat") {
            self.out.heartbeats += 1;
        } else if line.starts_with(b"event: presence") {
            self.out.presence += 1;
        }
    }

    fn delivered(&mut self, seq: usize) {
        if seq >= 50_000_000 {
            return;
        }
        if seq >= self.out.seen.len() {
            self.out.seen.resize(seq + 1, 0);
        }
        self.out.seen[seq] = self.out.seen[seq].saturating_add(1);
        if seq <= self.track && self.out.times[seq] == 0 {
            self.out.times[seq] = self.now;
        }
        if seq as i64 > self.slot.last.load(Relaxed) {
            self.slot.last.store(seq as i64, Relaxed);
        }
    }
}

async fn subscribe(
    addr: SocketAddr,
    request: Arc<Vec<u8>>,
    slot: Arc<Slot>,
    gate: Option<Arc<Semaphore>>,
    stop: CancellationToken,
    give_up: CancellationToken,
    track: usize,
) -> SubOutcome {
    let permit = match gate {
        Some(gate) => tokio::select! {
            p = gate.acquire_owned() => p.ok(),
            _ = stop.cancelled() => None,
            _ = give_up.cancelled() => None,
        },
        None => None,
    };
    if stop.is_cancelled() || give_up.is_cancelled() {
        slot.ended.store(true, Relaxed);
        return SubOutcome {
            ended: Some("never connected (gave up opening)".into()),
            ..SubOutcome::default()
        };
    }
    let mut sub = Sub::new(slot.clone(), permit, track);
    sub.out.open_ns = now_ns();
    let run = async {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        socket
            .write_all(&request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let opening = sub.snapshot < 2;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = give_up.cancelled(), if opening => {
                    return Err("gave up waiting for the snapshot".to_string());
                }
                read = socket.read(&mut buf) => {
                    let n = read.map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("eof".to_string());
                    }
                    sub.now = now_ns();
                    sub.feed(&buf[..n])?;
                }
            }
        }
    };
    let result: Result<(), String> = run.await;
    if let Err(why) = result {
        sub.out.ended = Some(why);
    }
    slot.ended.store(true, Relaxed);
    sub.permit = None;
    sub.out
}

/// A crowd of subscribers, spread evenly over one or more boards.
struct Crowd {
    slots: Vec<Arc<Slot>>,
    handles: Vec<JoinHandle<SubOutcome>>,
    stop: CancellationToken,
    open_secs: f64,
    /// Bytes the subscribers had received when the last one opened, and the CPU spent.
    open_bytes: u64,
    open_cpu: String,
}

impl Crowd {
    /// Opens `n` streams, `OPEN_CONCURRENCY` at a time, and waits until each has its
    /// snapshot (or has failed), or until `limit`.
    async fn open(
        server: &Server,
        pg: u32,
        boards: &[String],
        n: usize,
        track: usize,
        limit: Duration,
    ) -> Crowd {
        let cpu0 = CpuMark::take(server.pid, pg);
        let requests: Vec<Arc<Vec<u8>>> = boards
            .iter()
            .map(|board| {
                Arc::new(
                    format!("GET /api/boards/{board}/events HTTP/1.1\r\nHost: x\r\n\r\n")
                        .into_bytes(),
                )
            })
            .collect();
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY.load(Relaxed)));
        let stop = CancellationToken::new();
        let give_up = CancellationToken::new();
        let started = Instant::now();
        let mut slots = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let slot = Arc::new(Slot::default());
            slots.push(slot.clone());
            handles.push(tokio::spawn(subscribe(
                server.addr,
                requests[i % requests.len()].clone(),
                slot,
                Some(gate.clone()),
                stop.clone(),
                give_up.clone(),
                track,
            )));
        }
        let mut last_report = Instant::now();
        loop {
            let ready = slots.iter().filter(|s| s.ready.load(Relaxed)).count();
            let failed = slots
                .iter()
                .filter(|s| !s.ready.load(Relaxed) && s.ended.load(Relaxed))
                .count();
            if ready + failed >= n {
                break;
            }
            if started.elapsed() > limit {
                log(format!(
                    "open: gave up after {:.0} s with {ready}/{n} streams open, {failed} failed; abandoning the rest",
                    limit.as_secs_f64()
                ));
                give_up.cancel();
                // The abandoned opens close their sockets; let that settle.
                for _ in 0..500 {
                    if slots
                        .iter()
                        .all(|s| s.ready.load(Relaxed) || s.ended.load(Relaxed))
                    {
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                break;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                log(format!(
                    "open: {ready}/{n} streams open, {failed} failed, server RSS {} MiB",
                    rss_kib(server.pid) / 1024
                ));
            }
            sleep(Duration::from_millis(10)).await;
        }
        let open_secs = started.elapsed().as_secs_f64();
        let open_cpu = CpuMark::take(server.pid, pg).since(&cpu0);
        let open_bytes = slots.iter().map(|s| s.bytes.load(Relaxed)).sum();
        Crowd {
            slots,
            handles,
            stop,
            open_secs,
            open_bytes,
            open_cpu,
        }
    }

    fn ready(&self) -> usize {
        self.slots.iter().filter(|s| s.ready.load(Relaxed)).count()
    }

    /// Waits until every open subscriber has seen `seq` (or has ended), up to `limit`.
    async fn wait_for(&self, seq: i64, limit: Duration) -> bool {
        self.wait_for_each(&[seq], limit).await
    }

    /// `wait_for` with a seq per board (subscriber `i` is on board `i % targets.len()`).
    async fn wait_for_each(&self, targets: &[i64], limit: Duration) -> bool {
        let started = Instant::now();
        loop {
            let behind = self
                .slots
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    s.ready.load(Relaxed)
                        && !s.ended.load(Relaxed)
                        && s.last.load(Relaxed) < targets[i % targets.len()]
                })
                .count();
            if behind == 0 {
                return true;
            }
            if started.elapsed() > limit {
                log(format!(
                    "{behind} subscribers had not seen their board's last seq after {limit:?}"
                ));
                return false;
            }
            sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) -> Vec<SubOutcome> {
        self.stop.cancel();
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            // Keep the order: subscriber `i` is on board `i % boards`.
            out.push(h.await.unwrap_or_else(|e| SubOutcome {
                ended: Some(format!("task failed: {e}")),
                ..SubOutcome::default()
            }));
        }
        out
    }
}

/// Opening figures of a crowd: how many opened, failed (by reason), open-time percentiles.
struct OpenSummary {
    opened: usize,
    failed: BTreeMap<String, usize>,
    p50_ns: u64,
    p99_ns: u64,
}

fn open_summary(subs: &[SubOutcome]) -> OpenSummary {
    let mut times: Vec<u64> = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0)
        .map(|s| s.snapshot_ns - s.open_ns)
        .collect();
    times.sort_unstable();
    let mut failed = BTreeMap::new();
    for s in subs.iter().filter(|s| s.snapshot_ns == 0) {
        let why = s
            .ended
            .clone()
            .unwrap_or_else(|| "no snapshot in time".into());
        *failed.entry(why).or_insert(0) += 1;
    }
    OpenSummary {
        opened: times.len(),
        failed,
        p50_ns: pct(&times, 50.0),
        p99_ns: pct(&times, 99.0),
    }
}

fn failures(f: &BTreeMap<String, usize>) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, v)| format!("{v}× {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exactly-once check over seqs 1..=upto for every subscriber that opened.
struct Completeness {
    subscribers: usize,
    expected: u64,
    received: u64,
    missing: u64,
    duplicated: u64,
    /// Subscribers whose stream ended before they were stopped, by reason.
    ended: BTreeMap<String, usize>,
}

fn completeness(subs: &[SubOutcome], upto: usize) -> Completeness {
    completeness_each(subs, &[upto])
}

/// `completeness` with a last seq per board (subscriber `i` is on board `i % upto.len()`).
fn completeness_each(subs: &[SubOutcome], upto: &[usize]) -> Completeness {
    let mut c = Completeness {
        subscribers: 0,
        expected: 0,
        received: 0,
        missing: 0,
        duplicated: 0,
        ended: BTreeMap::new(),
    };
    for (i, s) in subs.iter().enumerate() {
        if s.snapshot_ns == 0 {
            continue;
        }
        let upto = upto[i % upto.len()];
        c.subscribers += 1;
        c.expected += upto as u64;
        for seq in 1..=upto {
            let n = s.seen.get(seq).copied().unwrap_or(0) as u64;
            c.received += n;
            if n == 0 {
                c.missing += 1;
            } else {
                c.duplicated += n - 1;
            }
        }
        if let Some(why) = &s.ended {
            *c.ended.entry(why.clone()).or_insert(0) += 1;
        }
    }
    c
}

// ---------------------------------------------------------------------------------------
// Scenarios

struct Ctx {
    bin: PathBuf,
    log_dir: PathBuf,
    cluster: Cluster,
    report: String,
}

impl Ctx {
    fn out(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.report.push_str(line.as_ref());
        self.report.push('\n');
    }
}

struct FanoutRow {
    mode: Mode,
    n: usize,
    opened: usize,
    open_secs: f64,
    open_p50: u64,
    open_p99: u64,
    p50: u64,
    p99: u64,
    max: u64,
    slowest_median: u64,
    slowest_max: u64,
    missing: u64,
    duplicated: u64,
    ended: usize,
    post_p50: u64,
    rss_per_stream_kib: f64,
    listeners: i64,
    cpu: String,
}

async fn fanout(ctx: &mut Ctx, mode: Mode, n: usize) -> Res<FanoutRow> {
    let label = format!("fanout_{}_{n}", mode.as_str());
    log(format!(
        "== fan-out, {} mode, {n} subscribers",
        mode.as_str()
    ));
    let server = Server::start(ctx, &label, mode, "15s").await?;
    let board = server.create_board().await?;
    let rss0 = rss_kib(server.pid);
    let open_limit = Duration::from_secs(OPEN_BUDGET.load(Relaxed));
    let crowd = Crowd::open(
        &server,
        ctx.cluster.postmaster,
        std::slice::from_ref(&board),
        n,
        MESSAGES,
        open_limit,
    )
    .await;
    let ready = crowd.ready();
    let rss1 = rss_kib(server.pid);
    let listeners = ctx.cluster.listener_backends(&server.db).await;
    let backends = ctx.cluster.backends(&server.db).await;
    let listener_pss = ctx.cluster.listener_pss_kib(&server.db).await;
    log(format!(
        "{ready}/{n} open in {:.1} s; server RSS {} → {} KiB, {} threads, {} fds; {listeners} listener backends, {backends} backends in all",
        crowd.open_secs,
        rss0,
        rss1,
        threads(server.pid),
        open_fds(server.pid)
    ));
    // Let the opening's presence traffic settle before the clock starts.
    sleep(Duration::from_millis(500)).await;

    let sent: Vec<AtomicU64> = (0..=MESSAGES).map(|_| AtomicU64::new(0)).collect();
    let mut post_rtts = Vec::with_capacity(MESSAGES);
    let perf = if PERF.load(Relaxed) {
        let path = ctx.log_dir.join(format!("{label}.perf.data"));
        Command::new("perf")
            // DWARF unwinding: the release build keeps no frame pointers.
            .args([
                "record",
                "-F",
                "499",
                "--call-graph",
                "dwarf,8192",
                "-q",
                "-o",
            ])
            .arg(&path)
            .args(["-p", &server.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    } else {
        None
    };
    let cpu0 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    let mut ticker = interval(MESSAGE_GAP);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut bad_posts = 0;
    for (k, slot) in sent.iter().enumerate().skip(1) {
        ticker.tick().await;
        let t = now_ns();
        slot.store(t, Relaxed);
        match server.post_note(&board, k).await {
            Ok(201) => {}
            Ok(s) => {
                bad_posts += 1;
                log(format!("POST {k}: status {s}"));
            }
            Err(e) => {
                bad_posts += 1;
                log(format!("POST {k}: {e}"));
            }
        }
        post_rtts.push(now_ns() - t);
    }
    crowd
        .wait_for(MESSAGES as i64, Duration::from_secs(10 + n as u64 / 1000))
        .await;
    let cpu1 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    if let Some(mut perf) = perf {
        if let Some(pid) = perf.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = timeout(Duration::from_secs(30), perf.wait()).await;
    }
    let seq = server.board_seq(&board).await.unwrap_or(-1);
    let counts = server.stream_counts().await;
    let open_secs = crowd.open_secs;
    let open_line = format!(
        "  opening: subscribers had received {:.1} MiB when the last opened; CPU {}",
        crowd.open_bytes as f64 / 1048576.0,
        crowd.open_cpu
    );
    let subs = crowd.finish().await;
    server.stop(ctx).await;
    let presence_events: u64 = subs.iter().map(|s| s.presence).sum();

    if seq != MESSAGES as i64 || bad_posts > 0 {
        log(format!(
            "warning: board seq {seq} after {MESSAGES} posts ({bad_posts} failed)"
        ));
    }
    let opening = open_summary(&subs);
    let done = completeness(&subs, MESSAGES);
    // Latency of every delivery, and the slowest subscriber of each message.
    let mut all = Vec::with_capacity(done.subscribers * MESSAGES);
    let mut slowest = vec![0u64; MESSAGES + 1];
    for s in subs.iter().filter(|s| s.snapshot_ns > 0) {
        for (k, at) in s.times.iter().enumerate().skip(1) {
            let sent = sent[k].load(Relaxed);
            if *at > 0 && sent > 0 {
                let lat = at.saturating_sub(sent);
                all.push(lat);
                slowest[k] = slowest[k].max(lat);
            }
        }
    }
    all.sort_unstable();
    let mut slow: Vec<u64> = slowest[1..].to_vec();
    slow.sort_unstable();
    post_rtts.sort_unstable();
    let cpu = cpu1.since(&cpu0);
    let row = FanoutRow {
        mode,
        n,
        opened: opening.opened,
        open_secs,
        open_p50: opening.p50_ns,
        open_p99: opening.p99_ns,
        p50: pct(&all, 50.0),
        p99: pct(&all, 99.0),
        max: pct(&all, 100.0),
        slowest_median: pct(&slow, 50.0),
        slowest_max: pct(&slow, 100.0),
        missing: done.missing,
        duplicated: done.duplicated,
        ended: done.ended.values().sum(),
        post_p50: pct(&post_rtts, 50.0),
        rss_per_stream_kib: if ready > 0 {
            (rss1 as f64 - rss0 as f64) / ready as f64
        } else {
            0.0
        },
        listeners,
        cpu: cpu.clone(),
    };
    ctx.out(format!(
        "fan-out {} N={n}: opened {}/{n} in {open_secs:.1} s (open p50 {} ms, p99 {} ms; failed: {}); deliveries {} of {}, missing {}, duplicated {}, streams ended early: {}; latency p50 {} ms, p99 {} ms, max {} ms; slowest subscriber per message: median {} ms, max {} ms; POST p50 {} ms, p99 {} ms; server after: {counts}",
        mode.as_str(),
        opening.opened,
        ms(opening.p50_ns),
        ms(opening.p99_ns),
        failures(&opening.failed),
        done.received,
        done.expected,
        done.missing,
        done.duplicated,
        failures(&done.ended),
        ms(row.p50),
        ms(row.p99),
        ms(row.max),
        ms(row.slowest_median),
        ms(row.slowest_max),
        ms(row.post_p50),
        ms(pct(&post_rtts, 99.0)),
    ));
    ctx.out(format!(
        "  memory: RSS {rss0} KiB before, {rss1} KiB with {ready} streams ({:.1} KiB/stream); listener backends {listeners} (PSS {listener_pss:.0} KiB each), {backends} PostgreSQL backends in all; CPU during the writes {cpu}",
        row.rss_per_stream_kib
    ));
    ctx.out(format!(
        "{open_line}; presence events received in all: {presence_events} ({:.0} per subscriber)",
        presence_events as f64 / subs.len().max(1) as f64
    ));
    Ok(row)
}

struct IdleRow {
    n: usize,
    opened: usize,
    rss0: u64,
    rss1: u64,
    hwm: u64,
    threads0: u64,
    threads1: u64,
    fds0: usize,
    fds1: usize,
    heartbeats_min: u32,
    per_stream: f64,
}

/// RSS per idle stream: `n` streams, `per_board` to a board, after heartbeats have run.
///
/// The streams are spread over boards because opening thousands on one board is quadratic
/// in presence traffic (the fan-out runs measure that, and their RSS column is the
/// one-board figure); what is left here is the cost of a stream itself.
async fn idle(ctx: &mut Ctx, n: usize, per_board: usize) -> Res<IdleRow> {
    let per_board = per_board.max(1);
    log(format!(
        "== idle cost, shared mode, {n} streams ({per_board} a board), heartbeat 5 s"
    ));
    let server = Server::start(ctx, "idle_shared", Mode::Shared, "5s").await?;
    let board = server.create_board().await?;
    // Warm the pool and the code paths once, so the baseline is a running server.
    let _ = server.post_note(&board, 0).await;
    let _ = server.board_seq(&board).await;
    sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(server.pid);
    let threads0 = threads(server.pid);
    let fds0 = open_fds(server.pid);
    // Spread over boards: on one board every open is announced to every stream already
    // there (presence), which is quadratic and measured by the fan-out runs instead.
    let mut boards = vec![board];
    while boards.len() * per_board < n {
        boards.push(server.create_board().await?);
    }
    let crowd = Crowd::open(
        &server,
        ctx.cluster.postmaster,
        &boards,
        n,
        0,
        Duration::from_secs(OPEN_BUDGET.load(Relaxed)),
    )
    .await;
    let opened = crowd.ready();
    log(format!(
        "{opened}/{n} open in {:.1} s; RSS now {} KiB; idling 12 s",
        crowd.open_secs,
        rss_kib(server.pid)
    ));
    sleep(Duration::from_secs(12)).await;
    let rss1 = rss_kib(server.pid);
    let hwm = proc_status_kib(server.pid, "VmHWM:");
    let threads1 = threads(server.pid);
    let fds1 = open_fds(server.pid);
    let counts = server.stream_counts().await;
    let subs = crowd.finish().await;
    server.stop(ctx).await;
    let mut beats: Vec<u32> = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0)
        .map(|s| s.heartbeats)
        .collect();
    beats.sort_unstable();
    let ended: usize = subs
        .iter()
        .filter(|s| s.snapshot_ns > 0 && s.ended.is_some())
        .count();
    let per_stream = if opened > 0 {
        (rss1 as f64 - rss0 as f64) / opened as f64
    } else {
        0.0
    };
    let row = IdleRow {
        n,
        opened,
        rss0,
        rss1,
        hwm,
        threads0,
        threads1,
        fds0,
        fds1,
        heartbeats_min: beats.first().copied().unwrap_or(0),
        per_stream,
    };
    ctx.out(format!(
        "idle {n}: opened {opened}; RSS {rss0} KiB → {rss1} KiB (peak {hwm} KiB) = {per_stream:.2} KiB per idle stream; threads {threads0} → {threads1}; fds {fds0} → {fds1}; heartbeats per stream min {} median {}; ended early {ended}; server: {counts}",
        row.heartbeats_min,
        beats.get(beats.len() / 2).copied().unwrap_or(0),
    ));
    Ok(row)
}

struct ThroughputRow {
    label: String,
    subscribers: usize,
    notes: u64,
    per_sec: f64,
    errors: BTreeMap<String, u64>,
    post_p50: u64,
    post_p99: u64,
    complete: String,
    cpu: String,
}

/// `WRITERS` writers POSTing notes for `WRITE_FOR`, to one board (with `subscribers` on it)
/// or each to a board of its own.
async fn throughput(
    ctx: &mut Ctx,
    mode: Mode,
    subscribers: usize,
    board_each: bool,
) -> Res<ThroughputRow> {
    let label = format!(
        "api {}, {subscribers} subscribers{}",
        mode.as_str(),
        match (board_each, subscribers > 0) {
            (true, true) => ", a board per writer, subscribers spread over the 32 boards",
            (true, false) => ", a board per writer",
            (false, true) => ", all on the one board written",
            (false, false) => ", one board",
        }
    );
    log(format!("== write throughput: {label}"));
    let server = Server::start(
        ctx,
        &format!(
            "write_{}_{subscribers}{}",
            mode.as_str(),
            if board_each { "_boards" } else { "" }
        ),
        mode,
        "15s",
    )
    .await?;
    let board = server.create_board().await?;
    let mut boards = vec![board.clone(); WRITERS];
    if board_each {
        for b in boards.iter_mut() {
            *b = server.create_board().await?;
        }
    }
    // The subscribers are on the boards being written: one, or spread over all 32.
    let watched: Vec<String> = if board_each {
        boards.clone()
    } else {
        vec![board.clone()]
    };
    let crowd = if subscribers > 0 {
        let c = Crowd::open(
            &server,
            ctx.cluster.postmaster,
            &watched,
            subscribers,
            0,
            Duration::from_secs(180),
        )
        .await;
        sleep(Duration::from_millis(500)).await;
        Some(c)
    } else {
        None
    };
    let server = Arc::new(server);
    let cpu0 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    let started = Instant::now();
    let deadline = started + WRITE_FOR;
    let mut tasks = Vec::new();
    for (w, board) in boards.into_iter().enumerate() {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut rtts = Vec::new();
            let mut k = w * 1_000_000;
            while Instant::now() < deadline {
                k += 1;
                let t = Instant::now();
                match server.post_note(&board, k).await {
                    Ok(201) => {
                        ok += 1;
                        rtts.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(s) => *errors.entry(format!("status {s}")).or_insert(0) += 1,
                    Err(e) => *errors.entry(e.to_string()).or_insert(0) += 1,
                }
            }
            (ok, errors, rtts)
        }));
    }
    let mut notes = 0;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut rtts = Vec::new();
    for t in tasks {
        if let Ok((ok, e, r)) = t.await {
            notes += ok;
            for (k, v) in e {
                *errors.entry(k).or_insert(0) += v;
            }
            rtts.extend(r);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuMark::take(server.pid, ctx.cluster.postmaster);
    rtts.sort_unstable();
    let mut complete = "no subscribers".to_string();
    if let Some(crowd) = crowd {
        let mut seqs = Vec::with_capacity(watched.len());
        for b in &watched {
            seqs.push(server.board_seq(b).await.unwrap_or(0));
        }
        let caught_up_at = Instant::now();
        let all = crowd.wait_for_each(&seqs, Duration::from_secs(30)).await;
        let lag = caught_up_at.elapsed().as_secs_f64();
        let opened = crowd.ready();
        let subs = crowd.finish().await;
        let uptos: Vec<usize> = seqs.iter().map(|s| (*s).max(0) as usize).collect();
        let c = completeness_each(&subs, &uptos);
        complete = format!(
            "{opened}/{subscribers} subscribers; {} of {} deliveries, missing {}, duplicated {}, streams ended: {}; all caught up {:.1} s after the last write{}",
            c.received,
            c.expected,
            c.missing,
            c.duplicated,
            failures(&c.ended),
            lag,
            if all { "" } else { " (NOT all)" }
        );
    }
    let counts = server.stream_counts().await;
    let server = Arc::into_inner(server).ok_or("server still shared")?;
    server.stop(ctx).await;
    let row = ThroughputRow {
        label: label.clone(),
        subscribers,
        notes,
        per_sec: notes as f64 / elapsed,
        errors,
        post_p50: pct(&rtts, 50.0),
        post_p99: pct(&rtts, 99.0),
        complete,
        cpu: cpu1.since(&cpu0),
    };
    ctx.out(format!(
        "throughput {label}: {} notes in {elapsed:.1} s = {:.0}/s; POST p50 {} ms, p99 {} ms; errors: {}; {}; server after: {counts}",
        row.notes,
        row.per_sec,
        ms(row.post_p50),
        ms(row.post_p99),
        if row.errors.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", row.errors)
        },
        row.complete
    ));
    ctx.out(format!("  CPU {}", row.cpu));
    Ok(row)
}

struct RawRow {
    listeners: usize,
    per_sec: f64,
    received: u64,
    commits: u64,
    cpu: String,
}

/// INSERT + NOTIFY transactions straight through tokio-postgres, `WRITERS` connections for
/// `WRITE_FOR`, with `listeners` connections LISTENing on the channel.
async fn raw(ctx: &mut Ctx, listeners: usize) -> Res<RawRow> {
    log(format!("== raw INSERT + NOTIFY, {listeners} listener(s)"));
    let db = format!("bench_raw_{listeners}");
    let url = ctx.cluster.fresh_db(&db).await?;
    let setup = connect(&url).await?;
    setup
        .batch_execute(
            "CREATE TABLE raw_notes (id bigserial PRIMARY KEY, board_id uuid NOT NULL, body text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let received = Arc::new(AtomicU64::new(0));
    let mut listener_clients = Vec::new();
    for _ in 0..listeners {
        let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await?;
        let received = received.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(_) = m {
                    received.fetch_add(1, Relaxed);
                }
            }
        });
        client.batch_execute("LISTEN raw_bench").await?;
        listener_clients.push(client);
    }
    // A payload shaped like a note.created event.
    let payload = json!({
        "seq": 1, "type": "note.created", "board_id": uuid::Uuid::new_v4(),
        "at": "2026-01-01T00:00:00.000000Z",
        "note": {"id": uuid::Uuid::new_v4(), "board_id": uuid::Uuid::new_v4(), "text": "bench note 1",
                 "x": 10.0, "y": 20.0, "color": "#ffd54f", "width": 200.0, "height": 120.0,
                 "version": 1, "author": null, "created_at": "2026-01-01T00:00:00.000000Z",
                 "updated_at": "2026-01-01T00:00:00.000000Z"}
    })
    .to_string();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        writers.push(connect(&url).await?);
    }
    let cpu0 = CpuMark::take(0, ctx.cluster.postmaster);
    let started = Instant::now();
    let deadline = started + WRITE_FOR;
    let mut tasks = Vec::new();
    for mut client in writers {
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO raw_notes (board_id, body) VALUES ($1, $2)")
                .await?;
            let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
            let board = uuid::Uuid::new_v4();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let tx = client.transaction().await?;
                tx.execute(&insert, &[&board, &"bench note"]).await?;
                tx.execute(&notify, &[&"raw_bench", &payload]).await?;
                tx.commit().await?;
                n += 1;
            }
            // The connection is handed back: its backend's CPU is read before it closes.
            Ok::<_, tokio_postgres::Error>((n, client))
        }));
    }
    let mut commits = 0;
    let mut open = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok((n, client))) => {
                commits += n;
                open.push(client);
            }
            Ok(Err(e)) => log(format!("raw writer: {e}")),
            Err(e) => log(format!("raw writer: {e}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = CpuMark::take(0, ctx.cluster.postmaster);
    drop(open);
    // Let the listeners drain.
    let expect = commits * listeners as u64;
    for _ in 0..200 {
        if received.load(Relaxed) >= expect {
            break;
        }
        sleep(Duration::from_millis(25)).await;
    }
    drop(listener_clients);
    drop(setup);
    ctx.cluster.drop_db(&db).await;
    let row = RawRow {
        listeners,
        per_sec: commits as f64 / elapsed,
        received: received.load(Relaxed),
        commits,
        cpu: cpu1.since(&cpu0),
    };
    ctx.out(format!(
        "raw INSERT+NOTIFY, {WRITERS} writers, {listeners} listener(s): {commits} commits in {elapsed:.1} s = {:.0}/s; notifications received {} of {}; CPU {}",
        row.per_sec, row.received, expect, row.cpu
    ));
    Ok(row)
}

struct OpenRow {
    mode: Mode,
    p50: u64,
    p99: u64,
    max: u64,
    ok: usize,
}

/// `SEQUENTIAL_OPENS` streams opened one after another on one board, each closed once its
/// snapshot is in: request → snapshot received.
async fn open_time(ctx: &mut Ctx, mode: Mode) -> Res<OpenRow> {
    log(format!("== time to open a stream, {} mode", mode.as_str()));
    let server = Server::start(ctx, &format!("open_{}", mode.as_str()), mode, "15s").await?;
    let board = server.create_board().await?;
    for k in 1..=5 {
        server.post_note(&board, k).await?;
    }
    let request = Arc::new(
        format!("GET /api/boards/{board}/events HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
    );
    let mut times = Vec::new();
    let mut failed = BTreeMap::new();
    for _ in 0..SEQUENTIAL_OPENS {
        let slot = Arc::new(Slot::default());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(subscribe(
            server.addr,
            request.clone(),
            slot.clone(),
            None,
            stop.clone(),
            CancellationToken::new(),
            0,
        ));
        let started = Instant::now();
        while !slot.ready.load(Relaxed)
            && !slot.ended.load(Relaxed)
            && started.elapsed() < Duration::from_secs(10)
        {
            sleep(Duration::from_micros(200)).await;
        }
        stop.cancel();
        if let Ok(s) = handle.await {
            if s.snapshot_ns > 0 {
                times.push(s.snapshot_ns - s.open_ns);
            } else {
                let why = s.ended.unwrap_or_else(|| "no snapshot in 10 s".into());
                *failed.entry(why).or_insert(0) += 1;
            }
        }
        // Let the close (and, per stream, the listener's disconnect) finish.
        sleep(Duration::from_millis(20)).await;
    }
    server.stop(ctx).await;
    times.sort_unstable();
    let row = OpenRow {
        mode,
        p50: pct(&times, 50.0),
        p99: pct(&times, 99.0),
        max: pct(&times, 100.0),
        ok: times.len(),
    };
    ctx.out(format!(
        "open time {}: {} of {SEQUENTIAL_OPENS} sequential opens (board with 5 notes): p50 {} ms, p99 {} ms, max {} ms; failed: {}",
        mode.as_str(),
        row.ok,
        ms(row.p50),
        ms(row.p99),
        ms(row.max),
        failures(&failed)
    ));
    Ok(row)
}

// ---------------------------------------------------------------------------------------
// Machine and main

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = proc_meminfo("MemTotal:");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let limit = std::process::Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    format!(
        "nproc {nproc}; CPU {model}; memory {:.1} GiB; kernel {kernel}; open-file limit {}",
        mem as f64 / 1024.0 / 1024.0,
        limit.trim()
    )
}

fn proc_meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn sizes(arg: &str) -> Res<Vec<usize>> {
    arg.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| format!("{s}: {e}").into())
        })
        .collect()
}

struct Args {
    server: PathBuf,
    only: Vec<String>,
    shared_sizes: Vec<usize>,
    per_stream_sizes: Vec<usize>,
    idle: usize,
    idle_per_board: usize,
    log_dir: PathBuf,
    quick: bool,
}

fn args() -> Res<Args> {
    let mut a = Args {
        server: PathBuf::from("target/release/boardcast"),
        only: Vec::new(),
        shared_sizes: vec![1, 100, 1000, 5000, 15000],
        per_stream_sizes: vec![1, 10, 100],
        idle: 15000,
        idle_per_board: 100,
        log_dir: PathBuf::from("target/bench-logs"),
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => a.server = PathBuf::from(value()?),
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            "--sizes" => a.shared_sizes = sizes(&value()?)?,
            "--per-stream-sizes" => a.per_stream_sizes = sizes(&value()?)?,
            "--idle" => a.idle = value()?.parse()?,
            "--log-dir" => a.log_dir = PathBuf::from(value()?),
            "--quick" => a.quick = true,
            "--open-concurrency" => OPEN_CONCURRENCY.store(value()?.parse()?, Relaxed),
            "--open-budget" => OPEN_BUDGET.store(value()?.parse()?, Relaxed),
            "--idle-per-board" => a.idle_per_board = value()?.parse()?,
            "--perf" => PERF.store(true, Relaxed),
            "-h" | "--help" => {
                println!("see the comment at the top of examples/bench.rs");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.quick {
        a.shared_sizes = vec![1, 100, 1000];
        a.per_stream_sizes = vec![1, 10];
        a.idle = 1000;
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Res<()> {
    base();
    let args = args()?;
    let admin_url = std::env::var("DATABASE_URL")
        .map_err(|_| "DATABASE_URL (an admin URL of a PostgreSQL cluster) is not set")?;
    if !args.server.exists() {
        return Err(format!(
            "{} not found: cargo build --release --bin boardcast",
            args.server.display()
        )
        .into());
    }
    std::fs::create_dir_all(&args.log_dir)?;
    let cluster = Cluster::open(admin_url).await?;
    let mut ctx = Ctx {
        bin: args.server.clone(),
        log_dir: args.log_dir.clone(),
        cluster,
        report: String::new(),
    };
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let machine = format!("machine: {}; PostgreSQL {}", machine(), ctx.cluster.version);
    ctx.out(&machine);
    ctx.out(format!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
    let total = Instant::now();

    let mut raws = Vec::new();
    let mut opens = Vec::new();
    let mut fans = Vec::new();
    let mut idles = Vec::new();
    let mut writes = Vec::new();

    // Each scenario stands alone: one that fails is reported and the rest still run.
    macro_rules! attempt {
        ($what:expr, $into:expr) => {
            match $what.await {
                Ok(row) => $into.push(row),
                Err(e) => ctx.out(format!("FAILED: {e}")),
            }
        };
    }

    if want("raw") {
        attempt!(raw(&mut ctx, 1), raws);
        attempt!(raw(&mut ctx, 100), raws);
    }
    if want("open") {
        attempt!(open_time(&mut ctx, Mode::PerStream), opens);
        attempt!(open_time(&mut ctx, Mode::Shared), opens);
    }
    if want("per-stream") {
        for &n in &args.per_stream_sizes {
            attempt!(fanout(&mut ctx, Mode::PerStream, n), fans);
        }
    }
    if want("throughput") {
        attempt!(throughput(&mut ctx, Mode::PerStream, 0, false), writes);
        attempt!(throughput(&mut ctx, Mode::PerStream, 100, false), writes);
        attempt!(throughput(&mut ctx, Mode::Shared, 0, false), writes);
        attempt!(throughput(&mut ctx, Mode::Shared, 0, true), writes);
        let n = if args.quick { 100 } else { 1000 };
        attempt!(throughput(&mut ctx, Mode::Shared, n, false), writes);
        attempt!(throughput(&mut ctx, Mode::Shared, n, true), writes);
    }
    if want("shared") {
        for &n in &args.shared_sizes {
            attempt!(fanout(&mut ctx, Mode::Shared, n), fans);
        }
    }
    if want("idle") {
        attempt!(idle(&mut ctx, args.idle, args.idle_per_board), idles);
    }

    // -- Tables -------------------------------------------------------------------------
    ctx.out("");
    ctx.out(format!("## Results ({machine})"));
    if !fans.is_empty() {
        ctx.out("");
        ctx.out(format!(
            "Fan-out: {MESSAGES} notes 100 ms apart, write sent → event received (ms)"
        ));
        ctx.out("");
        ctx.out("| mode | subscribers | opened | open all (s) | open p50 / p99 (ms) | p50 | p99 | max | slowest sub/msg median | slowest sub/msg max | missing | duplicated | ended early | POST p50 | RSS/stream (KiB) | listener conns |");
        ctx.out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in &fans {
            ctx.out(format!(
                "| {} | {} | {} | {:.1} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                f.mode.as_str(),
                f.n,
                f.opened,
                f.open_secs,
                ms(f.open_p50),
                ms(f.open_p99),
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                ms(f.slowest_median),
                ms(f.slowest_max),
                f.missing,
                f.duplicated,
                f.ended,
                ms(f.post_p50),
                f.rss_per_stream_kib,
                f.listeners
            ));
        }
        ctx.out("");
        for f in &fans {
            ctx.out(format!("- CPU, {} N={}: {}", f.mode.as_str(), f.n, f.cpu));
        }
    }
    if !idles.is_empty() {
        ctx.out("");
        ctx.out("Idle cost (shared mode, heartbeat 5 s, measured 12 s after the last open)");
        ctx.out("");
        ctx.out("| streams | opened | RSS before (KiB) | RSS after (KiB) | peak RSS (KiB) | KiB per idle stream | threads | open fds | heartbeats each (min) |");
        ctx.out("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for i in &idles {
            ctx.out(format!(
                "| {} | {} | {} | {} | {} | {:.2} | {} → {} | {} → {} | {} |",
                i.n,
                i.opened,
                i.rss0,
                i.rss1,
                i.hwm,
                i.per_stream,
                i.threads0,
                i.threads1,
                i.fds0,
                i.fds1,
                i.heartbeats_min
            ));
        }
    }
    if !writes.is_empty() || !raws.is_empty() {
        ctx.out("");
        ctx.out(format!(
            "Write throughput: {WRITERS} writers for {} s",
            WRITE_FOR.as_secs()
        ));
        ctx.out("");
        ctx.out("| what | subscribers / listeners | writes/s | POST p50 (ms) | POST p99 (ms) | errors | deliveries |");
        ctx.out("|---|---:|---:|---:|---:|---|---|");
        for r in &raws {
            ctx.out(format!(
                "| raw INSERT + NOTIFY (tokio-postgres) | {} | {:.0} | | | | {} of {} notifications |",
                r.listeners,
                r.per_sec,
                r.received,
                r.commits * r.listeners as u64
            ));
        }
        for w in &writes {
            ctx.out(format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} |",
                w.label,
                w.subscribers,
                w.per_sec,
                ms(w.post_p50),
                ms(w.post_p99),
                if w.errors.is_empty() {
                    "0".to_string()
                } else {
                    format!("{:?}", w.errors)
                },
                w.complete
            ));
        }
        ctx.out("");
        for r in &raws {
            ctx.out(format!("- CPU, raw {} listener(s): {}", r.listeners, r.cpu));
        }
        for w in &writes {
            ctx.out(format!("- CPU, {}: {}", w.label, w.cpu));
        }
        let raw1 = raws.iter().find(|r| r.listeners == 1).map(|r| r.per_sec);
        if let Some(raw1) = raw1 {
            ctx.out("");
            for w in writes.iter().filter(|w| w.label.starts_with("api shared")) {
                ctx.out(format!(
                    "- ratio {} / raw INSERT+NOTIFY with one listener: {:.0}%",
                    w.label,
                    100.0 * w.per_sec / raw1
                ));
            }
        }
    }
    if !opens.is_empty() {
        ctx.out("");
        ctx.out(format!(
            "Time to open a stream: request → snapshot received, {SEQUENTIAL_OPENS} sequential opens"
        ));
        ctx.out("");
        ctx.out("| mode | opens | p50 (ms) | p99 (ms) | max (ms) |");
        ctx.out("|---|---:|---:|---:|---:|");
        for o in &opens {
            ctx.out(format!(
                "| {} | {} | {} | {} | {} |",
                o.mode.as_str(),
                o.ok,
                ms(o.p50),
                ms(o.p99),
                ms(o.max)
            ));
        }
    }
    ctx.out("");
    ctx.out(format!(
        "whole run: {:.0} s; load average at end: {}",
        total.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
    let path = args.log_dir.join("report.md");
    std::fs::write(&path, &ctx.report)?;
    log(format!("report written to {}", path.display()));
    Ok(())
}
