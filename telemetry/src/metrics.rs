//! Prometheus metrics: counters fed by the event hub (the executors' events,
//! breaker transitions, deferrals) — the one place the campaign's counts are
//! kept, which the summary reads through [`Metrics::totals`]; gauges
//! (breaker state, the limiters, contacts by state) read from their owners
//! when rendered.
//!
//! Every series is named `callguard_…`:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `callguard_calls_total` | counter | `service`, `outcome` (`success`, `permanent`, `exhausted`, `rejected`) |
//! | `callguard_attempts_total` | counter | `service`, `result` (`success`, `transient`, `permanent`) |
//! | `callguard_attempts_refused_total` | counter | `service` (attempts it answered `429`: over its concurrency or rate limit) |
//! | `callguard_attempt_duration_seconds` | histogram | `service`, `result` |
//! | `callguard_retries_total` | counter | `service` |
//! | `callguard_rejections_total` | counter | `service` (calls the breaker turned away) |
//! | `callguard_breaker_state` | gauge | `service`, `state` (`CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN`): 1 for the breaker's state, 0 for the other three |
//! | `callguard_breaker_transitions_total` | counter | `service`, `from`, `to` |
//! | `callguard_deferrals_total` | counter | `service` (the stage's primary service) |
//! | `callguard_limit` | gauge | `service`: the calls its limiter lets be in flight now (absent while it has no limit: mode `off` before the provider announced one) |
//! | `callguard_limit_in_flight` | gauge | `service`: attempts holding a slot of its limiter |
//! | `callguard_limit_waiting` | gauge | `service`: attempts waiting for a slot |
//! | `callguard_contacts` | gauge | `state`, as the [`ContactGauge`] names them (the agent's queue: `ready`, `deferred`, `in_flight`, `completed`, `failed`, `expired`) |
//! | `callguard_store_up` | gauge | — (1 while the call store's database answers, 0 while it is out of reach; from the [`ContactGauge`]) |
//! | `callguard_store_errors_total` | counter | — (store statements that failed, each try counted) |
//! | `callguard_alerts_total` | counter | `result` (`raised`, `suppressed`) |
//! | `callguard_alert_notifications_total` | counter | `channel`, `result` (`delivered`, `failed`, `dropped`) |
//! | `callguard_alert_notifications_pending` | gauge | `channel` |
//! | `callguard_sheets_rows_total` | counter | `result` (`sent`, `dropped`); with `[sheets]` only |
//! | `callguard_otlp_export_failures_total` | counter | — (span batches the OTLP exporter could not send) |
//! | `callguard_health_probes_total` | counter | `service`, `result` (`healthy`, `unhealthy`, `not_counted`): the health checker's probes ([`Metrics::record_probe`]) |
//! | `callguard_build_info` | info (value 1) | `version` (the workspace's), `arch`, `os` |
//!
//! The breaker state is a state set, as OpenMetrics' StateSet: one series
//! per state, the current one 1, rather than one series holding a coded
//! number. A query then names the state it means
//! (`callguard_breaker_state{state="OPEN"} == 1`), an alert's labels say the
//! state, and `max` over replicas or services stays meaningful (some replica
//! is OPEN), where a code would make `max` pick an arbitrary ordering.
//!
//! Recording is cheap next to an HTTP call, so it is always on: each
//! service's series are looked up in their families once, at their first
//! event, and kept ([`ServiceSeries`]), so an event costs a lookup by the
//! service's name without a lock ([`SeriesList`]) and an atomic add — no
//! label set built, no string allocated. The limiter, alert, Sheets and OTLP
//! series are read from their owners ([`Metrics::watch_limiters`],
//! [`Metrics::watch_alerts`], [`Metrics::watch_telemetry`]) when rendered.
//!
//! The contacts gauge is read through [`ContactGauge`], a one-method trait
//! the agent's call queue implements, so these metrics know no type of the
//! agent (which depends on this crate, never the reverse). A trait rather
//! than a closure: the states and their labels are named once, in one impl
//! beside the counts they come from; the server keeps an
//! `Arc<dyn ContactGauge>` the queue's own `Arc` turns into without a
//! wrapper; and a test hands in a fixed gauge just as easily.

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};

