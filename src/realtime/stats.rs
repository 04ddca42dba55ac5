//! Counters of the stream machinery, read by `/metrics` and by tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

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
    /// The events could not be recovered after the listener connection died.
    ListenerLost,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::ClientGone,
        CloseReason::Slow,
        CloseReason::Shutdown,
        CloseReason::BoardDeleted,
        CloseReason::TokenExpired,
        CloseReason::ListenerLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientGone => "client_gone",
            CloseReason::Slow => "slow",
            CloseReason::Shutdown => "shutdown",
            CloseReason::BoardDeleted => "board_deleted",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ListenerLost => "listener_lost",
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
    closed: [AtomicU64; 6],
    delivered: AtomicU64,
    replayed: AtomicU64,
    snapshots: AtomicU64,
    listeners: AtomicI64,
    listener_reconnects: AtomicU64,
}

impl Stats {
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
