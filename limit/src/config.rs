//! The settings of one service's limiter (the `[limits]` section, or a
//! service's own table that replaces it) and their validation.

use std::fmt;

use callguard_core::config::{at_least, nonzero_duration, within};
use callguard_core::{ConfigDuration, ValidationError};
use serde::{Deserialize, Serialize};

/// How the number of calls in flight to a service is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitMode {
    /// No limit of callguard's own. With `follow_headers`, the limit a
    /// provider announces (`maximum-concurrent-requests`) still applies; it is
    /// then shared fairly with other clients of the same account (see
    /// [`crate::aimd`]).
    #[default]
    Off,
    /// A fixed `max_concurrency` (lowered to the provider's, when it
    /// announces a smaller one).
    Static,
    /// A limit that moves between `min` and `max` with what the service
    /// answers ([`crate::aimd`]), starting at `initial`.
    Adaptive,
}

impl LimitMode {
    /// The name as written in config (`off`, `static`, `adaptive`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Static => "static",
            Self::Adaptive => "adaptive",
        }
    }
}

impl fmt::Display for LimitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of one service's limiter. `Default` limits nothing of its own
/// and follows the provider's headers.
///
/// ```toml
/// [limits]
/// mode = "adaptive"         # or "static" (with max_concurrency), or "off" (the default)
/// initial = 1               # adaptive: the limit to start from
/// min = 1                   # adaptive: never below
/// max = 100                 # adaptive: never above
/// latency_tolerance = 2.0   # adaptive: a window this many times slower than usual is overload
/// queue_length = 256        # calls that may wait for a slot at once
/// queue_timeout = "10s"     # the longest wait for a slot, then the call is deferred
/// follow_headers = true     # follow maximum-concurrent-requests and x-ratelimit-* answers
/// # max_concurrency = 8                      # static: the limit
/// # rate = { requests = 500, per = "1m" }    # at most this many calls start per interval
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Off, static or adaptive.
    pub mode: LimitMode,
    /// The fixed limit of mode `static`; required there, refused elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Adaptive: the limit to start from, between `min` and `max`.
    pub initial: u32,
    /// Adaptive: the lowest limit.
    pub min: u32,
    /// Adaptive: the highest limit.
    pub max: u32,
    /// Adaptive: a window of answers whose mean latency is more than this many
    /// times the long-run mean counts as overload. Greater than 1.
    pub latency_tolerance: f64,
    /// Calls that may wait for a slot at once; more are refused at once
    /// (0: nobody waits).
    pub queue_length: u32,
    /// The longest a call waits for a slot (and for the service's rate);
    /// then it is refused, to be deferred.
    pub queue_timeout: ConfigDuration,
    /// Follow what the service's answers say: `maximum-concurrent-requests`
    /// caps the limit, `current-concurrent-requests` tells of other clients,
    /// `x-ratelimit-remaining-requests: 0` (or `-tokens`) pauses admission
    /// until `x-ratelimit-reset-requests` (or `-tokens`).
    pub follow_headers: bool,
    /// At most `requests` calls start per `per` (GCRA, bursts up to
    /// `requests`). `None`: no rate of callguard's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateConfig>,
}

/// How many calls may start per interval: `rate = { requests = 500, per = "1m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Calls per interval (also the largest burst), at least 1.
    pub requests: u32,
    /// The interval.
    pub per: ConfigDuration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            mode: LimitMode::Off,
            max_concurrency: None,
            initial: Self::DEFAULT_INITIAL,
            min: Self::DEFAULT_MIN,
            max: Self::DEFAULT_MAX,
            latency_tolerance: Self::DEFAULT_LATENCY_TOLERANCE,
            queue_length: Self::DEFAULT_QUEUE_LENGTH,
            queue_timeout: Self::DEFAULT_QUEUE_TIMEOUT,
            follow_headers: true,
            rate: None,
        }
    }
}

