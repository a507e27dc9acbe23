//! Prometheus metrics on `/metrics`: counters fed by the executors' events,
//! the pipeline and the breakers' transitions; gauges (breaker state, contacts
//! by state) read from the breakers and the queue when scraped.
//!
//! Every series is named `callguard_…`:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `callguard_calls_total` | counter | `service`, `outcome` (`success`, `permanent`, `exhausted`, `rejected`) |
//! | `callguard_retries_total` | counter | `service` |
//! | `callguard_attempt_duration_seconds` | histogram | `service`, `result` (`success`, `transient`, `permanent`) |
//! | `callguard_breaker_state` | gauge | `service`; 0 CLOSED, 1 OPEN, 2 HALF_OPEN, 3 FORCED_OPEN |
//! | `callguard_breaker_transitions_total` | counter | `service`, `from`, `to` |
//! | `callguard_deferrals_total` | counter | `service` (the stage's primary service) |
//! | `callguard_contacts` | gauge | `state` (`ready`, `deferred`, `in_flight`, `completed`, `failed`, `expired`) |
//!
//! Recording is a hash lookup and an atomic add per event, cheap next to an
//! HTTP call, so it is always on; only serving is configured
//! (`[metrics] listen`, off by default).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use callguard_breaker::BreakerRegistry;
use callguard_core::{CircuitState, ResilienceEvent, ServiceName, Transition};
use callguard_retry::EventSink;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use crate::queue::CallQueue;

/// The OpenMetrics text content type `/metrics` answers with.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` (e.g. `"127.0.0.1:9464"`); not served when
    /// unset, the default.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    service: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    service: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    service: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Attempt latency buckets: 5 ms to about 41 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The agent's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<OutcomeLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    attempt_seconds: Family<ResultLabels, Histogram, fn() -> Histogram>,
    breaker_state: Family<ServiceLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    deferrals: Family<ServiceLabels, Counter>,
    contacts: Family<StateLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered under the `callguard_` prefix.
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("callguard")),
            calls: Family::default(),
            retries: Family::default(),
            attempt_seconds: Family::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            transitions: Family::default(),
            deferrals: Family::default(),
            contacts: Family::default(),
        };
        {
            let mut registry = metrics.lock();
            registry.register(
                "calls",
                "Calls to a service by how they ended",
                metrics.calls.clone(),
            );
            registry.register(
                "retries",
                "Retries scheduled after a transient failure",
                metrics.retries.clone(),
            );
            registry.register(
                "attempt_duration_seconds",
                "Duration of one attempt (one HTTP request)",
                metrics.attempt_seconds.clone(),
            );
            registry.register(
                "breaker_state",
                "Circuit breaker state: 0 CLOSED, 1 OPEN, 2 HALF_OPEN, 3 FORCED_OPEN",
                metrics.breaker_state.clone(),
            );
            registry.register(
                "breaker_transitions",
                "Circuit breaker state changes",
                metrics.transitions.clone(),
            );
            registry.register(
                "deferrals",
                "Contacts sent back to the queue because a stage's service was unavailable",
                metrics.deferrals.clone(),
            );
            registry.register("contacts", "Contacts by state", metrics.contacts.clone());
        }
        metrics
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A contact deferred because `service` (its stage's primary) was unavailable.
    pub fn record_deferral(&self, service: &ServiceName) {
        self.deferrals.get_or_create(&service_labels(service)).inc();
    }

    /// A breaker transition.
    pub fn record_transition(&self, transition: &Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                service: transition.service.to_string(),
                from: transition.from.as_str(),
                to: transition.to.as_str(),
            })
            .inc();
        self.set_breaker_state(&transition.service, transition.to);
    }

    fn set_breaker_state(&self, service: &ServiceName, state: CircuitState) {
        self.breaker_state
            .get_or_create(&service_labels(service))
            .set(breaker_state_value(state));
    }

    /// The text exposition, with the gauges read from `breakers` and `queue`
    /// first when given.
    pub fn render(&self, breakers: Option<&BreakerRegistry>, queue: Option<&CallQueue>) -> String {
        if let Some(breakers) = breakers {
            for breaker in breakers.all() {
                self.set_breaker_state(breaker.service(), breaker.state());
            }
        }
        if let Some(queue) = queue {
            let counts = queue.counts();
            for (state, count) in [
                ("ready", counts.ready),
                ("deferred", counts.deferred),
                ("in_flight", counts.in_flight),
                ("completed", counts.completed),
                ("failed", counts.failed),
                ("expired", counts.expired),
            ] {
                self.contacts
                    .get_or_create(&StateLabels { state })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.lock());
        text
    }

    fn call_ended(&self, service: &ServiceName, outcome: &'static str) {
        self.calls
            .get_or_create(&OutcomeLabels {
                service: service.to_string(),
                outcome,
            })
            .inc();
    }

    fn attempt_took(&self, service: &ServiceName, result: &'static str, seconds: f64) {
        self.attempt_seconds
            .get_or_create(&ResultLabels {
                service: service.to_string(),
                result,
            })
            .observe(seconds);
    }
}