use callguard_alerts::AlertManager;
use callguard_breaker::BreakerRegistry;
use callguard_core::{CircuitState, ErrorKind, ResilienceEvent, ServiceName, Transition};
use callguard_limit::Limiter;
use callguard_retry::EventSink;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;

use crate::otel::ExportFailures;
use crate::sheets::SheetsCounts;
use crate::subscriber::Telemetry;

/// Where the campaign's contacts are, read each time the metrics are
/// rendered for the `callguard_contacts` gauge.
pub trait ContactGauge: Send + Sync {
    /// The number of contacts in each state, as `(state, count)`: the
    /// `state` label and the gauge's value.
    fn contacts_by_state(&self) -> Vec<(&'static str, usize)>;

    /// Whether the contacts' store answers, if it can be out of reach: the
    /// `callguard_store_up` and `callguard_store_errors_total` series.
    fn store_status(&self) -> Option<StoreStatus> {
        None
    }
}

/// The call store's reachability, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// Whether its database answers.
    pub up: bool,
    /// Statements that failed so far.
    pub errors: u64,
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
struct BreakerStateLabels {
    service: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    arch: &'static str,
    os: &'static str,
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CountLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelResultLabels {
    channel: &'static str,
    result: &'static str,
}

/// What the series read at scrape time are read from.
#[derive(Default)]
struct Sources {
    limiters: Vec<Arc<Limiter>>,
    alerts: Option<AlertManager>,
    sheets: Option<SheetsCounts>,
    export_failures: Option<ExportFailures>,
}

/// Attempt latency buckets: 5 ms to about 41 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The agent's metrics: the registry every series is in, fed as an
/// [`EventSink`].
pub struct Metrics {
    registry: Mutex<Registry>,
    calls: Family<OutcomeLabels, Counter>,
    attempts: Family<ResultLabels, Counter>,
    refused: Family<ServiceLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    rejections: Family<ServiceLabels, Counter>,
    attempt_seconds: Family<ResultLabels, Histogram, fn() -> Histogram>,
    breaker_state: Family<BreakerStateLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    deferrals: Family<ServiceLabels, Counter>,
    limit: Family<ServiceLabels, Gauge>,
    limit_in_flight: Family<ServiceLabels, Gauge>,
    limit_waiting: Family<ServiceLabels, Gauge>,
    contacts: Family<StateLabels, Gauge>,
    alerts: Family<CountLabels, Counter>,
    notifications: Family<ChannelResultLabels, Counter>,
    notifications_pending: Family<ChannelLabels, Gauge>,
    sheets_rows: Family<CountLabels, Counter>,
    export_failures: Counter,
    probes: Family<ResultLabels, Counter>,
    store_up: Gauge,
    store_errors: Counter,
    sources: Mutex<Sources>,
    /// The series of each service the hub's events have fed so far.
    by_service: SeriesList,
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
            attempts: Family::default(),
            refused: Family::default(),
            retries: Family::default(),
            rejections: Family::default(),
            attempt_seconds: Family::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            transitions: Family::default(),
            deferrals: Family::default(),
            limit: Family::default(),
            limit_in_flight: Family::default(),
            limit_waiting: Family::default(),
            contacts: Family::default(),
            alerts: Family::default(),
            notifications: Family::default(),
            notifications_pending: Family::default(),
            sheets_rows: Family::default(),
            export_failures: Counter::default(),
            probes: Family::default(),
            store_up: Gauge::default(),
            store_errors: Counter::default(),
            sources: Mutex::new(Sources::default()),
            by_service: SeriesList::default(),
        };
        {
            let mut registry = metrics.registry.lock();
            registry.register(
                "calls",
                "Calls to a service by how they ended",
                metrics.calls.clone(),
            );
            registry.register(
                "attempts",
                "Attempts (HTTP requests) by how they ended",
                metrics.attempts.clone(),
            );
            registry.register(
                "attempts_refused",
                "Attempts the service answered 429: over its concurrency or rate limit",
                metrics.refused.clone(),
            );
            registry.register(
                "retries",
                "Retries scheduled after a transient failure",
                metrics.retries.clone(),
            );
            registry.register(
                "rejections",
                "Calls the circuit breaker turned away",
                metrics.rejections.clone(),
            );
            registry.register(
                "attempt_duration_seconds",
                "Duration of one attempt (one HTTP request)",
                metrics.attempt_seconds.clone(),
            );
            registry.register(
                "breaker_state",
                "Circuit breaker state: 1 for the state the breaker is in, 0 for the others",
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
            registry.register(
                "limit",
                "Calls a service's limiter lets be in flight now",
                metrics.limit.clone(),
            );
            registry.register(
                "limit_in_flight",
                "Attempts holding a slot of a service's limiter",
                metrics.limit_in_flight.clone(),
            );
            registry.register(
                "limit_waiting",
                "Attempts waiting for a slot of a service's limiter",
                metrics.limit_waiting.clone(),
            );
            registry.register("contacts", "Contacts by state", metrics.contacts.clone());
            registry.register(
                "store_up",
                "1 while the call store's database answers, 0 while it is out of reach",
                metrics.store_up.clone(),
            );
            registry.register(
                "store_errors",
                "Call store statements that failed",
                metrics.store_errors.clone(),
            );
            registry.register(
                "alerts",
                "Alerts raised (sent to every channel) and suppressed by the cooldown",
                metrics.alerts.clone(),
            );
            registry.register(
                "alert_notifications",
                "Alerts a channel delivered, failed to deliver, or dropped untried",
                metrics.notifications.clone(),
            );
            registry.register(
                "alert_notifications_pending",
                "Alerts queued or being delivered on a channel",
                metrics.notifications_pending.clone(),
            );
            registry.register(
                "sheets_rows",
                "Log rows sent to the Google Sheet, or dropped",
                metrics.sheets_rows.clone(),
            );
            registry.register(
                "otlp_export_failures",
                "Span batches the OTLP exporter could not send",
                metrics.export_failures.clone(),
            );
            registry.register(
                "health_probes",
                "Health probes of a service by what they found",
                metrics.probes.clone(),
            );
            registry.register(
                "build",
                "The callguard build serving these metrics",
                Info::new(BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                    arch: std::env::consts::ARCH,
                    os: std::env::consts::OS,
                }),
            );
        }
        metrics
    }

