//! The benchmark's clock, percentiles and progress log.

use std::{sync::OnceLock, time::Instant};

pub fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the benchmark started (never 0 after the first call).
pub fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64 + 1
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(ns: u64) -> String {
    let v = ns as f64 / 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[{:>7.1}s] {}",
        base().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}
