//! The agent's configuration: TOML layered as built-in defaults < config file <
//! environment (`CALLGUARD_SECTION__KEY=value`), then checked as a whole.
//!
//! A bad value stops start-up with the key, the value and the rule it breaks;
//! an unknown key is named with its full path (and the environment variable
//! that set it, if one did).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use callguard_alerts::AlertsConfig;
use callguard_breaker::BreakerConfig;
use callguard_core::config::{at_least, nonzero_duration};
use callguard_core::{ConfigDuration, Secret, ServiceName, ValidationError};
use callguard_health::{GrpcConfig, HealthCheckConfig};
use callguard_limit::LimitConfig;
use callguard_retry::RetryPolicy;
use callguard_sheets_logger::SheetsConfig;
use callguard_store::{StoreError, StoreLocation, StoreSettings};
use callguard_telemetry::{LoggingConfig, MetricsConfig};
use serde::de::DeserializeOwned;

use scale::Scale;

mod scale;
mod services;

pub use services::{ServiceKind, ServiceResilience, ServiceSection, StageKind};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "CALLGUARD_";

/// Prefix of environment variables that belong to the test suites
/// (`CALLGUARD_TEST_POSTGRES_URL`), not to the config.
pub const TEST_ENV_PREFIX: &str = "CALLGUARD_TEST_";

/// The whole configuration.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// `[retry]`: backoff for every service.
    pub retry: RetryPolicy,
    /// `[circuit_breaker]`: breaker settings for every service (a service may override).
    pub circuit_breaker: BreakerConfig,
    /// `[limits]`: each service's limiter (a service may override); by
    /// default no limit of callguard's own, following the provider's headers.
    pub limits: LimitConfig,
    /// `[health_check]`: background probes, and the remote health server to follow.
    pub health_check: HealthCheckConfig,
    /// `[grpc]`: the health and breakers gRPC server.
    pub grpc: GrpcConfig,
    /// `[queue]`: workers and deferral.
    pub queue: QueueConfig,
    /// `[logging]`: the JSON-lines file and the console.
    pub logging: LoggingConfig,
    /// `[metrics]`: the Prometheus `/metrics` endpoint (on `127.0.0.1:9464` by
    /// default; `enabled = false` turns it off).
    pub metrics: MetricsConfig,
    /// `[alerts]`: cooldown and the email, Telegram and webhook channels (each
    /// on when its section is present).
    pub alerts: AlertsConfig,
    /// `[sheets]`: log rows to a Google Sheet (off unless present).
    pub sheets: Option<SheetsConfig>,
    /// `[pipeline]`: which service does each stage.
    pub pipeline: PipelineConfig,
    /// `[services.NAME]`: one section per external service, read after
    /// `[pipeline]`, which decides each one's kind ([`ServiceSection`]).
    #[serde(skip)]
    pub services: BTreeMap<ServiceName, ServiceSection>,
}

/// `[queue]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Contacts called at the same time.
    pub workers: u32,
    /// Deferrals a contact may have before it expires.
    pub max_deferrals: u32,
    /// How long in-flight calls may take to finish at shutdown.
    pub shutdown_grace: ConfigDuration,
    /// Where contacts still pending at shutdown are written (JSON Lines) when
    /// the store is `memory:`; a durable store keeps them itself.
    pub pending_file: PathBuf,
    /// The call store: `sqlite:PATH` (the default, `sqlite:callguard.db`),
    /// `postgres://…` (one queue for several agents) or `memory:`.
    pub url: Secret,
    /// The store's table: one campaign per table.
    pub table: String,
    /// How long a contact stays leased to an agent without renewal; a dead
    /// agent's contacts return to the queue this long after its last renewal.
    pub lease: ConfigDuration,
    /// How often a shared (PostgreSQL) queue is checked for other agents' changes.
    pub poll_interval: ConfigDuration,
    /// Contacts leased per look at the queue (default: 4 per worker): those
    /// not called at once wait leased to this agent, so larger batches mean
    /// fewer store round trips, and contacts held back from other agents
    /// sharing the queue a little longer.
    pub lease_batch: Option<u32>,
    /// Most connections to a PostgreSQL store.
    pub pool_size: u32,
    /// How long connecting to PostgreSQL may take (TCP, TLS, authentication).
    pub connect_timeout: ConfigDuration,
    /// How long the store may be out of reach before the process's gRPC
    /// health (`""`) reports NOT_SERVING.
    pub unreachable_grace: ConfigDuration,
}

