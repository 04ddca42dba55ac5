//! `/metrics`: a real Prometheus parser reads it, and its numbers move with the traffic.

use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use boardcast::config::ListenerMode;

use crate::helpers::{
    ServerProcess, TestApp, admin_client, create_database, eventually, listener_mode, spawn_app,
};

/// One scrape, parsed.
pub struct Metrics {
    text: String,
    scrape: Scrape,
    lines: Vec<Line>,
}

impl Metrics {
    /// The value of the sample `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a single number: {other:?}"),
            })
    }

    /// A `{route,status}` sample, read by the strict reader (see `read_strictly`); 0 if absent.
    fn strict(&self, name: &str, route: &str, status: &str) -> f64 {
        let has = |line: &Line, key: &str, value: &str| {
            line.labels.iter().any(|(k, v)| k == key && v == value)
        };
        self.lines
            .iter()
            .filter(|l| l.name == name && has(l, "route", route) && has(l, "status", status))
            .map(|l| l.value)
            .sum()
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", self.text))
    }
}

/// `/metrics`, checked to be OpenMetrics text and read.
pub async fn scrape(app: &TestApp) -> Metrics {
    let response = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("metrics body");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let lines = read_strictly(&text);
    Metrics {
        text,
        scrape,
        lines,
    }
}