impl LimitConfig {
    /// The config section these settings are read from.
    pub const SECTION: &'static str = "limits";
    /// Default `initial`: one request, as mode `off` sends before it knows
    /// the provider's limit, then a step per round trip. A higher start is
    /// sent before anything is known: three agents starting at 4 on a
    /// provider's limit of 4 get 8 of their first 12 requests refused.
    pub const DEFAULT_INITIAL: u32 = 1;
    /// Default `min`.
    pub const DEFAULT_MIN: u32 = 1;
    /// Default `max`.
    pub const DEFAULT_MAX: u32 = 100;
    /// Default `latency_tolerance`.
    pub const DEFAULT_LATENCY_TOLERANCE: f64 = 2.0;
    /// Default `queue_length`.
    pub const DEFAULT_QUEUE_LENGTH: u32 = 256;
    /// Default `queue_timeout`.
    pub const DEFAULT_QUEUE_TIMEOUT: ConfigDuration = ConfigDuration::from_secs(10);
    /// The highest limit any key may set.
    pub const LIMIT_CEILING: u32 = 100_000;
    /// The longest queue any key may set.
    pub const QUEUE_CEILING: u32 = 1_000_000;

    /// A fixed limit of `max_concurrency`, the other keys at their defaults.
    pub fn fixed(max_concurrency: u32) -> Self {
        Self {
            mode: LimitMode::Static,
            max_concurrency: Some(max_concurrency),
            ..Self::default()
        }
    }

    /// An adaptive limit from `initial` between `min` and `max`, the other
    /// keys at their defaults.
    pub fn adaptive(initial: u32, min: u32, max: u32) -> Self {
        Self {
            mode: LimitMode::Adaptive,
            initial,
            min,
            max,
            ..Self::default()
        }
    }

    /// Checks every value; keys are relative (`max_concurrency`), callers add
    /// the section (`limits.`, `services.elevenlabs.limits.`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match (self.mode, self.max_concurrency) {
            (LimitMode::Static, None) => {
                return Err(ValidationError::new(
                    "max_concurrency",
                    "nothing",
                    "set for mode static",
                ));
            }
            (LimitMode::Static, Some(n)) => within("max_concurrency", n, 1, Self::LIMIT_CEILING)?,
            (mode, Some(n)) => {
                return Err(ValidationError::new(
                    "max_concurrency",
                    n,
                    format!("unset for mode {mode} (only static takes a fixed limit)"),
                ));
            }
            (_, None) => {}
        }
        within("min", self.min, 1, Self::LIMIT_CEILING)?;
        within("max", self.max, self.min, Self::LIMIT_CEILING)?;
        within("initial", self.initial, self.min, self.max)?;
        if !(self.latency_tolerance.is_finite() && self.latency_tolerance > 1.0) {
            return Err(ValidationError::new(
                "latency_tolerance",
                format!("{:?}", self.latency_tolerance),
                "a finite number greater than 1.0",
            ));
        }
        within("queue_length", self.queue_length, 0, Self::QUEUE_CEILING)?;
        nonzero_duration("queue_timeout", self.queue_timeout.get())?;
        if let Some(rate) = &self.rate {
            rate.validate().map_err(|e| e.in_section("rate"))?;
        }
        Ok(())
    }
}