    /// Counts one health probe of `service` that found `result` (`healthy`,
    /// `unhealthy`, `not_counted`).
    pub fn record_probe(&self, service: &ServiceName, result: &'static str) {
        self.probes
            .get_or_create(&ResultLabels {
                service: service.to_string(),
                result,
            })
            .inc();
    }

    /// Counts the transitions of `registry`'s breakers (and shows each
    /// breaker's new state) in a task of its own, in a process without an
    /// event hub (`health-server`); an agent's transitions come through its
    /// hub. Ends once the registry is dropped.
    pub fn count_transitions(self: &Arc<Self>, registry: &BreakerRegistry) {
        let metrics = Arc::clone(self);
        let mut transitions = registry.transitions();
        tokio::spawn(async move {
            loop {
                match transitions.recv().await {
                    Ok(transition) => metrics.record_transition(&transition),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!("/metrics missed {missed} breaker transitions");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Reads each service's limit, calls in flight and calls waiting from
    /// `limiters` when scraped.
    pub fn watch_limiters(&self, limiters: Vec<Arc<Limiter>>) {
        self.sources.lock().limiters = limiters;
    }

    /// Reads the alerts' counts from `alerts` when scraped.
    pub fn watch_alerts(&self, alerts: AlertManager) {
        self.sources.lock().alerts = Some(alerts);
    }

    /// Reads the OTLP export failures and the Google Sheets rows (when
    /// configured) from `telemetry` when scraped.
    pub fn watch_telemetry(&self, telemetry: &Telemetry) {
        let mut sources = self.sources.lock();
        sources.export_failures = Some(telemetry.export_failures());
        sources.sheets = telemetry.sheets_counts();
    }

    /// Copies the counts kept elsewhere into their series.
    fn read_sources(&self) {
        let sources = self.sources.lock();
        for limiter in &sources.limiters {
            let snapshot = limiter.snapshot();
            let labels = service_labels(&snapshot.service);
            match snapshot.limit {
                Some(limit) => {
                    self.limit.get_or_create(&labels).set(i64::from(limit));
                }
                None => {
                    self.limit.remove(&labels);
                }
            }
            self.limit_in_flight
                .get_or_create(&labels)
                .set(i64::from(snapshot.in_flight));
            self.limit_waiting
                .get_or_create(&labels)
                .set(i64::from(snapshot.waiting));
        }
        if let Some(alerts) = &sources.alerts {
            let counts = alerts.counts();
            set_counter(
                &self.alerts.get_or_create(&CountLabels { result: "raised" }),
                counts.raised,
            );
            set_counter(
                &self.alerts.get_or_create(&CountLabels {
                    result: "suppressed",
                }),
                counts.suppressed,
            );
            for lane in &counts.channels {
                let channel = lane.channel.as_str();
                for (result, count) in [
                    ("delivered", lane.delivered),
                    ("failed", lane.failed),
                    ("dropped", lane.dropped),
                ] {
                    set_counter(
                        &self
                            .notifications
                            .get_or_create(&ChannelResultLabels { channel, result }),
                        count,
                    );
                }
                self.notifications_pending
                    .get_or_create(&ChannelLabels { channel })
                    .set(i64::try_from(lane.pending).unwrap_or(i64::MAX));
            }
        }
        if let Some(sheets) = &sources.sheets {
            let stats = sheets.stats();
            for (result, count) in [("sent", stats.rows_sent), ("dropped", stats.rows_dropped)] {
                set_counter(
                    &self.sheets_rows.get_or_create(&CountLabels { result }),
                    count,
                );
            }
        }
        if let Some(failures) = &sources.export_failures {
            set_counter(&self.export_failures, failures.get());
        }
    }

    fn record_transition(&self, transition: &Transition) {
        self.transitions
            .get_or_create(&TransitionLabels {
                service: transition.service.to_string(),
                from: transition.from.as_str(),
                to: transition.to.as_str(),
            })
            .inc();
        self.set_breaker_state(&transition.service, transition.to);
    }

    /// The run's totals over `services`, read from the series.
    pub fn totals<'a>(&self, services: impl IntoIterator<Item = &'a ServiceName>) -> Totals {
        let mut totals = Totals::default();
        let count = |family: &Family<ServiceLabels, Counter>, labels: &ServiceLabels| {
            family.get(labels).map_or(0, |counter| counter.get())
        };
        for service in services {
            let labels = service_labels(service);
            for result in AttemptResult::ALL {
                totals.attempts += self
                    .attempts
                    .get(&ResultLabels {
                        service: labels.service.clone(),
                        result: result.as_str(),
                    })
                    .map_or(0, |counter| counter.get());
            }
            totals.retries += count(&self.retries, &labels);
            totals.rejections += count(&self.rejections, &labels);
            totals.deferrals += count(&self.deferrals, &labels);
        }
        totals
    }

    /// Attempts `service` answered `429` (over its concurrency or rate
    /// limit) so far.
    pub fn refused(&self, service: &ServiceName) -> u64 {
        self.refused
            .get(&service_labels(service))
            .map_or(0, |counter| counter.get())
    }

    fn set_breaker_state(&self, service: &ServiceName, state: CircuitState) {
        for each in BREAKER_STATES {
            self.breaker_state
                .get_or_create(&BreakerStateLabels {
                    service: service.to_string(),
                    state: each.as_str(),
                })
                .set(i64::from(each == state));
        }
    }

    /// The text exposition, with the gauges read from `breakers` and
    /// `contacts` first when given.
    pub fn render(
        &self,
        breakers: Option<&BreakerRegistry>,
        contacts: Option<&dyn ContactGauge>,
    ) -> String {
        self.read_sources();
        if let Some(breakers) = breakers {
            for breaker in breakers.all() {
                self.set_breaker_state(breaker.service(), breaker.state());
            }
        }
        if let Some(contacts) = contacts {
            for (state, count) in contacts.contacts_by_state() {
                self.contacts
                    .get_or_create(&StateLabels { state })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            if let Some(store) = contacts.store_status() {
                self.store_up.set(i64::from(store.up));
                set_counter(&self.store_errors, store.errors);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry.lock());
        text
    }

    /// The series of `service`, made (empty) at its first event.
    fn series(&self, service: &ServiceName) -> &ServiceSeries {
        self.by_service.get_or_add(service)
    }

    fn call_ended(&self, series: &ServiceSeries, service: &ServiceName, outcome: CallOutcome) {
        series.calls[outcome as usize]
            .get_or_init(|| {
                self.calls.get_or_create_owned(&OutcomeLabels {
                    service: service.to_string(),
                    outcome: outcome.as_str(),
                })
            })
            .inc();
    }

    fn attempt_took(
        &self,
        series: &ServiceSeries,
        service: &ServiceName,
        result: AttemptResult,
        seconds: f64,
    ) {
        let (count, duration) = series.attempts[result as usize].get_or_init(|| {
            let labels = ResultLabels {
                service: service.to_string(),
                result: result.as_str(),
            };
            (
                self.attempts.get_or_create_owned(&labels),
                self.attempt_seconds.get_or_create_owned(&labels),
            )
        });
        count.inc();
        duration.observe(seconds);
    }
}

/// Counts every event of the hub.
impl EventSink for Metrics {
    fn on_event(&self, event: &ResilienceEvent) {
        let counter = |cell: &OnceLock<Counter>,
                       family: &Family<ServiceLabels, Counter>,
                       service: &ServiceName| {
            cell.get_or_init(|| family.get_or_create_owned(&service_labels(service)))
                .inc();
        };
        match event {
            ResilienceEvent::AttemptSucceeded(attempt) => {
                let series = self.series(&attempt.service);
                let seconds = attempt.elapsed.as_secs_f64();
                self.attempt_took(series, &attempt.service, AttemptResult::Success, seconds);
                // A success ends its call.
                self.call_ended(series, &attempt.service, CallOutcome::Success);
            }
            ResilienceEvent::AttemptFailed { attempt, error } => {
                let series = self.series(&attempt.service);
                let result = if error.is_transient() {
                    AttemptResult::Transient
                } else {
                    AttemptResult::Permanent
                };
                let seconds = attempt.elapsed.as_secs_f64();
                self.attempt_took(series, &attempt.service, result, seconds);
                if matches!(
                    error.kind(),
                    ErrorKind::ConcurrencyLimited | ErrorKind::RateLimited
                ) {
                    counter(&series.refused, &self.refused, &attempt.service);
                }
            }
            ResilienceEvent::RetryScheduled { service, .. } => {
                counter(&self.series(service).retries, &self.retries, service);
            }
            ResilienceEvent::RetriesExhausted { service, .. } => {
                self.call_ended(self.series(service), service, CallOutcome::Exhausted);
            }
            ResilienceEvent::PermanentFailure { service, .. } => {
                self.call_ended(self.series(service), service, CallOutcome::Permanent);
            }
            ResilienceEvent::CallRejected { service, .. } => {
                let series = self.series(service);
                counter(&series.rejections, &self.rejections, service);
                self.call_ended(series, service, CallOutcome::Rejected);
            }
            ResilienceEvent::BreakerTransition(transition) => self.record_transition(transition),
            ResilienceEvent::Deferred { service, .. } => {
                counter(&self.series(service).deferrals, &self.deferrals, service);
            }
            _ => {}
        }
    }
}

/// Each service's [`ServiceSeries`], in a list that only grows: found by
/// following it with plain loads, so an event takes no lock and writes
/// nothing the cores share but its counters (a lock, or a reference count,
/// would write to memory every core reads, on every event). A campaign has a
/// handful of services, so a walk is a few steps; two events adding
/// services at once meet at the same link, where one adds its node and the
/// other, finding it, goes on to the next.
#[derive(Default)]
struct SeriesList {
    first: OnceLock<Box<SeriesNode>>,
}

struct SeriesNode {
    service: ServiceName,
    series: ServiceSeries,
    next: OnceLock<Box<SeriesNode>>,
}

impl SeriesList {
    /// The series of `service`, added at the end of the list if not in it.
    fn get_or_add(&self, service: &ServiceName) -> &ServiceSeries {
        let mut link = &self.first;
        loop {
            let node = link.get_or_init(|| {
                Box::new(SeriesNode {
                    service: service.clone(),
                    series: ServiceSeries::default(),
                    next: OnceLock::new(),
                })
            });
            if node.service == *service {
                return &node.series;
            }
            link = &node.next;
        }
    }
}

/// One service's series of the hub's events, each taken from its family at
/// its first event and kept. A series that has had no event is not made,
/// so `/metrics` shows the same series as if each event were counted in its
/// family directly.
#[derive(Default)]
struct ServiceSeries {
    /// `callguard_attempts_total` and `callguard_attempt_duration_seconds`,
    /// by [`AttemptResult`].
    attempts: [OnceLock<(Counter, Histogram)>; 3],
    /// `callguard_calls_total`, by [`CallOutcome`].
    calls: [OnceLock<Counter>; 4],
    refused: OnceLock<Counter>,
    retries: OnceLock<Counter>,
    rejections: OnceLock<Counter>,
    deferrals: OnceLock<Counter>,
}

/// The `result` label of an attempt's series.
#[derive(Debug, Clone, Copy)]
enum AttemptResult {
    Success,
    Transient,
    Permanent,
}

impl AttemptResult {
    const ALL: [Self; 3] = [Self::Success, Self::Transient, Self::Permanent];

    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// The `outcome` label of `callguard_calls_total`.
#[derive(Debug, Clone, Copy)]
enum CallOutcome {
    Success,
    Permanent,
    Exhausted,
    Rejected,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::Rejected => "rejected",
        }
    }
}

/// What a run did, summed over its services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Attempts made, first attempts included.
    pub attempts: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Attempts the breakers turned away.
    pub rejections: u64,
    /// Contacts sent back to the queue.
    pub deferrals: u64,
}

/// Sets a counter mirroring a count kept elsewhere (which only grows).
fn set_counter(counter: &Counter, value: u64) {
    counter
        .inner()
        .store(value, std::sync::atomic::Ordering::Relaxed);
}

fn service_labels(service: &ServiceName) -> ServiceLabels {
    ServiceLabels {
        service: service.to_string(),
    }
}

/// Every state a breaker can be in: one `callguard_breaker_state` series each.
const BREAKER_STATES: [CircuitState; 4] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
];

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::{AttemptInfo, ErrorKind, ServiceError, TransitionReason};
    use std::time::Duration;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).unwrap()
    }