/// One sample line read strictly: `name{key="value",…} number`, with OpenMetrics escapes.
#[derive(Debug)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn read_sample(line: &str) -> Result<Line, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .ok_or("no value")?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find("=\"").ok_or("a label without =\"")?;
            let key = rest[..eq].trim_start_matches(',').to_string();
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let close = loop {
                match chars.next().ok_or("an unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("a bad escape \\{c}")),
                    },
                    (_, c) => value.push(c),
                }
            };
            rest = &rest[eq + 2 + close + 1..];
            labels.push((key, value));
        }
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("not a number: {v:?}"))?,
    };
    Ok(Line {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks every line: comments are HELP, TYPE or UNIT, every sample reads strictly and
/// belongs to a family declared before it, and the exposition ends with `# EOF`.
/// prometheus-parse is lenient (it skips what it cannot read, and its sample pattern stops
/// at the first `}`, so it drops the `route="/api/boards/{board_id}"` lines); this is what
/// makes the test strict.
fn read_strictly(text: &str) -> Vec<Line> {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    let mut typed: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("a name").to_string();
            assert!(!typed.contains(&name), "{name} declared once");
            typed.push(name);
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        assert!(!line.starts_with('#'), "an unknown comment {line:?}");
        let sample = read_sample(line).unwrap_or_else(|e| panic!("{e} in {line:?}"));
        assert!(sample.name.starts_with("boardcast_"), "{line}");
        assert!(
            typed.iter().any(|t| sample.name.starts_with(t.as_str())),
            "{} has a # TYPE line before it",
            sample.name
        );
        samples.push(sample);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_name_every_contract_metric() {
    let app = spawn_app().await;
    let metrics = scrape(&app).await;
    for name in [
        "boardcast_streams_open",
        "boardcast_streams_opened_total",
        "boardcast_events_delivered_total",
        "boardcast_replayed_events_total",
        "boardcast_snapshots_total",
        "boardcast_listener_connections",
        "boardcast_listener_reconnects_total",
        "boardcast_dead_clients_reclaimed_total",
        "boardcast_db_pool_max_connections",
        "boardcast_notify_queue_usage",
        "boardcast_crowd_boards",
        "boardcast_signals_received_total",
        "boardcast_signals_delivered_total",
    ] {
        assert!(metrics.value(name, &[]).is_some(), "{name} is exposed");
    }
    for reason in [
        "client_gone",
        "slow",
        "shutdown",
        "board_deleted",
        "token_expired",
        "listener_lost",
        "database_unavailable",
        "history_gone",
    ] {
        assert_eq!(
            metrics.get("boardcast_streams_closed_total", &[("reason", reason)]),
            0.0
        );
    }
    for reason in ["coalesced", "overload", "unavailable"] {
        assert_eq!(
            metrics.get("boardcast_signals_dropped_total", &[("reason", reason)]),
            0.0
        );
    }
    for state in ["idle", "in_use"] {
        assert!(
            metrics
                .value("boardcast_db_pool_connections", &[("state", state)])
                .is_some()
        );
    }
    assert_eq!(
        metrics.get("boardcast_db_pool_max_connections", &[]),
        app.settings.pool_size as f64
    );
    let usage = metrics.get("boardcast_notify_queue_usage", &[]);
    assert!((0.0..=1.0).contains(&usage), "{usage}");
    let histogram = metrics
        .scrape
        .samples
        .iter()
        .find(|s| s.metric == "boardcast_delivery_latency_seconds")
        .expect("the latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("a histogram: {:?}", histogram.value);
    };
    assert!(buckets.iter().any(|b| b.less_than == f64::INFINITY));
    assert!(
        metrics
            .text
            .contains("boardcast_delivery_latency_seconds_count"),
        "has _count"
    );
    app.stop().await;
}

#[tokio::test]
async fn counters_move_as_streams_open_events_flow_and_clients_go_away() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    let before = scrape(&app).await;
    assert_eq!(before.get("boardcast_streams_opened_total", &[]), 0.0);

    let mut stream = app.open_stream(&board).await;
    stream
        .next_named("snapshot", Duration::from_secs(5))
        .await
        .expect("a snapshot");
    for i in 0..3 {
        app.add_note(&board, &format!("note {i}")).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let event = stream
            .next_change(Duration::from_secs(5))
            .await
            .expect("a change event");
        assert_eq!(event.event, "note.created");
        seqs.push(event.seq());
    }
    let open = scrape(&app).await;
    assert_eq!(open.get("boardcast_streams_open", &[]), 1.0);
    assert_eq!(open.get("boardcast_streams_opened_total", &[]), 1.0);
    assert_eq!(open.get("boardcast_snapshots_total", &[]), 1.0);
    assert!(open.get("boardcast_events_delivered_total", &[]) >= 3.0);
    assert!(open.get("boardcast_listener_connections", &[]) >= 1.0);

    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.stats
                .closed_total(boardcast::realtime::CloseReason::ClientGone)
                == 1
        })
        .await,
        "the stream is closed as client_gone"
    );
    let after = scrape(&app).await;
    println!(
        "metrics after one stream and 3 notes: opened={} delivered={} closed(client_gone)={} reclaimed={}",
        after.get("boardcast_streams_opened_total", &[]),
        after.get("boardcast_events_delivered_total", &[]),
        after.get(
            "boardcast_streams_closed_total",
            &[("reason", "client_gone")]
        ),
        after.get("boardcast_dead_clients_reclaimed_total", &[]),
    );
    assert_eq!(after.get("boardcast_streams_open", &[]), 0.0);
    assert_eq!(
        after.get(
            "boardcast_streams_closed_total",
            &[("reason", "client_gone")]
        ),
        1.0
    );
    assert_eq!(
        after.get("boardcast_streams_closed_total", &[("reason", "shutdown")]),
        0.0
    );
    assert_eq!(
        after.get("boardcast_dead_clients_reclaimed_total", &[]),
        1.0
    );

    // Resuming from an old id replays from the log.
    let mut resumed = app.resume_stream(&board, seqs[0]).await;
    for _ in 0..2 {
        resumed
            .next_change(Duration::from_secs(5))
            .await
            .expect("a replayed event");
    }
    let replayed = scrape(&app).await;
    assert!(replayed.get("boardcast_replayed_events_total", &[]) >= 2.0);
    assert_eq!(replayed.get("boardcast_streams_opened_total", &[]), 2.0);
    drop(resumed);
    app.stop().await;
}