impl RateConfig {
    /// Checks the values; keys are relative (`requests`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        at_least("requests", self.requests, 1)?;
        nonzero_duration("per", self.per.get())?;
        if self.per.get().as_nanos() < u128::from(self.requests) {
            return Err(ValidationError::new(
                "per",
                self.per,
                format!("at least 1ns per request ({} requests)", self.requests),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config: &LimitConfig) -> String {
        config
            .validate()
            .unwrap_err()
            .in_section(LimitConfig::SECTION)
            .to_string()
    }

    #[test]
    fn an_empty_section_limits_nothing_and_follows_headers() {
        let config: LimitConfig = toml::from_str("").unwrap();
        assert_eq!(config, LimitConfig::default());
        assert_eq!(config.mode, LimitMode::Off);
        assert!(config.follow_headers);
        assert_eq!(config.queue_timeout, ConfigDuration::from_secs(10));
        config.validate().unwrap();
    }

    #[test]
    fn parses_every_key() {
        let config: LimitConfig = toml::from_str(
            r#"
            mode = "adaptive"
            initial = 8
            min = 2
            max = 40
            latency_tolerance = 3.0
            queue_length = 10
            queue_timeout = "2s"
            follow_headers = false
            rate = { requests = 500, per = "1m" }
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            LimitConfig {
                latency_tolerance: 3.0,
                queue_length: 10,
                queue_timeout: ConfigDuration::from_secs(2),
                follow_headers: false,
                rate: Some(RateConfig {
                    requests: 500,
                    per: ConfigDuration::from_secs(60),
                }),
                ..LimitConfig::adaptive(8, 2, 40)
            }
        );
        config.validate().unwrap();
        let fixed: LimitConfig = toml::from_str("mode = \"static\"\nmax_concurrency = 5").unwrap();
        assert_eq!(fixed, LimitConfig::fixed(5));
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<LimitConfig>(&text).unwrap(), config);
    }

    #[test]
    fn unknown_keys_and_modes_are_refused_by_name() {
        let err = toml::from_str::<LimitConfig>("max_concurency = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurency"), "{err}");
        let err = toml::from_str::<LimitConfig>("mode = \"aimd\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("aimd") && err.contains("adaptive"), "{err}");
        let err = toml::from_str::<LimitConfig>("rate = { requests = 5, every = \"1s\" }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("every"), "{err}");
    }

    #[test]
    fn a_negative_rate_is_refused_with_its_key_value_and_type() {
        // As the agent's config loader reads a section: the path of the key
        // that failed, and serde's message naming the value and the type.
        let value: toml::Value = toml::from_str("rate = { requests = -5, per = \"1s\" }").unwrap();
        let err = serde_path_to_error::deserialize::<_, LimitConfig>(value).unwrap_err();
        assert_eq!(err.path().to_string(), "rate.requests");
        let message = err.into_inner().to_string();
        assert!(
            message.starts_with("invalid value: integer `-5`, expected u32"),
            "{message}"
        );
    }

    #[test]
    fn validation_names_key_value_and_rule() {
        let d = LimitConfig::default;
        assert_eq!(
            check(&LimitConfig::fixed(0)),
            "limits.max_concurrency must be between 1 and 100000, got 0"
        );
        assert_eq!(
            check(&LimitConfig {
                mode: LimitMode::Static,
                ..d()
            }),
            "limits.max_concurrency must be set for mode static, got nothing"
        );
        assert_eq!(
            check(&LimitConfig {
                max_concurrency: Some(4),
                ..LimitConfig::adaptive(4, 1, 10)
            }),
            "limits.max_concurrency must be unset for mode adaptive (only static takes a \
             fixed limit), got 4"
        );
        assert_eq!(
            check(&LimitConfig::adaptive(0, 0, 10)),
            "limits.min must be between 1 and 100000, got 0"
        );
        assert_eq!(
            check(&LimitConfig::adaptive(4, 5, 3)),
            "limits.max must be between 5 and 100000, got 3"
        );
        assert_eq!(
            check(&LimitConfig::adaptive(20, 1, 10)),
            "limits.initial must be between 1 and 10, got 20"
        );
        assert_eq!(
            check(&LimitConfig {
                latency_tolerance: 0.5,
                ..d()
            }),
            "limits.latency_tolerance must be a finite number greater than 1.0, got 0.5"
        );
        assert_eq!(
            check(&LimitConfig {
                queue_timeout: ConfigDuration::from_secs(0),
                ..d()
            }),
            "limits.queue_timeout must be greater than 0s, got 0s"
        );
        assert_eq!(
            check(&LimitConfig {
                rate: Some(RateConfig {
                    requests: 0,
                    per: ConfigDuration::from_secs(1),
                }),
                ..d()
            }),
            "limits.rate.requests must be ≥ 1, got 0"
        );
        assert_eq!(
            check(&LimitConfig {
                rate: Some(RateConfig {
                    requests: 10,
                    per: ConfigDuration::new(std::time::Duration::from_nanos(5)),
                }),
                ..d()
            }),
            "limits.rate.per must be at least 1ns per request (10 requests), got 5ns"
        );
    }
}
