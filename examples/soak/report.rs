//! The verdicts, asserted, and the figures: printed as a table and written to
//! `report.md` in the log directory.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{
        Arc, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{task::JoinHandle, time::sleep};

use crate::{
    Soak,
    client::Cause,
    clock::log,
    cluster::{connect, db_url},
    faults::{Outcome, Sample},
    load::{SignalStats, WriteStats},
    procfs,
};

/// Checks every promise, prints the figures, writes report.md; true when all hold.
#[allow(clippy::too_many_arguments)] // one call, from main, with everything the run measured
pub async fn verdicts(
    soak: &mut Soak,
    faults: &[Outcome],
    final_catch_up: Option<Duration>,
    writes: &WriteStats,
    signals: &SignalStats,
    samples: &[Sample],
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
) -> bool {
    let mut r = String::new();
    let mut failed: Vec<String> = Vec::new();
    let machine = procfs::machine();
    let _ = writeln!(r, "# boardcast soak\n");
    let _ = writeln!(
        r,
        "machine: {machine}; load average now: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let _ = writeln!(
        r,
        "run: {:.1} min of load; {} boards; {} streams ({} per-stream); {:.0} writes/s; {} signal senders; {} churned/s; heartbeat {} s\n",
        soak.args.minutes,
        soak.boards.len(),
        soak.clients.len(),
        soak.clients.iter().filter(|(i, _, _)| *i == 2).count(),
        soak.args.writes,
        soak.args.signal_senders,
        soak.args.churn,
        soak.args.heartbeat,
    );

    // 1. Every client: ids consecutive across reconnects, its board equal to the database's.
    let database = match board_notes(soak).await {
        Ok(d) => d,
        Err(e) => {
            failed.push(format!("cannot read the final boards: {e}"));
            HashMap::new()
        }
    };
    let (mut delivered, mut lost, mut doubled, mut resume_snapshots, mut differ) = (0, 0, 0, 0, 0);
    let mut causes: BTreeMap<Cause, u64> = BTreeMap::new();
    let (mut connects, mut server_errors, mut signals_seen) = (0, Vec::new(), 0);
    for (_, board, shared) in &soak.clients {
        let st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        delivered += st.events;
        lost += st.gaps;
        doubled += st.duplicates;
        resume_snapshots += st.resume_snapshots;
        connects += st.connects;
        signals_seen += st.signals;
        server_errors.extend(st.server_errors.iter().cloned());
        for (c, n) in &st.causes {
            *causes.entry(*c).or_default() += n;
        }
        if database.get(board).is_some_and(|notes| *notes != st.notes) {
            differ += 1;
        }
    }
    let written = writes.created + writes.updated + writes.deleted;
    let _ = writeln!(r, "## Delivery\n");
    let _ = writeln!(r, "| figure | value |\n|---|---|");
    for (k, v) in [
        ("change events written (2xx writes)", written.to_string()),
        ("… of which 9,000-character notes", writes.big.to_string()),
        ("events delivered to clients", delivered.to_string()),
        ("deliveries lost (id gaps)", lost.to_string()),
        ("deliveries doubled (repeated ids)", doubled.to_string()),
        (
            "snapshots on a resume (history was kept)",
            resume_snapshots.to_string(),
        ),
        (
            "clients whose board differs from PostgreSQL",
            differ.to_string(),
        ),
        (
            "connections opened (first + reconnects)",
            connects.to_string(),
        ),
        (
            "writes refused 412 / 404 / 503 / no answer",
            format!(
                "{} / {} / {} / {}",
                writes.stale, writes.missing, writes.unavailable, writes.network
            ),
        ),
        ("writes with another status", format!("{:?}", writes.other)),
        (
            "signals accepted / 403 / 429 / no answer",
            format!(
                "{} / {} / {} / {}",
                signals.accepted, signals.refused, signals.limited, signals.network
            ),
        ),
        (
            "signals with another status",
            format!("{:?}", signals.other),
        ),
        ("signal frames received", signals_seen.to_string()),
        (
            "clients caught up after the load stopped",
            format!("{final_catch_up:?}"),
        ),
    ] {
        let _ = writeln!(r, "| {k} | {v} |");
    }
    let _ = writeln!(r, "\nReconnects by cause: {causes:?}\n");
    if lost > 0 {
        failed.push(format!("{lost} deliveries lost"));
    }
    if doubled > 0 {
        failed.push(format!("{doubled} deliveries doubled"));
    }
    if resume_snapshots > 0 {
        failed.push(format!(
            "{resume_snapshots} resumes answered with a snapshot"
        ));
    }
    if differ > 0 {
        failed.push(format!(
            "{differ} clients end with a board unlike PostgreSQL's"
        ));
    }
    if final_catch_up.is_none() {
        failed.push("clients did not catch up within 60 s of the end".into());
    }
    let five = |m: &HashMap<u16, u64>| {
        m.iter()
            .filter(|(s, _)| **s >= 500)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    if five(&writes.other) + five(&signals.other) > 0 || !server_errors.is_empty() {
        failed.push(format!(
            "server errors: writes {:?}, signals {:?}, streams {:?}",
            writes.other,
            signals.other,
            server_errors.iter().take(5).collect::<Vec<_>>()
        ));
    }

    // 2. Faults.
    let _ = writeln!(r, "## Faults\n");
    let _ = writeln!(
        r,
        "| at (s) | fault | what happened | /readyz 200 after | every client caught up after |\n|---|---|---|---|---|"
    );
    for f in faults {
        let _ = writeln!(
            r,
            "| {:.0} | {} | {} | {} | {} |",
            f.at,
            f.name,
            f.detail,
            f.ready.map_or("not within 60 s".into(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
            f.catch_up.map_or("not within 60 s".into(), |d| format!(
                "{:.2} s",
                d.as_secs_f64()
            )),
        );
        if !f.ok || f.ready.is_none() || f.catch_up.is_none() {
            failed.push(format!("fault \"{}\": {}", f.name, f.detail));
        }
    }

    // 3. Resources: each process from its last start to the end of the load.
    let _ = writeln!(r, "\n## Resources (each instance since its last start)\n");
    let _ = writeln!(
        r,
        "| instance | RSS first → last (MiB) | RSS slope (MiB/h) | … over the last 3 min | fds first → last | samples |\n|---|---|---|---|---|---|"
    );
    for inst in &soak.instances {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.pid == inst.pid && s.rss_kib > 0)
            .collect();
        // Skip the first 10 s after a start: the streams are still coming back.
        let settled: Vec<&Sample> = match mine.first() {
            Some(first) => mine
                .iter()
                .copied()
                .filter(|s| s.t >= first.t + 10.0)
                .collect(),
            None => Vec::new(),
        };
        if settled.len() < 3 {
            let _ = writeln!(
                r,
                "| {} | too few samples | | | {} |",
                inst.label,
                settled.len()
            );
            continue;
        }
        let (a, z) = (settled[0], settled[settled.len() - 1]);
        let slope = slope_per_hour(
            &settled
                .iter()
                .map(|s| (s.t, s.rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>(),
        );
        // The whole window's slope carries warm-up and one-off steps (the burst's streams
        // leave their memory with the allocator); the last minutes show whether it settles.
        let recent = slope_per_hour(
            &settled
                .iter()
                .filter(|s| s.t >= z.t - 180.0)
                .map(|s| (s.t, s.rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            r,
            "| {} | {:.1} → {:.1} | {slope:+.1} | {recent:+.1} | {} → {} | {} |",
            inst.label,
            a.rss_kib as f64 / 1024.0,
            z.rss_kib as f64 / 1024.0,
            a.fds,
            z.fds,
            settled.len()
        );
        if z.rss_kib as f64 > a.rss_kib as f64 * 1.5 + 32.0 * 1024.0 {
            failed.push(format!(
                "{}: RSS grew from {} to {} KiB",
                inst.label, a.rss_kib, z.rss_kib
            ));
        }
        if z.fds as f64 > a.fds as f64 * 1.25 + 32.0 {
            failed.push(format!(
                "{}: descriptors grew from {} to {}",
                inst.label, a.fds, z.fds
            ));
        }
    }
    let backends: Vec<(f64, i64)> = samples
        .iter()
        .filter(|s| s.backends >= 0)
        .map(|s| (s.t, s.backends))
        .collect();
    if let (Some(first), Some(last)) = (backends.first(), backends.last()) {
        let max = backends.iter().map(|b| b.1).max().unwrap_or(0);
        let _ = writeln!(
            r,
            "\nPostgreSQL backends of the soak's database: {} at the start, {} at the end, at most {max}.",
            first.1, last.1
        );
    }
    over_time(&mut r, soak, samples);

    // 4. Every client leaves; presence must empty and per-stream connections go.
    stop.store(true, Ordering::SeqCst);
    for (_, _, s) in &soak.clients {
        s.wake.notify_one();
    }
    for t in tasks {
        let _ = t.await;
    }
    let wait = Duration::from_secs(soak.args.heartbeat * 3 + 3);
    log(format!(
        "clients gone; waiting {wait:?} (three heartbeat intervals) for presence"
    ));
    sleep(wait).await;
    let mut stale = 0;
    for board in &soak.boards {
        let url = format!("{}/api/boards/{board}/presence", soak.instances[1].base());
        match soak.http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => {
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                stale += v["viewers"].as_array().map_or(0, Vec::len);
            }
            Ok(resp) => failed.push(format!("presence of {board}: {}", resp.status())),
            Err(e) => failed.push(format!("presence of {board}: {e}")),
        }
    }
    // The benchmark's reading of the same thing (−1 when the cluster cannot be asked).
    let listeners = match crate::cluster::Cluster::open(soak.admin_url.clone()).await {
        Ok(c) => c.listener_backends(&soak.db).await,
        Err(_) => -1,
    };
    let _ = writeln!(r, "\n## After every client left\n");
    let _ = writeln!(r, "- viewers still listed {wait:?} later: {stale}");
    let _ = writeln!(
        r,
        "- listener connections left (two shared instances hold one each): {listeners}"
    );
    if stale > 0 {
        failed.push(format!(
            "{stale} stale viewers listed {wait:?} after every client left"
        ));
    }
    if listeners > 2 {
        failed.push(format!(
            "{listeners} listener connections left after every client left"
        ));
    }

    // 5. SIGTERM: exit 0 within 30 s; no panic in any log.
    let _ = writeln!(r, "\n## Shutdown\n");
    for inst in &mut soak.instances {
        let (warn, panics) = inst.log_counts();
        match inst.terminate().await {
            Ok((status, took)) => {
                let _ = writeln!(
                    r,
                    "- {}: {status} after {:.1} s ({} starts; {warn} WARN/ERROR lines, {panics} panics)",
                    inst.label,
                    took.as_secs_f64(),
                    inst.starts
                );
                if !status.success() || took > Duration::from_secs(30) {
                    failed.push(format!("{} exited {status} after {took:?}", inst.label));
                }
            }
            Err(e) => failed.push(format!("{}: {e}", inst.label)),
        }
        if panics > 0 {
            failed.push(format!("{}: {panics} panics in its log", inst.label));
        }
    }

    let _ = writeln!(r, "\n## Verdict\n");
    if failed.is_empty() {
        let _ = writeln!(r, "PASS: every promise held.");
    } else {
        for f in &failed {
            let _ = writeln!(r, "- FAIL: {f}");
        }
    }
    println!("{r}");
    let path = soak.args.log_dir.join("report.md");
    if let Err(e) = std::fs::write(&path, &r) {
        log(format!("cannot write {}: {e}", path.display()));
    }
    failed.is_empty()
}

/// Each board's notes in PostgreSQL: board id → note id → (version, text).
async fn board_notes(
    soak: &Soak,
) -> Result<HashMap<String, HashMap<String, (i64, String)>>, crate::Error> {
    let c = connect(&db_url(&soak.admin_url, &soak.db)?).await?;
    let rows = c
        .query(
            "SELECT board_id::text, id::text, version, text FROM notes",
            &[],
        )
        .await?;
    let mut out: HashMap<String, HashMap<String, (i64, String)>> = soak
        .boards
        .iter()
        .map(|b| (b.clone(), HashMap::new()))
        .collect();
    for row in rows {
        out.entry(row.get(0))
            .or_default()
            .insert(row.get(1), (row.get::<_, i64>(2), row.get(3)));
    }
    Ok(out)
}

/// Resource levels over time: one row per minute of the run (the last reading in it), RSS
/// and descriptors per instance, and the database's backends.
fn over_time(r: &mut String, soak: &Soak, samples: &[Sample]) {
    let labels: Vec<&str> = soak.instances.iter().map(|i| i.label).collect();
    let _ = writeln!(r, "\n### Over time (the last reading of each minute)\n");
    let mut head = String::from("| minute |");
    for l in &labels {
        let _ = write!(head, " {l} RSS MiB / fds |");
    }
    let _ = writeln!(r, "{head} backends |");
    let _ = writeln!(r, "|---|{}---|", "---|".repeat(labels.len()));
    let minutes = samples.iter().map(|s| s.t).fold(0.0, f64::max) / 60.0;
    for m in 0..=minutes.floor() as usize {
        let in_minute: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t >= m as f64 * 60.0 && s.t < (m + 1) as f64 * 60.0)
            .collect();
        let mut row = format!("| {m} |");
        for l in &labels {
            match in_minute
                .iter()
                .rev()
                .find(|s| s.label == *l && s.rss_kib > 0)
            {
                Some(s) => {
                    let _ = write!(row, " {:.1} / {} |", s.rss_kib as f64 / 1024.0, s.fds);
                }
                None => row.push_str(" down |"),
            }
        }
        let backends = in_minute
            .iter()
            .rev()
            .find(|s| s.backends >= 0)
            .map_or(-1, |s| s.backends);
        let _ = writeln!(r, "{row} {backends} |");
    }
}

/// Least-squares slope of `(seconds, value)`, per hour.
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var * 3600.0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 * t as f64 + 5.0)).collect();
        assert!((super::slope_per_hour(&pts) - 7200.0).abs() < 1e-6);
    }
}
