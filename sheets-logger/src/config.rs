//! The `[sheets]` config section: which spreadsheet and range, how to
//! authenticate, how rows are batched and buffered, and which events are sent.

use std::fmt;
use std::path::{Path, PathBuf};

use callguard_core::config::{at_least, nonzero_duration};
use callguard_core::{ConfigDuration, Secret, ValidationError};
use callguard_retry::{Jitter, RetryPolicy};

/// The lowest level of event sent to the sheet (breaker transitions are sent
/// whatever their level).
///
/// Written in config as `"error"`, `"warn"`, `"info"`, `"debug"` or `"trace"`
/// (any case; `"warning"` is accepted for `"warn"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MinLevel {
    /// ERROR only.
    Error,
    /// WARN and ERROR (the default).
    #[default]
    Warn,
    /// INFO and above.
    Info,
    /// DEBUG and above.
    Debug,
    /// Everything.
    Trace,
}

impl MinLevel {
    /// The same threshold as a `tracing` level.
    pub fn as_level(self) -> tracing::Level {
        match self {
            Self::Error => tracing::Level::ERROR,
            Self::Warn => tracing::Level::WARN,
            Self::Info => tracing::Level::INFO,
            Self::Debug => tracing::Level::DEBUG,
            Self::Trace => tracing::Level::TRACE,
        }
    }

    /// Whether an event at `level` is at or above this threshold.
    pub fn admits(self, level: &tracing::Level) -> bool {
        // In `tracing`, more verbose levels compare greater.
        *level <= self.as_level()
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl fmt::Display for MinLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MinLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" => Ok(Self::Debug),
            "trace" => Ok(Self::Trace),
            _ => Err(format!(
                "unknown level {s:?}; expected one of error, warn, info, debug, trace"
            )),
        }
    }
}

