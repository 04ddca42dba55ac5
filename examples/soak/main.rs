//! The boardcast soak: two shared-mode instances and one per-stream instance on one
//! PostgreSQL, about 2,000 browser-like streams over 100 boards, writes, signals and
//! client churn for a bounded time, with faults on a schedule, and verdicts that are
//! asserted: nothing lost, nothing twice, every client's board equal to the database's,
//! no stale presence, no 5xx other than an honest 503, resources back to their level,
//! and every instance out within 30 s of SIGTERM.
//!
//! Run it through `scripts/soak` (it starts a throwaway PostgreSQL, builds the release
//! server and this program, and passes `PG_TEST_DIR` so the soak can restart the cluster
//! with `scripts/pgctl`). By hand: `cargo run --release --example soak -- --help`.
//!
//! Exit status: 0 when every verdict holds, 1 when one fails (the report says which).

mod client;
#[allow(dead_code)] // shared with the benchmark, which uses the rest of it
#[path = "../bench/clock.rs"]
mod clock;
#[allow(dead_code)] // shared with the benchmark, which uses the rest of it
#[path = "../bench/cluster.rs"]
mod cluster;
mod faults;
mod fleet;
mod load;
#[allow(dead_code)] // shared with the benchmark, which uses the rest of it
#[path = "../bench/procfs.rs"]
mod procfs;
mod report;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::Parser;
use serde_json::json;
use tokio::time::{Instant, sleep};

use client::{Client, Shared};
use clock::log;
use fleet::Instance;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

/// Soak boardcast under load and faults; `DATABASE_URL` is an admin URL of a throwaway
/// cluster and `PG_TEST_DIR` its directory (scripts/soak sets both).
#[derive(Debug, Parser)]
#[command(name = "soak")]
pub struct Args {
    /// How long the load runs, in minutes (the faults are spread over it)
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Boards
    #[arg(long, default_value_t = 100)]
    boards: usize,
    /// Streams in all; three boards get 300 each when there are enough, the rest share
    /// the remainder
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Boards served by the per-stream instance (their streams all go to it)
    #[arg(long, default_value_t = 5)]
    per_stream_boards: usize,
    /// Writes per second, over all boards and instances
    #[arg(long, default_value_t = 100.0)]
    writes: f64,
    /// Clients that send a cursor five times a second
    #[arg(long, default_value_t = 20)]
    signal_senders: usize,
    /// Clients that leave and come back per second (one in ten by RST)
    #[arg(long, default_value_t = 20)]
    churn: usize,
    /// Streams opened at once in the capacity burst
    #[arg(long, default_value_t = 500)]
    burst: usize,
    /// The servers' HEARTBEAT_INTERVAL, in seconds (short, so that reclaiming and
    /// presence verdicts come within the run)
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    /// The boardcast binary
    #[arg(long, default_value = "target/release/boardcast")]
    server: PathBuf,
    /// Server logs and report.md
    #[arg(long, default_value = "target/soak-logs")]
    log_dir: PathBuf,
}

