//! Builds the running parts from a checked [`AgentConfig`]: one breaker and one
//! executor per service, the clients of each stage's chain (primary, then its
//! `fallback`s), and the health checker probing every service used.

use std::collections::BTreeSet;
use std::sync::Arc;

use callguard_alerts::{AlertManager, AlertsError};
use callguard_breaker::BreakerRegistry;
use callguard_core::{ResilienceEvent, ServiceName, ValidationError};
use callguard_health::{HealthChecker, HttpProbe};
use callguard_retry::{EventSink, Executor};
use serde::de::DeserializeOwned;

use crate::campaign::RunStats;
use crate::config::{AgentConfig, ConfigError};
use crate::metrics::Metrics;
use crate::pipeline::{Chain, Pipeline, Stage};
use callguard_clients::{ClientSetupError, CrmClient, LlmClient, TtsClient};

/// Why the agent could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A config key is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A client could not be built.
    #[error("service {service}: {source}")]
    Client {
        /// The service.
        service: ServiceName,
        /// Why.
        source: ClientSetupError,
    },
    /// The health probes' HTTP client could not be built.
    #[error("cannot build the health-check HTTP client: {0}")]
    HealthClient(String),
    /// An alert channel could not be set up.
    #[error(transparent)]
    Alerts(#[from] AlertsError),
}

/// The parts a campaign runs with.
pub struct Assembled {
    /// The stages.
    pub pipeline: Arc<Pipeline>,
    /// One breaker per service.
    pub registry: Arc<BreakerRegistry>,
    /// Counters fed by every executor.
    pub stats: Arc<RunStats>,
    /// Prometheus metrics fed by every executor and the pipeline.
    pub metrics: Arc<Metrics>,
    /// Probes of every service used.
    pub health: HealthChecker,
    /// Alerts to people, fed by every executor.
    pub alerts: AlertManager,
}

/// Builds the pipeline, breakers, executors, health checker and alerts.
/// Call within the tokio runtime (the alert channels start their tasks).
pub fn assemble(config: &AgentConfig) -> Result<Assembled, SetupError> {
    let registry = Arc::new(BreakerRegistry::new(config.circuit_breaker.clone()));
    let stats = Arc::new(RunStats::default());
    let metrics = Arc::new(Metrics::new());
    let alerts = AlertManager::new(&config.alerts)?.with_breakers(registry.clone());
    let mut builder = Builder {
        config,
        registry: &registry,
        sink: Arc::new(Sinks(vec![
            stats.clone(),
            metrics.clone(),
            Arc::new(alerts.clone()),
        ])),
        used: BTreeSet::new(),
    };
    let pipeline = Pipeline {
        llm: builder.chain(&config.pipeline.llm, LlmClient::new)?,
        tts: builder.chain(&config.pipeline.tts, TtsClient::new)?,
        crm: builder.chain(&config.pipeline.crm, CrmClient::new)?,
        metrics: metrics.clone(),
    };
    let health = health_checker(config, &registry, &builder.used)?;
    Ok(Assembled {
        pipeline: Arc::new(pipeline),
        registry,
        stats,
        metrics,
        health,
        alerts,
    })
}

/// Where every executor's events go: the run's counters, the Prometheus
/// metrics and the alerts.
struct Sinks(Vec<Arc<dyn EventSink>>);

impl EventSink for Sinks {
    fn on_event(&self, event: &ResilienceEvent) {
        for sink in &self.0 {
            sink.on_event(event);
        }
    }
}

/// The health checker probing each of `services` — `GET {base_url}/health`,
/// or its `health_url` — unless its `health_probe` is off, feeding the
/// breakers of `registry` (created with the default settings if missing).
pub fn health_checker<'a>(
    config: &AgentConfig,
    registry: &BreakerRegistry,
    services: impl IntoIterator<Item = &'a ServiceName>,
) -> Result<HealthChecker, SetupError> {
    let mut health = HealthChecker::new(config.health_check.clone())
        .map_err(|e| SetupError::Config(ConfigError::Invalid(e)))?;
    let probe_client = reqwest::Client::builder()
        .timeout(config.health_check.timeout.get())
        .build()
        .map_err(|e| SetupError::HealthClient(e.without_url().to_string()))?;
    for service in services {
        let Some(section) = config.services.get(service).filter(|s| s.health_probe) else {
            continue;
        };
        let (key, text) = match (&section.health_url, section.base_url()) {
            (Some(url), _) => ("health_url", url.as_str()),
            (None, Some(base)) => ("base_url", base),
            (None, None) => continue,
        };
        let invalid = |rule: &str| {
            SetupError::Config(ConfigError::Invalid(ValidationError::new(
                format!("services.{service}.{key}"),
                text,
                rule,
            )))
        };
        let url = reqwest::Url::parse(text).map_err(|_| invalid("an absolute http(s) URL"))?;
        let probe = if section.health_url.is_some() {
            HttpProbe::at(probe_client.clone(), url)
        } else {
            HttpProbe::new(probe_client.clone(), &url)
                .map_err(|_| invalid("an http(s) URL that can take a path"))?
        };
        let breaker = registry.get_or_default(service);
        health = health.with_probe(breaker, probe);
    }
    Ok(health)
}

struct Builder<'a> {
    config: &'a AgentConfig,
    registry: &'a Arc<BreakerRegistry>,
    sink: Arc<dyn EventSink>,
    used: BTreeSet<ServiceName>,
}

impl Builder<'_> {
    /// The chain starting at `primary` and following each service's `fallback`.
    fn chain<C, S: DeserializeOwned>(
        &mut self,
        primary: &ServiceName,
        build: fn(&S) -> Result<C, ClientSetupError>,
    ) -> Result<Chain<C>, SetupError> {
        let primary_stage = self.stage(primary, build)?;
        let mut fallbacks = Vec::new();
        let mut seen = BTreeSet::from([primary.clone()]);
        let mut next = self.config.services[primary].fallback.clone();
        while let Some(service) = next {
            if !seen.insert(service.clone()) {
                break; // a loop of fallbacks ends where it repeats
            }
            fallbacks.push(self.stage(&service, build)?);
            next = self.config.services[&service].fallback.clone();
        }
        Ok(Chain {
            primary: primary_stage,
            fallbacks,
        })
    }

    fn stage<C, S: DeserializeOwned>(
        &mut self,
        service: &ServiceName,
        build: fn(&S) -> Result<C, ClientSetupError>,
    ) -> Result<Stage<C>, SetupError> {
        let section = &self.config.services[service];
        let settings: S = section.client_settings(service)?;
        let client = build(&settings).map_err(|source| SetupError::Client {
            service: service.clone(),
            source: source.in_section(&format!("services.{service}")),
        })?;
        let breaker = self
            .registry
            .register(service.clone(), self.config.breaker_config(service));
        let executor = Executor::new(breaker, self.config.retry.clone())
            .map_err(|e| SetupError::Config(ConfigError::Invalid(e)))?
            .with_sink(self.sink.clone());
        self.used.insert(service.clone());
        Ok(Stage {
            service: service.clone(),
            client,
            executor: Arc::new(executor),
        })
    }
}
