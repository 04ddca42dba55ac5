//! The faults, on a schedule spread over the run, and what is measured after each: time
//! until every instance's `/readyz` answers 200 again, and time until every client has
//! caught up with what its board held when the fault was over.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

use crate::{Soak, clock::log, cluster::connect, procfs};

/// What one fault did and how the service came back from it.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    /// Seconds into the load when it struck
    pub at: f64,
    /// Until every instance's /readyz answered 200 (`None`: not within 60 s)
    pub ready: Option<Duration>,
    /// Until every client had every event its board held once the fault was over
    pub catch_up: Option<Duration>,
    pub detail: String,
    /// False when the fault broke a promise by itself (a non-zero exit, a hang)
    pub ok: bool,
}

/// One resource reading: an instance's process, and the database's backends.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    pub label: &'static str,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: usize,
    pub backends: i64,
}

/// Reads every instance's RSS and descriptors and the database's backends every 2 s.
pub async fn sample(
    admin_url: String,
    db: String,
    pids: Arc<Mutex<Vec<(&'static str, u32)>>>,
    out: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let mut admin = None;
    while !stop.load(Ordering::SeqCst) {
        if admin.is_none() {
            admin = connect(&admin_url).await.ok();
        }
        let backends = match &admin {
            Some(c) => match c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&db],
                )
                .await
            {
                Ok(r) => r.get(0),
                Err(_) => {
                    admin = None;
                    -1
                }
            },
            None => -1,
        };
        let t = started.elapsed().as_secs_f64();
        let now: Vec<_> = pids.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let readings: Vec<Sample> = now
            .into_iter()
            .map(|(label, pid)| Sample {
                t,
                label,
                pid,
                rss_kib: procfs::rss_kib(pid),
                fds: procfs::open_fds(pid),
                backends,
            })
            .collect();
        out.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(readings);
        sleep(Duration::from_secs(2)).await;
    }
}

