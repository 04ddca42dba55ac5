//! Signals under load (`--only signals`, shared mode): `--signal-streams` streams (1,000)
//! on `--signal-boards` boards (20), `SENDERS_PER_BOARD` viewers of each board sending a
//! cursor `SEND_HZ` times a second for `--signal-secs` (30 s): 4,000 signals a second in,
//! the issue's figures. Measured: POST sent → `event: signal` frame received (at the
//! senders' own streams, which get every signal of their board), what the server counts
//! (received, delivered, dropped by reason), the NOTIFYs that carry signals (a LISTEN of the
//! bench's own on every board's channel), server and PostgreSQL CPU, and change events
//! written meanwhile against the same writes without signals (latency, none lost or
//! doubled).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::{
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, interval, sleep, timeout},
};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::{
    Ctx, Res,
    clock::{log, ms, now_ns, pct},
    cluster::db_url,
    crowd::{Crowd, completeness_each, failures, open_summary},
    procfs::CpuMark,
    server::{Mode, Server},
};

/// Viewers per board that send (the issue: 10 of each board's 50).
const SENDERS_PER_BOARD: usize = 10;
/// Cursor positions each sender sends per second (the page's own rate).
const SEND_HZ: u64 = 20;
/// Senders' streams per board that time every signal they receive (full SSE and JSON
/// parsing); the board's other senders' streams only learn their `you.id` and then read
/// without parsing. Timing all 200 made the benchmark's own parsing (1.1 million frames in
/// 30 s) the largest CPU user on the server's two cores, so the changes' tail measured the
/// benchmark's backlog as much as the server; 2 per board still time about 240,000 frames.
const TIMED_PER_BOARD: usize = 2;
/// Change events: one note every `NOTE_GAP`, round robin over the boards; this many per
/// board before the signals start (the run without signals), and this many during them.
const NOTE_GAP: Duration = Duration::from_millis(150);
const NOTES_BEFORE: usize = 5;

