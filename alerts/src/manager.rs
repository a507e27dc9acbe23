//! The [`AlertManager`]: dedup, then one bounded queue and one delivery task
//! per channel, each channel calling through its own retry policy and circuit
//! breaker (`callguard_retry::Executor`).
//!
//! [`raise`](AlertManager::raise) never waits: it takes a short lock for the
//! dedup table and `try_send`s to each channel's queue. A slow or dead channel
//! fills only its own queue; once full, new alerts for it are dropped, logged
//! and counted. A channel whose breaker is open fails its alerts at once,
//! without waiting for timeouts, until the breaker lets a probe through.
//! Nothing is lost silently: every alert ends delivered, failed (after its
//! retries, logged with the reason), dropped (queue full or shut down) or
//! suppressed (dedup), and each outcome is counted.

use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use callguard_breaker::{BreakerRegistry, CircuitBreaker};
use callguard_core::{ResilienceEvent, ServiceName, Transition};
use callguard_retry::{EventSink, Executor};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::channel::email::Email;
use crate::channel::telegram::Telegram;
use crate::channel::webhook::Webhook;
use crate::channel::{Channel, ChannelKind};
use crate::config::{AlertsConfig, Delivery};
use crate::dedup::Dedup;
use crate::{Alert, AlertsError, Severity};

/// Raises alerts and delivers them off the call path. Cheap to clone; every
/// clone feeds the same queues.
#[derive(Clone)]
pub struct AlertManager {
    inner: Arc<Inner>,
}

struct Inner {
    dedup: Mutex<Dedup>,
    channels: Vec<Lane>,
    raised: AtomicU64,
    suppressed: AtomicU64,
    closed: AtomicBool,
    /// Wakes `flush` whenever a channel finishes an alert.
    progress: Arc<Notify>,
    breakers: OnceLock<Arc<BreakerRegistry>>,
}

/// One channel: its queue, its breaker, its counts and its delivery task.
struct Lane {
    kind: ChannelKind,
    queue: mpsc::Sender<Arc<Alert>>,
    breaker: Arc<CircuitBreaker>,
    counters: Arc<Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Queued or being delivered.
    pending: AtomicU64,
}

/// What became of a raised alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Raised {
    /// It passed dedup and was handed to every channel with room for it.
    Accepted,
    /// An alert of the same (service, kind) went out within the cooldown; this
    /// one is counted and reported with the next.
    Suppressed,
}

/// Counts of one channel's outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ChannelCounts {
    /// The channel.
    pub channel: ChannelKind,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts that could not be delivered after their retries, or that the
    /// channel's open breaker refused.
    pub failed: u64,
    /// Alerts never tried: the queue was full, or the manager had shut down.
    pub dropped: u64,
    /// Alerts queued or being delivered now.
    pub pending: u64,
}

/// Counts of everything the manager did, for the agent's summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AlertCounts {
    /// Alerts that passed dedup (sent to every channel).
    pub raised: u64,
    /// Alerts suppressed by the cooldown (never sent to any channel).
    pub suppressed: u64,
    /// Per channel, in the order email, Telegram, webhook (those configured).
    pub channels: Vec<ChannelCounts>,
}

impl AlertCounts {
    /// The counts of `channel`, if it is configured.
    pub fn channel(&self, channel: ChannelKind) -> Option<&ChannelCounts> {
        self.channels.iter().find(|c| c.channel == channel)
    }
}