/// How long a contact's final state may wait to be saved together with
/// others (`StoreSettings::settle_wait`): at full speed longer than the time
/// between two leases, so completions ride the next lease.
pub const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(8);

/// Contacts leased per look at the queue, per worker, unless
/// `queue.lease_batch` says otherwise.
pub const LEASE_BATCH_PER_WORKER: u32 = 4;

impl Default for QueueConfig {
    fn default() -> Self {
        let store = StoreSettings::default();
        Self {
            workers: 4,
            max_deferrals: store.max_deferrals,
            shutdown_grace: ConfigDuration::from_secs(10),
            pending_file: PathBuf::from("pending-contacts.jsonl"),
            url: Secret::new("sqlite:callguard.db"),
            table: store.table,
            lease: ConfigDuration::new(store.lease),
            poll_interval: ConfigDuration::new(store.poll_interval),
            lease_batch: None,
            pool_size: u32::try_from(store.pool_size).unwrap_or(u32::MAX),
            connect_timeout: ConfigDuration::new(store.connect_timeout),
            unreachable_grace: ConfigDuration::from_secs(10),
        }
    }
}

impl QueueConfig {
    /// The store's settings from this section.
    pub fn store_settings(&self) -> StoreSettings {
        StoreSettings {
            lease: self.lease.get(),
            poll_interval: self.poll_interval.get(),
            max_deferrals: self.max_deferrals,
            table: self.table.clone(),
            lease_batch: usize::try_from(self.lease_batch()).unwrap_or(usize::MAX),
            // Final states are saved in the background (no worker waits for
            // them), so each may wait to share the store's work with others.
            settle_wait: SETTLE_WAIT,
            pool_size: usize::try_from(self.pool_size).unwrap_or(usize::MAX),
            connect_timeout: self.connect_timeout.get(),
        }
    }

    /// Contacts leased per look at the queue: `lease_batch`, or
    /// [`LEASE_BATCH_PER_WORKER`] per worker.
    pub fn lease_batch(&self) -> u32 {
        self.lease_batch
            .unwrap_or_else(|| self.workers.saturating_mul(LEASE_BATCH_PER_WORKER))
    }

