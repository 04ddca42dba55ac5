//! Limits on what one client can take: the write rate limit (`WRITE_RATE_LIMIT` writes per
//! second per client, in bursts of twice that, with governor's keyed GCRA limiter: one per
//! process, shared by every worker) and the time a request may take to arrive. A client is
//! its token's `sub` when auth is on, else its IP address. The body size limit (64 KiB) is
//! `routes::BODY_LIMIT`; the cap on streams per client is in `realtime`.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// How long a client may take to send a request's line and headers (slowloris). actix
/// answers 408 and closes the connection after it. Its head is also capped at 128 KiB and
/// 96 headers (431), limits built into actix-http.
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a JSON body once its headers are in: 64 KiB in 10 s
/// is 52 kbit/s, slower than any real client on any real link (408 after it).
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often clients whose bucket has refilled are forgotten, so the key map does not grow
/// with every IP address ever seen.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Counts writes per client.
#[derive(Clone)]
pub struct WriteLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    per_second: u32,
}

impl WriteLimiter {
    /// `None` when `per_second` is 0: the limit is off.
    pub fn new(per_second: u32) -> Option<WriteLimiter> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Some(WriteLimiter {
            limiter: Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            )),
            per_second,
        })
    }

    /// Takes one write from `client`'s allowance, or answers 429 with how long to wait.
    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        let key = client.to_string();
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(ApiError::RateLimited {
                    message: format!(
                        "too many writes from this client: at most {} per second (bursts of {}); try again shortly",
                        self.per_second,
                        self.per_second.saturating_mul(2)
                    ),
                    retry_after_secs: retry_after_secs(wait),
                })
            }
        }
    }

    /// Forgets idle clients every minute until `stop` is cancelled.
    pub fn prune_until(&self, stop: CancellationToken) {
        let limiter = self.limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                }
            }
        });
    }
}

/// `Retry-After` is whole seconds: round up, and never say 0 (a client would retry at once
/// and be refused again).
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_turns_the_limit_off() {
        assert!(WriteLimiter::new(0).is_none());
    }

    #[test]
    fn a_burst_of_twice_the_rate_passes_then_writes_are_refused() {
        let limiter = WriteLimiter::new(3).expect("on");
        for i in 0..6 {
            assert!(limiter.check("ana").is_ok(), "write {i} is in the burst");
        }
        match limiter.check("ana") {
            Err(ApiError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check("bob").is_ok(), "another client is unaffected");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(50)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
