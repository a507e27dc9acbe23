//! The agent as one value: [`App::build`] makes the running parts from a
//! checked [`AgentConfig`] — one breaker, one executor and one limiter per service, the
//! clients of each stage's chain (primary, then its `fallback`s), the health
//! checker probing every service used, the alerts, and the event hub every
//! part publishes to — and [`App::run`] runs a campaign with the servers the
//! config asks for beside it. Every command, bench and test wires the agent
//! through here.

use std::collections::BTreeSet;
use std::sync::Arc;

use callguard_alerts::{AlertManager, AlertsError};
use callguard_breaker::BreakerRegistry;
use callguard_clients::{ClientSetupError, CrmClient, LlmClient, TtsClient};
use callguard_core::{ServiceName, ValidationError};
use callguard_health::{HealthCheckConfig, HealthChecker, HttpProbe, ProbeResult};
use callguard_limit::Limiter;
use callguard_retry::{EventSink, Executor};
use callguard_store::StoreError;
use callguard_telemetry::{Metrics, MetricsServer};

use crate::accounting::Census;
use crate::campaign::{Campaign, Summary};
use crate::config::{AgentConfig, ConfigError, ServiceKind, ServiceSection, StageKind};
use crate::events::{EventHub, TransitionLog};
use crate::pipeline::{Chain, Pipeline, Stage};
use crate::queue::CallQueue;
use crate::serve::{GrpcServer, RemoteFollower, serve_metrics};

impl From<ValidationError> for SetupError {
    fn from(invalid: ValidationError) -> Self {
        Self::Config(ConfigError::Invalid(invalid))
    }
}

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

/// The agent's running parts, built once from its config.
pub struct App {
    config: AgentConfig,
    pipeline: Arc<Pipeline>,
    registry: Arc<BreakerRegistry>,
    events: Arc<EventHub>,
    metrics: Arc<Metrics>,
    transitions: Arc<TransitionLog>,
    health: HealthChecker,
    alerts: AlertManager,
}

/// A campaign that has run: its summary, its queue, and the `/metrics`
/// server, kept up until the caller has reported the summary.
pub struct Ran {
    /// What became of the campaign.
    pub summary: Summary,
    /// The `/metrics` server, when `[metrics]` serves one.
    pub metrics: Option<MetricsServer>,
    queue: Arc<CallQueue>,
}

impl Ran {
    /// Matches the completed contacts with the CRM's records (one contact id
    /// each), where the CRM can list them (the mocks of `simulate`).
    pub async fn match_records(&mut self, records: &[&str]) -> Result<(), StoreError> {
        let end = Census::take(&self.queue).await?;
        self.summary.match_records(&end, records);
        Ok(())
    }
}

