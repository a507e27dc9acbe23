//! Builds the running parts from a checked [`AgentConfig`]: one breaker and one
//! executor per service, the clients of each stage's chain (primary, then its
//! `fallback`s), and the health checker probing every service used.

use std::collections::BTreeSet;
use std::sync::Arc;

use callguard_alerts::{AlertManager, AlertsError};
use callguard_breaker::BreakerRegistry;
use callguard_clients::{ClientSetupError, CrmClient, LlmClient, TtsClient};
use callguard_core::{ResilienceEvent, ServiceName, ValidationError};
use callguard_health::{HealthChecker, HttpProbe};
use callguard_retry::{EventSink, Executor};

use crate::campaign::RunStats;
use crate::config::{AgentConfig, ConfigError, ServiceKind, ServiceSection, StageKind};
use crate::metrics::Metrics;
use crate::pipeline::{Chain, Pipeline, Stage};

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
        llm: builder.chain(StageKind::Llm, |section| match &section.kind {
            ServiceKind::Llm(settings) => Some(LlmClient::new(&section.http, settings)),
            _ => None,
        })?,
        tts: builder.chain(StageKind::Tts, |section| match &section.kind {
            ServiceKind::Tts(settings) => Some(TtsClient::new(&section.http, settings)),
            _ => None,
        })?,
        crm: builder.chain(StageKind::Crm, |section| match &section.kind {
            ServiceKind::Crm => Some(CrmClient::new(&section.http)),
            _ => None,
        })?,
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
        let Some(section) = config
            .services
            .get(service)
            .filter(|s| s.resilience.health_probe)
        else {
            continue;
        };
        let (key, text) = match &section.resilience.health_url {
            Some(url) => ("health_url", url.as_str()),
            None => ("base_url", section.http.base_url.as_str()),
        };
        let invalid = |rule: &str| {
            SetupError::Config(ConfigError::Invalid(ValidationError::new(
                format!("services.{service}.{key}"),
                text,
                rule,
            )))
        };
        let url = reqwest::Url::parse(text).map_err(|_| invalid("an absolute http(s) URL"))?;
        let probe = if section.resilience.health_url.is_some() {
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

/// Builds a stage's client from a service's section, if it is of the stage's kind.
type Build<C> = fn(&ServiceSection) -> Option<Result<C, ClientSetupError>>;

struct Builder<'a> {
    config: &'a AgentConfig,
    registry: &'a Arc<BreakerRegistry>,
    sink: Arc<dyn EventSink>,
    used: BTreeSet<ServiceName>,
}

impl Builder<'_> {
    /// The chain of `stage`: its service, then each service's `fallback`,
    /// each client built by `build` (`None` when the section is not of the
    /// stage's kind).
    fn chain<C>(&mut self, stage: StageKind, build: Build<C>) -> Result<Chain<C>, SetupError> {
        let primary = stage.service(&self.config.pipeline);
        let primary_stage = self.stage(stage, primary, build)?;
        let mut fallbacks = Vec::new();
        let mut seen = BTreeSet::from([primary.clone()]);
        let mut next = self.config.services[primary].resilience.fallback.clone();
        while let Some(service) = next {
            if !seen.insert(service.clone()) {
                break; // a loop of fallbacks ends where it repeats
            }
            fallbacks.push(self.stage(stage, &service, build)?);
            next = self.config.services[&service].resilience.fallback.clone();
        }
        Ok(Chain {
            primary: primary_stage,
            fallbacks,
        })
    }

    fn stage<C>(
        &mut self,
        stage: StageKind,
        service: &ServiceName,
        build: Build<C>,
    ) -> Result<Stage<C>, SetupError> {
        let section = &self.config.services[service];
        let client = build(section)
            .ok_or_else(|| ConfigError::Invalid(section.kind.mismatch(service, Some(stage))))?
            .map_err(|source| SetupError::Client {
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
