//! Settings shared by every service client (base URL, key, timeouts, response
//! cap) and their validation, including the lookup of a key given by the name
//! of an environment variable.

use std::time::Duration;

use callguard_core::config::{at_least, nonzero_duration};
use callguard_core::{ConfigDuration, Secret, ValidationError};
use reqwest::Url;
use serde::Deserialize;

/// How one HTTP service is reached: the keys every service's section has
/// (TTS and LLM services add [`TtsSettings`](crate::TtsSettings) and
/// [`LlmSettings`](crate::LlmSettings) next to them).
///
/// ```toml
/// [services.elevenlabs]
/// base_url = "https://api.elevenlabs.io"
/// api_key_env = "ELEVENLABS_API_KEY"
/// request_timeout = "15s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServiceConfig {
    /// Where the service's API lives, e.g. `https://api.openai.com` or
    /// `http://127.0.0.1:8080/llm`; endpoint paths (`/v1/...`) are appended.
    pub base_url: String,
    /// The API key itself. Prefer `api_key_env` outside of tests.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// The name of the environment variable holding the API key, read when
    /// the client is built. A client needs exactly one of `api_key` and
    /// `api_key_env`.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Longest wait for a TCP (and TLS) connection; default 2 s.
    #[serde(default = "HttpServiceConfig::default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Longest wait for a whole exchange, body included; default 10 s.
    #[serde(default = "HttpServiceConfig::default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Largest response body read; a longer one is a bad response.
    /// Default 10 MiB.
    #[serde(default = "HttpServiceConfig::default_max_response_bytes")]
    pub max_response_bytes: u64,
}

impl HttpServiceConfig {
    /// Default `connect_timeout`.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default `request_timeout`.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `max_response_bytes`: 10 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

