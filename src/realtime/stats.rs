//! Counters of the stream machinery, read by `/metrics` and by tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::domain::ids::BoardId;

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed, reset or vanished (found by a failed heartbeat write).
    ClientGone,
    /// The client fell more than 1,024 events behind or stopped reading.
    Slow,
    Shutdown,
    BoardDeleted,
    TokenExpired,
    /// The listener connection died and the events it missed are no longer in the log
    /// (pruned past `EVENT_RETENTION` while it reconnected).
    ListenerLost,
    /// The database could not serve the stream's reads: the pool had no connection to
    /// give, or a query failed.
    DatabaseUnavailable,
    /// The stream needed events the log no longer holds: pruned past `EVENT_RETENTION`, or
    /// a reference to an event already pruned.
    HistoryGone,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::ClientGone,
        CloseReason::Slow,
        CloseReason::Shutdown,
        CloseReason::BoardDeleted,
        CloseReason::TokenExpired,
        CloseReason::ListenerLost,
        CloseReason::DatabaseUnavailable,
        CloseReason::HistoryGone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientGone => "client_gone",
            CloseReason::Slow => "slow",
            CloseReason::Shutdown => "shutdown",
            CloseReason::BoardDeleted => "board_deleted",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ListenerLost => "listener_lost",
            CloseReason::DatabaseUnavailable => "database_unavailable",
            CloseReason::HistoryGone => "history_gone",
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicI64,
    opened: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    delivered: AtomicU64,
    replayed: AtomicU64,
    snapshots: AtomicU64,
    listeners: AtomicI64,
    listener_reconnects: AtomicU64,
    /// Commit → written to the stream, in seconds.
    delivery_latency: LatencyHistogram,
    /// Set by the shared listener while it has no working connection; `/readyz` reads it.
    listener_down: AtomicBool,
    /// Boards served here that are crowds, with how many holders say so (the hub once per
    /// board; in per-stream mode each stream of the board).
    crowds: Mutex<HashMap<BoardId, usize>>,
    /// Presence transactions written, and the joins and leaves they carried.
    presence_writes: AtomicU64,
    presence_changes: AtomicU64,
    signals_received: AtomicU64,
    signals_delivered: AtomicU64,
    /// By `DropReason`, in the order of `DropReason::ALL`.
    signals_dropped: [AtomicU64; 3],
    signal_flushes_failed: AtomicU64,
}

/// Signal counters: accepted by this instance, queued to its streams, dropped (why).
impl Stats {
    pub fn signal_received(&self) {
        self.signals_received.fetch_add(1, Relaxed);
    }

    pub fn signals_delivered(&self, n: u64) {
        self.signals_delivered.fetch_add(n, Relaxed);
    }

    pub fn signal_dropped(&self, reason: DropReason, n: u64) {
        let index = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.signals_dropped[index].fetch_add(n, Relaxed);
    }

    pub fn signals_received_total(&self) -> u64 {
        self.signals_received.load(Relaxed)
    }

    pub fn signals_delivered_total(&self) -> u64 {
        self.signals_delivered.load(Relaxed)
    }

    /// A flush of signal windows that the database refused (its signals are counted as
    /// dropped, `unavailable`).
    pub fn signal_flush_failed(&self) {
        self.signal_flushes_failed.fetch_add(1, Relaxed);
    }

    pub fn signal_flushes_failed_total(&self) -> u64 {
        self.signal_flushes_failed.load(Relaxed)
    }

    pub fn signals_dropped_total(&self, reason: DropReason) -> u64 {
        let index = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.signals_dropped[index].load(Relaxed)
    }
}

impl Stats {
    /// A holder's view of `board` changed: it became a crowd (`true`) or stopped being one.
    /// Calls must come in pairs per holder.
    pub fn crowd_changed(&self, board: BoardId, crowd: bool) {
        let mut crowds = self.crowds.lock();
        if crowd {
            *crowds.entry(board).or_default() += 1;
        } else if let Some(holders) = crowds.get_mut(&board) {
            *holders -= 1;
            if *holders == 0 {
                crowds.remove(&board);
            }
        }
    }

