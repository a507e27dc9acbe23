//! A campaign run: workers taking contacts from the queue through the pipeline,
//! deferring the ones whose service is unavailable and waking them when its
//! breaker closes, the health checker in the background, a graceful shutdown,
//! and the summary of what became of every contact.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_alerts::{AlertCounts, AlertManager};
use callguard_breaker::BreakerRegistry;
use callguard_core::{CircuitState, ResilienceEvent, ServiceName, Transition};
use callguard_health::HealthChecker;
use callguard_retry::EventSink;
use callguard_telemetry::{Metrics, Progress, ProgressSnapshot};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, Interval};
use tracing::Instrument;

use crate::accounting::{Accounting, Census};
use crate::events::{EventHub, TransitionLog, TransitionRecord};
use crate::pipeline::{CallResult, Pipeline, call_span};
use crate::queue::{CallQueue, Deferral, QueueCounts, QueuedContact, Terminal};
use callguard_sheets_logger::SheetsStats;
use callguard_store::{ContactState, Renewals, StoreError};

/// A contact that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureRecord {
    /// The contact.
    pub contact_id: String,
    /// The service that failed.
    pub service: String,
    /// Why.
    pub reason: String,
}

/// A service's limiter at the end of a campaign, and what the service refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LimitRecord {
    /// The limiter's mode (`off`, `static`, `adaptive`).
    pub mode: &'static str,
    /// Calls it let be in flight at the end; `None`: no limit.
    pub limit: Option<u32>,
    /// The limit the provider announced last, if it did.
    pub provider_limit: Option<u32>,
    /// Attempts the service answered `429`.
    pub refused: u64,
}

/// What became of the campaign.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Contacts in the campaign.
    pub contacts: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended failed.
    pub failed: usize,
    /// Ended expired.
    pub expired: usize,
    /// Not finished at shutdown, and kept.
    pub pending: usize,
    /// Contacts of the campaign that ended in no state, or completed without
    /// their CRM record where the records can be read (must be 0; see
    /// [`accounting`](crate::accounting)).
    pub lost: usize,
    /// Contacts that ended in a second state, were given a second terminal
    /// state (or ended again by their holder, refused by the store), or have
    /// a second CRM record (must be 0).
    pub duplicated: usize,
    /// Contacts this agent's calls lost to another worker or agent after
    /// their lease expired (a slow call, a store out of reach): those calls
    /// were dropped and the contact is the new holder's. Neither lost nor
    /// duplicated.
    pub taken_over: u64,
    /// CRM records the completed contacts were matched with, when the CRM's
    /// records can be read (`simulate`).
    pub crm_records: Option<usize>,
    /// Retries made.
    pub retries: u64,
    /// Attempts made, first attempts included.
    pub attempts: u64,
    /// Attempts the breakers rejected.
    pub rejections: u64,
    /// Times a contact was deferred.
    pub deferrals: u64,
    /// Breaker transitions per service.
    pub breaker_transitions: BTreeMap<String, Vec<TransitionRecord>>,
    /// Per service that had a limit, was told one, or answered `429`: its
    /// limiter at the end and its `429`s.
    pub limits: BTreeMap<String, LimitRecord>,
    /// Alerts raised and suppressed, and what each channel did with them.
    pub alerts: AlertCounts,
    /// Failed contacts with their reasons.
    pub failures: Vec<FailureRecord>,
    /// What the Google Sheets log export sent and dropped, when configured.
    pub sheets: Option<SheetsStats>,
    /// Wall-clock length of the run in seconds.
    pub duration_secs: f64,
}

impl Summary {
    /// Whether every contact is accounted for exactly once.
    pub fn all_accounted_for(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }

    /// Matches the completed contacts of `end` (the store at the end of the
    /// campaign) with the CRM's `records`, one contact id each, counting the
    /// mismatches as lost or duplicated.
    pub fn match_records(&mut self, end: &Census, records: &[&str]) {
        let accounting = Accounting::of_records(end, records.iter().copied());
        self.lost += accounting.lost;
        self.duplicated += accounting.duplicated;
        self.crm_records = Some(records.len());
    }
}