pub async fn signals(ctx: &mut Ctx, streams: usize, boards: usize, secs: u64) -> Res<()> {
    let senders = SENDERS_PER_BOARD * boards;
    if streams < senders {
        return Err(format!("{streams} streams cannot hold {senders} senders").into());
    }
    // Notes during the signals: as many as fit in their window, whole rounds over the boards.
    let notes_during = ((secs * 1000) as usize / NOTE_GAP.as_millis() as usize / boards).max(1);
    let track = NOTES_BEFORE + notes_during;
    log(format!(
        "== signals, shared mode: {streams} streams on {boards} boards, {senders} senders × {SEND_HZ}/s for {secs} s"
    ));
    let server = Server::start(ctx, "signals", Mode::Shared, "15s").await?;
    let mut ids = Vec::with_capacity(boards);
    for _ in 0..boards {
        ids.push(server.create_board().await?);
    }
    let notifies = NotifyCounter::start(&db_url(&ctx.cluster.admin_url, &server.db)?, &ids).await?;

    // The senders' streams: full SSE parsing (they need their `you.id`, and they time the
    // signals). The rest of the crowd: the cheap raw subscribers of the other jobs.
    //
    // The senders and their streams run on a runtime of their own: they are most of the
    // benchmark's CPU (parsing every signal frame), and on the runtime of the raw
    // subscribers and the note writer they queued those tasks behind them, so the change
    // latency measured the benchmark's own backlog. Apart, they still share the machine's
    // cores with everything (the OS schedules them), but not a task queue.
    let apart = Apart(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("signal-load")
            .enable_all()
            .build()?,
    ));
    let load = apart.handle();
    let streaming = reqwest::Client::builder().build()?;
    let stop = CancellationToken::new();
    let mut followers = Vec::with_capacity(senders);
    let mut viewers = Vec::with_capacity(senders);
    for i in 0..senders {
        let board = i % boards;
        let (tx, rx) = oneshot::channel();
        let url = format!(
            "{}/api/boards/{}/events?name=sender{i}",
            server.base, ids[board]
        );
        let timing = i < TIMED_PER_BOARD * boards;
        followers.push(load.spawn(follow(streaming.clone(), url, tx, timing, stop.clone())));
        viewers.push((board, rx));
    }
    let mut you = Vec::with_capacity(senders);
    for (board, rx) in viewers {
        match timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(id)) => you.push((board, id)),
            _ => log("a sender's stream did not open; it will not send"),
        }
    }
    let crowd = Crowd::open(
        ctx,
        &server,
        &ids,
        streams - senders,
        track,
        ctx.open_budget,
    )
    .await;
    log(format!(
        "{} senders and {}/{} other streams open in {:.1} s",
        you.len(),
        crowd.ready(),
        streams - senders,
        crowd.open_secs
    ));
    sleep(Duration::from_millis(500)).await;

    // Phase 1: change events alone.
    let mut sent = vec![vec![0u64; track + 1]; boards];
    let pg = ctx.cluster.postmaster;
    let hist0 = server_histogram(&server.metrics().await);
    let cpu0 = CpuMark::take(server.pid, pg);
    let (mut bad_writes, mut rtt_before) =
        write_notes(&server, &ids, 1, NOTES_BEFORE, &mut sent).await;
    let cpu_before = CpuMark::take(server.pid, pg).since(&cpu0);
    let hist1 = server_histogram(&server.metrics().await);

    // Phase 2: the same writes while every sender moves its cursor.
    let notify0 = notifies.signals.load(Relaxed);
    let cpu1 = CpuMark::take(server.pid, pg);
    let started = Instant::now();
    let sending_until = started + Duration::from_secs(secs);
    let address = server.base.trim_start_matches("http://").to_string();
    let posters: Vec<JoinHandle<Posted>> = you
        .iter()
        .enumerate()
        .map(|(i, (board, viewer))| {
            load.spawn(send(
                address.clone(),
                format!("/api/boards/{}/signals", ids[*board]),
                viewer.clone(),
                phase(i, you.len()),
                sending_until,
            ))
        })
        .collect();
    let (failed, mut rtt_during) =
        write_notes(&server, &ids, NOTES_BEFORE + 1, notes_during, &mut sent).await;
    bad_writes += failed;
    let hist2 = server_histogram(&server.metrics().await);
    let mut posted = Posted::default();
    for p in posters {
        posted.add(&p.await.unwrap_or_default());
    }
    let signal_secs = started.elapsed().as_secs_f64();
    let cpu_during = CpuMark::take(server.pid, pg).since(&cpu1);
    // The last window's signals and changes arrive.
    crowd
        .wait_for_each(&vec![track as i64; boards], Duration::from_secs(20))
        .await;
    sleep(Duration::from_millis(500)).await;
    let notify_signals = notifies.signals.load(Relaxed) - notify0;
    let metrics = server.metrics().await;
    stop.cancel();
    let mut latencies = Vec::new();
    for f in followers {
        latencies.extend(f.await.unwrap_or_default());
    }
    let subs = crowd.finish().await;
    notifies.stop();
    server.stop(ctx).await;

    latencies.sort_unstable();
    let opening = open_summary(&subs);
    let done = completeness_each(&subs, &vec![track; boards]);
    let (mut before, mut during) = (Vec::new(), Vec::new());
    for (i, s) in subs.iter().enumerate().filter(|(_, s)| s.snapshot_ns > 0) {
        for (seq, at) in s.times.iter().enumerate().skip(1) {
            let sent = sent[i % boards][seq];
            if *at > 0 && sent > 0 {
                let lat = at.saturating_sub(sent);
                if seq <= NOTES_BEFORE {
                    before.push(lat);
                } else {
                    during.push(lat);
                }
            }
        }
    }
    before.sort_unstable();
    during.sort_unstable();
    // Each change's first arrival at any stream of its board, and how long after it the
    // last stream of the board got it: the write path against the fan-out.
    let (mut first_before, mut first_during, mut spread_before, mut spread_during) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (board, sent) in sent.iter().enumerate() {
        for (seq, sent) in sent.iter().enumerate().skip(1) {
            let arrivals = subs
                .iter()
                .enumerate()
                .filter(|(i, s)| i % boards == board && s.snapshot_ns > 0)
                .filter_map(|(_, s)| s.times.get(seq).copied().filter(|at| *at > 0));
            let (first, last) =
                arrivals.fold((u64::MAX, 0), |(lo, hi), at| (lo.min(at), hi.max(at)));
            if *sent == 0 || first == u64::MAX {
                continue;
            }
            let (firsts, spreads) = if seq <= NOTES_BEFORE {
                (&mut first_before, &mut spread_before)
            } else {
                (&mut first_during, &mut spread_during)
            };
            firsts.push(first.saturating_sub(*sent));
            spreads.push(last - first);
        }
    }
    for v in [
        &mut first_before,
        &mut first_during,
        &mut spread_before,
        &mut spread_during,
        &mut rtt_before,
        &mut rtt_during,
    ] {
        v.sort_unstable();
    }
    let p = |v: &[u64]| format!("{} / {}", ms(pct(v, 50.0)), ms(pct(v, 99.0)));
    let metric = |name: &str| metric_sum(&metrics, name);

    ctx.out("");
    ctx.out(format!(
        "### Signals: {streams} streams on {boards} boards (shared mode), {} senders × {SEND_HZ}/s for {secs} s",
        you.len()
    ));
    ctx.out(format!(
        "- opened: {} senders (parsed SSE) + {} raw subscribers; failed: {}",
        you.len(),
        opening.opened,
        failures(&opening.failed)
    ));
    ctx.out(format!(
        "- POSTed: {} signals in {signal_secs:.1} s = {:.0}/s in ({} × 202, {} × 429, {} other or failed); POST round trip p50 {} ms, p99 {} ms",
        posted.total(),
        posted.total() as f64 / signal_secs,
        posted.accepted,
        posted.limited,
        posted.other,
        ms(pct(&posted.sorted_rtts(), 50.0)),
        ms(pct(&posted.sorted_rtts(), 99.0)),
    ));
    ctx.out(format!(
        "- signal latency, POST sent → frame received at the senders' streams: p50 {} ms, p99 {} ms, max {} ms ({} frames)",
        ms(pct(&latencies, 50.0)),
        ms(pct(&latencies, 99.0)),
        ms(pct(&latencies, 100.0)),
        latencies.len()
    ));
    ctx.out(format!(
        "- server counters: received {:.0}, delivered {:.0} (frames to streams), dropped: coalesced {:.0}, overload {:.0}, unavailable {:.0}",
        metric("boardcast_signals_received_total"),
        metric("boardcast_signals_delivered_total"),
        metric("boardcast_signals_dropped_total{reason=\"coalesced\"}"),
        metric("boardcast_signals_dropped_total{reason=\"overload\"}"),
        metric("boardcast_signals_dropped_total{reason=\"unavailable\"}"),
    ));
    ctx.out(format!(
        "- NOTIFYs carrying signals: {notify_signals} in {signal_secs:.1} s = {:.1}/s, {:.1} per second per board (one instance)",
        notify_signals as f64 / signal_secs,
        notify_signals as f64 / signal_secs / boards as f64
    ));
    ctx.out(format!(
        "- change events ({} per board without signals, then {notes_during} per board with them, one every {} ms): write → received p50 / p99 / max without signals {} / {} / {} ms ({} deliveries), with signals {} / {} / {} ms ({} deliveries); missing {}, duplicated {}, streams ended early {}; failed writes {bad_writes}",
        NOTES_BEFORE,
        NOTE_GAP.as_millis(),
        ms(pct(&before, 50.0)),
        ms(pct(&before, 99.0)),
        ms(pct(&before, 100.0)),
        before.len(),
        ms(pct(&during, 50.0)),
        ms(pct(&during, 99.0)),
        ms(pct(&during, 100.0)),
        during.len(),
        done.missing,
        done.duplicated,
        done.ended.values().sum::<usize>(),
    ));
    ctx.out(format!(
        "- where a change's time goes, p50 / p99 ms without → with signals: note POST sent → 201 {} → {}; write sent → first stream of its board got it {} → {}; first → last stream of the board {} → {}",
        p(&rtt_before),
        p(&rtt_during),
        p(&first_before),
        p(&first_during),
        p(&spread_before),
        p(&spread_during),
    ));
    ctx.out(format!(
        "- server's commit → queued on the stream (boardcast_delivery_latency_seconds), share within 1 / 2.5 / 5 / 10 / 25 / 50 ms: without signals {}; with signals {}",
        histogram_shares(&hist0, &hist1),
        histogram_shares(&hist1, &hist2),
    ));
    ctx.out(format!("- CPU without signals: {cpu_before}"));
    ctx.out(format!("- CPU with signals: {cpu_during}"));
    Ok(())
}

