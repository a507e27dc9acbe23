//! Config building blocks shared by every crate's settings: human-readable
//! durations (`"5s"`, `"250ms"`) and validation errors that name the key, the
//! value and the rule it breaks.

use std::fmt;
use std::time::Duration;

/// A duration written in config as a string such as `"5s"`, `"250ms"` or `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Wraps a duration.
    pub const fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// `n` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// `n` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// The wrapped duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for ConfigDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Self {
        d.0
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like \"5s\" or \"250ms\""))
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// A config value that breaks a rule: `retry.backoff_factor must be ≥ 1.0, got 0.5`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} must be {rule}, got {value}")]
pub struct ValidationError {
    /// The full dotted key, e.g. `retry.backoff_factor`.
    pub key: String,
    /// The offending value as written.
    pub value: String,
    /// The rule, phrased to follow "must be": `≥ 1.0`, `between 0 and 1`.
    pub rule: String,
}

impl ValidationError {
    /// A violation of `rule` by `value` at `key`.
    pub fn new(key: impl Into<String>, value: impl fmt::Display, rule: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// Prefixes the key with a section, so a crate can validate `backoff_factor`
    /// and the caller report `retry.backoff_factor`.
    #[must_use]
    pub fn in_section(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

/// Checks `value ≥ min` (numbers are shown as written in Rust: `1.0`, `3`).
pub fn at_least<T: PartialOrd + fmt::Debug>(
    key: &str,
    value: T,
    min: T,
) -> Result<(), ValidationError> {
    if value >= min {
        Ok(())
    } else {
        Err(ValidationError::new(
            key,
            format!("{value:?}"),
            format!("≥ {min:?}"),
        ))
    }
}

/// Checks `min ≤ value ≤ max`.
pub fn within<T: PartialOrd + fmt::Debug>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ValidationError> {
    if value >= min && value <= max {
        Ok(())
    } else {
        Err(ValidationError::new(
            key,
            format!("{value:?}"),
            format!("between {min:?} and {max:?}"),
        ))
    }
}

/// Checks that a duration is not zero.
pub fn nonzero_duration(key: &str, value: Duration) -> Result<(), ValidationError> {
    if value.is_zero() {
        Err(ValidationError::new(
            key,
            ConfigDuration(value),
            "greater than 0s",
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Section {
        initial_delay: ConfigDuration,
    }

    #[test]
    fn durations_parse_from_toml_strings() {
        let s: Section = toml::from_str("initial_delay = \"250ms\"").unwrap();
        assert_eq!(s.initial_delay.get(), Duration::from_millis(250));
        let s: Section = toml::from_str("initial_delay = \"1m 30s\"").unwrap();
        assert_eq!(s.initial_delay.get(), Duration::from_secs(90));
    }

    #[test]
    fn bad_durations_say_what_was_wrong() {
        let err = toml::from_str::<Section>("initial_delay = \"5 parsecs\"")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("5 parsecs") && err.contains("initial_delay"),
            "{err}"
        );
    }

    #[test]
    fn durations_display_in_the_same_form() {
        assert_eq!(ConfigDuration::from_secs(5).to_string(), "5s");
        assert_eq!(ConfigDuration::from_millis(250).to_string(), "250ms");
    }

    #[test]
    fn validation_names_key_value_and_rule() {
        let err = at_least("backoff_factor", 0.5, 1.0)
            .unwrap_err()
            .in_section("retry");
        assert_eq!(
            err.to_string(),
            "retry.backoff_factor must be ≥ 1.0, got 0.5"
        );
        assert!(within("jitter", 0.3, 0.0, 1.0).is_ok());
        assert_eq!(
            nonzero_duration("recovery_timeout", Duration::ZERO)
                .unwrap_err()
                .to_string(),
            "recovery_timeout must be greater than 0s, got 0s"
        );
    }
}