impl AlertManager {
    /// Validates `config` and starts one delivery task per configured channel
    /// on the current tokio runtime. With no channel configured, alerts are
    /// still deduplicated, logged and counted.
    pub fn new(config: &AlertsConfig) -> Result<Self, AlertsError> {
        config.validate()?;
        let progress = Arc::new(Notify::new());
        let mut channels = Vec::new();
        if let Some(email) = &config.email {
            channels.push(Lane::start(
                Box::new(Email::new(email)?),
                &email.delivery(),
                config.queue_capacity,
                &progress,
            )?);
        }
        if let Some(telegram) = &config.telegram {
            channels.push(Lane::start(
                Box::new(Telegram::new(telegram)?),
                &telegram.delivery(),
                config.queue_capacity,
                &progress,
            )?);
        }
        if let Some(webhook) = &config.webhook {
            let channel = Webhook::new(webhook)?;
            tracing::debug!(origin = %channel.origin(), "webhook alerts enabled");
            channels.push(Lane::start(
                Box::new(channel),
                &webhook.delivery(),
                config.queue_capacity,
                &progress,
            )?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dedup: Mutex::new(Dedup::new(config.cooldown.get())),
                channels,
                raised: AtomicU64::new(0),
                suppressed: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                progress,
                breakers: OnceLock::new(),
            }),
        })
    }

    /// Fills in the breaker state of alerts raised without one from
    /// `registry` (the state of the service's breaker when raised). Set once;
    /// later calls are ignored.
    #[must_use]
    pub fn with_breakers(self, registry: Arc<BreakerRegistry>) -> Self {
        let _ = self.inner.breakers.set(registry);
        self
    }

    /// The channels configured.
    pub fn channels(&self) -> Vec<ChannelKind> {
        self.inner.channels.iter().map(|lane| lane.kind).collect()
    }

    /// The circuit breaker of `channel`, if it is configured (named
    /// `alerts-email`, `alerts-telegram`, `alerts-webhook`; not in any registry).
    pub fn breaker(&self, channel: ChannelKind) -> Option<&Arc<CircuitBreaker>> {
        self.inner
            .channels
            .iter()
            .find(|lane| lane.kind == channel)
            .map(|lane| &lane.breaker)
    }

    /// Raises `alert`: deduplicated, logged, and queued on every channel.
    /// Never waits and never fails; a full queue drops the alert for that
    /// channel (logged and counted).
    pub fn raise(&self, mut alert: Alert) -> Raised {
        let inner = &*self.inner;
        let admitted = inner
            .dedup
            .lock()
            .admit(&alert.service, alert.kind, Instant::now());
        let Some(suppressed) = admitted else {
            inner.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                service = %alert.service,
                alert_kind = alert.kind.as_str(),
                "alert suppressed by the cooldown"
            );
            return Raised::Suppressed;
        };
        alert.suppressed = suppressed;
        if alert.circuit_state.is_none() {
            alert.circuit_state = inner
                .breakers
                .get()
                .and_then(|registry| registry.get(alert.service.as_str()))
                .map(|breaker| breaker.state());
        }
        inner.raised.fetch_add(1, Ordering::Relaxed);
        log_raised(&alert);
        let closed = inner.closed.load(Ordering::Acquire);
        let alert = Arc::new(alert);
        for lane in &inner.channels {
            lane.enqueue(&alert, closed);
        }
        Raised::Accepted
    }

    /// Raises the alert `event` calls for, if any: a permanent failure,
    /// exhausted retries, or a breaker opening or closing. Rejected calls,
    /// retries and successes raise nothing.
    pub fn observe_event(&self, event: &ResilienceEvent) -> Option<Raised> {
        match event {
            ResilienceEvent::BreakerTransition(transition) => self.observe_transition(transition),
            other => Alert::from_event(other).map(|alert| self.raise(alert)),
        }
    }

    /// Raises the alert a breaker transition calls for: into OPEN (one alert
    /// per transition, however many calls the open breaker then rejects) or
    /// back to CLOSED (the resolve notice). Feed each transition once: from
    /// an event hub, or from [`watch_transitions`](Self::watch_transitions).
    pub fn observe_transition(&self, transition: &Transition) -> Option<Raised> {
        Alert::from_transition(transition).map(|alert| self.raise(alert))
    }

    /// Feeds a breaker transition stream (e.g. `BreakerRegistry::transitions()`)
    /// into [`observe_transition`](Self::observe_transition) until the stream
    /// closes or every manager clone is gone. Transitions missed because the
    /// task lagged behind are logged.
    pub fn watch_transitions(
        &self,
        mut transitions: broadcast::Receiver<Transition>,
    ) -> JoinHandle<()> {
        let manager: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                match transitions.recv().await {
                    Ok(transition) => match manager.upgrade() {
                        Some(inner) => {
                            AlertManager { inner }.observe_transition(&transition);
                        }
                        None => return,
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "alerts missed breaker transitions (lagging)");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// Counts so far.
    pub fn counts(&self) -> AlertCounts {
        AlertCounts {
            raised: self.inner.raised.load(Ordering::Relaxed),
            suppressed: self.inner.suppressed.load(Ordering::Relaxed),
            channels: self.inner.channels.iter().map(Lane::counts).collect(),
        }
    }

    /// Waits until every queued alert is delivered or has failed, or until
    /// `timeout` has passed; returns whether all were done.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let inner = &*self.inner;
        let idle = || {
            inner
                .channels
                .iter()
                .all(|lane| lane.counters.pending.load(Ordering::Acquire) == 0)
        };
        let wait = async {
            loop {
                let notified = inner.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if idle() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Stops taking alerts (later ones are dropped and counted), gives the
    /// queues until `timeout` to drain, then stops the delivery tasks; alerts
    /// still undelivered are logged and counted as dropped. Returns the final
    /// counts.
    pub async fn shutdown(&self, timeout: Duration) -> AlertCounts {
        self.inner.closed.store(true, Ordering::Release);
        if !self.flush(timeout).await {
            for lane in &self.inner.channels {
                let left = lane.counters.pending.swap(0, Ordering::AcqRel);
                if left > 0 {
                    lane.counters.dropped.fetch_add(left, Ordering::Relaxed);
                    tracing::warn!(
                        channel = lane.kind.as_str(),
                        alerts = left,
                        "alerts not delivered before the shutdown deadline"
                    );
                }
            }
        }
        for lane in &self.inner.channels {
            if let Some(task) = lane.task.lock().take() {
                task.abort();
            }
        }
        self.counts()
    }
}

impl EventSink for AlertManager {
    fn on_event(&self, event: &ResilienceEvent) {
        self.observe_event(event);
    }
}

impl fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertManager")
            .field("channels", &self.channels())
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

fn log_raised(alert: &Alert) {
    macro_rules! raised {
        ($level:ident) => {
            tracing::$level!(
                service = %alert.service,
                alert_kind = alert.kind.as_str(),
                severity = alert.severity.as_str(),
                error_category = alert.error_category.map(|c| c.as_str()),
                circuit_state = alert.circuit_state.map(|s| s.as_str()),
                contact_id = alert.contact_id.as_deref(),
                trace_id = %alert.trace_id,
                suppressed = alert.suppressed,
                "alert: {}",
                alert.summary
            )
        };
    }
    match alert.severity {
        Severity::Info => raised!(info),
        Severity::Warning | Severity::Critical => raised!(warn),
    }
}

impl Lane {
    fn start(
        channel: Box<dyn Channel>,
        delivery: &Delivery,
        capacity: usize,
        progress: &Arc<Notify>,
    ) -> Result<Self, AlertsError> {
        let kind = channel.kind();
        let name = ServiceName::new(kind.breaker_name())
            .unwrap_or_else(|e| unreachable!("channel breaker names are valid: {e}"));
        let breaker = Arc::new(CircuitBreaker::new(name, delivery.circuit_breaker.clone()));
        let executor = Executor::new(Arc::clone(&breaker), delivery.retry.clone())
            .map_err(|e| AlertsError::Config(e.in_section(&format!("alerts.{kind}"))))?;
        let (queue, receiver) = mpsc::channel(capacity);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(deliver(
            channel,
            executor,
            receiver,
            Arc::clone(&counters),
            Arc::clone(progress),
        ));
        Ok(Self {
            kind,
            queue,
            breaker,
            counters,
            task: Mutex::new(Some(task)),
        })
    }

    fn enqueue(&self, alert: &Arc<Alert>, closed: bool) {
        let why = if closed {
            "the alert manager has shut down"
        } else {
            // Counted before the send, so the delivery task never sees it negative.
            self.counters.pending.fetch_add(1, Ordering::AcqRel);
            let Err(refused) = self.queue.try_send(Arc::clone(alert)) else {
                return;
            };
            self.counters.pending.fetch_sub(1, Ordering::AcqRel);
            match refused {
                mpsc::error::TrySendError::Full(_) => "the channel's queue is full",
                mpsc::error::TrySendError::Closed(_) => "the channel's delivery task has stopped",
            }
        };
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            channel = self.kind.as_str(),
            service = %alert.service,
            alert_kind = alert.kind.as_str(),
            trace_id = %alert.trace_id,
            "alert dropped: {why}"
        );
    }

    fn counts(&self) -> ChannelCounts {
        let c = &self.counters;
        ChannelCounts {
            channel: self.kind,
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
        }
    }
}

/// A channel's delivery task: one alert at a time, each part through the
/// channel's executor (retry around its breaker).
async fn deliver(
    channel: Box<dyn Channel>,
    executor: Executor,
    mut queue: mpsc::Receiver<Arc<Alert>>,
    counters: Arc<Counters>,
    progress: Arc<Notify>,
) {
    let kind = channel.kind();
    while let Some(alert) = queue.recv().await {
        let parts = channel.parts(&alert);
        let mut outcome = Ok(());
        for part in 0..parts {
            outcome = executor.call(|_| channel.send(&alert, part)).await;
            if outcome.is_err() {
                break;
            }
        }
        match outcome {
            Ok(()) => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    channel = kind.as_str(),
                    service = %alert.service,
                    alert_kind = alert.kind.as_str(),
                    trace_id = %alert.trace_id,
                    parts,
                    "alert delivered"
                );
            }
            Err(error) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    channel = kind.as_str(),
                    service = %alert.service,
                    alert_kind = alert.kind.as_str(),
                    trace_id = %alert.trace_id,
                    error_category = error.last_error().map(|e| e.category().as_str()),
                    circuit_state = executor.breaker().state().as_str(),
                    reason = %error,
                    "alert could not be delivered"
                );
            }
        }
        // Saturating: a shutdown past its deadline may have zeroed it.
        let _ = counters
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        progress.notify_waiters();
    }
}