/// A runtime beside the benchmark's own; stopped without waiting when dropped (a runtime
/// may not be dropped the ordinary way inside another one).
struct Apart(Option<tokio::runtime::Runtime>);

impl Apart {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle().clone()
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Writes `per_board` notes on every board, round robin, `NOTE_GAP` apart, the first being
/// seq `first` of each board; records when each was sent (`sent[board][seq]`). Returns how
/// many failed and each write's round trip (sent → answer read), in ns.
async fn write_notes(
    server: &Server,
    boards: &[String],
    first: usize,
    per_board: usize,
    sent: &mut [Vec<u64>],
) -> (usize, Vec<u64>) {
    let mut rtts = Vec::with_capacity(per_board * boards.len());
    let mut ticker = interval(NOTE_GAP);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failed = 0;
    for k in 0..per_board * boards.len() {
        ticker.tick().await;
        let (board, seq) = (k % boards.len(), first + k / boards.len());
        sent[board][seq] = now_ns();
        match server.post_note(&boards[board], k).await {
            Ok(201) => rtts.push(now_ns() - sent[board][seq]),
            other => {
                failed += 1;
                log(format!("note {k}: {other:?}"));
            }
        }
    }
    (failed, rtts)
}

/// The server's delivery latency histogram: cumulative count per bucket bound (seconds).
fn server_histogram(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("boardcast_delivery_latency_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (bound, rest) = l.split_once('"')?;
            let count = rest.rsplit_once(' ')?.1.trim().parse().ok()?;
            Some((bound.parse().unwrap_or(f64::INFINITY), count))
        })
        .collect()
}

