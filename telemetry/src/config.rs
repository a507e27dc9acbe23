//! `[logging]` and `[metrics]`: where the log file goes, how loud the console
//! is, and where `/metrics` is served.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use callguard_core::ConfigDuration;

/// Where `/metrics` is served unless `[metrics] listen` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// The JSON-lines log file.
    pub path: PathBuf,
    /// Console verbosity: `error`, `warn`, `info`, `debug` or `trace`.
    pub console_level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("logs/callguard.jsonl"),
            console_level: "info".into(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether `/metrics` is served at all (default true).
    pub enabled: bool,
    /// Where to serve `/metrics` (default `127.0.0.1:9464`; port 0 picks a
    /// free port, which is logged).
    pub listen: SocketAddr,
    /// How long `/metrics` stays up after the campaign's summary is written,
    /// so that a scraper sees the final numbers (default 0: it stops then).
    pub linger: ConfigDuration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_LISTEN,
            linger: ConfigDuration::from_secs(0),
        }
    }
}

impl MetricsConfig {
    /// Where to serve `/metrics`, if it is served.
    pub fn served_on(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.listen)
    }
}