/// Everything a campaign run needs.
pub struct Campaign {
    /// The stages.
    pub pipeline: Arc<Pipeline>,
    /// The breakers of the pipeline's services.
    pub registry: Arc<BreakerRegistry>,
    /// The contacts.
    pub queue: Arc<CallQueue>,
    /// Where every resilience event is published.
    pub events: Arc<EventHub>,
    /// The hub's counters, which the summary reads.
    pub metrics: Arc<Metrics>,
    /// The hub's record of breaker transitions, for the summary.
    pub transitions: Arc<TransitionLog>,
    /// The registry's transitions, subscribed to when the campaign was made:
    /// those before its first contact (a remote health server's or an
    /// operator's force, once their servers run) are published on the hub
    /// as well.
    pub breaker_feed: broadcast::Receiver<Transition>,
    /// Contacts called at once.
    pub workers: usize,
    /// How long a contact waits when its service gave no `retry_after`.
    pub default_wait: Duration,
    /// Background probes, if any.
    pub health: Option<HealthChecker>,
    /// Alerts to people (a subscriber of the hub): flushed when the campaign ends.
    pub alerts: AlertManager,
    /// How long in-flight calls may take to finish after shutdown is asked.
    pub shutdown_grace: Duration,
    /// Show the progress on the console while running.
    pub progress: bool,
}

impl Campaign {
    /// Runs until every contact has ended or `shutdown` completes; then stops
    /// taking contacts, lets in-flight calls finish within the grace period and
    /// returns the summary. Contacts not finished stay in the queue as pending.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Summary {
        let started = Instant::now();
        let wall_started = std::time::SystemTime::now();
        // The contacts given to the campaign: every one its store holds.
        let given = Census::take(&self.queue).await;
        let contacts = match &given {
            Ok(given) => given.len(),
            Err(_) => self.queue.refresh_counts().await.total(),
        };

        let (stop_follower, follower_stopped) = oneshot::channel();
        let follower = tokio::spawn(follow_breakers(
            self.breaker_feed,
            self.registry.clone(),
            self.queue.clone(),
            self.events.clone(),
            follower_stopped,
        ));
        let (stop_health, health_stopped) = oneshot::channel::<()>();
        let health = self.health.map(|checker| {
            tokio::spawn(checker.run(async move {
                let _ = health_stopped.await;
            }))
        });
        let (stop_progress, progress_stopped) = oneshot::channel::<()>();
        let progress = tokio::spawn(report_progress(
            self.queue.clone(),
            self.registry.clone(),
            contacts,
            self.progress,
            progress_stopped,
        ));

        let mut workers = JoinSet::new();
        for _ in 0..self.workers.max(1) {
            workers.spawn(work(
                self.queue.clone(),
                self.pipeline.clone(),
                self.events.clone(),
                self.default_wait,
            ));
        }

        let all_done = async { while workers.join_next().await.is_some() {} };
        tokio::select! {
            () = all_done => {}
            () = shutdown => {
                tracing::warn!("Shutdown requested: no new contacts are taken; finishing calls in flight");
                self.queue.close();
                let grace = tokio::time::timeout(self.shutdown_grace, async {
                    while workers.join_next().await.is_some() {}
                });
                if grace.await.is_err() {
                    tracing::warn!(
                        "Calls still in flight after {:?}; their contacts are kept as pending",
                        self.shutdown_grace
                    );
                    workers.shutdown().await;
                }
                self.queue.release_held().await;
            }
        }

        let _ = stop_progress.send(());
        let _ = progress.await;
        let _ = stop_health.send(());
        if let Some(task) = health {
            let _ = task.await;
        }
        let _ = stop_follower.send(());
        let _ = follower.await;

        let counts = self.queue.refresh_counts().await;
        let pending = counts.unfinished();
        let accounting = match (given, Census::take(&self.queue).await) {
            (Ok(given), Ok(end)) => Accounting::of_campaign(&given, &end),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(
                    "Cannot list the campaign's contacts to check that none was lost: {e}; \
                     all {contacts} are counted lost"
                );
                Accounting {
                    lost: contacts,
                    duplicated: 0,
                }
            }
        };
        let failures = self
            .queue
            .list(ContactState::Failed)
            .await
            .into_iter()
            .map(|failed| FailureRecord {
                contact_id: failed.id,
                service: failed.service.unwrap_or_default(),
                reason: failed.last_error.unwrap_or_default(),
            })
            .collect();
        let totals = self
            .metrics
            .totals(self.registry.all().iter().map(|b| b.service()));
        let alerts = self.alerts.shutdown(self.shutdown_grace).await;
        Summary {
            contacts,
            completed: counts.completed,
            failed: counts.failed,
            expired: counts.expired,
            pending,
            lost: accounting.lost,
            duplicated: accounting
                .duplicated
                .saturating_add(usize::try_from(self.queue.ended_twice()).unwrap_or(usize::MAX)),
            taken_over: self.queue.taken_over(),
            crm_records: None,
            retries: totals.retries,
            attempts: totals.attempts,
            rejections: totals.rejections,
            deferrals: totals.deferrals,
            breaker_transitions: self.transitions.records(started),
            limits: limit_records(&self.pipeline, &self.metrics),
            alerts,
            failures,
            sheets: None,
            duration_secs: wall_started.elapsed().unwrap_or_default().as_secs_f64(),
        }
    }
}