/// Of the observations between two scrapes, the share within 1, 2.5, 5, 10, 25 and 50 ms.
fn histogram_shares(from: &[(f64, f64)], to: &[(f64, f64)]) -> String {
    let at = |h: &[(f64, f64)], bound: f64| {
        h.iter()
            .find(|(b, _)| *b == bound || (*b - bound).abs() < 1e-9)
            .map_or(0.0, |(_, n)| *n)
    };
    let total = at(to, f64::INFINITY) - at(from, f64::INFINITY);
    if total <= 0.0 || to.is_empty() {
        return "no observations".into();
    }
    let shares: Vec<String> = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05]
        .iter()
        .map(|b| format!("{:.1} %", 100.0 * (at(to, *b) - at(from, *b)) / total))
        .collect();
    format!("{} (of {total:.0})", shares.join(" / "))
}

/// One sender's stream: sends its `you.id` once the opening presence arrives; when
/// `timing`, returns the latency of every signal it received (`data.t` is the send time,
/// on the bench's clock), else reads on without parsing and returns none.
async fn follow(
    http: reqwest::Client,
    url: String,
    you: oneshot::Sender<String>,
    timing: bool,
    stop: CancellationToken,
) -> Vec<u64> {
    let mut latencies = Vec::new();
    let Ok(res) = http.get(&url).send().await else {
        return latencies;
    };
    if !timing {
        let mut body = res.bytes_stream();
        let mut opening = String::new();
        let mut you = Some(you);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                next = body.next() => next,
            };
            let Some(Ok(chunk)) = next else { break };
            if you.is_some() {
                opening.push_str(&String::from_utf8_lossy(&chunk));
                if let Some(id) = opening_you(&opening)
                    && let Some(tx) = you.take()
                {
                    let _ = tx.send(id);
                    opening = String::new();
                }
            }
        }
        return latencies;
    }
    let mut events = res.bytes_stream().eventsource();
    let mut you = Some(you);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = events.next() => next,
        };
        let Some(Ok(event)) = next else { break };
        match event.event.as_str() {
            "signal" => {
                let at = now_ns();
                let v: Value = serde_json::from_str(&event.data).unwrap_or_default();
                if let Some(t) = v["data"]["t"].as_u64() {
                    latencies.push(at.saturating_sub(t));
                }
            }
            "presence" => {
                let v: Value = serde_json::from_str(&event.data).unwrap_or_default();
                if let (Some(id), Some(tx)) = (v["you"]["id"].as_str(), you.take()) {
                    let _ = tx.send(id.to_string());
                }
            }
            _ => {}
        }
    }
    latencies
}

/// The viewer id in the `presence` event of a stream's opening, once it has arrived whole.
fn opening_you(text: &str) -> Option<String> {
    let at = text.find("event: presence\ndata: ")? + "event: presence\ndata: ".len();
    let line = text[at..].split_once('\n')?.0;
    let v: Value = serde_json::from_str(line).ok()?;
    v["you"]["id"].as_str().map(str::to_string)
}

/// What one sender's POSTs got.
#[derive(Default)]
struct Posted {
    accepted: u64,
    limited: u64,
    other: u64,
    rtts: Vec<u64>,
}

