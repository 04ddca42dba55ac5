//! The boardcast benchmark: fan-out latency, idle cost, write throughput, the per-stream
//! mode and signals under load, each against a fresh server process and a fresh database;
//! and Nchan's fan-out in the same run, measured the same way (`--only shared,nchan`).
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
//! Options: `--help`. Each job lives in a file of its own under `jobs/`; to add one, add
//! its module there, a `Job` variant below, and its part of the report.
//!
//! Opening a crowd on one board costs the server O(N²) today: every open is announced to
//! every stream already there (`presence.joined`) and gets the whole viewer list. 15,000
//! streams on one board take about 11 minutes to open on a 2-core machine, which is most
//! of a full run; docs/PERFORMANCE.md has the figures.

mod clock;
mod cluster;
mod crowd;
mod jobs;
mod nchan;
mod procfs;
mod server;
mod subscriber;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};

use clock::{base, log};
use cluster::Cluster;
use nchan::NchanSetup;
use procfs::machine;
use server::Mode;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, Error>;

/// Writers and duration of a write-throughput run (also the raw ceiling's).
const WRITERS: usize = 32;
const WRITE_FOR: Duration = Duration::from_secs(5);

/// The jobs, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Job {
    /// INSERT + NOTIFY straight through tokio-postgres: the ceiling
    Raw,
    /// Time to open a stream, one after another, in both modes
    Open,
    /// Fan-out latency in per-stream mode (`--per-stream-sizes`)
    PerStream,
    /// API write throughput, with and without subscribers
    Throughput,
    /// The write path next to its ceiling in one run: raw INSERT + NOTIFY (one listener),
    /// then API writes with no subscribers and a board per writer, in both modes (only
    /// when named: a full run has these rows in `raw` and `throughput`)
    Writes,
    /// Fan-out latency in shared mode (`--sizes`)
    Shared,
    /// The same fan-out against nginx + Nchan (`--sizes`), right after `shared` so both
    /// are in one run (needs `--nginx` and `--nchan-module`; scripts/bench installs them)
    Nchan,
    /// Memory per idle stream in shared mode (`--idle`)
    Idle,
    /// Signals under load in shared mode (`--signal-streams` on `--signal-boards`, 10
    /// senders per board at 20/s for `--signal-secs`), and their effect on change events
    Signals,
}

/// Benchmark boardcast: fan-out latency, idle cost, write throughput and the per-stream
/// mode, each against a fresh server process and a fresh database. `DATABASE_URL` is an
/// admin URL of the PostgreSQL cluster to use (scripts/bench starts one).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// The boardcast binary
    #[arg(long, default_value = "target/release/boardcast")]
    server: PathBuf,
    /// Jobs to run, comma-separated (default: all, in the order listed)
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Job>,
    /// Shared-mode fan-out sizes
    #[arg(long = "sizes", value_delimiter = ',', default_values_t = [1, 100, 1000, 5000, 15000])]
    shared_sizes: Vec<usize>,
    /// Per-stream fan-out sizes
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100])]
    per_stream_sizes: Vec<usize>,
    /// Idle streams
    #[arg(long, default_value_t = 15000)]
    idle: usize,
    /// Idle streams per board (opening thousands on one board is quadratic in presence
    /// traffic, which the fan-out jobs measure)
    #[arg(long, default_value_t = 100)]
    idle_per_board: usize,
    /// Streams of the signals job, spread over `--signal-boards` boards
    #[arg(long, default_value_t = 1000)]
    signal_streams: usize,
    /// Boards of the signals job (10 of each board's viewers send)
    #[arg(long, default_value_t = 20)]
    signal_boards: usize,
    /// How long the signals job's viewers send, in seconds
    #[arg(long, default_value_t = 30)]
    signal_secs: u64,
    /// Subscribers connecting at once (well under the accept backlog)
    #[arg(long, default_value_t = 50)]
    open_concurrency: usize,
    /// The longest one crowd may take to open, in seconds; the streams not open by then
    /// are abandoned and the run goes on with those that did
    #[arg(long, default_value_t = 900)]
    open_budget: u64,
    /// `perf record` the server during each fan-out's writes
    #[arg(long)]
    perf: bool,
    /// nginx for the `nchan` job
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// The Nchan module nginx loads (`load_module`)
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_nchan_module.so")]
    nchan_module: PathBuf,
    /// nginx's `worker_processes` for the `nchan` job: `auto` (one per core) lets Nchan
    /// use every core, as boardcast's actix workers (one per physical core) do
    #[arg(long, default_value = "auto")]
    nchan_workers: String,
    /// Why the `nchan` job cannot run here (scripts/bench sets it when installing nginx
    /// or the module failed); the report says so instead of running it
    #[arg(long)]
    nchan_unavailable: Option<String>,
    /// Small sizes, for trying the program out (overrides the sizes and `--idle`)
    #[arg(long)]
    quick: bool,
    /// Server logs, profiles and report.md
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
}