/// One worker: takes contacts until the queue has none left or is closed.
async fn work(
    queue: Arc<CallQueue>,
    pipeline: Arc<Pipeline>,
    events: Arc<EventHub>,
    default_wait: Duration,
) {
    let mut renewals = queue.renewals();
    while let Some(mut entry) = queue.next().await {
        let span = call_span(&entry.contact.id);
        let called = call_under_lease(&queue, &pipeline, &mut entry, &mut renewals, &span);
        let result = match called.await {
            Ok(result) => result,
            Err(lost) => {
                span.in_scope(|| tracing::warn!("Call abandoned: {lost}"));
                continue;
            }
        };
        pin!(settle(&queue, entry, result, &events, default_wait))
            .instrument(span)
            .await;
    }
}

/// Calls `entry` through `pipeline` in `span` while its lease is renewed
/// on `renewals`. If the lease is lost anyway (the store was unreachable for
/// a whole lease), the contact is someone else's now: the call is dropped
/// and the loss returned.
pub async fn call_under_lease(
    queue: &CallQueue,
    pipeline: &Pipeline,
    entry: &mut QueuedContact,
    renewals: &mut Renewals,
    span: &tracing::Span,
) -> Result<CallResult, StoreError> {
    let (contact, progress, lease) = entry.split();
    // The call's future is kilobytes: pinned where it is made, in the
    // worker's own future, rather than boxed per contact (an allocation that
    // large makes the allocator consolidate its free lists) or copied into
    // a span's wrapper and the select; the wrapper holds the pinned reference.
    let call = pin!(pipeline.call(contact, progress));
    tokio::select! {
        result = call.instrument(span.clone()) => Ok(result),
        lost = queue.hold(lease, renewals) => Err(lost),
    }
}

async fn settle(
    queue: &CallQueue,
    entry: QueuedContact,
    result: CallResult,
    events: &EventHub,
    default_wait: Duration,
) {
    let busy = matches!(result, CallResult::Busy { .. });
    match result {
        CallResult::Completed => queue.finish(entry, Terminal::Completed).await,
        CallResult::Failed { service, reason } => {
            let contact_id = &entry.contact.id;
            tracing::error!(
                contact_id = %contact_id,
                service = %service,
                error_category = "permanent",
                "Contact {contact_id} failed: {reason}"
            );
            queue
                .finish(
                    entry,
                    Terminal::Failed {
                        service: service.to_string(),
                        reason,
                    },
                )
                .await;
        }
        CallResult::Unavailable {
            service,
            retry_after,
        }
        | CallResult::Busy {
            service,
            retry_after,
        } => {
            defer(
                queue,
                entry,
                &service,
                retry_after.unwrap_or(default_wait),
                events,
                busy,
            )
            .await
        }
    }
}

/// Sends `entry` back to the queue for `wait`: because `service` is busy
/// (not counted toward `max_deferrals`) or unavailable.
async fn defer(
    queue: &CallQueue,
    entry: QueuedContact,
    service: &ServiceName,
    wait: Duration,
    events: &EventHub,
    busy: bool,
) {
    let contact_id = entry.contact.id.clone();
    let deferral = entry.deferrals + 1;
    events.on_event(&ResilienceEvent::Deferred {
        service: service.clone(),
        wait,
    });
    let not_before = Instant::now() + wait;
    let (outcome, why) = if busy {
        (queue.defer_busy(entry, service, not_before).await, "busy")
    } else {
        (queue.defer(entry, service, not_before).await, "unavailable")
    };
    match outcome {
        Deferral::Requeued => tracing::info!(
            contact_id = %contact_id,
            service = %service,
            deferral,
            "Contact {contact_id} deferred: {service} {why}; retrying in {:.1}s or when its breaker closes",
            wait.as_secs_f64()
        ),
        Deferral::Expired => tracing::error!(
            contact_id = %contact_id,
            service = %service,
            "Contact {contact_id} expired: {service} still unavailable after {} deferrals",
            deferral - 1
        ),
        Deferral::Unsaved => {}
    }
}

