//! `/metrics`: the process's registry in the Prometheus (OpenMetrics) text format.
//!
//! One source of truth per number. The stream machinery counts in `realtime::Stats`
//! (atomics it needs anyway), and a collector reads those at scrape time; the pool's gauges
//! come from deadpool's own status, and `pg_notification_queue_usage()` is asked of the
//! database when scraped. Only HTTP requests are counted here, by a middleware, because
//! nothing else counts them.

use std::{fmt, sync::Arc, time::Duration};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, text},
    metrics::{
        counter::ConstCounter, counter::Counter, family::Family, gauge::ConstGauge, info::Info,
    },
    registry::{Registry, Unit},
};

use crate::capacity::StreamBudget;
use crate::db::Database;
use crate::realtime::{CloseReason, Stats, stats::DropReason};

/// What `/metrics` answers with: the OpenMetrics text format, which Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Every metric's name starts with this and `_`.
const PREFIX: &str = "boardcast";
/// A scrape must not hang on a database that does not answer: past this, the notification
/// queue gauge is left out of that scrape.
const QUEUE_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The `route` label of a request no route pattern matched. Raw paths are never labels:
/// each board id would make a new time series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `boardcast_http_requests_total{route,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

/// The registry and what it reads from. Shared by every worker as `web::Data<Metrics>`.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    db: Database,
}

impl Metrics {
    /// `budget` is the listener mode and the cap on open streams this process started with.
    pub fn new(stats: Arc<Stats>, db: Database, budget: &StreamBudget) -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        // So an operator sees the mode and where the cap comes from without reading logs.
        registry.register(
            "listener",
            "The listener mode (LISTENER) and where boardcast_streams_max comes from: \
             MAX_STREAMS, shared_default, or connections (per-stream: what the database leaves)",
            Info::new(vec![
                ("mode", budget.mode.as_str()),
                ("streams_max_from", budget.source.as_str()),
            ]),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by matched route pattern and status",
            http_requests.clone(),
        );
        registry.register_collector(Box::new(Machinery {
            stats,
            db: db.clone(),
            max_streams: budget.max_streams,
        }));
        Metrics {
            registry,
            http_requests,
            db,
        }
    }

    /// Counts one answered request. `route` is the matched pattern, never the raw path.
    pub fn count_request(&self, route: Option<String>, status: u16) {
        let labels = HttpLabels {
            route: route.unwrap_or_else(|| UNMATCHED_ROUTE.to_string()),
            status: status.to_string(),
        };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The whole exposition, ending in `# EOF`. Asks the database for its notification
    /// queue usage first; if it does not answer in time that one gauge is left out.
    pub async fn render(&self) -> String {
        let queue_usage = self.notify_queue_usage().await;
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; the encoder's `fmt::Error` is only ever ours.
        let _ = text::encode_registry(&mut out, &self.registry);
        if let Some(usage) = queue_usage {
            let mut scrape = Registry::with_prefix(PREFIX);
            scrape.register(
                "notify_queue_usage",
                "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage()); \
                 at 1 every NOTIFY, and so every write, fails",
                ConstGauge::new(usage),
            );
            let _ = text::encode_registry(&mut out, &scrape);
        }
        let _ = text::encode_eof(&mut out);
        out
    }

    async fn notify_queue_usage(&self) -> Option<f64> {
        let query = async {
            let client = self.db.client().await.ok()?;
            crate::db::server::notify_queue_usage(&client).await.ok()
        };
        tokio::time::timeout(QUEUE_QUERY_TIMEOUT, query)
            .await
            .ok()
            .flatten()
    }
}

/// Counts every answered request by route pattern and status. Register with
/// `App::wrap(middleware::from_fn(metrics::count_requests))`; needs `web::Data<Metrics>`.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    // The resource map matches without routing, so this works for any request.
    let route = req.match_pattern();
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        let status = match &result {
            Ok(response) => response.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        metrics.count_request(route, status.as_u16());
    }
    result
}

/// Reads the stream machinery's counters and the pool's status at scrape time.
struct Machinery {
    stats: Arc<Stats>,
    db: Database,
    max_streams: usize,
}