    /// Checks the section; the error names the full key.
    pub fn validate(&self) -> Result<(), ValidationError> {
        at_least("queue.workers", self.workers, 1)?;
        if let Some(batch) = self.lease_batch {
            at_least("queue.lease_batch", batch, 1)?;
        }
        nonzero_duration("queue.lease", self.lease.get())?;
        nonzero_duration("queue.poll_interval", self.poll_interval.get())?;
        at_least("queue.pool_size", self.pool_size, 1)?;
        nonzero_duration("queue.connect_timeout", self.connect_timeout.get())?;
        match StoreLocation::parse(self.url.expose()) {
            Ok(_) => {}
            // A URL parameter: its own key, value and rule.
            Err(StoreError::Invalid(e)) => return Err(e.in_section("queue.url")),
            Err(e) => {
                // Only the scheme: the rest may hold a password.
                let scheme = self.url.expose().split(':').next().unwrap_or_default();
                return Err(ValidationError::new(
                    "queue.url",
                    format!("{scheme}:…"),
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }
}

/// `[pipeline]`: the service behind each stage, and optional fallbacks.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Writes the call script.
    pub llm: ServiceName,
    /// Speaks it.
    pub tts: ServiceName,
    /// Records the outcome.
    pub crm: ServiceName,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let name = |s| ServiceName::new(s).expect("valid built-in service name");
        Self {
            llm: name("llm"),
            tts: name("elevenlabs"),
            crm: name("crm"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {origin} is not valid TOML: {message}")]
    Syntax {
        /// The file (or "built-in defaults").
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("config key {key}: {message}{}", env_note(.env_var))]
    Key {
        /// The full dotted key.
        key: String,
        /// What is wrong.
        message: String,
        /// The environment variable that set it, if one did.
        env_var: Option<String>,
    },
    /// A value breaks a rule.
    #[error("invalid config: {0}")]
    Invalid(#[from] ValidationError),
}

fn env_note(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" (set by environment variable {v})"))
        .unwrap_or_default()
}

/// Builds an [`AgentConfig`] along the one path every command takes:
/// built-in defaults, then stand-in sections, then the config file, then the
/// `CALLGUARD_*` environment, then a time scale — and validates the result
/// once, at the end.
///
/// Defaults and the file merge key by key. A stand-in section (how `simulate`
/// points the agent at its in-process mocks: `[services.NAME]`,
/// `[alerts.CHANNEL]`, `[sheets]`) is replaced *whole* by a section of the
/// same name in the file — for a service, one that names an endpoint — so a
/// simulation can watch one's own Sheet, SMTP server or Telegram chat without
/// the stand-in's keys mixing into it.
#[derive(Debug, Default)]
pub struct ConfigLoader {
    defaults: toml::Table,
    stand_ins: toml::Table,
    file: Option<PathBuf>,
    env: Vec<(String, String)>,
    time_scale: Option<f64>,
}

impl ConfigLoader {
    /// Nothing but the program's own defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults of this command, under the file.
    pub fn defaults(mut self, table: toml::Table) -> Self {
        merge(&mut self.defaults, table);
        self
    }

    /// Sections standing in for real services, alert channels or log sinks;
    /// the file's section of the same name replaces each whole.
    pub fn stand_ins(mut self, table: toml::Table) -> Self {
        merge(&mut self.stand_ins, table);
        self
    }

    /// The config file, if any.
    pub fn file(mut self, path: Option<&Path>) -> Self {
        self.file = path.map(Path::to_owned);
        self
    }

    /// The environment; only `CALLGUARD_*` variables are read.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env = vars.into_iter().collect();
        self
    }

    /// Multiplies the durations that pace the story (retries, breakers,
    /// limiters, health checks, alerts; not the timeouts of real work, nor
    /// the store's leases: `config/scale.rs` decides each) by `factor`,
    /// before validation.
    pub fn time_scale(mut self, factor: f64) -> Self {
        self.time_scale = Some(factor);
        self
    }

    /// The config, validated.
    pub fn load(self) -> Result<AgentConfig, ConfigError> {
        let mut merged = self.defaults;
        let mut stand_ins = self.stand_ins;
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let file = parse_toml(&text, &path.display().to_string())?;
            remove_replaced_sections(&mut stand_ins, &file);
            merge(&mut merged, stand_ins);
            merge(&mut merged, file);
        } else {
            merge(&mut merged, stand_ins);
        }
        let mut from_env = Vec::new();
        for (var, raw) in self.env {
            let Some(path) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if var.starts_with(TEST_ENV_PREFIX) {
                continue;
            }
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Key {
                    key: keys.join("."),
                    message: "empty key segment".into(),
                    env_var: Some(var),
                });
            }
            set_path(&mut merged, &keys, env_value(&raw)).map_err(|message| ConfigError::Key {
                key: keys.join("."),
                message,
                env_var: Some(var.clone()),
            })?;
            from_env.push((keys.join("."), var));
        }
        let services = merged.remove("services");
        let mut config: AgentConfig = deserialize_at(toml::Value::Table(merged), "", &from_env)?;
        config.services = services::parse(services, &config.pipeline, &from_env)?;
        if let Some(factor) = self.time_scale {
            config.scale(factor);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Keys of a `[services.NAME]` section that point it at another service:
/// a file's section with one of them replaces the stand-in's whole; one
/// without (a breaker or limiter override, say) merges over it.
const SERVICE_ENDPOINT_KEYS: [&str; 3] = ["base_url", "api_key", "api_key_env"];

/// Drops each stand-in section that `file` gives itself: a top-level
/// section, a named one under `[alerts]`, or a named one under `[services]`
/// that points the service elsewhere ([`SERVICE_ENDPOINT_KEYS`]).
fn remove_replaced_sections(stand_ins: &mut toml::Table, file: &toml::Table) {
    for (name, section) in file {
        match (name.as_str(), stand_ins.get_mut(name), section) {
            ("alerts" | "services", Some(toml::Value::Table(ours)), toml::Value::Table(theirs)) => {
                for (sub, value) in theirs {
                    let Some(theirs) = value.as_table() else {
                        continue;
                    };
                    let elsewhere = name == "alerts"
                        || SERVICE_ENDPOINT_KEYS
                            .iter()
                            .any(|key| theirs.contains_key(*key));
                    if elsewhere {
                        ours.remove(sub);
                    }
                }
            }
            (_, Some(_), toml::Value::Table(_)) => {
                stand_ins.remove(name);
            }
            _ => {}
        }
    }
}

impl AgentConfig {
    /// Loads `defaults` (TOML text built into the binary), the file at `path`
    /// if given, then the `CALLGUARD_*` variables in `env`, and validates: a
    /// [`ConfigLoader`] with defaults, a file and the environment.
    pub fn load(
        defaults: &str,
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        ConfigLoader::new()
            .defaults(parse_toml(defaults, "built-in defaults")?)
            .file(path)
            .env(env)
            .load()
    }

    /// Checks every section; the error names the full key.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.retry.validate()?;
        self.circuit_breaker
            .validate()
            .map_err(|e| e.in_section("circuit_breaker"))?;
        self.limits
            .validate()
            .map_err(|e| e.in_section(LimitConfig::SECTION))?;
        self.health_check
            .validate()
            .map_err(|e| e.in_section("health_check"))?;
        self.grpc.validate().map_err(|e| e.in_section("grpc"))?;
        self.queue.validate()?;
        self.alerts.validate()?;
        if let Some(sheets) = &self.sheets {
            sheets.validate()?;
        }
        self.logging
            .validate()
            .map_err(|e| e.in_section("logging"))?;
        services::validate(&self.services, &self.pipeline)
    }

    /// The services of `stage`'s chain, in the order a call tries them: its
    /// `[pipeline]` service, then each `fallback` in turn (a loop of
    /// fallbacks ends where it repeats).
    pub fn chain(&self, stage: StageKind) -> Vec<&ServiceName> {
        services::chain(stage, &self.pipeline, services::fallback_in(&self.services))
    }

    /// Checks that each `[pipeline]` stage names a configured service: what
    /// an agent that calls them needs, and a tool that reads the store or
    /// probes the services does not.
    pub fn check_pipeline(&self) -> Result<(), ValidationError> {
        for stage in StageKind::ALL {
            let service = stage.service(&self.pipeline);
            if !self.services.contains_key(service) {
                return Err(ValidationError::new(
                    format!("pipeline.{stage}"),
                    service,
                    "a service configured under [services]",
                ));
            }
        }
        Ok(())
    }

    /// The breaker settings of `service`: its own section's, or the shared ones.
    pub fn breaker_config(&self, service: &ServiceName) -> BreakerConfig {
        self.services
            .get(service)
            .and_then(|s| s.resilience.circuit_breaker.clone())
            .unwrap_or_else(|| self.circuit_breaker.clone())
    }

    /// The limiter settings of `service`: its own section's, or the shared ones.
    pub fn limit_config(&self, service: &ServiceName) -> LimitConfig {
        self.services
            .get(service)
            .and_then(|s| s.resilience.limits.clone())
            .unwrap_or_else(|| self.limits.clone())
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            origin: origin.into(),
            message: e.to_string().trim().to_owned(),
        })
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else
/// replaces.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("no key")?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("{key} is a value, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// An environment value as TOML: numbers, booleans and arrays keep their type;
/// anything that is not a TOML value is taken as a string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn deserialize_at<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
    from_env: &[(String, String)],
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.path().to_string();
        let key = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_owned(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ConfigError::Key {
            env_var: set_by(&key, from_env),
            key,
            message: err.into_inner().to_string(),
        }
    })
}

