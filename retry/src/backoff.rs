//! The sequence of delays of one call: exponential backoff, jitter and the
//! server's `Retry-After`, never longer than `max_delay`.

use std::time::Duration;

use crate::policy::{Jitter, RetryPolicy};

/// The delays between the attempts of one call.
///
/// Delays depend on the retry number and, for decorrelated jitter, on the
/// previous delay, so one `Backoff` belongs to one call. Randomness comes from
/// `fastrand`, seeded for reproducible tests with [`Backoff::with_seed`]. As an
/// iterator it yields the delays before retry 1, 2, 3, … without end.
#[derive(Debug, Clone)]
pub struct Backoff<'p> {
    policy: &'p RetryPolicy,
    rng: fastrand::Rng,
    /// Retries scheduled so far.
    retries: u32,
    /// The last delay scheduled (decorrelated jitter grows from it).
    previous: Duration,
}

impl<'p> Backoff<'p> {
    /// Delays of `policy`, randomised from the thread's generator.
    pub fn new(policy: &'p RetryPolicy) -> Self {
        Self::from_rng(policy, fastrand::Rng::new())
    }

    /// Delays of `policy`, randomised reproducibly from `seed`.
    pub fn with_seed(policy: &'p RetryPolicy, seed: u64) -> Self {
        Self::from_rng(policy, fastrand::Rng::with_seed(seed))
    }

    fn from_rng(policy: &'p RetryPolicy, rng: fastrand::Rng) -> Self {
        Self {
            policy,
            rng,
            retries: 0,
            previous: policy.initial_delay.get(),
        }
    }

    /// Retries scheduled so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next retry. A server's `retry_after` replaces the
    /// computed delay; either way the result is capped by `max_delay`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        self.retries = self.retries.saturating_add(1);
        let max = self.policy.max_delay.get();
        let delay = match retry_after {
            Some(wait) => wait.min(max),
            None => self.jittered(self.policy.base_delay(self.retries)),
        };
        self.previous = delay;
        delay
    }

    fn jittered(&mut self, base: Duration) -> Duration {
        let max = nanos(self.policy.max_delay.get());
        let picked = match self.policy.jitter {
            Jitter::None => return base,
            Jitter::Proportional(x) => {
                let base = nanos(base) as f64;
                let low = (base * (1.0 - x)).max(0.0) as u64;
                let high = (base * (1.0 + x)) as u64;
                self.rng.u64(low..=high.max(low))
            }
            Jitter::Full => self.rng.u64(0..=nanos(base)),
            Jitter::Decorrelated => {
                let low = nanos(self.policy.initial_delay.get());
                let high = nanos(self.previous).saturating_mul(3).max(low);
                self.rng.u64(low..=high)
            }
        };
        Duration::from_nanos(picked.min(max))
    }
}

impl Iterator for Backoff<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay(None))
    }
}

/// Nanoseconds, saturating at ~584 years.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::ConfigDuration;
    use proptest::prelude::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            jitter,
            max_retries: 10,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn no_jitter_gives_the_seed_delays() {
        let p = policy(Jitter::None);
        let delays: Vec<Duration> = Backoff::new(&p).take(5).collect();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(delays, [secs(5), secs(10), secs(20), secs(40), secs(60)]);
    }

    #[test]
    fn retry_after_replaces_the_delay_capped_by_max_delay() {
        let p = policy(Jitter::None);
        let mut backoff = Backoff::new(&p);
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(backoff.next_delay(None), Duration::from_secs(20), "retry 3");
        assert_eq!(backoff.retries(), 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let p = policy(Jitter::Full);
        let a: Vec<Duration> = Backoff::with_seed(&p, 42).take(6).collect();
        let b: Vec<Duration> = Backoff::with_seed(&p, 42).take(6).collect();
        let c: Vec<Duration> = Backoff::with_seed(&p, 43).take(6).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    fn arb_policy() -> impl Strategy<Value = RetryPolicy> {
        (1u64..10_000, 1.0f64..4.0, 1u64..20, 0u32..20).prop_map(
            |(initial_ms, factor, max_multiple, max_retries)| RetryPolicy {
                initial_delay: ConfigDuration::from_millis(initial_ms),
                backoff_factor: factor,
                max_delay: ConfigDuration::from_millis(initial_ms * max_multiple),
                max_retries,
                ..RetryPolicy::default()
            },
        )
    }

    proptest! {
        #[test]
        fn proportional_jitter_stays_within_x_of_the_base(
            p in arb_policy(), x in 0.0f64..=1.0, seed in any::<u64>(),
        ) {
            let p = RetryPolicy { jitter: Jitter::Proportional(x), ..p };
            let mut backoff = Backoff::with_seed(&p, seed);
            for n in 1..=12 {
                let base = p.base_delay(n).as_secs_f64();
                let d = backoff.next_delay(None);
                let slack = 1e-9;
                prop_assert!(d.as_secs_f64() >= base * (1.0 - x) - slack, "retry {n}: {d:?} < {base}·(1−{x})");
                prop_assert!(d.as_secs_f64() <= base * (1.0 + x) + slack, "retry {n}: {d:?} > {base}·(1+{x})");
                prop_assert!(d <= p.max_delay.get());
            }
        }

        #[test]
        fn full_jitter_stays_within_zero_and_the_base(p in arb_policy(), seed in any::<u64>()) {
            let p = RetryPolicy { jitter: Jitter::Full, ..p };
            let mut backoff = Backoff::with_seed(&p, seed);
            for n in 1..=12 {
                let d = backoff.next_delay(None);
                prop_assert!(d <= p.base_delay(n), "retry {n}: {d:?} > {:?}", p.base_delay(n));
            }
        }

        #[test]
        fn decorrelated_jitter_stays_within_initial_and_three_times_previous(
            p in arb_policy(), seed in any::<u64>(),
        ) {
            let p = RetryPolicy { jitter: Jitter::Decorrelated, ..p };
            let mut backoff = Backoff::with_seed(&p, seed);
            let mut previous = p.initial_delay.get();
            for _ in 1..=12 {
                let d = backoff.next_delay(None);
                prop_assert!(d >= p.initial_delay.get());
                prop_assert!(d <= previous * 3);
                prop_assert!(d <= p.max_delay.get());
                previous = d;
            }
        }

        #[test]
        fn no_delay_exceeds_max_delay(
            p in arb_policy(), seed in any::<u64>(), kind in 0u8..4, retry_after_ms in proptest::option::of(0u64..1_000_000),
        ) {
            let jitter = [Jitter::None, Jitter::Proportional(1.0), Jitter::Full, Jitter::Decorrelated][usize::from(kind)];
            let p = RetryPolicy { jitter, ..p };
            let mut backoff = Backoff::with_seed(&p, seed);
            for _ in 0..12 {
                let d = backoff.next_delay(retry_after_ms.map(Duration::from_millis));
                prop_assert!(d <= p.max_delay.get());
            }
        }
    }
}
