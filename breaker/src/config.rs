//! Breaker settings: the `[circuit_breaker]` config section and its validation.

use callguard_core::config::{at_least, nonzero_duration, within};
use callguard_core::{ConfigDuration, ValidationError};

/// Settings of one circuit breaker. Defaults are the seed's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive recorded failures that open a CLOSED breaker (seed: 2).
    pub failure_threshold: u32,
    /// How long an OPEN breaker rejects calls before admitting probes (seed: 10 s).
    /// Also how long a probe may stay unreported before its slot is freed.
    pub recovery_timeout: ConfigDuration,
    /// Probes admitted at a time in HALF_OPEN (default 1).
    pub half_open_max_calls: u32,
    /// Successful probes that close a HALF_OPEN breaker (default 1).
    pub success_threshold: u32,
    /// Optional failure-rate tripping over a count-based sliding window.
    pub failure_rate: Option<FailureRateConfig>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 2,
            recovery_timeout: ConfigDuration::from_secs(10),
            half_open_max_calls: 1,
            success_threshold: 1,
            failure_rate: None,
        }
    }
}

/// Failure-rate tripping: open when at least `threshold` of the last
/// `window_size` recorded calls failed, once `minimum_calls` have been recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRateConfig {
    /// Share of failures that opens the breaker, in (0, 1].
    pub threshold: f64,
    /// Number of most recent calls considered.
    #[serde(default = "FailureRateConfig::default_window_size")]
    pub window_size: u32,
    /// Calls needed in the window before the rate is judged.
    #[serde(default = "FailureRateConfig::default_minimum_calls")]
    pub minimum_calls: u32,
}

impl FailureRateConfig {
    fn default_window_size() -> u32 {
        20
    }

    fn default_minimum_calls() -> u32 {
        10
    }
}

impl BreakerConfig {
    /// Checks every rule; the error names the key (relative to the section), the
    /// value and the rule.
    pub fn validate(&self) -> Result<(), ValidationError> {
        at_least("failure_threshold", self.failure_threshold, 1)?;
        nonzero_duration("recovery_timeout", self.recovery_timeout.get())?;
        at_least("half_open_max_calls", self.half_open_max_calls, 1)?;
        at_least("success_threshold", self.success_threshold, 1)?;
        if let Some(rate) = &self.failure_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                return Err(ValidationError::new(
                    "failure_rate.threshold",
                    format!("{:?}", rate.threshold),
                    "greater than 0.0 and at most 1.0",
                ));
            }
            within("failure_rate.window_size", rate.window_size, 1, 100_000)?;
            within(
                "failure_rate.minimum_calls",
                rate.minimum_calls,
                1,
                rate.window_size,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_defaults() {
        let config: BreakerConfig = toml::from_str("").unwrap();
        assert_eq!(config.failure_threshold, 2);
        assert_eq!(config.recovery_timeout, ConfigDuration::from_secs(10));
        assert_eq!(config.half_open_max_calls, 1);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<BreakerConfig>("failure_treshold = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("failure_treshold"), "{err}");
    }

    #[test]
    fn validation_names_key_value_and_rule() {
        let config = BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        };
        assert_eq!(
            config
                .validate()
                .unwrap_err()
                .in_section("circuit_breaker")
                .to_string(),
            "circuit_breaker.failure_threshold must be ≥ 1, got 0"
        );
        let config: BreakerConfig =
            toml::from_str("[failure_rate]\nthreshold = 0.5\nwindow_size = 10\nminimum_calls = 20")
                .unwrap();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "failure_rate.minimum_calls must be between 1 and 10, got 20"
        );
        let config: BreakerConfig = toml::from_str("[failure_rate]\nthreshold = 1.5").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("1.5"));
    }
}
