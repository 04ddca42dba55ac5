//! When a lost LISTEN connection is tried again: one policy for the per-stream listener and
//! the shared hub.
//!
//! Exponential with jitter, from `backon`: the n-th wait is drawn from `[step, 2 × step)`,
//! the step starting at 50 ms and doubling up to 2.5 s, so waits run 50–100 ms first and
//! 2.5–5 s at the cap (the 100 ms / 5 s of the loops this replaced, now spread over the
//! upper half of each step). Without the jitter every per-stream listener that lost the
//! database at the same moment (a restart, a failover) would knock at the same moments:
//! hundreds of connection attempts in lockstep on a server that is just coming back.
//! The first attempt after a loss waits too (50–100 ms), for the same reason.
//!
//! The loops that use it are `select!` state machines that need a deadline, not a retry
//! wrapper around one future, so only backon's iterator of delays is used, not its
//! `Retryable`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

/// The first step: the first wait after a loss is drawn from `[FIRST_STEP, 2 × FIRST_STEP)`.
pub(crate) const FIRST_STEP: Duration = Duration::from_millis(50);
/// The largest step: no wait is `2 × MAX_STEP` (5 s) or longer.
pub(crate) const MAX_STEP: Duration = Duration::from_millis(2500);

const POLICY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(FIRST_STEP)
    .with_max_delay(MAX_STEP)
    .with_factor(2.0)
    .with_jitter()
    .without_max_times();

/// The reconnect schedule of one listener: where it is in the doubling, and its own random
/// draws.
#[derive(Debug, Default)]
pub(crate) struct Reconnect {
    /// `None` while connected: the next loss starts from the first step.
    delays: Option<ExponentialBackoff>,
}

impl Reconnect {
    /// The connection was lost, or an attempt to restore it failed: when to try next.
    pub(crate) fn next_attempt(&mut self) -> Instant {
        Instant::now() + self.next_wait()
    }

    /// The wait before the next attempt (see the module's doc for its bounds).
    fn next_wait(&mut self) -> Duration {
        self.delays
            .get_or_insert_with(|| POLICY.build())
            .next()
            // Unreachable with `without_max_times`; the cap is the safe answer anyway.
            .unwrap_or(MAX_STEP * 2)
    }

    /// The connection is back: the next loss starts from the first step again.
    pub(crate) fn connected(&mut self) {
        self.delays = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// backon computes in `f32` seconds: a microsecond covers its rounding.
    const ROUNDING: Duration = Duration::from_micros(1);

    fn within_step(wait: Duration, step: Duration) -> bool {
        wait + ROUNDING >= step && wait < step * 2 + ROUNDING
    }

    #[test]
    fn waits_double_within_their_step_up_to_the_cap() {
        let mut reconnect = Reconnect::default();
        let mut step = FIRST_STEP;
        for attempt in 0..8 {
            let wait = reconnect.next_wait();
            assert!(
                within_step(wait, step),
                "attempt {attempt}: {wait:?} outside [{step:?}, {:?})",
                step * 2
            );
            step = (step * 2).min(MAX_STEP);
        }
        // 50 ms doubled six times passes 2.5 s: from the seventh wait on, the cap holds.
        for _ in 0..200 {
            let wait = reconnect.next_wait();
            assert!(within_step(wait, MAX_STEP), "{wait:?}");
        }
    }

    #[test]
    fn a_reconnection_starts_the_schedule_over() {
        let mut reconnect = Reconnect::default();
        for _ in 0..8 {
            reconnect.next_wait();
        }
        reconnect.connected();
        let wait = reconnect.next_wait();
        assert!(
            within_step(wait, FIRST_STEP),
            "back to the first step: {wait:?}"
        );
    }

    #[test]
    fn listeners_that_lose_the_database_together_spread_their_attempts() {
        // 500 listeners lose the database at once. Their first attempts fall in
        // [50, 100) ms; with the jitter they cover it instead of landing together.
        let mut firsts: Vec<Duration> =
            (0..500).map(|_| Reconnect::default().next_wait()).collect();
        firsts.sort();
        let (min, max) = (firsts[0], firsts[firsts.len() - 1]);
        assert!(max - min > FIRST_STEP * 8 / 10, "{min:?}..{max:?}");
        // No 5 ms slice of the window holds more than a fifth of them (uniform: a tenth).
        let slice = Duration::from_millis(5);
        let crowded = firsts
            .iter()
            .map(|&start| {
                firsts
                    .iter()
                    .filter(|&&w| w >= start && w < start + slice)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(crowded <= 100, "{crowded} of 500 attempts within 5 ms");
    }
}