    #[test]
    fn limiters_are_read_when_rendered() {
        use callguard_limit::{LimitConfig, Outcome, ProviderHeaders};
        let fixed = Arc::new(Limiter::new(service("elevenlabs"), LimitConfig::fixed(5)).unwrap());
        let off = Arc::new(Limiter::new(service("crm"), LimitConfig::default()).unwrap());
        let metrics = Metrics::new();
        metrics.watch_limiters(vec![fixed.clone(), off.clone()]);
        assert!(
            metrics
                .render(None, None)
                .contains("callguard_limit{service=\"crm\"} 1"),
            "one request until the first answer"
        );
        // An answer without limit headers: the CRM announces no limit.
        off.try_acquire().unwrap().complete(
            Outcome::Success {
                latency: Duration::from_millis(5),
            },
            &ProviderHeaders::NONE,
        );
        let held = [fixed.try_acquire().unwrap(), fixed.try_acquire().unwrap()];
        let text = metrics.render(None, None);
        for line in [
            "callguard_limit{service=\"elevenlabs\"} 5",
            "callguard_limit_in_flight{service=\"elevenlabs\"} 2",
            "callguard_limit_waiting{service=\"elevenlabs\"} 0",
            "callguard_limit_in_flight{service=\"crm\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !text.contains("callguard_limit{service=\"crm\"}"),
            "no limit, no series:\n{text}"
        );
        drop(held);
        let text = metrics.render(None, None);
        assert!(
            text.contains("callguard_limit_in_flight{service=\"elevenlabs\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn probes_are_counted_by_result() {
        let metrics = Metrics::new();
        let tts = service("elevenlabs");
        metrics.record_probe(&tts, "healthy");
        metrics.record_probe(&tts, "unhealthy");
        metrics.record_probe(&tts, "unhealthy");
        let text = metrics.render(None, None);
        for line in [
            "callguard_health_probes_total{service=\"elevenlabs\",result=\"healthy\"} 1",
            "callguard_health_probes_total{service=\"elevenlabs\",result=\"unhealthy\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn services_added_at_once_each_get_one_series() {
        let list = SeriesList::default();
        let names = ["llm", "elevenlabs", "crm", "openai", "playht"];
        // Each thread adds every service, starting at a different one, so
        // that threads meet at the same link with different services.
        let found: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..names.len())
                .map(|start| {
                    let list = &list;
                    scope.spawn(move || {
                        let mut found = vec![0; names.len()];
                        for step in 0..names.len() {
                            let index = (start + step) % names.len();
                            let series = list.get_or_add(&service(names[index]));
                            found[index] = std::ptr::from_ref(series) as usize;
                        }
                        found
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for each in &found[1..] {
            assert_eq!(each, &found[0], "one series per service, whoever added it");
        }
        let mut distinct = found[0].clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            names.len(),
            "a series of its own per service"
        );
        let mut listed = Vec::new();
        let mut link = &list.first;
        while let Some(node) = link.get() {
            listed.push(node.service.to_string());
            link = &node.next;
        }
        listed.sort_unstable();
        let mut expected = names.map(str::to_owned).to_vec();
        expected.sort_unstable();
        assert_eq!(listed, expected, "each service listed once");
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
        for kind in [ErrorKind::ConcurrencyLimited, ErrorKind::RateLimited] {
            metrics.on_event(&ResilienceEvent::AttemptFailed {
                attempt: attempt.clone(),
                error: ServiceError::new(kind, "429"),
            });
        }
        assert_eq!(metrics.refused(&tts), 2, "429s, not the 503");
        assert_eq!(metrics.refused(&service("llm")), 0);
        metrics.on_event(&ResilienceEvent::AttemptSucceeded(attempt));
        metrics.on_event(&ResilienceEvent::CallRejected {
            service: tts.clone(),
            circuit_state: CircuitState::Open,
            retry_count: 0,
            retry_after: None,
        });
        metrics.on_event(&ResilienceEvent::Deferred {
            service: tts.clone(),
            wait: Duration::from_secs(5),
        });
        metrics.on_event(&ResilienceEvent::BreakerTransition(Transition {
            service: tts.clone(),
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: TransitionReason::ConsecutiveFailures { count: 2 },
            generation: 1,
            at: tokio::time::Instant::now(),
            wall_time: std::time::SystemTime::now(),
        }));
        assert_eq!(
            metrics.totals([&tts]),
            Totals {
                attempts: 4,
                retries: 1,
                rejections: 1,
                deferrals: 1,
            }
        );
        let text = metrics.render(None, None);
        for line in [
            "callguard_retries_total{service=\"elevenlabs\"} 1",
            "callguard_calls_total{service=\"elevenlabs\",outcome=\"success\"} 1",
            "callguard_calls_total{service=\"elevenlabs\",outcome=\"rejected\"} 1",
            "callguard_rejections_total{service=\"elevenlabs\"} 1",
            "callguard_attempts_total{service=\"elevenlabs\",result=\"transient\"} 3",
            "callguard_attempts_refused_total{service=\"elevenlabs\"} 2",
            "callguard_attempts_total{service=\"elevenlabs\",result=\"success\"} 1",
            "callguard_deferrals_total{service=\"elevenlabs\"} 1",
            "callguard_breaker_state{service=\"elevenlabs\",state=\"OPEN\"} 1",
            "callguard_breaker_state{service=\"elevenlabs\",state=\"CLOSED\"} 0",
            "callguard_breaker_state{service=\"elevenlabs\",state=\"HALF_OPEN\"} 0",
            "callguard_breaker_state{service=\"elevenlabs\",state=\"FORCED_OPEN\"} 0",
            "callguard_breaker_transitions_total{service=\"elevenlabs\",from=\"CLOSED\",to=\"OPEN\"} 1",
            "callguard_attempt_duration_seconds_count{service=\"elevenlabs\",result=\"transient\"} 3",
            "callguard_attempt_duration_seconds_bucket{le=\"0.04\",service=\"elevenlabs\",result=\"success\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_build_is_one_info_series() {
        let text = Metrics::new().render(None, None);
        let line = format!(
            "callguard_build_info{{version=\"{}\",arch=\"{}\",os=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            std::env::consts::OS,
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
        assert!(text.contains("# TYPE callguard_build info\n"), "{text}");
    }

    #[test]
    fn the_store_status_is_read_when_rendered() {
        struct Unreachable;
        impl ContactGauge for Unreachable {
            fn contacts_by_state(&self) -> Vec<(&'static str, usize)> {
                vec![("ready", 2)]
            }
            fn store_status(&self) -> Option<StoreStatus> {
                Some(StoreStatus {
                    up: false,
                    errors: 3,
                })
            }
        }
        let metrics = Metrics::new();
        let text = metrics.render(None, Some(&Unreachable));
        for line in ["callguard_store_up 0", "callguard_store_errors_total 3"] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
