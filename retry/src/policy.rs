//! The `[retry]` config section: how many retries, how long to wait before each,
//! how to spread the waits (jitter), an optional overall deadline and an optional
//! retry budget.
//!
//! The wait before retry `n` (1-based) is
//! `min(initial_delay * backoff_factor^(n-1), max_delay)`, then jitter (see
//! [`Jitter`]). `max_delay` is a hard ceiling: no computed wait, jittered or not,
//! and no server `Retry-After` is ever longer.
//!
//! A `429` that says the service is at its concurrency limit
//! ([`ErrorKind::ConcurrencyLimited`](callguard_core::ErrorKind::ConcurrencyLimited))
//! is not a failure of the service: it is retried after `concurrency_delay`
//! (or the server's `Retry-After`), without moving the backoff on, without
//! using up a retry of `max_retries` and without spending from the retry
//! budget; at most `max_concurrency_retries` such retries are made per call.

use std::fmt;
use std::time::Duration;

use callguard_core::ConfigDuration;
use callguard_core::ValidationError;
use callguard_core::config::{at_least, nonzero_duration, within};

use crate::budget::BudgetConfig;

/// How the computed wait is spread out, so that many callers that failed
/// together do not retry together.
///
/// In config it is written as a number — the proportional spread, `0.0` meaning
/// none — or as one of the strings `"none"`, `"full"`, `"decorrelated"`:
///
/// ```toml
/// jitter = 0.2             # ±20 %
/// jitter = "full"          # uniform in [0, d]
/// jitter = "decorrelated"  # AWS "decorrelated jitter"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// The exact exponential wait (the seed's 5 s, 10 s, 20 s).
    #[default]
    None,
    /// The wait `d` scaled by a factor drawn uniformly from `[1 - x, 1 + x]`,
    /// `x` in `[0, 1]` (still capped by `max_delay`).
    Proportional(f64),
    /// A wait drawn uniformly from `[0, d]` ("full jitter").
    Full,
    /// AWS "decorrelated jitter": `min(max_delay, uniform(initial_delay, previous * 3))`,
    /// starting from `previous = initial_delay`. It ignores `backoff_factor`: the
    /// waits grow because each is drawn relative to the one before.
    Decorrelated,
}

impl Jitter {
    const NONE: &'static str = "none";
    const FULL: &'static str = "full";
    const DECORRELATED: &'static str = "decorrelated";
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str(Self::NONE),
            Self::Proportional(x) => write!(f, "{x:?}"),
            Self::Full => f.write_str(Self::FULL),
            Self::Decorrelated => f.write_str(Self::DECORRELATED),
        }
    }
}

impl serde::Serialize for Jitter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Proportional(x) => s.serialize_f64(*x),
            other => s.collect_str(other),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Jitter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JitterVisitor;

        impl serde::de::Visitor<'_> for JitterVisitor {
            type Value = Jitter;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a proportional spread between 0.0 and 1.0, or \"none\", \"full\" or \"decorrelated\"",
                )
            }

            fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Jitter, E> {
                Ok(if x == 0.0 {
                    Jitter::None
                } else {
                    Jitter::Proportional(x)
                })
            }

            fn visit_i64<E: serde::de::Error>(self, x: i64) -> Result<Jitter, E> {
                self.visit_f64(x as f64)
            }

            fn visit_u64<E: serde::de::Error>(self, x: u64) -> Result<Jitter, E> {
                self.visit_f64(x as f64)
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Jitter, E> {
                match s {
                    Jitter::NONE => Ok(Jitter::None),
                    Jitter::FULL => Ok(Jitter::Full),
                    Jitter::DECORRELATED => Ok(Jitter::Decorrelated),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }

        d.deserialize_any(JitterVisitor)
    }
}

