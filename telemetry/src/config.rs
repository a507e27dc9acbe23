//! `[logging]` and `[metrics]`: where the log file goes and when it is
//! rotated, how loud the console is, and where `/metrics` is served.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use callguard_core::config::at_least;
use callguard_core::{ConfigDuration, ValidationError};

/// Where `/metrics` is served unless `[metrics] listen` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// The JSON-lines log file.
    pub path: PathBuf,
    /// The lowest level the console shows: `error`, `warn`, `info`, `debug`
    /// or `trace` (how much it tells of what passes is `-v` / `-q`).
    pub console_level: String,
    /// `[logging.rotation]`: when the log file is rotated, how many are kept.
    pub rotation: RotationConfig,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("logs/callguard.jsonl"),
            console_level: "info".into(),
            rotation: RotationConfig::default(),
        }
    }
}

impl LoggingConfig {
    /// Checks the console level and the rotation, naming the key (within
    /// the section), the value and the rule.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !matches!(
            self.console_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(ValidationError::new(
                "console_level",
                &self.console_level,
                "one of error, warn, info, debug, trace",
            ));
        }
        self.rotation
            .validate()
            .map_err(|e| e.in_section("rotation"))
    }
}

/// `[logging.rotation]`: the log file is rotated before a line would take it
/// past `max_size`, and (with `daily`) at the first line of a new UTC day;
/// `callguard.jsonl.1` is then the newest rotated file, and `keep` of them
/// are kept.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationConfig {
    /// The largest a log file may grow (`"100MiB"`, `"512KB"`, or bytes);
    /// unset: no limit by size.
    pub max_size: Option<ByteSize>,
    /// Whether a new file is started each UTC day.
    pub daily: bool,
    /// How many rotated files are kept besides the current one; the oldest
    /// go first.
    pub keep: usize,
}

impl RotationConfig {
    /// The smallest `max_size` accepted: 4 KiB, room for the longest lines.
    pub const MIN_SIZE: u64 = 4 * 1024;

    /// Whether the file is rotated at all.
    pub fn rotates(&self) -> bool {
        self.max_size.is_some() || self.daily
    }

    /// Checks `max_size` (at least 4 KiB) and `keep` (at least 1).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(size) = self.max_size
            && size.0 < Self::MIN_SIZE
        {
            return Err(ValidationError::new(
                "max_size",
                size,
                "at least 4KiB (4096 bytes)",
            ));
        }
        at_least("keep", self.keep, 1)
    }
}

impl Default for RotationConfig {
    /// 100 MiB a file, five rotated files kept: at most 600 MiB of logs.
    fn default() -> Self {
        Self {
            max_size: Some(ByteSize(100 * 1024 * 1024)),
            daily: false,
            keep: 5,
        }
    }
}

/// A size in bytes, written as a whole number of bytes or as a number with a
/// unit: `B`, `KB`/`MB`/`GB` (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of
/// 1024), as in `"100MiB"` or `"1.5 GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let unit_bytes: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}: use B, KB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        let number: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as \"100MiB\""))?;
        let bytes = number * unit_bytes as f64;
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match UNITS
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0 % size == 0)
        {
            Some((unit, size)) => write!(f, "{}{unit}", self.0 / size),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(Self(bytes)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        let size = |text: &str| text.parse::<ByteSize>().map(|s| s.0);
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("100MiB"), Ok(100 << 20));
        assert_eq!(size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(size("64 KiB"), Ok(64 << 10));
        assert!(size("10 MiBs").unwrap_err().contains("MiBs"));
        assert!(size("lots").is_err());
        assert_eq!(ByteSize(100 << 20).to_string(), "100MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn rotation_errors_name_key_value_and_rule() {
        let logging = |rotation: &str| {
            let config: LoggingConfig = toml::from_str(&format!("[rotation]\n{rotation}")).unwrap();
            config
                .validate()
                .unwrap_err()
                .in_section("logging")
                .to_string()
        };
        assert_eq!(
            logging("max_size = \"1KiB\""),
            "logging.rotation.max_size must be at least 4KiB (4096 bytes), got 1KiB"
        );
        assert_eq!(
            logging("keep = 0"),
            "logging.rotation.keep must be ≥ 1, got 0"
        );
        let off: LoggingConfig =
            toml::from_str("[rotation]\nmax_size = 8192\ndaily = true\nkeep = 2").unwrap();
        off.validate().unwrap();
        assert_eq!(off.rotation.max_size, Some(ByteSize(8192)));
    }
}
