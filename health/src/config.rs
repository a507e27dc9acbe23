//! The `[health_check]` and `[grpc]` config sections, their defaults and validation.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use callguard_core::config::nonzero_duration;
use callguard_core::{ConfigDuration, Secret, ValidationError};
use subtle::ConstantTimeEq as _;

use crate::client::{ClientTls, KeepAlive, RemoteServer, RemoteUrl, TlsKeys};

/// What a healthy probe does to an OPEN breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnRecovery {
    /// OPEN (or HALF_OPEN) → CLOSED: the seed's rule.
    #[default]
    Close,
    /// OPEN → HALF_OPEN: real calls confirm the recovery before the breaker closes.
    HalfOpen,
}

/// The `[health_check]` section. Defaults: `interval = "5s"` (the seed's),
/// `timeout = "2s"`, `on_recovery = "close"`, no `remote`,
/// `remote_keepalive = "20s"`, `remote_keepalive_timeout = "10s"`.
///
/// An `https://` remote is checked against `remote_tls_ca` when set, else
/// against the system's root certificates; `remote_tls_server_name` is the
/// name its certificate must carry when it is not the URL's host.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Time between two probes of the same service.
    pub interval: ConfigDuration,
    /// Longest a probe may take; a slower probe counts as failed.
    pub timeout: ConfigDuration,
    /// What a healthy probe does to an OPEN breaker.
    pub on_recovery: OnRecovery,
    /// A callguard gRPC server whose health of each service also drives the
    /// breakers ([`RemoteWatcher`](crate::RemoteWatcher)); local probes keep
    /// running as the fallback.
    pub remote: Option<RemoteUrl>,
    /// PEM file of the CA that signed an `https://` remote's certificate,
    /// trusted instead of the system's roots.
    pub remote_tls_ca: Option<PathBuf>,
    /// The name an `https://` remote's certificate must carry, when it is not
    /// the URL's host.
    pub remote_tls_server_name: Option<String>,
    /// Quiet time on the connection to `remote` before an HTTP/2 ping.
    pub remote_keepalive: ConfigDuration,
    /// Longest wait for the ping's answer; a remote that went silent is
    /// noticed (and what it forced open released) within
    /// `remote_keepalive + remote_keepalive_timeout`.
    pub remote_keepalive_timeout: ConfigDuration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            interval: ConfigDuration::from_secs(5),
            timeout: ConfigDuration::from_secs(2),
            on_recovery: OnRecovery::Close,
            remote: None,
            remote_tls_ca: None,
            remote_tls_server_name: None,
            remote_keepalive: KeepAlive::default().interval.into(),
            remote_keepalive_timeout: KeepAlive::default().timeout.into(),
        }
    }
}

impl HealthCheckConfig {
    /// Checks every rule; keys are relative to the section (use
    /// [`ValidationError::in_section`] with `"health_check"`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        nonzero_duration("interval", self.interval.get())?;
        nonzero_duration("timeout", self.timeout.get())?;
        nonzero_duration("remote_keepalive", self.remote_keepalive.get())?;
        nonzero_duration(
            "remote_keepalive_timeout",
            self.remote_keepalive_timeout.get(),
        )?;
        if self.timeout > self.interval {
            return Err(ValidationError::new(
                "timeout",
                self.timeout,
                format!("at most interval ({})", self.interval),
            ));
        }
        let tls = self.remote_tls();
        match &self.remote {
            Some(remote) => tls.validate(remote, TlsKeys::CONFIG),
            None if tls != ClientTls::default() => Err(match &tls.ca {
                Some(ca) => {
                    ValidationError::new("remote_tls_ca", ca.display(), "unset without remote")
                }
                None => ValidationError::new(
                    "remote_tls_server_name",
                    tls.server_name.unwrap_or_default(),
                    "unset without remote",
                ),
            }),
            None => Ok(()),
        }
    }

    /// The remote server to follow, if any, its CA file read; keys are
    /// relative to the section, like [`Self::validate`]'s.
    pub fn remote_server(&self) -> Result<Option<RemoteServer>, ValidationError> {
        self.remote
            .clone()
            .map(|url| RemoteServer::with_tls(url, &self.remote_tls(), TlsKeys::CONFIG))
            .transpose()
    }

    fn remote_tls(&self) -> ClientTls {
        ClientTls {
            ca: self.remote_tls_ca.clone(),
            server_name: self.remote_tls_server_name.clone(),
        }
    }

    /// The keepalive of the connection to `remote`.
    pub fn remote_keep_alive(&self) -> KeepAlive {
        KeepAlive {
            interval: self.remote_keepalive.get(),
            timeout: self.remote_keepalive_timeout.get(),
        }
    }
}

/// A bearer token that authorizes the admin RPCs.
///
/// Held as a [`Secret`], so `Debug` shows `[redacted]`; the only way to use it
/// is [`AdminToken::matches`], which compares in constant time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct AdminToken(Secret);

impl AdminToken {
    /// Shortest accepted token, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Wraps and validates a token (at least [`Self::MIN_LEN`] bytes of visible
    /// ASCII, so it fits a gRPC metadata value). The error never shows the token.
    pub fn new(token: impl Into<String>) -> Result<Self, ValidationError> {
        let token = Self(Secret::new(token));
        token.validate()?;
        Ok(token)
    }

    /// Checks the rules of [`AdminToken::new`] (for a token read from config).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let token = self.0.expose();
        let redacted = format!("[redacted, {} bytes]", token.len());
        if token.len() < Self::MIN_LEN {
            return Err(ValidationError::new(
                "admin_token",
                redacted,
                format!("at least {} bytes long", Self::MIN_LEN),
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "admin_token",
                redacted,
                "visible ASCII without spaces",
            ));
        }
        Ok(())
    }

    /// Whether `presented` is this token, compared in constant time (only the
    /// length may leak).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.expose().as_bytes().ct_eq(presented).into()
    }
}