/// The `[retry]` section: when and how often a failed call is tried again.
///
/// `Default` gives the seed's values; every key may be left out.
///
/// ```toml
/// [retry]
/// max_retries = 3        # retries after the first attempt (4 attempts in all)
/// initial_delay = "5s"
/// backoff_factor = 2.0
/// max_delay = "60s"
/// jitter = 0.0
/// concurrency_delay = "100ms"  # before retrying a 429 too_many_concurrent_requests
/// max_concurrency_retries = 10 # such retries per call, besides max_retries
/// # deadline = "2m"                               # optional, per call
/// # budget = { max_tokens = 10, token_ratio = 0.1 } # optional, per service
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt: `3` means up to 4 attempts.
    pub max_retries: u32,
    /// The wait before the first retry.
    pub initial_delay: ConfigDuration,
    /// Each wait is this many times the one before (before the cap and jitter).
    pub backoff_factor: f64,
    /// The longest wait, computed or asked for by a server's `Retry-After`.
    pub max_delay: ConfigDuration,
    /// How waits are spread out.
    pub jitter: Jitter,
    /// The wait before retrying a `429` that says the service is at its
    /// concurrency limit (unless the server sent `Retry-After`); the backoff
    /// does not grow. At most `max_delay`.
    pub concurrency_delay: ConfigDuration,
    /// Retries after such `429`s that one call may make; they do not count
    /// toward `max_retries`.
    pub max_concurrency_retries: u32,
    /// Longest time one call may take, retries and waits included; a call that
    /// would wait past it ends at once with its last error. `None`: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<ConfigDuration>,
    /// A retry budget shared by all calls to the service. `None`: no budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: ConfigDuration::from_secs(5),
            backoff_factor: 2.0,
            max_delay: ConfigDuration::from_secs(60),
            jitter: Jitter::None,
            concurrency_delay: Self::DEFAULT_CONCURRENCY_DELAY,
            max_concurrency_retries: Self::DEFAULT_MAX_CONCURRENCY_RETRIES,
            deadline: None,
            budget: None,
        }
    }
}

impl RetryPolicy {
    /// The config section these settings are read from.
    pub const SECTION: &'static str = "retry";
    /// The most retries a policy may ask for.
    pub const MAX_RETRIES_LIMIT: u32 = 100;
    /// Default `concurrency_delay`: about one short request's time, in which
    /// one of the service's requests in flight is likely to end.
    pub const DEFAULT_CONCURRENCY_DELAY: ConfigDuration = ConfigDuration::from_millis(100);
    /// Default `max_concurrency_retries`.
    pub const DEFAULT_MAX_CONCURRENCY_RETRIES: u32 = 10;
    /// The most concurrency retries a policy may ask for.
    pub const MAX_CONCURRENCY_RETRIES_LIMIT: u32 = 1000;