#[tokio::test]
async fn http_requests_are_counted_by_route_pattern_and_status_never_by_raw_path() {
    let app = spawn_app().await;
    let board = app.board_id().await;
    for i in 0..2 {
        app.add_note(&board, &format!("note {i}")).await;
    }
    let missing = app
        .http
        .get(app.url("/api/boards/00000000-0000-4000-8000-000000000000"))
        .send()
        .await
        .expect("GET a missing board");
    assert_eq!(missing.status(), 404);
    let nowhere = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .expect("GET an unknown path");
    assert_eq!(nowhere.status(), 404);
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);

    let metrics = scrape(&app).await;
    let requests =
        |route: &str, status: &str| metrics.strict("boardcast_http_requests_total", route, status);
    assert_eq!(requests("/api/boards", "201"), 1.0);
    assert_eq!(requests("/api/boards/{board_id}/notes", "201"), 2.0);
    assert_eq!(requests("/api/boards/{board_id}", "404"), 1.0);
    assert_eq!(requests("unmatched", "404"), 1.0);
    assert_eq!(requests("/readyz", "200"), 1.0);
    assert!(
        !metrics.text.contains(&board) && !metrics.text.contains("/no/such/route"),
        "no raw path becomes a label:\n{}",
        metrics.text
    );
    // The scrape itself is counted once it is answered.
    let again = scrape(&app).await;
    assert_eq!(
        again.strict("boardcast_http_requests_total", "/metrics", "200"),
        1.0
    );
    app.stop().await;
}

/// The real binary on a database capped at 20 connections (Heroku essential-0's size):
/// one start line names the mode, the cap and where it comes from; per-stream mode warns
/// with this database's numbers; `/metrics` shows the same budget.
#[tokio::test]
async fn the_start_line_and_metrics_show_the_stream_budget_of_a_20_connection_database() {
    let db_name = create_database().await;
    let admin = admin_client().await;
    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} CONNECTION LIMIT 20"))
        .await
        .expect("caps the test database");
    let server = ServerProcess::start(&db_name, &[("DATABASE_POOL_SIZE", "10")]).await;
    let log = server.log_text();
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("listener mode "))
        .collect();
    assert_eq!(starts.len(), 1, "one start line:\n{log}");
    let mode = listener_mode().as_str();
    let (max, from) = match listener_mode() {
        ListenerMode::PerStream => {
            assert!(
                starts[0].contains(
                    "listener mode per-stream (LISTENER=per-stream), at most 1 streams \
                     (one connection each: the database's CONNECTION LIMIT 20 leaves 20, \
                     less DATABASE_POOL_SIZE=10 and a reserve of 10)"
                ),
                "{}",
                starts[0]
            );
            let warning = log
                .lines()
                .find(|l| l.contains("WARN") && l.contains("per-stream mode can serve only"))
                .unwrap_or_else(|| panic!("a warning:\n{log}"));
            assert!(warning.contains("Set LISTENER=shared"), "{warning}");
            assert!(warning.contains("MAX_STREAMS to at most 8"), "{warning}");
            (1.0, "connections")
        }
        ListenerMode::Shared => {
            assert!(
                starts[0].contains(
                    "listener mode shared (LISTENER=shared), at most 10000 streams \
                     (shared mode's default"
                ),
                "{}",
                starts[0]
            );
            assert!(
                !log.lines()
                    .any(|l| l.contains("WARN") && l.contains("MAX_STREAMS")),
                "no budget warning in shared mode:\n{log}"
            );
            (10_000.0, "shared_default")
        }
    };
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let lines = read_strictly(&text);
    let sample = |name: &str| {
        lines
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(sample("boardcast_streams_max").value, max);
    let info = sample("boardcast_listener_info");
    assert_eq!(info.value, 1.0);
    assert_eq!(
        info.labels,
        [
            ("mode".to_string(), mode.to_string()),
            ("streams_max_from".to_string(), from.to_string())
        ]
    );
    assert!(text.contains("# TYPE boardcast_listener info"), "{text}");
}