impl Posted {
    fn add(&mut self, o: &Posted) {
        self.accepted += o.accepted;
        self.limited += o.limited;
        self.other += o.other;
        self.rtts.extend_from_slice(&o.rtts);
    }

    fn total(&self) -> u64 {
        self.accepted + self.limited + self.other
    }

    fn sorted_rtts(&self) -> Vec<u64> {
        let mut v = self.rtts.clone();
        v.sort_unstable();
        v
    }
}

/// Where sender `i` of `n` starts within one sending period: spread evenly. People's
/// pointers do not move in step; senders all started in the same millisecond would send
/// every period as one burst of `n` POSTs, a load no real board makes (measured in
/// docs/PERFORMANCE.md: that burst alone tripled a change's p99).
fn phase(i: usize, n: usize) -> Duration {
    Duration::from_millis(1000 / SEND_HZ) * i as u32 / n.max(1) as u32
}

/// One sender: a cursor position every 1/`SEND_HZ` s, starting `phase` into the first
/// period, until `until`, each stamped with its send time, on one keep-alive connection.
async fn send(
    address: String,
    path: String,
    viewer: String,
    phase: Duration,
    until: Instant,
) -> Posted {
    let mut out = Posted::default();
    sleep(phase).await;
    let mut ticker = interval(Duration::from_millis(1000 / SEND_HZ));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut connection = None;
    let mut x = 0u64;
    while Instant::now() < until {
        ticker.tick().await;
        x += 1;
        let t = now_ns();
        let body =
            format!(r#"{{"viewer":"{viewer}","kind":"cursor","data":{{"x":{x},"y":0,"t":{t}}}}}"#);
        if connection.is_none() {
            connection = RawHttp::connect(&address).await.ok();
        }
        let status = match &mut connection {
            Some(c) => c.post(&path, &body).await.ok(),
            None => None,
        };
        match status {
            Some(202) => out.accepted += 1,
            Some(429) => out.limited += 1,
            Some(_) => out.other += 1,
            None => {
                out.other += 1;
                connection = None;
            }
        }
        out.rtts.push(now_ns() - t);
    }
    out
}

/// HTTP/1.1 POSTs of JSON on one keep-alive connection, answers read by `Content-Length`.
///
/// Written here rather than with reqwest, which the other jobs use: this job's 200 senders
/// share the server's two cores, and reqwest's per-request work (URL parsing, the pool,
/// header maps, a task per connection) made them a third of the benchmark's CPU, which the
/// server's own latencies then measured. This is the least a client can do per request.
struct RawHttp {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    head: String,
}

impl RawHttp {
    async fn connect(address: &str) -> std::io::Result<RawHttp> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(RawHttp {
            stream: tokio::io::BufReader::new(stream),
            head: String::with_capacity(512),
        })
    }

    /// Sends one POST and reads its whole answer; returns the status code.
    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut status = None;
        let mut length = 0usize;
        loop {
            self.head.clear();
            if self.stream.read_line(&mut self.head).await? == 0 {
                return Err(bad("connection closed"));
            }
            let line = self.head.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split(' ').nth(1).and_then(|c| c.parse().ok());
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| bad("content-length"))?;
            }
        }
        let mut rest = vec![0u8; length];
        self.stream.read_exact(&mut rest).await?;
        status.ok_or_else(|| bad("no status line"))
    }
}

/// A LISTEN of the bench's own on every board's channel, counting the NOTIFYs whose
/// payload is a batch of signal frames (they start `event: signal`, see
/// src/realtime/signals.rs).
struct NotifyCounter {
    _client: tokio_postgres::Client,
    signals: Arc<AtomicU64>,
    driver: JoinHandle<()>,
}

impl NotifyCounter {
    async fn start(url: &str, boards: &[String]) -> Res<NotifyCounter> {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
        let signals = Arc::new(AtomicU64::new(0));
        let counted = signals.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message
                    && n.payload().starts_with("event: signal")
                {
                    counted.fetch_add(1, Relaxed);
                }
            }
        });
        for board in boards {
            client
                .batch_execute(&format!("LISTEN \"boards_{board}\""))
                .await?;
        }
        Ok(NotifyCounter {
            _client: client,
            signals,
            driver,
        })
    }

    fn stop(self) {
        self.driver.abort();
    }
}

/// The sum of a metric's samples whose name and labels start with `name` in Prometheus text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}