    /// One presence transaction carried `changes` joins and leaves.
    pub fn presence_written(&self, changes: usize) {
        self.presence_writes.fetch_add(1, Relaxed);
        self.presence_changes.fetch_add(changes as u64, Relaxed);
    }

    /// (`boardcast_presence_writes_total`, `boardcast_presence_changes_total`).
    pub fn presence_writes(&self) -> (u64, u64) {
        (
            self.presence_writes.load(Relaxed),
            self.presence_changes.load(Relaxed),
        )
    }

    /// `boardcast_crowd_boards`: boards served here above `PRESENCE_LIST_LIMIT`.
    pub fn crowd_boards(&self) -> i64 {
        self.crowds.lock().len() as i64
    }

    pub fn stream_opened(&self) {
        self.open.fetch_add(1, Relaxed);
        self.opened.fetch_add(1, Relaxed);
    }

    pub fn stream_closed(&self, reason: CloseReason) {
        self.open.fetch_sub(1, Relaxed);
        self.closed[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Relaxed);
    }

    pub fn replayed(&self, n: u64) {
        self.replayed.fetch_add(n, Relaxed);
    }

    pub fn snapshot_sent(&self) {
        self.snapshots.fetch_add(1, Relaxed);
    }

    pub fn listener_opened(&self) {
        self.listeners.fetch_add(1, Relaxed);
    }

    pub fn listener_closed(&self) {
        self.listeners.fetch_sub(1, Relaxed);
    }

    pub fn listener_reconnected(&self) {
        self.listener_reconnects.fetch_add(1, Relaxed);
    }

    pub fn open_streams(&self) -> i64 {
        self.open.load(Relaxed)
    }

    pub fn opened_total(&self) -> u64 {
        self.opened.load(Relaxed)
    }

    pub fn closed_total(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()].load(Relaxed)
    }

    pub fn delivered_total(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    pub fn replayed_total(&self) -> u64 {
        self.replayed.load(Relaxed)
    }

    pub fn snapshots_total(&self) -> u64 {
        self.snapshots.load(Relaxed)
    }

    pub fn listener_connections(&self) -> i64 {
        self.listeners.load(Relaxed)
    }

    pub fn listener_reconnects_total(&self) -> u64 {
        self.listener_reconnects.load(Relaxed)
    }
}

/// Delivery latency and listener health: what `/metrics` and `/readyz` read beyond the
/// counters above.
impl Stats {
    /// Records how long an event took from its commit to being written to a stream.
    /// Negative values (the database's clock ahead of ours) count as 0; NaN is ignored.
    pub fn observe_delivery(&self, seconds: f64) {
        self.delivery_latency.observe(seconds);
    }

    /// `observe_delivery` for an event committed at `committed` (its `at` field), now.
    pub fn observe_delivery_since(&self, committed: chrono::DateTime<chrono::Utc>) {
        let elapsed = chrono::Utc::now().signed_duration_since(committed);
        self.observe_delivery(elapsed.as_seconds_f64());
    }

    /// `observe_delivery_since` for `n` deliveries of one event that went out together.
    pub fn observe_deliveries_since(&self, committed: chrono::DateTime<chrono::Utc>, n: u64) {
        let elapsed = chrono::Utc::now().signed_duration_since(committed);
        self.delivery_latency.observe_n(elapsed.as_seconds_f64(), n);
    }

    /// A consistent-enough copy of the latency histogram for one scrape.
    pub fn delivery_latency(&self) -> LatencySnapshot {
        self.delivery_latency.snapshot()
    }

    /// Marks the listener machinery down (`true`) or working again (`false`). While it is
    /// down `/readyz` answers 503, so a load balancer stops sending new streams here.
    pub fn set_listener_down(&self, down: bool) {
        self.listener_down.store(down, Relaxed);
    }

    pub fn listener_down(&self) -> bool {
        self.listener_down.load(Relaxed)
    }
}