/// The limiters of `pipeline` that limited something, were told a limit or
/// were refused, with their services' `429`s.
fn limit_records(pipeline: &Pipeline, metrics: &Metrics) -> BTreeMap<String, LimitRecord> {
    pipeline
        .limiters()
        .iter()
        .map(|limiter| {
            let snapshot = limiter.snapshot();
            let record = LimitRecord {
                mode: snapshot.mode.as_str(),
                limit: snapshot.limit,
                provider_limit: snapshot.provider_limit,
                refused: metrics.refused(limiter.service()),
            };
            (limiter.service().to_string(), record)
        })
        .filter(|(_, r)| r.limit.is_some() || r.provider_limit.is_some() || r.refused > 0)
        .collect()
}

/// Follows the breakers: publishes each transition of `transitions` (the
/// registry's) on the hub (metrics, alerts, the summary's log), then keeps deferred contacts
/// in step with their service's breaker: they wake when it closes, and when
/// it (re)opens none is due before it admits calls again — so a contact
/// turned away while a HALF_OPEN probe was in flight is not turned away a
/// second time when the probe fails.
async fn follow_breakers(
    mut transitions: broadcast::Receiver<Transition>,
    registry: Arc<BreakerRegistry>,
    queue: Arc<CallQueue>,
    events: Arc<EventHub>,
    mut stop: oneshot::Receiver<()>,
) {
    let on_transition = async |transition: Transition| {
        let service = transition.service.clone();
        let to = transition.to;
        events.on_event(&ResilienceEvent::BreakerTransition(transition));
        if to == CircuitState::Open {
            let reopened_for = registry
                .get(service.as_str())
                .and_then(|breaker| breaker.snapshot().retry_after);
            if let Some(wait) = reopened_for {
                queue.postpone_service(&service, wait).await;
            }
        }
        if to == CircuitState::Closed {
            let woken = queue.wake_service(&service).await;
            if woken > 0 {
                tracing::info!(
                    service = %service,
                    circuit_state = "CLOSED",
                    "{service} recovered: {woken} deferred contact(s) resume"
                );
            }
        }
    };
    loop {
        tokio::select! {
            received = transitions.recv() => match received {
                Ok(transition) => on_transition(transition).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!("Missed {missed} breaker transitions");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = &mut stop => {
                while let Ok(transition) = transitions.try_recv() {
                    on_transition(transition).await;
                }
                break;
            }
        }
    }
}

/// The store's counts (read into `queue`), or since when the store has been
/// out of reach, when its counts would be stale. Reading them waits for the
/// saves in flight, which retry while the store is out of reach, so each
/// `tick` meanwhile looks again rather than the wait lasting as long as they
/// retry.
async fn counts_unless_unreachable(
    queue: &CallQueue,
    ticker: &mut Interval,
) -> Result<QueueCounts, (SystemTime, Instant)> {
    let mut refresh = pin!(queue.refresh_counts());
    loop {
        if let Some(outage) = queue.store().health().unreachable_since {
            return Err(outage);
        }
        tokio::select! {
            counts = &mut refresh => return Ok(counts),
            _ = ticker.tick() => {}
        }
    }
}

/// Reads the queue's counts from the store (what `/metrics` shows) and, if
/// `print`, shows where the campaign stands on the console's progress (a bar
/// on a terminal, an occasional plain line otherwise). The counts are read
/// as often as the progress is updated, every second when nothing is shown.
async fn report_progress(
    queue: Arc<CallQueue>,
    registry: Arc<BreakerRegistry>,
    total: usize,
    print: bool,
    mut stop: oneshot::Receiver<()>,
) {
    let mut progress = print.then(|| Progress::start(total));
    let every = progress
        .as_ref()
        .and_then(Progress::every)
        .unwrap_or(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        let counts = tokio::select! {
            counts = counts_unless_unreachable(&queue, &mut ticker) => counts,
            _ = &mut stop => break,
        };
        let Some(progress) = &mut progress else {
            continue;
        };
        match counts {
            Err((since, at)) => progress.hold(format!(
                "call store unreachable since {} ({:.0}s); reconnecting",
                humantime::format_rfc3339_seconds(since),
                at.elapsed().as_secs_f64()
            )),
            Ok(counts) => progress.update(&ProgressSnapshot {
                total,
                completed: counts.completed,
                failed: counts.failed,
                expired: counts.expired,
                deferred: counts.deferred,
                in_flight: counts.in_flight,
                breakers: registry
                    .all()
                    .iter()
                    .map(|b| (b.service().to_string(), b.state()))
                    .collect(),
            }),
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
}
