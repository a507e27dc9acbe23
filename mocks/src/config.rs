//! The mock server's settings: accepted API keys, the seed for flaky faults,
//! and the limits of the `timeout` and `oversized` modes.

use std::fmt;
use std::time::Duration;

use callguard_core::config::{at_least, nonzero_duration};
use callguard_core::{ConfigDuration, ValidationError};
use serde::{Deserialize, Serialize};

use crate::limits::MockLimits;
use crate::{MockLlm, Service};

/// Settings of a mock server. Every field has a default, so `{}` (or an empty
/// TOML table) is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// The API key each service accepts.
    pub keys: MockKeys,
    /// Seed of the random numbers that pick which requests a fault with a
    /// `rate` hits; the same seed and the same requests give the same picks.
    pub seed: u64,
    /// Length of the body sent by the `oversized` mode.
    pub oversized_body_bytes: u64,
    /// Longest time a request is held by the `timeout` mode before it is
    /// answered `504`, should the client never give up.
    pub timeout_cap: ConfigDuration,
    /// Limits enforced as the real services do; none by default.
    pub limits: MockLimits,
    /// How the LLM treats the request's token fields.
    pub llm: MockLlm,
}

impl MockConfig {
    /// Default seed for flaky faults.
    pub const DEFAULT_SEED: u64 = 42;
    /// Default length of an `oversized` body: 50 MiB.
    pub const DEFAULT_OVERSIZED_BODY_BYTES: u64 = 50 * 1024 * 1024;
    /// Default cap on a `timeout` hang: 5 minutes.
    pub const DEFAULT_TIMEOUT_CAP: Duration = Duration::from_secs(300);

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for service in Service::ALL {
            if self.keys.get(service).is_empty() {
                return Err(ValidationError::new(
                    format!("keys.{service}"),
                    "\"\"",
                    "a non-empty string",
                ));
            }
        }
        at_least("oversized_body_bytes", self.oversized_body_bytes, 1)?;
        nonzero_duration("timeout_cap", self.timeout_cap.get())?;
        self.limits.validate().map_err(|e| e.in_section("limits"))
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            keys: MockKeys::default(),
            seed: Self::DEFAULT_SEED,
            oversized_body_bytes: Self::DEFAULT_OVERSIZED_BODY_BYTES,
            timeout_cap: ConfigDuration::new(Self::DEFAULT_TIMEOUT_CAP),
            limits: MockLimits::default(),
            llm: MockLlm::default(),
        }
    }
}

/// The API key accepted by each service. `Debug` does not show them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockKeys {
    /// Expected in the `xi-api-key` header; default `mock-elevenlabs-key`.
    pub elevenlabs: String,
    /// Expected as `Authorization: Bearer …`; default `mock-llm-key`.
    pub llm: String,
    /// Expected as `Authorization: Bearer …`; default `mock-crm-key`.
    pub crm: String,
}

impl MockKeys {
    /// The key `service` accepts.
    pub fn get(&self, service: Service) -> &str {
        match service {
            Service::Elevenlabs => &self.elevenlabs,
            Service::Llm => &self.llm,
            Service::Crm => &self.crm,
        }
    }
}

impl Default for MockKeys {
    fn default() -> Self {
        Self {
            elevenlabs: "mock-elevenlabs-key".into(),
            llm: "mock-llm-key".into(),
            crm: "mock-crm-key".into(),
        }
    }
}

impl fmt::Debug for MockKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKeys")
            .field("elevenlabs", &"<redacted>")
            .field("llm", &"<redacted>")
            .field("crm", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gets_the_defaults() {
        let config: MockConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, MockConfig::default());
        assert_eq!(config.keys.get(Service::Crm), "mock-crm-key");
        assert_eq!(config.timeout_cap.get(), Duration::from_secs(300));
        config.validate().unwrap();
    }

    #[test]
    fn partial_keys_keep_the_other_defaults() {
        let config: MockConfig =
            serde_json::from_str(r#"{"keys":{"llm":"sk-test"},"seed":7,"timeout_cap":"30s"}"#)
                .unwrap();
        assert_eq!(config.keys.llm, "sk-test");
        assert_eq!(config.keys.elevenlabs, "mock-elevenlabs-key");
        assert_eq!(config.seed, 7);
        assert_eq!(config.timeout_cap.get(), Duration::from_secs(30));
    }

    #[test]
    fn limits_are_read_with_a_default_queue() {
        let config: MockConfig = serde_json::from_str(
            r#"{"limits":{"elevenlabs":{"max_concurrent":4},"llm":{"requests_per_minute":60}}}"#,
        )
        .unwrap();
        let elevenlabs = config.limits.elevenlabs.unwrap();
        assert_eq!(elevenlabs.max_concurrent, 4);
        assert_eq!(elevenlabs.queue, ConfigDuration::from_millis(50));
        assert_eq!(config.limits.llm.unwrap().requests_per_minute, 60);
        config.validate().unwrap();
        let err = serde_json::from_str::<MockConfig>(r#"{"limits":{"crm":{}}}"#).unwrap_err();
        assert!(err.to_string().contains("crm"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<MockConfig>(r#"{"sed":7}"#).unwrap_err();
        assert!(err.to_string().contains("sed"), "{err}");
        let err = serde_json::from_str::<MockConfig>(r#"{"keys":{"tts":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("tts"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut config = MockConfig::default();
        config.keys.crm.clear();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "keys.crm must be a non-empty string, got \"\""
        );
        let config = MockConfig {
            timeout_cap: ConfigDuration::from_secs(0),
            ..MockConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "timeout_cap");
        let config = MockConfig {
            oversized_body_bytes: 0,
            ..MockConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "oversized_body_bytes");
        let config: MockConfig =
            serde_json::from_str(r#"{"limits":{"elevenlabs":{"max_concurrent":0}}}"#).unwrap();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "limits.elevenlabs.max_concurrent must be ≥ 1, got 0"
        );
    }

    #[test]
    fn debug_hides_the_keys() {
        let shown = format!("{:?}", MockConfig::default());
        assert!(!shown.contains("mock-llm-key"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