/// Runs the faults at fixed fractions of the run and sleeps out the rest of it.
pub async fn schedule(soak: &mut Soak, pids: &Mutex<Vec<(&'static str, u32)>>) -> Vec<Outcome> {
    let total = Duration::from_secs_f64(soak.args.minutes * 60.0);
    let plan: [(f64, &'static str); 5] = [
        (0.10, "listeners terminated"),
        (0.25, "PostgreSQL restart (fast)"),
        (0.40, "SIGKILL of b-shared, restart"),
        (0.55, "rolling SIGTERM restart"),
        (0.70, "burst of opens past MAX_STREAMS"),
    ];
    let mut out = Vec::new();
    for (at, name) in plan {
        let when = total.mul_f64(at);
        if let Some(wait) = when.checked_sub(soak.started.elapsed()) {
            sleep(wait).await;
        }
        let at = soak.started.elapsed().as_secs_f64();
        log(format!("fault: {name}"));
        let (ok, detail) = match name {
            "listeners terminated" => terminate_listeners(soak).await,
            "PostgreSQL restart (fast)" => restart_postgres().await,
            "SIGKILL of b-shared, restart" => kill_and_restart(soak, 1).await,
            "rolling SIGTERM restart" => rolling_restart(soak).await,
            _ => burst(soak).await,
        };
        *pids.lock().unwrap_or_else(PoisonError::into_inner) =
            soak.instances.iter().map(|i| (i.label, i.pid)).collect();
        let ready = all_ready(soak, Duration::from_secs(60)).await;
        let catch_up = catch_up(soak, Duration::from_secs(60), false).await;
        log(format!(
            "  {detail}; ready after {ready:?}, clients caught up after {catch_up:?}"
        ));
        out.push(Outcome {
            name,
            at,
            ready,
            catch_up,
            detail,
            ok,
        });
    }
    if let Some(wait) = total.checked_sub(soak.started.elapsed()) {
        sleep(wait).await;
    }
    out
}

async fn terminate_listeners(soak: &Soak) -> (bool, String) {
    match connect(&soak.admin_url).await {
        Ok(c) => match c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'boardcast listener'",
                &[&soak.db],
            )
            .await
        {
            Ok(rows) => (true, format!("{} listener connections terminated", rows.len())),
            Err(e) => (false, format!("pg_terminate_backend failed: {e}")),
        },
        Err(e) => (false, format!("cannot connect: {e}")),
    }
}

async fn restart_postgres() -> (bool, String) {
    let started = Instant::now();
    match tokio::process::Command::new("scripts/pgctl")
        .args(["restart", "fast"])
        .status()
        .await
    {
        Ok(s) if s.success() => (
            true,
            format!(
                "cluster back after {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        ),
        Ok(s) => (false, format!("scripts/pgctl restart failed: {s}")),
        Err(e) => (false, format!("scripts/pgctl: {e}")),
    }
}

async fn kill_and_restart(soak: &mut Soak, i: usize) -> (bool, String) {
    soak.instances[i].kill().await;
    sleep(Duration::from_secs(1)).await;
    let (bin, url, http) = (
        soak.args.server.clone(),
        soak.url.clone(),
        soak.http.clone(),
    );
    match soak.instances[i].start(&bin, &url, &http).await {
        Ok(()) => (
            true,
            format!("{} killed and restarted", soak.instances[i].label),
        ),
        Err(e) => (false, format!("restart failed: {e}")),
    }
}

async fn rolling_restart(soak: &mut Soak) -> (bool, String) {
    let (bin, url, http) = (
        soak.args.server.clone(),
        soak.url.clone(),
        soak.http.clone(),
    );
    let mut ok = true;
    let mut parts = Vec::new();
    for inst in &mut soak.instances {
        match inst.terminate().await {
            Ok((status, took)) => {
                let good = status.success() && took <= Duration::from_secs(30);
                ok &= good;
                parts.push(format!(
                    "{} {status} in {:.1} s",
                    inst.label,
                    took.as_secs_f64()
                ));
            }
            Err(e) => {
                ok = false;
                parts.push(format!("{}: {e}", inst.label));
            }
        }
        if let Err(e) = inst.start(&bin, &url, &http).await {
            ok = false;
            parts.push(format!("{} restart failed: {e}", inst.label));
        }
    }
    (ok, parts.join(", "))
}

/// `burst` stream opens at once against a-shared, whose MAX_STREAMS is set so that they
/// pass it: every one must get an answer (200, or 503 with Retry-After) within 10 s.
async fn burst(soak: &Soak) -> (bool, String) {
    let addr = soak.instances[0].addr();
    let board = soak.boards[soak.boards.len() - 1].clone();
    let opens = (0..soak.args.burst).map(|_| {
        let board = board.clone();
        tokio::spawn(async move {
            let attempt = async {
                let mut s = TcpStream::connect(addr).await.ok()?;
                let req = format!(
                    "GET /api/boards/{board}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
                );
                s.write_all(req.as_bytes()).await.ok()?;
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
                Some((status, text.contains("\r\nretry-after:"), s))
            };
            timeout(Duration::from_secs(10), attempt).await
        })
    });
    let results = futures_util::future::join_all(opens).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut ok = true;
    let mut held = Vec::new();
    for r in results {
        let key = match r {
            Ok(Ok(Some((200, _, s)))) => {
                held.push(s);
                "200".to_string()
            }
            Ok(Ok(Some((503, true, _)))) => "503 with Retry-After".to_string(),
            Ok(Ok(Some((status, _, _)))) => {
                ok = false;
                format!("{status}")
            }
            Ok(Ok(None)) => {
                ok = false;
                "closed without an answer".to_string()
            }
            _ => {
                ok = false;
                "no answer within 10 s".to_string()
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    let refused = counts.get("503 with Retry-After").copied().unwrap_or(0);
    ok &= refused > 0;
    drop(held);
    let mut parts: Vec<_> = counts.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    parts.sort();
    (ok, parts.join(", "))
}

async fn all_ready(soak: &mut Soak, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let http = soak.http.clone();
    for inst in &mut soak.instances {
        let left = limit.checked_sub(started.elapsed())?;
        inst.ready_within(&http, left).await.ok()?;
    }
    Some(started.elapsed())
}

/// Until every client's last id reaches its board's seq as PostgreSQL has it now; clients
/// stalled on purpose are waited for only when `stalled` is set.
pub async fn catch_up(soak: &Soak, limit: Duration, stalled: bool) -> Option<Duration> {
    let started = Instant::now();
    let target = loop {
        if let Ok(c) = connect(&crate::cluster::db_url(&soak.admin_url, &soak.db).ok()?).await
            && let Ok(rows) = c.query("SELECT id::text, seq FROM boards", &[]).await
        {
            break rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<HashMap<_, _>>();
        }
        if started.elapsed() > limit {
            return None;
        }
        sleep(Duration::from_millis(200)).await;
    };
    loop {
        let behind = soak
            .clients
            .iter()
            .filter(|(_, _, s)| stalled || !s.stalled.load(Ordering::SeqCst))
            .filter(|(_, b, s)| s.last.load(Ordering::SeqCst) < target.get(b).copied().unwrap_or(0))
            .count();
        if behind == 0 {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            log(format!("{behind} clients still behind after {limit:?}"));
            return None;
        }
        sleep(Duration::from_millis(100)).await;
    }
}