impl serde::Serialize for MinLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for MinLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// How the logger authenticates, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Credential<'a> {
    /// A service-account key file (`credentials_file`).
    KeyFile(&'a Path),
    /// A static access token (`bearer_token`).
    Token(&'a Secret),
}

/// The `[sheets]` section.
///
/// Every key but `spreadsheet_id` and one of `credentials_file` /
/// `bearer_token` has a default:
///
/// ```toml
/// [sheets]
/// spreadsheet_id = "1AbC…"
/// range = "Logs!A1"                       # rows are appended after the table found here
/// api_base = "https://sheets.googleapis.com"
/// credentials_file = "/etc/callguard/sa.json"  # a service-account key; its token_uri is used
/// # bearer_token = "ya29…"                # alternative: a ready access token
/// flush_interval = "5s"                   # at most one request per interval…
/// batch_size = 100                        # …unless this many rows are waiting
/// buffer_capacity = 10000                 # rows held while Sheets is slow; more are dropped
/// min_level = "warn"                      # breaker transitions are sent at any level
/// request_timeout = "30s"
/// # [sheets.retry]                        # 429 / 5xx: backoff (callguard-retry's policy)
/// # max_retries = 5
/// ```
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SheetsConfig {
    /// The spreadsheet's id (the long token in its URL).
    pub spreadsheet_id: String,
    /// The A1 range whose table rows are appended to, e.g. `Logs!A1`.
    pub range: String,
    /// The Sheets API root; tests point it at a local fake.
    pub api_base: String,
    /// A Google service-account key (JSON). Its `token_uri` is where access
    /// tokens are fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// A ready access token, used as is (instead of `credentials_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Waiting rows are sent at least this often.
    pub flush_interval: ConfigDuration,
    /// Rows per request; a full batch is sent without waiting for the interval.
    pub batch_size: usize,
    /// Rows waiting to be sent, at most; rows beyond it are dropped and counted.
    pub buffer_capacity: usize,
    /// The lowest level sent (breaker transitions are always sent).
    pub min_level: MinLevel,
    /// Longest time one HTTP request (token or append) may take.
    pub request_timeout: ConfigDuration,
    /// Backoff for `429`, `5xx` and transport errors.
    pub retry: RetryPolicy,
}

impl SheetsConfig {
    /// The config section these settings are read from.
    pub const SECTION: &'static str = "sheets";
    /// Default `range`.
    pub const DEFAULT_RANGE: &'static str = "Logs!A1";
    /// Default `api_base`: Google's endpoint.
    pub const DEFAULT_API_BASE: &'static str = "https://sheets.googleapis.com";
    /// Default `flush_interval`: 5 s, twelve requests a minute, well inside the
    /// API's per-minute write quota.
    pub const DEFAULT_FLUSH_INTERVAL: ConfigDuration = ConfigDuration::from_secs(5);
    /// Default `batch_size`.
    pub const DEFAULT_BATCH_SIZE: usize = 100;
    /// Default `buffer_capacity`.
    pub const DEFAULT_BUFFER_CAPACITY: usize = 10_000;
    /// Default `request_timeout`.
    pub const DEFAULT_REQUEST_TIMEOUT: ConfigDuration = ConfigDuration::from_secs(30);
    /// Largest `batch_size`: keeps one request's body well under the API's limits.
    pub const MAX_BATCH_SIZE: usize = 10_000;

    /// The default retry policy for Sheets: 1 s, 2 s, 4 s, … up to 60 s, five
    /// retries, ±20 % jitter.
    pub fn default_retry() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            initial_delay: ConfigDuration::from_secs(1),
            backoff_factor: 2.0,
            max_delay: ConfigDuration::from_secs(60),
            jitter: Jitter::Proportional(0.2),
            ..RetryPolicy::default()
        }
    }

    /// Checks every value; the error names the key (`sheets.batch_size`), the
    /// value and the rule it breaks.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_keys()
            .map_err(|e| e.in_section(Self::SECTION))
    }

    /// Validates and returns the config, for building one in a single expression.
    pub fn validated(self) -> Result<Self, ValidationError> {
        self.validate().map(|()| self)
    }

    /// `api_base` as a URL (keys unprefixed: `api_base`).
    pub(crate) fn api_base_url(&self) -> Result<reqwest::Url, ValidationError> {
        reqwest::Url::parse(&self.api_base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                ValidationError::new("api_base", &self.api_base, "an absolute http(s) URL")
            })
    }

    /// The one credential configured (keys unprefixed: `credentials_file`).
    pub fn credential(&self) -> Result<Credential<'_>, ValidationError> {
        const RULE: &str = "exactly one of credentials_file and bearer_token";
        match (&self.credentials_file, &self.bearer_token) {
            (Some(path), None) => Ok(Credential::KeyFile(path)),
            (None, Some(token)) if token.is_empty() => Err(ValidationError::new(
                "bearer_token",
                "\"\"",
                "a non-empty string",
            )),
            (None, Some(token)) => Ok(Credential::Token(token)),
            (Some(_), Some(_)) => Err(ValidationError::new(
                "credentials_file",
                "set together with bearer_token",
                RULE,
            )),
            (None, None) => Err(ValidationError::new(
                "credentials_file",
                "unset, and bearer_token unset",
                RULE,
            )),
        }
    }

    fn validate_keys(&self) -> Result<(), ValidationError> {
        non_empty("spreadsheet_id", &self.spreadsheet_id)?;
        non_empty("range", &self.range)?;
        self.api_base_url()?;
        self.credential()?;
        nonzero_duration("flush_interval", self.flush_interval.get())?;
        at_least("batch_size", self.batch_size, 1)?;
        if self.batch_size > Self::MAX_BATCH_SIZE {
            return Err(ValidationError::new(
                "batch_size",
                self.batch_size,
                format!("≤ {}", Self::MAX_BATCH_SIZE),
            ));
        }
        at_least("buffer_capacity", self.buffer_capacity, 1)?;
        nonzero_duration("request_timeout", self.request_timeout.get())?;
        // The policy names its keys `retry.…` itself.
        self.retry.validate()
    }
}

fn non_empty(key: &str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        Err(ValidationError::new(
            key,
            format!("{value:?}"),
            "a non-empty string",
        ))
    } else {
        Ok(())
    }
}