impl Args {
    fn resolved(mut self) -> Args {
        if self.quick {
            self.shared_sizes = vec![1, 100, 1000];
            self.per_stream_sizes = vec![1, 10];
            self.idle = 1000;
            self.signal_streams = 200;
            self.signal_boards = 4;
            self.signal_secs = 10;
        }
        self
    }
}

/// What every job gets: the server binary, the cluster, where logs go, and the report.
struct Ctx {
    bin: PathBuf,
    log_dir: PathBuf,
    cluster: Cluster,
    report: String,
    open_concurrency: usize,
    open_budget: Duration,
    perf: bool,
}

impl Ctx {
    /// A line of the report: printed, and kept for report.md.
    fn out(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.report.push_str(line.as_ref());
        self.report.push('\n');
    }
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
    let args = Args::parse().resolved();
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
        open_concurrency: args.open_concurrency,
        open_budget: Duration::from_secs(args.open_budget),
        perf: args.perf,
    };
    let want = |job: Job| args.only.is_empty() || args.only.contains(&job);
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

    if want(Job::Raw) {
        attempt!(jobs::raw::raw(&mut ctx, 1), raws);
        attempt!(jobs::raw::raw(&mut ctx, 100), raws);
    }
    if want(Job::Open) {
        attempt!(jobs::open::open_time(&mut ctx, Mode::PerStream), opens);
        attempt!(jobs::open::open_time(&mut ctx, Mode::Shared), opens);
    }
    if want(Job::PerStream) {
        for &n in &args.per_stream_sizes {
            attempt!(jobs::fanout::fanout(&mut ctx, Mode::PerStream, n), fans);
        }
    }
    if want(Job::Throughput) {
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::PerStream, 0, false),
            writes
        );
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::PerStream, 100, false),
            writes
        );
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::Shared, 0, false),
            writes
        );
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::Shared, 0, true),
            writes
        );
        let n = if args.quick { 100 } else { 1000 };
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::Shared, n, false),
            writes
        );
        attempt!(
            jobs::throughput::throughput(&mut ctx, Mode::Shared, n, true),
            writes
        );
    }
    if args.only.contains(&Job::Writes) {
        attempt!(jobs::raw::raw(&mut ctx, 1), raws);
        for mode in [Mode::PerStream, Mode::Shared] {
            attempt!(
                jobs::throughput::throughput(&mut ctx, mode, 0, true),
                writes
            );
        }
    }
    if want(Job::Shared) {
        for &n in &args.shared_sizes {
            attempt!(jobs::fanout::fanout(&mut ctx, Mode::Shared, n), fans);
        }
    }
    // Nchan right after our shared-mode fan-out, at the same sizes: one run, one machine.
    let mut nchan_note = None;
    if want(Job::Nchan) {
        let setup = NchanSetup {
            nginx: args.nginx.clone(),
            module: args.nchan_module.clone(),
            workers: args.nchan_workers.clone(),
            unavailable: args.nchan_unavailable.clone(),
        };
        match setup.missing() {
            Some(why) => {
                let note = format!("nchan: not run ({why})");
                ctx.out(&note);
                nchan_note = Some(note);
            }
            None => {
                for &n in &args.shared_sizes {
                    attempt!(jobs::nchan::nchan(&mut ctx, &setup, n), fans);
                }
            }
        }
    }
    if want(Job::Idle) {
        attempt!(
            jobs::idle::idle(&mut ctx, args.idle, args.idle_per_board),
            idles
        );
    }

    if want(Job::Signals) {
        let (streams, boards, secs) = (args.signal_streams, args.signal_boards, args.signal_secs);
        if let Err(e) = jobs::signals::signals(&mut ctx, streams, boards, secs).await {
            ctx.out(format!("FAILED: {e}"));
        }
    }

    ctx.out("");
    ctx.out(format!("## Results ({machine})"));
    jobs::fanout::table(&mut ctx, &fans);
    if let Some(note) = nchan_note {
        ctx.out("");
        ctx.out(note);
    }
    jobs::idle::table(&mut ctx, &idles);
    jobs::throughput::table(&mut ctx, &raws, &writes);
    jobs::open::table(&mut ctx, &opens);
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