    /// Checks every value; the error names the key (`retry.backoff_factor`), the
    /// value and the rule it breaks.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_keys()
            .map_err(|e| e.in_section(Self::SECTION))
    }

    /// Validates and returns the policy, for building one in a single expression.
    pub fn validated(self) -> Result<Self, ValidationError> {
        self.validate().map(|()| self)
    }

    fn validate_keys(&self) -> Result<(), ValidationError> {
        within("max_retries", self.max_retries, 0, Self::MAX_RETRIES_LIMIT)?;
        nonzero_duration("initial_delay", self.initial_delay.get())?;
        // A zero wait would send the retries after concurrency 429s back to back.
        nonzero_duration("concurrency_delay", self.concurrency_delay.get())?;
        at_least("backoff_factor", self.backoff_factor, 1.0)?;
        if !self.backoff_factor.is_finite() {
            return Err(ValidationError::new(
                "backoff_factor",
                format!("{:?}", self.backoff_factor),
                "a finite number",
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(ValidationError::new(
                "max_delay",
                self.max_delay,
                format!("≥ initial_delay ({})", self.initial_delay),
            ));
        }
        if let Jitter::Proportional(x) = self.jitter {
            within("jitter", x, 0.0, 1.0)?;
        }
        within(
            "max_concurrency_retries",
            self.max_concurrency_retries,
            0,
            Self::MAX_CONCURRENCY_RETRIES_LIMIT,
        )?;
        if let Some(deadline) = self.deadline {
            nonzero_duration("deadline", deadline.get())?;
        }
        if let Some(budget) = &self.budget {
            budget.validate().map_err(|e| e.in_section("budget"))?;
        }
        Ok(())
    }

    /// Attempts a call may make: the first one plus `max_retries`.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The wait before retry `retry` (1-based) without jitter:
    /// `min(initial_delay * backoff_factor^(retry-1), max_delay)`.
    ///
    /// Never panics: an overflowing or non-finite product gives `max_delay`.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let max = self.max_delay.get();
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        // In nanoseconds, so that millisecond delays do not drift (100ms × 1.5 is
        // exactly 150ms); f64 holds integers exactly up to 104 days.
        let nanos = self.initial_delay.get().as_nanos() as f64 * self.backoff_factor.powi(exponent);
        // NaN and infinity land on max_delay; negatives saturate to zero.
        match nanos.partial_cmp(&(max.as_nanos() as f64)) {
            Some(std::cmp::Ordering::Less) => Duration::from_nanos(nanos.round() as u64),
            _ => max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_the_seed_values() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 3);
        assert_eq!(p.max_attempts(), 4);
        assert_eq!(p.initial_delay.get(), secs(5));
        assert_eq!(p.backoff_factor, 2.0);
        assert_eq!(p.max_delay.get(), secs(60));
        assert_eq!(p.jitter, Jitter::None);
        assert_eq!(p.concurrency_delay.get(), Duration::from_millis(100));
        assert_eq!(p.max_concurrency_retries, 10);
        assert_eq!(p.deadline, None);
        assert_eq!(p.budget, None);
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn seed_delays_are_5_10_20_seconds() {
        let p = RetryPolicy::default();
        let delays: Vec<_> = (1..=3).map(|n| p.base_delay(n)).collect();
        assert_eq!(delays, [secs(5), secs(10), secs(20)]);
    }

    #[test]
    fn delays_are_capped_by_max_delay() {
        let p = RetryPolicy {
            max_delay: ConfigDuration::from_secs(15),
            ..RetryPolicy::default()
        };
        assert_eq!(p.base_delay(2), secs(10));
        assert_eq!(p.base_delay(3), secs(15));
        assert_eq!(p.base_delay(u32::MAX), secs(15), "huge exponents saturate");
    }

    #[test]
    fn millisecond_delays_do_not_drift() {
        let p = RetryPolicy {
            initial_delay: ConfigDuration::from_millis(100),
            backoff_factor: 1.5,
            ..RetryPolicy::default()
        };
        assert_eq!(p.base_delay(2), Duration::from_millis(150));
        assert_eq!(p.base_delay(3), Duration::from_millis(225));
    }

    #[test]
    fn base_delay_never_panics_on_bad_values() {
        for factor in [f64::NAN, f64::INFINITY, 1e308, 0.0, -3.0] {
            let p = RetryPolicy {
                backoff_factor: factor,
                ..RetryPolicy::default()
            };
            for n in [1, 2, 50, u32::MAX] {
                assert!(p.base_delay(n) <= p.max_delay.get(), "{factor} {n}");
            }
        }
    }

    #[test]
    fn parses_the_seed_section() {
        let p: RetryPolicy =
            toml::from_str("max_retries = 3\ninitial_delay = \"5s\"\nbackoff_factor = 2.0\n")
                .unwrap();
        assert_eq!(p, RetryPolicy::default());
    }

    #[test]
    fn parses_every_key() {
        let p: RetryPolicy = toml::from_str(
            r#"
            max_retries = 5
            initial_delay = "250ms"
            backoff_factor = 1.5
            max_delay = "30s"
            jitter = "decorrelated"
            concurrency_delay = "50ms"
            max_concurrency_retries = 20
            deadline = "2m"
            budget = { max_tokens = 20, token_ratio = 0.5 }
            "#,
        )
        .unwrap();
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.initial_delay.get(), Duration::from_millis(250));
        assert_eq!(p.backoff_factor, 1.5);
        assert_eq!(p.max_delay.get(), secs(30));
        assert_eq!(p.jitter, Jitter::Decorrelated);
        assert_eq!(p.concurrency_delay.get(), Duration::from_millis(50));
        assert_eq!(p.max_concurrency_retries, 20);
        assert_eq!(p.deadline, Some(ConfigDuration::from_secs(120)));
        assert_eq!(
            p.budget,
            Some(BudgetConfig {
                max_tokens: 20,
                token_ratio: 0.5
            })
        );
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn jitter_forms() {
        let parse =
            |v: &str| toml::from_str::<RetryPolicy>(&format!("jitter = {v}")).map(|p| p.jitter);
        assert_eq!(parse("0.0").unwrap(), Jitter::None);
        assert_eq!(parse("0").unwrap(), Jitter::None);
        assert_eq!(parse("0.25").unwrap(), Jitter::Proportional(0.25));
        assert_eq!(parse("\"none\"").unwrap(), Jitter::None);
        assert_eq!(parse("\"full\"").unwrap(), Jitter::Full);
        assert_eq!(parse("\"decorrelated\"").unwrap(), Jitter::Decorrelated);
        let err = parse("\"wobbly\"").unwrap_err().to_string();
        assert!(
            err.contains("wobbly") && err.contains("decorrelated"),
            "{err}"
        );
    }

    #[test]
    fn round_trips_through_toml() {
        for jitter in [
            Jitter::None,
            Jitter::Proportional(0.3),
            Jitter::Full,
            Jitter::Decorrelated,
        ] {
            let p = RetryPolicy {
                jitter,
                deadline: Some(ConfigDuration::from_secs(90)),
                budget: Some(BudgetConfig::default()),
                ..RetryPolicy::default()
            };
            let text = toml::to_string(&p).unwrap();
            assert_eq!(toml::from_str::<RetryPolicy>(&text).unwrap(), p, "{text}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RetryPolicy>("max_retry = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_retry"), "{err}");
    }

    #[test]
    fn validation_names_key_value_and_rule() {
        let check = |p: RetryPolicy| p.validate().unwrap_err().to_string();
        let d = RetryPolicy::default;
        assert_eq!(
            check(RetryPolicy {
                backoff_factor: 0.5,
                ..d()
            }),
            "retry.backoff_factor must be ≥ 1.0, got 0.5"
        );
        assert_eq!(
            check(RetryPolicy {
                backoff_factor: f64::NAN,
                ..d()
            }),
            "retry.backoff_factor must be ≥ 1.0, got NaN"
        );
        assert_eq!(
            check(RetryPolicy {
                backoff_factor: f64::INFINITY,
                ..d()
            }),
            "retry.backoff_factor must be a finite number, got inf"
        );
        assert_eq!(
            check(RetryPolicy {
                max_retries: 1000,
                ..d()
            }),
            "retry.max_retries must be between 0 and 100, got 1000"
        );
        assert_eq!(
            check(RetryPolicy {
                initial_delay: ConfigDuration::from_secs(0),
                ..d()
            }),
            "retry.initial_delay must be greater than 0s, got 0s"
        );
        assert_eq!(
            check(RetryPolicy {
                max_delay: ConfigDuration::from_secs(1),
                ..d()
            }),
            "retry.max_delay must be ≥ initial_delay (5s), got 1s"
        );
        assert_eq!(
            check(RetryPolicy {
                jitter: Jitter::Proportional(1.5),
                ..d()
            }),
            "retry.jitter must be between 0.0 and 1.0, got 1.5"
        );
        assert_eq!(
            check(RetryPolicy {
                concurrency_delay: ConfigDuration::from_secs(0),
                ..d()
            }),
            "retry.concurrency_delay must be greater than 0s, got 0s"
        );
        assert_eq!(
            check(RetryPolicy {
                max_concurrency_retries: 5000,
                ..d()
            }),
            "retry.max_concurrency_retries must be between 0 and 1000, got 5000"
        );
        assert_eq!(
            check(RetryPolicy {
                deadline: Some(ConfigDuration::from_secs(0)),
                ..d()
            }),
            "retry.deadline must be greater than 0s, got 0s"
        );
        assert_eq!(
            check(RetryPolicy {
                budget: Some(BudgetConfig {
                    max_tokens: 0,
                    token_ratio: 0.1
                }),
                ..d()
            }),
            "retry.budget.max_tokens must be between 1 and 1000, got 0"
        );
        assert!(
            RetryPolicy {
                max_retries: 0,
                ..d()
            }
            .validated()
            .is_ok()
        );
    }
}