    /// A config with the given base URL and key and every other field at its
    /// default.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<Secret>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: Some(api_key.into()),
            api_key_env: None,
            connect_timeout: Self::default_connect_timeout(),
            request_timeout: Self::default_request_timeout(),
            max_response_bytes: Self::default_max_response_bytes(),
        }
    }

    fn default_connect_timeout() -> ConfigDuration {
        Self::DEFAULT_CONNECT_TIMEOUT.into()
    }

    fn default_request_timeout() -> ConfigDuration {
        Self::DEFAULT_REQUEST_TIMEOUT.into()
    }

    fn default_max_response_bytes() -> u64 {
        Self::DEFAULT_MAX_RESPONSE_BYTES
    }

    /// Checks the fields that need no environment: the URL, the timeouts,
    /// the cap, and that the key is not given two ways. Whether a key is
    /// given at all is checked when a client is built: a health probe needs
    /// none. Keys in errors are relative to the service's section
    /// (`base_url`, `api_key`, …).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.base_url()?;
        nonzero_duration("connect_timeout", self.connect_timeout.get())?;
        nonzero_duration("request_timeout", self.request_timeout.get())?;
        at_least("max_response_bytes", self.max_response_bytes, 1)?;
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(ValidationError::new(
                "api_key",
                "[redacted]",
                "unset when api_key_env is set (give the key one way)",
            ));
        }
        Ok(())
    }

    /// The base URL, parsed and checked: http or https, no credentials, no
    /// query or fragment. Returned without a trailing slash.
    pub(crate) fn base_url(&self) -> Result<String, ValidationError> {
        let invalid = |value: &str, rule: &str| ValidationError::new("base_url", value, rule);
        const RULE: &str = "an http or https URL without query or fragment";
        let url = Url::parse(&self.base_url).map_err(|_| invalid(&self.base_url, RULE))?;
        if !url.username().is_empty() || url.password().is_some() {
            // The URL carries credentials: never echo it.
            return Err(invalid("[redacted]", "a URL without user name or password"));
        }
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
            || url.cannot_be_a_base()
        {
            return Err(invalid(&self.base_url, RULE));
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// The API key, from `api_key` or from the environment variable named by
    /// `api_key_env` (looked up with `env`); one of them must be set.
    pub(crate) fn resolve_api_key(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secret, ValidationError> {
        self.validate()?;
        match (&self.api_key, &self.api_key_env) {
            (Some(key), _) if key.expose().trim().is_empty() => {
                Err(ValidationError::new("api_key", "\"\"", "a non-empty key"))
            }
            (Some(key), _) => Ok(key.clone()),
            (None, Some(var)) => env(var)
                .filter(|key| !key.trim().is_empty())
                .map(Secret::new)
                .ok_or_else(|| {
                    ValidationError::new(
                        "api_key_env",
                        format!("{var:?}"),
                        "the name of a set, non-empty environment variable",
                    )
                }),
            (None, None) => Err(ValidationError::new(
                "api_key_env",
                "nothing",
                "set (or api_key) to name the service's API key",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HttpServiceConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_fill_the_optional_fields() {
        let config = parse(r#"{"base_url":"http://127.0.0.1:1/llm","api_key":"k"}"#).unwrap();
        assert_eq!(
            config,
            HttpServiceConfig::new("http://127.0.0.1:1/llm", "k")
        );
        assert_eq!(config.connect_timeout.get(), Duration::from_secs(2));
        assert_eq!(config.request_timeout.get(), Duration::from_secs(10));
        assert_eq!(config.max_response_bytes, 10 * 1024 * 1024);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = parse(r#"{"base_url":"http://x","api_key":"k","timeout":"1s"}"#).unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    #[test]
    fn base_url_is_checked_and_trimmed() {
        let with = |url: &str| HttpServiceConfig::new(url, "k");
        assert_eq!(
            with("http://127.0.0.1:9/crm/").base_url().unwrap(),
            "http://127.0.0.1:9/crm"
        );
        assert_eq!(
            with("https://api.openai.com").base_url().unwrap(),
            "https://api.openai.com"
        );
        for bad in ["api.openai.com", "ftp://x/", "http://x/?a=1", "mailto:me@x"] {
            assert_eq!(with(bad).validate().unwrap_err().key, "base_url", "{bad}");
        }
        let err = with("https://user:hunter2@x/").validate().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn timeouts_and_cap_must_be_positive() {
        let mut config = HttpServiceConfig::new("http://x", "k");
        config.request_timeout = ConfigDuration::from_secs(0);
        assert_eq!(config.validate().unwrap_err().key, "request_timeout");
        let mut config = HttpServiceConfig::new("http://x", "k");
        config.max_response_bytes = 0;
        assert_eq!(config.validate().unwrap_err().key, "max_response_bytes");
    }

    #[test]
    fn key_comes_from_the_named_variable() {
        let config = parse(r#"{"base_url":"http://x","api_key_env":"TTS_KEY"}"#).unwrap();
        let env = |name: &str| (name == "TTS_KEY").then(|| "from-env".to_owned());
        assert_eq!(config.resolve_api_key(env).unwrap().expose(), "from-env");
        let blank = config
            .resolve_api_key(|_| Some("  ".to_owned()))
            .unwrap_err();
        assert_eq!(blank.key, "api_key_env");
        let err = config.resolve_api_key(|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "api_key_env must be the name of a set, non-empty environment variable, got \"TTS_KEY\""
        );
    }

    #[test]
    fn a_key_is_given_one_way_and_required_to_build_a_client() {
        let both = parse(r#"{"base_url":"http://x","api_key":"sk-1","api_key_env":"K"}"#).unwrap();
        let err = both.validate().unwrap_err();
        assert_eq!(err.key, "api_key");
        assert!(!err.to_string().contains("sk-1"), "{err}");
        let neither = parse(r#"{"base_url":"http://x"}"#).unwrap();
        neither.validate().unwrap();
        assert_eq!(
            neither.resolve_api_key(|_| None).unwrap_err().key,
            "api_key_env"
        );
        let empty = HttpServiceConfig::new("http://x", " ");
        assert_eq!(empty.resolve_api_key(|_| None).unwrap_err().key, "api_key");
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", HttpServiceConfig::new("http://x", "sk-live-abc"));
        assert!(!shown.contains("sk-live"), "{shown}");
    }
}