/// Upper bounds, in seconds, of the delivery latency buckets (an implicit `+Inf` follows).
/// Spread from 1 ms (a NOTIFY on a quiet local database) to 30 s (a stream that waited for
/// its listener to reconnect and caught up from the log).
pub const DELIVERY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket histogram of atomics: observing never takes a lock, so the delivery path
/// of every stream can record into the same one.
#[derive(Debug, Default)]
struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; DELIVERY_BUCKETS.len() + 1],
    /// The sum of all observations, as `f64` bits.
    sum_bits: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, seconds: f64) {
        self.observe_n(seconds, 1);
    }

    /// `n` observations of the same value.
    fn observe_n(&self, seconds: f64, n: u64) {
        if seconds.is_nan() || n == 0 {
            return;
        }
        let seconds = seconds.max(0.0);
        let index = DELIVERY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DELIVERY_BUCKETS.len());
        self.buckets[index].fetch_add(n, Relaxed);
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + seconds * n as f64).to_bits())
        });
    }

    fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = DELIVERY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        LatencySnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum: f64::from_bits(self.sum_bits.load(Relaxed)),
            buckets,
        }
    }
}

/// The delivery latency histogram at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencySnapshot {
    /// `(upper bound in seconds, observations in this bucket alone)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Always the sum of the bucket counts, so `_count` equals the `+Inf` bucket.
    pub count: u64,
    pub sum: f64,
}

/// Why a signal was not delivered, for `boardcast_signals_dropped_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A later signal of the same viewer, kind and note replaced it within the window.
    Coalesced,
    /// A client had more than `body::SIGNAL_BYTES_LIMIT` of signals waiting (the oldest
    /// went), or too many signals were waiting on this instance.
    Overload,
    /// The NOTIFY carrying it failed (the database was unreachable).
    Unavailable,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::Coalesced,
        DropReason::Overload,
        DropReason::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Coalesced => "coalesced",
            DropReason::Overload => "overload",
            DropReason::Unavailable => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_latencies_land_in_their_buckets() {
        let stats = Stats::default();
        for seconds in [0.0005, 0.001, 0.02, 0.02, 3.0, 120.0, -1.0, f64::NAN] {
            stats.observe_delivery(seconds);
        }
        let snapshot = stats.delivery_latency();
        assert_eq!(snapshot.count, 7, "NaN is ignored");
        assert!((snapshot.sum - 123.0415).abs() < 1e-9, "{}", snapshot.sum);
        let count_at = |bound: f64| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
                .expect("a bucket with that bound")
        };
        assert_eq!(count_at(0.001), 3, "≤ 1 ms, including the negative one");
        assert_eq!(count_at(0.025), 2);
        assert_eq!(count_at(5.0), 1);
        assert_eq!(count_at(f64::INFINITY), 1);
        assert_eq!(snapshot.buckets.len(), DELIVERY_BUCKETS.len() + 1);
    }

    #[test]
    fn latency_since_a_commit_is_measured_against_now() {
        let stats = Stats::default();
        stats.observe_delivery_since(chrono::Utc::now() - chrono::Duration::milliseconds(300));
        let snapshot = stats.delivery_latency();
        assert_eq!(snapshot.count, 1);
        assert!(
            (0.3..1.0).contains(&snapshot.sum),
            "about 300 ms: {}",
            snapshot.sum
        );
    }

    #[test]
    fn observing_from_many_threads_loses_nothing() {
        let stats = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.observe_delivery(0.5);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("observer thread");
        }
        let snapshot = stats.delivery_latency();
        assert_eq!(snapshot.count, 4000);
        assert!((snapshot.sum - 2000.0).abs() < 1e-6);
    }

    #[test]
    fn the_listener_is_up_until_marked_down() {
        let stats = Stats::default();
        assert!(!stats.listener_down());
        stats.set_listener_down(true);
        assert!(stats.listener_down());
        stats.set_listener_down(false);
        assert!(!stats.listener_down());
    }
}