/// The `[grpc]` section: where the gRPC server listens, the admin token, TLS.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address (default `127.0.0.1:50051`).
    pub listen: SocketAddr,
    /// Token for `ForceOpen`/`ForceClose`/`Reset`; without one they are refused.
    pub admin_token: Option<AdminToken>,
    /// PEM certificate chain; with `tls_key`, the server speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 50051)),
            admin_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl GrpcConfig {
    /// Checks every rule; keys are relative to the section (use
    /// [`ValidationError::in_section`] with `"grpc"`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(token) = &self.admin_token {
            token.validate()?;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ValidationError::new(
                "tls_key",
                "(unset)",
                "set when tls_cert is set",
            )),
            (None, Some(_)) => Err(ValidationError::new(
                "tls_cert",
                "(unset)",
                "set when tls_key is set",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn health_check_defaults_are_the_seeds() {
        let config: HealthCheckConfig = toml::from_str("").unwrap();
        assert_eq!(config, HealthCheckConfig::default());
        assert_eq!(config.interval.get(), Duration::from_secs(5));
        assert_eq!(config.on_recovery, OnRecovery::Close);
        config.validate().unwrap();
    }

    #[test]
    fn health_check_section_parses_and_rejects_unknown_keys() {
        let config: HealthCheckConfig =
            toml::from_str("interval = \"30s\"\ntimeout = \"1s\"\non_recovery = \"half_open\"")
                .unwrap();
        assert_eq!(config.interval.get(), Duration::from_secs(30));
        assert_eq!(config.on_recovery, OnRecovery::HalfOpen);
        let err = toml::from_str::<HealthCheckConfig>("intervall = \"5s\"").unwrap_err();
        assert!(err.to_string().contains("intervall"), "{err}");
        let err = toml::from_str::<HealthCheckConfig>("on_recovery = \"open\"").unwrap_err();
        assert!(err.to_string().contains("half_open"), "{err}");
    }

    #[test]
    fn health_check_validation_names_key_value_and_rule() {
        let zero = HealthCheckConfig {
            interval: ConfigDuration::from_secs(0),
            ..HealthCheckConfig::default()
        };
        assert_eq!(
            zero.validate()
                .unwrap_err()
                .in_section("health_check")
                .to_string(),
            "health_check.interval must be greater than 0s, got 0s"
        );
        let slow = HealthCheckConfig {
            timeout: ConfigDuration::from_secs(10),
            ..HealthCheckConfig::default()
        };
        assert_eq!(
            slow.validate().unwrap_err().to_string(),
            "timeout must be at most interval (5s), got 10s"
        );
        let deaf = HealthCheckConfig {
            remote_keepalive_timeout: ConfigDuration::from_secs(0),
            ..HealthCheckConfig::default()
        };
        assert_eq!(
            deaf.validate().unwrap_err().to_string(),
            "remote_keepalive_timeout must be greater than 0s, got 0s"
        );
    }

    #[test]
    fn the_remote_keepalive_is_configurable() {
        assert_eq!(
            HealthCheckConfig::default().remote_keep_alive(),
            KeepAlive::default()
        );
        let config: HealthCheckConfig =
            toml::from_str("remote_keepalive = \"500ms\"\nremote_keepalive_timeout = \"250ms\"")
                .unwrap();
        assert_eq!(
            config.remote_keep_alive(),
            KeepAlive {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(250),
            }
        );
    }

    #[test]
    fn remote_tls_needs_an_https_remote() {
        let config: HealthCheckConfig =
            toml::from_str("remote = \"http://prober:50051\"\nremote_tls_ca = \"ca.pem\"").unwrap();
        assert_eq!(
            config
                .validate()
                .unwrap_err()
                .in_section("health_check")
                .to_string(),
            "health_check.remote_tls_ca must be unset unless remote is an https:// URL \
             (got http://prober:50051), got ca.pem"
        );
        let config: HealthCheckConfig =
            toml::from_str("remote_tls_server_name = \"prober\"").unwrap();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "remote_tls_server_name must be unset without remote, got prober"
        );
        let config: HealthCheckConfig = toml::from_str(
            "remote = \"https://10.0.0.7:50051\"\nremote_tls_ca = \"ca.pem\"\nremote_tls_server_name = \"prober\"",
        )
        .unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn grpc_defaults_listen_on_loopback_without_admin() {
        let config: GrpcConfig = toml::from_str("").unwrap();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert!(config.admin_token.is_none());
        config.validate().unwrap();
    }

    #[test]
    fn admin_token_never_shows_in_debug_or_errors() {
        let secret = "s3cr3t-t0ken-of-24-bytes";
        let config: GrpcConfig = toml::from_str(&format!("admin_token = \"{secret}\"")).unwrap();
        config.validate().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");

        let short = "short-secret";
        let err = AdminToken::new(short).unwrap_err().to_string();
        assert!(!err.contains(short), "{err}");
        assert!(err.contains("at least 16 bytes"), "{err}");
        let spaced = "has a space in the middle";
        let err = AdminToken::new(spaced).unwrap_err().to_string();
        assert!(
            !err.contains(spaced) && err.contains("visible ASCII"),
            "{err}"
        );
    }

    #[test]
    fn admin_token_matches_only_itself() {
        let token = AdminToken::new("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn tls_needs_both_files() {
        let config: GrpcConfig = toml::from_str("tls_cert = \"cert.pem\"").unwrap();
        assert_eq!(
            config
                .validate()
                .unwrap_err()
                .in_section("grpc")
                .to_string(),
            "grpc.tls_key must be set when tls_cert is set, got (unset)"
        );
    }
}