impl App {
    /// Builds the pipeline, breakers, executors, health checker, alerts and
    /// the event hub they publish to. Call within the tokio runtime (the
    /// alert channels start their tasks).
    pub fn build(config: AgentConfig) -> Result<Self, SetupError> {
        config.check_pipeline()?;
        let registry = Arc::new(BreakerRegistry::new(config.circuit_breaker.clone()));
        let metrics = Arc::new(Metrics::new());
        let transitions = Arc::new(TransitionLog::default());
        let alerts = AlertManager::new(&config.alerts)?.with_breakers(registry.clone());
        metrics.watch_alerts(alerts.clone());
        let events = Arc::new(EventHub::new(vec![
            metrics.clone(),
            Arc::new(alerts.clone()),
            transitions.clone(),
        ]));
        let builder = Builder {
            config: &config,
            registry: &registry,
            sink: events.clone(),
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
        };
        metrics.watch_limiters(pipeline.limiters());
        let used: BTreeSet<&ServiceName> = StageKind::ALL
            .into_iter()
            .flat_map(|stage| config.chain(stage))
            .collect();
        let health = health_checker(&config, &config.health_check, &registry, &metrics, used)?;
        Ok(Self {
            config,
            pipeline: Arc::new(pipeline),
            registry,
            events,
            metrics,
            transitions,
            health,
            alerts,
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The stages.
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// One breaker per service.
    pub fn registry(&self) -> &Arc<BreakerRegistry> {
        &self.registry
    }

    /// The counters of every event, served on `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The campaign over `queue` with these parts (health checks and the
    /// progress line on) and no server beside it.
    pub fn campaign(self, queue: Arc<CallQueue>) -> Campaign {
        Campaign {
            breaker_feed: self.registry.transitions(),
            pipeline: self.pipeline,
            registry: self.registry,
            queue,
            events: self.events,
            metrics: self.metrics,
            transitions: self.transitions,
            workers: self.config.queue.workers as usize,
            default_wait: self.config.circuit_breaker.recovery_timeout.get(),
            health: Some(self.health),
            alerts: self.alerts,
            shutdown_grace: self.config.queue.shutdown_grace.get(),
            progress: true,
        }
    }

    /// Runs the campaign over `queue` until every contact has ended or
    /// `shutdown` completes, with `/metrics`, the gRPC health server and the
    /// remote health watcher beside it as the config asks. On `shutdown` the
    /// gRPC server reports NOT_SERVING first, so watchers hear of the drain
    /// while calls in flight finish.
    pub async fn run(
        self,
        queue: Arc<CallQueue>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Ran, String> {
        let config = self.config.clone();
        // Made before the servers that can move a breaker (an operator over
        // gRPC, the remote health server): it follows every transition.
        let campaign = self.campaign(queue.clone());
        let metrics = serve_metrics(
            &config.metrics,
            campaign.metrics.clone(),
            campaign.registry.clone(),
            Some(queue.clone()),
        )
        .await?;
        let grpc = GrpcServer::start(
            &config.grpc,
            campaign.registry.clone(),
            campaign.pipeline.limiters(),
        )
        .await?;
        let store_follower =
            grpc.follow_store(queue.store().clone(), config.queue.unreachable_grace.get());
        let remote = RemoteFollower::start(&config, &campaign.registry)?;
        let summary = campaign.run(grpc.drain_on(shutdown)).await;
        if let Some(remote) = remote {
            remote.stop().await;
        }
        store_follower.abort();
        grpc.stop().await;
        Ok(Ran {
            summary,
            metrics,
            queue,
        })
    }
}

/// The health checker probing each of `services` — `GET {base_url}/health`,
/// or its `health_url` — unless its `health_probe` is off, feeding the
/// breakers of `registry` (created with the default settings if missing)
/// and counting each probe's result in `metrics`.
pub fn health_checker<'a>(
    config: &AgentConfig,
    checks: &HealthCheckConfig,
    registry: &BreakerRegistry,
    metrics: &Arc<Metrics>,
    services: impl IntoIterator<Item = &'a ServiceName>,
) -> Result<HealthChecker, SetupError> {
    let metrics = metrics.clone();
    let mut health = HealthChecker::new(checks.clone())?.with_listener(Arc::new(
        move |service: &ServiceName, result: ProbeResult| {
            metrics.record_probe(service, result.as_str());
        },
    ));
    let probe_client = reqwest::Client::builder()
        .timeout(checks.timeout.get())
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
            SetupError::from(ValidationError::new(
                format!("services.{service}.{key}"),
                text,
                rule,
            ))
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
}

impl Builder<'_> {
    /// The chain of `stage` ([`AgentConfig::chain`]), each client built by
    /// `build` (`None` when the section is not of the stage's kind).
    fn chain<C>(&self, stage: StageKind, build: Build<C>) -> Result<Chain<C>, SetupError> {
        let mut stages = self
            .config
            .chain(stage)
            .into_iter()
            .map(|service| self.stage(stage, service, build));
        let primary = stages
            .next()
            .expect("a chain starts at the stage's service")?;
        Ok(Chain {
            primary,
            fallbacks: stages.collect::<Result<_, _>>()?,
        })
    }

    fn stage<C>(
        &self,
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
        let executor =
            Executor::new(breaker, self.config.retry.clone())?.with_sink(self.sink.clone());
        // Checked with the config; a limiter per service, as a service is in
        // one stage's chain only.
        let limiter = Limiter::new(service.clone(), self.config.limit_config(service))?;
        Ok(Stage {
            service: service.clone(),
            client,
            executor: Arc::new(executor),
            limiter: Arc::new(limiter),
        })
    }
}