/// The environment variable that set `key`, a section above it or a key in it.
fn set_by(key: &str, from_env: &[(String, String)]) -> Option<String> {
    from_env
        .iter()
        .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")) || k.starts_with(key))
        .map(|(_, var)| var.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEFAULTS: &str = r#"
        [services.llm]
        base_url = "http://127.0.0.1:1/llm"
        [services.elevenlabs]
        base_url = "http://127.0.0.1:1/elevenlabs"
        [services.crm]
        base_url = "http://127.0.0.1:1/crm"
    "#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn seed_defaults_apply() {
        let config = AgentConfig::load(DEFAULTS, None, []).unwrap();
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.retry.initial_delay.get(), Duration::from_secs(5));
        assert_eq!(config.circuit_breaker.failure_threshold, 2);
        assert_eq!(config.health_check.interval.get(), Duration::from_secs(5));
        assert_eq!(config.queue.workers, 4);
    }

    #[test]
    fn the_lease_batch_is_four_per_worker_unless_set() {
        let load = |vars: &[(&str, &str)]| AgentConfig::load(DEFAULTS, None, env(vars));
        let config = load(&[("CALLGUARD_QUEUE__WORKERS", "3")]).unwrap();
        assert_eq!(config.queue.store_settings().lease_batch, 12);
        let config = load(&[("CALLGUARD_QUEUE__LEASE_BATCH", "5")]).unwrap();
        assert_eq!(config.queue.store_settings().lease_batch, 5);
        let err = load(&[("CALLGUARD_QUEUE__LEASE_BATCH", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.lease_batch"), "{err}");
    }

    #[test]
    fn pool_and_tls_settings_are_checked_by_key_value_and_rule() {
        let load = |vars: &[(&str, &str)]| {
            AgentConfig::load(DEFAULTS, None, env(vars))
                .unwrap_err()
                .to_string()
        };
        let err = load(&[("CALLGUARD_QUEUE__POOL_SIZE", "0")]);
        assert!(err.contains("queue.pool_size must be ≥ 1, got 0"), "{err}");
        let err = load(&[("CALLGUARD_QUEUE__CONNECT_TIMEOUT", "0s")]);
        assert!(err.contains("queue.connect_timeout"), "{err}");
        let err = load(&[(
            "CALLGUARD_QUEUE__URL",
            "postgres://agent:hunter2@db/calls?sslmode=verify_full",
        )]);
        assert!(
            err.contains(
                "queue.url.sslmode must be one of disable, prefer, require, verify-ca, \
                 verify-full, got \"verify_full\""
            ),
            "{err}"
        );
        let err = load(&[(
            "CALLGUARD_QUEUE__URL",
            "postgres://agent:hunter2@db/calls?sslmode=verify-full&sslrootcert=/no/ca.pem",
        )]);
        assert!(
            err.contains("queue.url.sslrootcert must be a readable file"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn environment_overrides_keys_with_their_types() {
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[
                ("CALLGUARD_RETRY__MAX_RETRIES", "5"),
                ("CALLGUARD_CIRCUIT_BREAKER__RECOVERY_TIMEOUT", "30s"),
                (
                    "CALLGUARD_SERVICES__LLM__BASE_URL",
                    "http://example.invalid/v",
                ),
                ("PATH", "/usr/bin"),
                ("CALLGUARD_TEST_POSTGRES_URL", "postgres://127.0.0.1/test"),
            ]),
        )
        .unwrap();
        assert_eq!(config.retry.max_retries, 5);
        assert_eq!(
            config.circuit_breaker.recovery_timeout.get(),
            Duration::from_secs(30)
        );
        let llm = ServiceName::new("llm").unwrap();
        assert_eq!(
            config.services[&llm].http.base_url,
            "http://example.invalid/v"
        );
    }

    #[test]
    fn a_bad_value_names_key_value_and_rule() {
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_RETRY__BACKOFF_FACTOR", "0.5")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: retry.backoff_factor must be ≥ 1.0, got 0.5"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_path_and_variable() {
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_CIRCUIT_BREAKER__FAILURE_TRESHOLD", "3")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("failure_treshold"), "{err}");
        assert!(
            err.contains("CALLGUARD_CIRCUIT_BREAKER__FAILURE_TRESHOLD"),
            "{err}"
        );
    }

    #[test]
    fn an_alert_channel_without_its_secret_is_refused_by_name() {
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_ALERTS__TELEGRAM__CHAT_ID", "-100123")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("alerts.telegram") && err.contains("bot_token"),
            "{err}"
        );
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[
                (
                    "CALLGUARD_ALERTS__WEBHOOK__URL",
                    "https://hooks.example.com/x",
                ),
                ("CALLGUARD_ALERTS__WEBHOOK__SECRET", "short"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("alerts.webhook.secret"), "{err}");
        assert!(!err.contains("short"), "the secret is not repeated: {err}");
        // The secret can come from the environment alone.
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[
                ("CALLGUARD_ALERTS__TELEGRAM__CHAT_ID", "-100123"),
                ("CALLGUARD_ALERTS__TELEGRAM__BOT_TOKEN", "123:abc"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.alerts.telegram.unwrap().bot_token.expose(),
            "123:abc"
        );
    }

    #[test]
    fn a_wrong_type_in_a_file_is_named() {
        let dir = std::env::temp_dir().join(format!("callguard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[queue]\nworkers = \"four\"\n").unwrap();
        let err = AgentConfig::load(DEFAULTS, Some(&path), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.workers"), "{err}");
        std::fs::write(&path, "[queue\nworkers = 4\n").unwrap();
        let err = AgentConfig::load(DEFAULTS, Some(&path), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("TOML"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pipeline_stages_need_configured_services() {
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_PIPELINE__TTS", "tts_backup")]),
        )
        .expect("a tool that only reads the store or probes loads it");
        let err = config.check_pipeline().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pipeline.tts must be a service configured under [services], got tts_backup"
        );
    }

    #[test]
    fn per_service_breaker_settings_replace_the_shared_ones() {
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[(
                "CALLGUARD_SERVICES__CRM__CIRCUIT_BREAKER__FAILURE_THRESHOLD",
                "7",
            )]),
        )
        .unwrap();
        let crm = ServiceName::new("crm").unwrap();
        assert_eq!(config.breaker_config(&crm).failure_threshold, 7);
        let llm = ServiceName::new("llm").unwrap();
        assert_eq!(config.breaker_config(&llm).failure_threshold, 2);
    }

    #[test]
    fn limits_default_to_following_headers_and_a_service_may_replace_them() {
        use callguard_limit::LimitMode;
        let config = AgentConfig::load(DEFAULTS, None, []).unwrap();
        assert_eq!(config.limits, LimitConfig::default());
        assert_eq!(config.limits.mode, LimitMode::Off);
        assert!(config.limits.follow_headers);

        let text = format!(
            "{DEFAULTS}\n[limits]\nmode = \"adaptive\"\ninitial = 8\n\
             [services.elevenlabs.limits]\nmode = \"static\"\nmax_concurrency = 5\n"
        );
        let config = AgentConfig::load(&text, None, []).unwrap();
        let tts = config.limit_config(&ServiceName::new("elevenlabs").unwrap());
        assert_eq!(
            tts,
            LimitConfig::fixed(5),
            "the section replaces [limits] whole"
        );
        let llm = config.limit_config(&ServiceName::new("llm").unwrap());
        assert_eq!(llm, LimitConfig::adaptive(8, 1, 100));
    }

    #[test]
    fn bad_limits_are_refused_with_their_full_key() {
        let refused = |vars: &[(&str, &str)]| {
            AgentConfig::load(DEFAULTS, None, env(vars))
                .unwrap_err()
                .to_string()
        };
        let message = refused(&[("CALLGUARD_LIMITS__MAX_CONCURRENCY", "4")]);
        assert!(
            message.contains("limits.max_concurrency") && message.contains("mode off"),
            "{message}"
        );
        let message = refused(&[
            ("CALLGUARD_SERVICES__ELEVENLABS__LIMITS__MODE", "adaptive"),
            ("CALLGUARD_SERVICES__ELEVENLABS__LIMITS__INITIAL", "0"),
        ]);
        assert!(
            message.contains("services.elevenlabs.limits.initial"),
            "{message}"
        );
        let message = refused(&[("CALLGUARD_LIMITS__QUEUE_TIMEOUTT", "1s")]);
        assert!(message.contains("queue_timeoutt"), "{message}");
    }

    #[test]
    fn metrics_are_served_on_9464_unless_turned_off() {
        let config = AgentConfig::load(DEFAULTS, None, []).unwrap();
        assert_eq!(
            config.metrics.served_on(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_METRICS__LISTEN", "127.0.0.1:0")]),
        )
        .unwrap();
        assert_eq!(config.metrics.served_on().map(|a| a.port()), Some(0));
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_METRICS__ENABLED", "false")]),
        )
        .unwrap();
        assert_eq!(config.metrics.served_on(), None);
    }

    #[test]
    fn grpc_and_remote_health_come_from_the_environment_too() {
        let config = AgentConfig::load(DEFAULTS, None, []).unwrap();
        assert_eq!(config.grpc.listen, "127.0.0.1:50051".parse().unwrap());
        assert!(config.health_check.remote.is_none());
        let config = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[
                ("CALLGUARD_GRPC__LISTEN", "127.0.0.1:0"),
                ("CALLGUARD_HEALTH_CHECK__REMOTE", "http://127.0.0.1:50051"),
            ]),
        )
        .unwrap();
        assert_eq!(config.grpc.listen.port(), 0);
        assert_eq!(
            config.health_check.remote.unwrap().as_str(),
            "http://127.0.0.1:50051"
        );
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_HEALTH_CHECK__REMOTE", "ftp://prober:21")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("health_check.remote") && err.contains("https://HOST:PORT"),
            "{err}"
        );
        let err = AgentConfig::load(
            DEFAULTS,
            None,
            env(&[("CALLGUARD_GRPC__ADMIN_TOKEN", "short")]),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid config: grpc.admin_token must be at least 16 bytes long, got [redacted, 5 bytes]"
        );
    }

    fn toml(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "callguard-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_file_section_replaces_a_stand_in_whole_and_merges_over_defaults() {
        let stand_ins = toml(
            r#"
            [sheets]
            spreadsheet_id = "stand-in"
            bearer_token = "stand-in-token"
            [alerts.telegram]
            bot_token = "stand-in-bot"
            chat_id = "1"
            [alerts.webhook]
            url = "http://127.0.0.1:1/alerts"
            secret = "stand-in-secret-0123456789"
            "#,
        );
        let path = file(
            "stand-ins",
            r#"
            [queue]
            workers = 8
            [sheets]
            spreadsheet_id = "mine"
            bearer_token = "my-token"
            [alerts]
            cooldown = "1m"
            [alerts.telegram]
            bot_token = "my-bot"
            chat_id = "2"
            "#,
        );
        let config = ConfigLoader::new()
            .defaults(toml("[queue]\nurl = \"memory:\"\n"))
            .defaults(toml(DEFAULTS))
            .stand_ins(stand_ins)
            .file(Some(&path))
            .load()
            .unwrap();
        assert_eq!(
            config.queue.url.expose(),
            "memory:",
            "defaults merge key by key"
        );
        assert_eq!(config.queue.workers, 8);
        let sheets = config.sheets.unwrap();
        assert_eq!(sheets.spreadsheet_id, "mine");
        let telegram = config.alerts.telegram.unwrap();
        assert_eq!(telegram.chat_id, "2");
        assert!(
            config.alerts.webhook.is_some(),
            "a stand-in the file does not name stays"
        );
        assert_eq!(config.alerts.cooldown.get(), Duration::from_secs(60));
    }

    #[test]
    fn a_file_service_section_without_an_endpoint_merges_over_the_stand_in() {
        let path = file(
            "service-override",
            "[services.llm.circuit_breaker]\nfailure_threshold = 7\n\
             [services.crm]\nbase_url = \"http://127.0.0.1:2/crm\"\n",
        );
        let config = ConfigLoader::new()
            .stand_ins(toml(DEFAULTS))
            .file(Some(&path))
            .load()
            .unwrap();
        let llm = &config.services[&ServiceName::new("llm").unwrap()];
        assert_eq!(
            llm.http.base_url, "http://127.0.0.1:1/llm",
            "the stand-in's endpoint stays"
        );
        assert_eq!(
            config
                .breaker_config(&ServiceName::new("llm").unwrap())
                .failure_threshold,
            7
        );
        let crm = &config.services[&ServiceName::new("crm").unwrap()];
        assert_eq!(
            crm.http.base_url, "http://127.0.0.1:2/crm",
            "an endpoint replaces it whole"
        );
    }

    #[test]
    fn the_time_scale_applies_before_validation() {
        let config = ConfigLoader::new()
            .defaults(toml(DEFAULTS))
            .time_scale(0.1)
            .load()
            .unwrap();
        assert_eq!(config.retry.initial_delay.get(), Duration::from_millis(500));
        assert_eq!(
            config.circuit_breaker.recovery_timeout.get(),
            Duration::from_secs(1)
        );
        // A scale that makes a duration zero is caught by the one validation.
        let err = ConfigLoader::new()
            .defaults(toml(DEFAULTS))
            .time_scale(0.0)
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("greater than 0s"), "{err}");
    }
}