impl Default for SheetsConfig {
    fn default() -> Self {
        Self {
            spreadsheet_id: String::new(),
            range: Self::DEFAULT_RANGE.to_owned(),
            api_base: Self::DEFAULT_API_BASE.to_owned(),
            credentials_file: None,
            bearer_token: None,
            flush_interval: Self::DEFAULT_FLUSH_INTERVAL,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            buffer_capacity: Self::DEFAULT_BUFFER_CAPACITY,
            min_level: MinLevel::default(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            retry: Self::default_retry(),
        }
    }
}

impl fmt::Debug for SheetsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Secret` hides the token; the key file's contents are never held here.
        f.debug_struct("SheetsConfig")
            .field("spreadsheet_id", &self.spreadsheet_id)
            .field("range", &self.range)
            .field("api_base", &self.api_base)
            .field("credentials_file", &self.credentials_file)
            .field("bearer_token", &self.bearer_token)
            .field("flush_interval", &self.flush_interval)
            .field("batch_size", &self.batch_size)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("min_level", &self.min_level)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn with_token() -> SheetsConfig {
        SheetsConfig {
            spreadsheet_id: "sheet-1".into(),
            bearer_token: Some(Secret::new("tok-123")),
            ..SheetsConfig::default()
        }
    }

    #[test]
    fn minimal_section_gets_the_defaults() {
        let config: SheetsConfig =
            toml::from_str("spreadsheet_id = \"sheet-1\"\ncredentials_file = \"/etc/sa.json\"\n")
                .unwrap();
        assert_eq!(config.range, "Logs!A1");
        assert_eq!(config.api_base, "https://sheets.googleapis.com");
        assert_eq!(config.flush_interval.get(), Duration::from_secs(5));
        assert_eq!(config.batch_size, 100);
        assert_eq!(config.buffer_capacity, 10_000);
        assert_eq!(config.min_level, MinLevel::Warn);
        assert_eq!(config.retry, SheetsConfig::default_retry());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn parses_every_key() {
        let config: SheetsConfig = toml::from_str(
            r#"
            spreadsheet_id = "s"
            range = "Errors!B2"
            api_base = "http://127.0.0.1:9/sheets"
            bearer_token = "tok"
            flush_interval = "250ms"
            batch_size = 7
            buffer_capacity = 30
            min_level = "WARNING"
            request_timeout = "3s"
            retry = { max_retries = 2, initial_delay = "100ms" }
            "#,
        )
        .unwrap();
        assert_eq!(config.range, "Errors!B2");
        assert_eq!(
            config.bearer_token.as_ref().map(Secret::expose),
            Some("tok")
        );
        assert_eq!(config.flush_interval.get(), Duration::from_millis(250));
        assert_eq!((config.batch_size, config.buffer_capacity), (7, 30));
        assert_eq!(config.min_level, MinLevel::Warn);
        assert_eq!(config.retry.max_retries, 2);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn unknown_keys_and_levels_are_rejected() {
        let err = toml::from_str::<SheetsConfig>("spreadsheet = \"s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("spreadsheet"), "{err}");
        let err = toml::from_str::<SheetsConfig>("min_level = \"loud\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("loud"), "{err}");
    }

    #[test]
    fn exactly_one_credential() {
        let both = SheetsConfig {
            credentials_file: Some("/sa.json".into()),
            ..with_token()
        };
        let err = both.validate().unwrap_err();
        assert_eq!(err.key, "sheets.credentials_file");
        assert!(err.rule.contains("exactly one"), "{err}");
        let neither = SheetsConfig {
            bearer_token: None,
            ..with_token()
        };
        assert_eq!(
            neither.validate().unwrap_err().key,
            "sheets.credentials_file"
        );
        let empty = SheetsConfig {
            bearer_token: Some(Secret::new("")),
            ..with_token()
        };
        assert_eq!(empty.validate().unwrap_err().key, "sheets.bearer_token");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let cases: [(SheetsConfig, &str); 6] = [
            (
                SheetsConfig {
                    spreadsheet_id: " ".into(),
                    ..with_token()
                },
                "sheets.spreadsheet_id",
            ),
            (
                SheetsConfig {
                    api_base: "sheets.googleapis.com".into(),
                    ..with_token()
                },
                "sheets.api_base",
            ),
            (
                SheetsConfig {
                    flush_interval: ConfigDuration::from_secs(0),
                    ..with_token()
                },
                "sheets.flush_interval",
            ),
            (
                SheetsConfig {
                    batch_size: 0,
                    ..with_token()
                },
                "sheets.batch_size",
            ),
            (
                SheetsConfig {
                    buffer_capacity: 0,
                    ..with_token()
                },
                "sheets.buffer_capacity",
            ),
            (
                SheetsConfig {
                    retry: RetryPolicy {
                        backoff_factor: 0.5,
                        ..SheetsConfig::default_retry()
                    },
                    ..with_token()
                },
                "sheets.retry.backoff_factor",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", with_token());
        assert!(!shown.contains("tok-123"), "{shown}");
        let text = toml::to_string(&with_token()).unwrap();
        assert!(!text.contains("tok-123"), "{text}");
    }

    #[test]
    fn min_level_admits_more_severe_events() {
        assert!(MinLevel::Warn.admits(&tracing::Level::ERROR));
        assert!(MinLevel::Warn.admits(&tracing::Level::WARN));
        assert!(!MinLevel::Warn.admits(&tracing::Level::INFO));
        assert!(MinLevel::Trace.admits(&tracing::Level::TRACE));
        assert!(!MinLevel::Error.admits(&tracing::Level::WARN));
    }
}