/// Everything the faults and the verdicts need.
pub struct Soak {
    pub args: Args,
    pub url: String,
    pub db: String,
    pub admin_url: String,
    pub http: reqwest::Client,
    pub instances: Vec<Instance>,
    pub boards: Vec<String>,
    /// (instance index, board, shared state) per client
    pub clients: Vec<(usize, String, Arc<Shared>)>,
    pub started: Instant,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    clock::base();
    match run().await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("soak: FAILED (a verdict does not hold; see the report)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}

async fn run() -> Res<bool> {
    let args = Args::parse();
    let admin_url = std::env::var("DATABASE_URL")
        .map_err(|_| "DATABASE_URL (an admin URL of a throwaway cluster) is not set")?;
    std::env::var("PG_TEST_DIR").map_err(|_| "PG_TEST_DIR is not set: run through scripts/soak")?;
    if !args.server.exists() {
        return Err(format!("{} not found", args.server.display()).into());
    }
    std::fs::create_dir_all(&args.log_dir)?;
    let db = "soak".to_string();
    let admin = cluster::connect(&admin_url).await?;
    // Two statements: CREATE DATABASE cannot run in the implicit transaction of a batch.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    let url = cluster::db_url(&admin_url, &db)?;
    for f in std::fs::read_dir(&args.log_dir)?.flatten() {
        if f.path().extension().is_some_and(|e| e == "log") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    fleet::migrate(&args.server, &url, &args.log_dir.join("migrate.log")).await?;

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()?;
    let heartbeat = Duration::from_secs(args.heartbeat);
    let shared_cap = args.streams + args.burst;
    // A's cap sits half a burst above the streams it is given, so the burst meets
    // MAX_STREAMS there.
    let given_a = place_clients(&args, &vec![String::new(); args.boards])
        .iter()
        .filter(|(i, _, _)| *i == 0)
        .count();
    let a_cap = given_a + args.burst / 2;
    let mut instances = vec![
        Instance::new("a-shared", "shared", a_cap, heartbeat, &args.log_dir)?,
        Instance::new("b-shared", "shared", shared_cap, heartbeat, &args.log_dir)?,
        Instance::new("c-per-stream", "per-stream", 400, heartbeat, &args.log_dir)?,
    ];
    for i in &mut instances {
        i.start(&args.server, &url, &http).await?;
        log(format!(
            "{} ({}) on {} pid {}",
            i.label,
            i.mode,
            i.base(),
            i.pid
        ));
    }

    let mut boards = Vec::new();
    for k in 0..args.boards {
        let r = http
            .post(format!("{}/api/boards", instances[0].base()))
            .json(&json!({ "title": format!("soak {k}") }))
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            return Err(format!("create board: {}", r.status()).into());
        }
        let v: serde_json::Value = r.json().await?;
        boards.push(v["id"].as_str().ok_or("board without id")?.to_string());
    }

    let clients = place_clients(&args, &boards);
    let mut soak = Soak {
        args,
        url,
        db,
        admin_url,
        http,
        instances,
        boards,
        clients,
        started: Instant::now(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, board, shared) in &soak.clients {
        let client = Client {
            board: board.clone(),
            addr: soak.instances[*i].addr(),
            heartbeat,
            shared: shared.clone(),
        };
        tasks.push(tokio::spawn(client.run(stop.clone())));
        // Open a few at a time so the opening itself is not the test.
        if tasks.len() % 50 == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    }
    let opened = wait_live(&soak, Duration::from_secs(120)).await;
    log(format!("{opened} of {} streams live", soak.clients.len()));

    let load_stop = Arc::new(AtomicBool::new(false));
    let write_stats = Arc::new(Mutex::new(load::WriteStats::default()));
    let signal_stats = Arc::new(Mutex::new(load::SignalStats::default()));
    let bases = Arc::new(
        soak.instances
            .iter()
            .map(Instance::base)
            .collect::<Vec<_>>(),
    );
    let writers = tokio::spawn(load::writers(
        soak.http.clone(),
        bases.clone(),
        Arc::new(soak.boards.clone()),
        soak.args.writes,
        load_stop.clone(),
        write_stats.clone(),
    ));
    let senders = Arc::new(
        soak.clients
            .iter()
            .map(|(i, b, s)| (bases[*i].clone(), b.clone(), s.clone()))
            .collect::<Vec<_>>(),
    );
    let signals = tokio::spawn(load::signals(
        soak.http.clone(),
        senders,
        soak.args.signal_senders,
        load_stop.clone(),
        signal_stats.clone(),
    ));
    let churn = tokio::spawn(load::churn(
        Arc::new(soak.clients.iter().map(|(_, _, s)| s.clone()).collect()),
        soak.args.churn,
        load_stop.clone(),
    ));
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(
        soak.instances
            .iter()
            .map(|i| (i.label, i.pid))
            .collect::<Vec<_>>(),
    ));
    let sampler = tokio::spawn(faults::sample(
        soak.admin_url.clone(),
        soak.db.clone(),
        pids.clone(),
        samples.clone(),
        sampler_stop.clone(),
    ));

    // Baseline after a warm-up, then the faults spread over the run.
    soak.started = Instant::now();
    let outcomes = faults::schedule(&mut soak, &pids).await;

    load_stop.store(true, Ordering::SeqCst);
    let _ = tokio::join!(writers, signals, churn);
    log("load stopped; letting every client catch up");
    let catch_up = faults::catch_up(&soak, Duration::from_secs(60), true).await;
    sampler_stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;

    let writes = std::mem::take(&mut *write_stats.lock().unwrap_or_else(PoisonError::into_inner));
    let sent = std::mem::take(&mut *signal_stats.lock().unwrap_or_else(PoisonError::into_inner));
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let verdicts = report::verdicts(
        &mut soak, &outcomes, catch_up, &writes, &sent, &samples, stop, tasks,
    )
    .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", soak.db))
        .await;
    Ok(verdicts)
}

/// Three big boards of 300 when there are enough streams, the rest spread evenly; the
/// per-stream instance gets every stream of its boards; the shared instances alternate.
fn place_clients(args: &Args, boards: &[String]) -> Vec<(usize, String, Arc<Shared>)> {
    let big = if args.streams >= 1500 && boards.len() > args.per_stream_boards + 3 {
        3
    } else {
        0
    };
    let mut counts = vec![0usize; boards.len()];
    let first_big = args.per_stream_boards.min(boards.len());
    for c in counts.iter_mut().skip(first_big).take(big) {
        *c = 300;
    }
    let rest = args.streams.saturating_sub(big * 300);
    let others: Vec<usize> = (0..boards.len())
        .filter(|b| !(first_big..first_big + big).contains(b))
        .collect();
    for k in 0..rest {
        counts[others[k % others.len()]] += 1;
    }
    let mut out = Vec::new();
    let mut flip = 0;
    for (b, &n) in counts.iter().enumerate() {
        for _ in 0..n {
            let instance = if b < args.per_stream_boards {
                2
            } else {
                flip ^= 1;
                flip
            };
            out.push((instance, boards[b].clone(), Arc::new(Shared::default())));
        }
    }
    out
}

/// Waits until every client has had a first frame (or `limit`); how many did.
async fn wait_live(soak: &Soak, limit: Duration) -> usize {
    let started = Instant::now();
    loop {
        let live = soak
            .clients
            .iter()
            .filter(|(_, _, s)| {
                s.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .snapshots
                    > 0
            })
            .count();
        if live == soak.clients.len() || started.elapsed() > limit {
            return live;
        }
        sleep(Duration::from_millis(200)).await;
    }
}