impl EventSink for Metrics {
    fn on_event(&self, event: &ResilienceEvent) {
        match event {
            ResilienceEvent::AttemptSucceeded(attempt) => {
                self.attempt_took(&attempt.service, "success", attempt.elapsed.as_secs_f64());
                // A success ends its call.
                self.call_ended(&attempt.service, "success");
            }
            ResilienceEvent::AttemptFailed { attempt, error } => {
                let result = if error.is_transient() {
                    "transient"
                } else {
                    "permanent"
                };
                self.attempt_took(&attempt.service, result, attempt.elapsed.as_secs_f64());
            }
            ResilienceEvent::RetryScheduled { service, .. } => {
                self.retries.get_or_create(&service_labels(service)).inc();
            }
            ResilienceEvent::RetriesExhausted { service, .. } => {
                self.call_ended(service, "exhausted");
            }
            ResilienceEvent::PermanentFailure { service, .. } => {
                self.call_ended(service, "permanent");
            }
            ResilienceEvent::CallRejected { service, .. } => {
                self.call_ended(service, "rejected");
            }
            ResilienceEvent::BreakerTransition(transition) => self.record_transition(transition),
            _ => {}
        }
    }
}

fn service_labels(service: &ServiceName) -> ServiceLabels {
    ServiceLabels {
        service: service.to_string(),
    }
}

/// The gauge value of a breaker state.
pub fn breaker_state_value(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        _ => 3,
    }
}

struct Scrape {
    metrics: Arc<Metrics>,
    breakers: Arc<BreakerRegistry>,
    queue: Arc<CallQueue>,
}

async fn scrape(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    let text = scrape
        .metrics
        .render(Some(&scrape.breakers), Some(&scrape.queue));
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text)
}

/// The `/metrics` server, and the task counting breaker transitions.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `/metrics` on `listen` and counts `breakers`' transitions until
    /// [`stop`](Self::stop).
    pub async fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        breakers: Arc<BreakerRegistry>,
        queue: Arc<CallQueue>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let watcher = tokio::spawn(count_transitions(
            breakers.transitions(),
            Arc::clone(&metrics),
        ));
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(Scrape {
                metrics,
                breakers,
                queue,
            }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!("Metrics served on http://{addr}/metrics");
        Ok(Self {
            addr,
            stop,
            server,
            watcher,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.watcher.abort();
        let _ = self.watcher.await;
    }
}

async fn count_transitions(
    mut transitions: broadcast::Receiver<Transition>,
    metrics: Arc<Metrics>,
) {
    loop {
        match transitions.recv().await {
            Ok(transition) => metrics.record_transition(&transition),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("Metrics missed {missed} breaker transitions");
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::{AttemptInfo, ErrorKind, ServiceError, TransitionReason};
    use std::time::Duration;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    #[test]
    fn events_become_series() {
        let metrics = Metrics::new();
        let tts = service("elevenlabs");
        let attempt = AttemptInfo {
            service: tts.clone(),
            retry_count: 0,
            circuit_state: CircuitState::Closed,
            elapsed: Duration::from_millis(30),
        };
        metrics.on_event(&ResilienceEvent::AttemptFailed {
            attempt: attempt.clone(),
            error: ServiceError::new(ErrorKind::Unavailable, "down"),
        });
        metrics.on_event(&ResilienceEvent::RetryScheduled {
            service: tts.clone(),
            retry_count: 1,
            delay: Duration::from_secs(5),
        });
        metrics.on_event(&ResilienceEvent::AttemptSucceeded(attempt));
        metrics.record_deferral(&tts);
        metrics.record_transition(&Transition {
            service: tts.clone(),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: TransitionReason::ConsecutiveFailures { count: 2 },
            generation: 1,
            at: tokio::time::Instant::now(),
            wall_time: std::time::SystemTime::now(),
        });
        let text = metrics.render(None, None);
        for line in [
            "callguard_retries_total{service=\"elevenlabs\"} 1",
            "callguard_calls_total{service=\"elevenlabs\",outcome=\"success\"} 1",
            "callguard_deferrals_total{service=\"elevenlabs\"} 1",
            "callguard_breaker_state{service=\"elevenlabs\"} 1",
            "callguard_breaker_transitions_total{service=\"elevenlabs\",from=\"CLOSED\",to=\"OPEN\"} 1",
            "callguard_attempt_duration_seconds_count{service=\"elevenlabs\",result=\"transient\"} 1",
            "callguard_attempt_duration_seconds_bucket{le=\"0.04\",service=\"elevenlabs\",result=\"success\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
