//! How many calls may start per interval: callguard's own `rate` (GCRA, from
//! `governor`, on tokio's clock so that paused-clock tests hold), and the
//! pause a provider asks for when it says its rate is used up.
//!
//! GCRA keeps one timestamp per limiter, updated with a compare-and-swap:
//! lock-free, and it never sleeps itself — it says how long to wait, and the
//! limiter waits on `tokio::time`, within the call's `queue_timeout`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::RateConfig;

/// tokio's clock, as time since the limiter was made.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    epoch: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Callguard's own request rate.
pub(crate) struct Gcra {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
}

impl Gcra {
    /// At most `config.requests` per `config.per`, in bursts of up to
    /// `requests`. `None` when the config breaks its rules (validated before).
    pub(crate) fn new(config: &RateConfig) -> Option<Self> {
        let burst = NonZeroU32::new(config.requests)?;
        let quota = Quota::with_period(config.per.get() / config.requests)?.allow_burst(burst);
        let clock = TokioClock {
            epoch: Instant::now(),
        };
        Some(Self {
            limiter: RateLimiter::direct_with_clock(quota, clock),
            clock,
        })
    }

    /// Takes one call's share of the rate, or says how long until there is one.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The pause a provider asked for: no call starts before its end.
#[derive(Debug)]
pub(crate) struct Pause {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the end of the pause; 0: none.
    until: AtomicU64,
}

impl Pause {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    /// Pauses admission for `wait` from now (a longer pause already set stays).
    pub(crate) fn pause_for(&self, wait: Duration) {
        // At least 1: 0 means "no pause".
        let end = self.nanos(Instant::now() + wait).max(1);
        self.until.fetch_max(end, Ordering::Relaxed);
    }

    /// How long the pause still lasts, clearing it once it is over.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let until = self.until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = self.nanos(Instant::now());
        if now >= until {
            // Cleared only if no later pause came meanwhile.
            let _ = self
                .until
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        Some(Duration::from_nanos(until - now))
    }

    /// Nanoseconds from `epoch`.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::ConfigDuration;

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_a_burst_then_spaces_calls_on_the_tokio_clock() {
        let gcra = Gcra::new(&RateConfig {
            requests: 2,
            per: ConfigDuration::from_secs(1),
        })
        .unwrap();
        assert_eq!(gcra.take(), Ok(()));
        assert_eq!(gcra.take(), Ok(()));
        assert_eq!(gcra.take(), Err(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(gcra.take(), Err(Duration::from_millis(300)));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(gcra.take(), Ok(()));
        assert!(gcra.take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lasts_until_its_end_and_the_longest_wins() {
        let pause = Pause::new();
        assert_eq!(pause.remaining(), None);
        pause.pause_for(Duration::from_secs(2));
        pause.pause_for(Duration::from_secs(1));
        assert_eq!(pause.remaining(), Some(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(pause.remaining(), Some(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(pause.remaining(), None);
        assert_eq!(pause.until.load(Ordering::Relaxed), 0, "cleared once over");
    }
}