impl fmt::Debug for Machinery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machinery")
            .field("stats", &self.stats)
            .field("max_streams", &self.max_streams)
            .finish_non_exhaustive()
    }
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<N>(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: N) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Machinery {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = &self.stats;
        gauge(
            &mut encoder,
            "streams_open",
            "Event streams open now.",
            stats.open_streams(),
        )?;
        gauge(
            &mut encoder,
            "streams_max",
            "The most event streams this process accepts (MAX_STREAMS, or derived at start: \
             see boardcast_listener_info).",
            self.max_streams as i64,
        )?;
        counter(
            &mut encoder,
            "streams_opened",
            "Event streams opened.",
            stats.opened_total(),
        )?;

        let closed = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "streams_closed",
            "Event streams closed, by reason.",
            None,
            closed.metric_type(),
        )?;
        for reason in CloseReason::ALL {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(stats.closed_total(reason)).encode(family.encode_family(&labels)?)?;
        }

        counter(
            &mut encoder,
            "dead_clients_reclaimed",
            "Streams ended because their client was gone or too slow (client_gone + slow): \
             slots and connections given back.",
            stats.closed_total(CloseReason::ClientGone) + stats.closed_total(CloseReason::Slow),
        )?;
        counter(
            &mut encoder,
            "events_delivered",
            "Change events queued to streams, live or caught up from the log.",
            stats.delivered_total(),
        )?;
        counter(
            &mut encoder,
            "replayed_events",
            "Events sent from the event log (Last-Event-ID resumes and catch-ups after a listener reconnect).",
            stats.replayed_total(),
        )?;
        counter(
            &mut encoder,
            "snapshots",
            "Snapshots sent to streams that could not resume.",
            stats.snapshots_total(),
        )?;

        let latency = stats.delivery_latency();
        let seconds = Unit::Seconds;
        let mut histogram = encoder.encode_descriptor(
            "delivery_latency",
            "Time from an event's commit to its write to a stream.",
            Some(&seconds),
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        histogram.encode_histogram::<NoLabelSet>(
            latency.sum,
            latency.count,
            &latency.buckets,
            None,
        )?;

        counter(
            &mut encoder,
            "signals_received",
            "Signals accepted by this instance (POST /api/boards/{id}/signals answered 202).",
            stats.signals_received_total(),
        )?;
        counter(
            &mut encoder,
            "signals_delivered",
            "Signals queued to this instance's streams (one per stream a signal reaches).",
            stats.signals_delivered_total(),
        )?;
        let dropped = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "signals_dropped",
            "Signals not delivered, by reason: coalesced (a later one of the same viewer, kind \
             and note replaced it), overload (too many waited for one client, which lost the \
             oldest, or on the instance), unavailable (the database did not take their NOTIFY).",
            None,
            dropped.metric_type(),
        )?;
        for reason in DropReason::ALL {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(stats.signals_dropped_total(reason))
                .encode(family.encode_family(&labels)?)?;
        }

        counter(
            &mut encoder,
            "signal_flushes_failed",
            "Flushes of signal windows (one statement of NOTIFYs) the database refused; the \
             flusher then waits as a lost listener does (50 ms doubling to 5 s, jittered).",
            stats.signal_flushes_failed_total(),
        )?;
        gauge(
            &mut encoder,
            "listener_connections",
            "Dedicated LISTEN connections open to PostgreSQL.",
            stats.listener_connections(),
        )?;
        counter(
            &mut encoder,
            "listener_reconnects",
            "LISTEN connections re-opened after one was lost.",
            stats.listener_reconnects_total(),
        )?;
        gauge(
            &mut encoder,
            "listener_down",
            "1 while the listener machinery has no working connection (then /readyz answers 503).",
            i64::from(stats.listener_down()),
        )?;

        let (presence_writes, presence_changes) = stats.presence_writes();
        counter(
            &mut encoder,
            "presence_writes",
            "Presence transactions written by this instance (each carries a batch of joins and leaves of one board).",
            presence_writes,
        )?;
        counter(
            &mut encoder,
            "presence_changes",
            "Joins and leaves written by this instance's presence transactions.",
            presence_changes,
        )?;
        gauge(
            &mut encoder,
            "crowd_boards",
            "Boards served here with more viewers than PRESENCE_LIST_LIMIT (sent counts, not lists).",
            stats.crowd_boards(),
        )?;

        let pool = self.db.pool().status();
        let idle = pool.available;
        let in_use = pool.size.saturating_sub(pool.available);
        let connections = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "db_pool_connections",
            "Pooled PostgreSQL connections, by state.",
            None,
            connections.metric_type(),
        )?;
        for (state, n) in [("idle", idle), ("in_use", in_use)] {
            ConstGauge::new(n as i64).encode(family.encode_family(&[("state", state)])?)?;
        }
        gauge(
            &mut encoder,
            "db_pool_max_connections",
            "The pool's size limit (DATABASE_POOL_SIZE).",
            pool.max_size as i64,
        )?;
        gauge(
            &mut encoder,
            "db_pool_waiting",
            "Requests waiting for a pooled connection.",
            pool.waiting as i64,
        )?;
        Ok(())
    }
}
