//! The circuit breaker state machine.
//!
//! The state and a generation number share one `AtomicU64` (`generation << 2 |
//! state`). Every transition bumps the generation, and so does a reset or
//! force-close of a breaker already CLOSED (without a transition), so a result
//! reported by a call admitted earlier is recognised and ignored. A CLOSED
//! call's result is checked by the failure streak and the failure-rate window
//! themselves: they are stamped with the generation they count for and updated
//! by compare-and-swap, so checking and counting are one step and a result
//! racing a transition counts nowhere (`stamped.rs`). A probe's result is
//! checked under the mutex.
//! CLOSED admission is one atomic load; recording a success in CLOSED is one
//! more (the streak, which carries the generation), a compare-and-swap only
//! when a streak is being reset, and, with a failure-rate window, the window's
//! claim and slot write. A rejection borrows the breaker: nothing is cloned.
//! An OPEN breaker rejects without reading the clock while its recovery timer
//! runs (`recovery.rs`: a task started on entering OPEN, inside a tokio
//! runtime, marks the moment the timeout passes); the wait is measured only
//! when [`Rejection::retry_after`] asks. Without a runtime to run the timer,
//! a rejection reads the clock and compares it with the deadline instead.
//! Transitions and HALF_OPEN probe bookkeeping take a mutex; the state watch
//! and transition channels are fed under that mutex so that subscribers see
//! transitions in order, and the log line is written after it is released.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_core::{
    CircuitState, ManualAction, ServiceError, ServiceName, Transition, TransitionReason,
};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::recovery::RecoveryMark;
use crate::stamped::Stamped;
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::window::Window;

const TRANSITION_CHANNEL_CAPACITY: usize = 256;

/// The wait a rejection answers when the recovery timeout has passed but the
/// runtime's timer has not fired yet: its resolution, so that callers come
/// back once it has rather than at once.
const TIMER_TICK: Duration = Duration::from_millis(1);

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;

#[inline]
fn pack(generation: u64, state: CircuitState) -> u64 {
    let code = match state {
        CircuitState::Closed => CLOSED,
        CircuitState::Open => OPEN,
        CircuitState::HalfOpen => HALF_OPEN,
        CircuitState::ForcedOpen => FORCED_OPEN,
    };
    generation << 2 | code
}

#[inline]
fn unpack(word: u64) -> (u64, CircuitState) {
    let state = match word & 0b11 {
        CLOSED => CircuitState::Closed,
        OPEN => CircuitState::Open,
        HALF_OPEN => CircuitState::HalfOpen,
        _ => CircuitState::ForcedOpen,
    };
    (word >> 2, state)
}

/// A call was not admitted because the breaker is not CLOSED (or its HALF_OPEN
/// probe slots are taken): the owned form of a [`Rejection`], for errors that
/// outlive the breaker's borrow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker for {service} is {state}{}", RetryAfterSuffix(*.retry_after))]
pub struct BreakerOpen {
    /// The service whose breaker rejected the call.
    pub service: ServiceName,
    /// The breaker's state at rejection.
    pub state: CircuitState,
    /// When the breaker expects to admit a call again; `None` when only a manual
    /// command will (FORCED_OPEN).
    pub retry_after: Option<Duration>,
}

/// A call the breaker turned away, as [`CircuitBreaker::try_acquire`] returns
/// it. It borrows the breaker and keeps the wait in nanoseconds, or the
/// deadline to measure it from, so turning a call away clones, allocates and
/// divides nothing, and reads the clock only if the wait is asked for;
/// `BreakerOpen::from` makes it owned.
#[derive(Clone, Copy)]
pub struct Rejection<'a> {
    breaker: &'a CircuitBreaker,
    state: CircuitState,
    wait: Wait,
}

/// How long a rejected call should wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Until a manual command (FORCED_OPEN).
    ForACommand,
    /// This many nanoseconds from the rejection.
    Nanos(u64),
    /// Until this deadline, in nanoseconds since the breaker's epoch: the
    /// wait is measured when asked for.
    Until(u64),
}

impl<'a> Rejection<'a> {
    /// The service whose breaker rejected the call.
    pub fn service(&self) -> &'a ServiceName {
        &self.breaker.service
    }

    /// The breaker's state at rejection.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// When the breaker expects to admit a call again; `None` when only a
    /// manual command will (FORCED_OPEN). For an OPEN breaker, the time left
    /// when asked; once the recovery timeout has passed but the runtime's timer
    /// has not fired yet, one timer tick (1 ms), never zero.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.wait {
            Wait::ForACommand => None,
            Wait::Nanos(wait) => Some(nanos(wait)),
            Wait::Until(deadline) => Some(self.breaker.wait_until(deadline)),
        }
    }
}

impl From<Rejection<'_>> for BreakerOpen {
    fn from(rejection: Rejection<'_>) -> Self {
        Self {
            service: rejection.service().clone(),
            state: rejection.state,
            retry_after: rejection.retry_after(),
        }
    }
}

impl std::fmt::Debug for Rejection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejection")
            .field("service", self.service())
            .field("state", &self.state)
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

impl std::fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        BreakerOpen::from(*self).fmt(f)
    }
}

impl std::error::Error for Rejection<'_> {}

struct RetryAfterSuffix(Option<Duration>);

impl std::fmt::Display for RetryAfterSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(wait) => write!(f, "; retry after {:.1}s", wait.as_secs_f64()),
            None => Ok(()),
        }
    }
}

/// Who forced a breaker open. An operator outranks the remote: a remote
/// release never undoes an operator's force-open, and an operator's
/// force-open of a breaker the remote forced takes it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForcedBy {
    /// A person or program giving manual commands (the admin API, the library).
    Operator,
    /// Another process's health server, through the remote health watcher.
    Remote,
}

/// A point-in-time view of a breaker, for status APIs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    /// The service.
    pub service: ServiceName,
    /// Current state.
    pub state: CircuitState,
    /// Who holds a FORCED_OPEN breaker open; `None` in every other state.
    pub forced_by: Option<ForcedBy>,
    /// The current generation: bumped by every transition, and by a reset or
    /// force-close of a breaker already CLOSED (which publishes none).
    pub generation: u64,
    /// Consecutive failures recorded in CLOSED.
    pub consecutive_failures: u32,
    /// Failure share over the sliding window, when one is configured and holds calls.
    pub failure_rate: Option<f64>,
    /// The last transition, if any.
    pub last_transition: Option<Transition>,
    /// Time left before an OPEN breaker admits probes.
    pub retry_after: Option<Duration>,
}

/// How a call admitted by a [`Permit`] ended, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Ignored,
}

/// Where a failure in CLOSED counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// A call's failure: in the streak and in the failure-rate window.
    AsACall,
    /// A failure seen outside a call (a health probe): in the streak only.
    InTheStreakOnly,
}

struct ProbeSlot {
    id: u64,
    started: Instant,
}

/// State guarded by the mutex: HALF_OPEN probe bookkeeping, the owner of a
/// forced-open and the last transition.
struct Guarded {
    probes: Vec<ProbeSlot>,
    next_probe_id: u64,
    probe_successes: u32,
    forced_by: Option<ForcedBy>,
    last_transition: Option<Transition>,
    /// The OPEN generation's recovery timer, aborted by the next transition.
    recovery_timer: Option<AbortHandle>,
}

/// A circuit breaker for one service. Share it as `Arc<CircuitBreaker>`.
pub struct CircuitBreaker {
    service: ServiceName,
    config: BreakerConfig,
    /// Time origin for the nanosecond deadlines kept in atomics.
    epoch: Instant,
    word: AtomicU64,
    /// Consecutive failures, stamped with the generation they count for.
    streak: Stamped,
    /// While OPEN: nanoseconds since `epoch` at which probes may start.
    open_until: AtomicU64,
    /// Whether the OPEN generation's recovery timer still runs.
    recovery: RecoveryMark,
    window: Option<Window>,
    guarded: Mutex<Guarded>,
    state_tx: watch::Sender<CircuitState>,
    transitions_tx: broadcast::Sender<Transition>,
    shared_tx: Option<broadcast::Sender<Transition>>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("service", &self.service)
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for CircuitBreaker {
    fn drop(&mut self) {
        if let Some(timer) = self.guarded.lock().recovery_timer.take() {
            timer.abort();
        }
    }
}

impl CircuitBreaker {
    /// A CLOSED breaker for `service`. The config should have passed
    /// [`BreakerConfig::validate`]; zero thresholds are treated as 1.
    pub fn new(service: ServiceName, config: BreakerConfig) -> Self {
        Self::with_shared_channel(service, config, None)
    }

    pub(crate) fn with_shared_channel(
        service: ServiceName,
        mut config: BreakerConfig,
        shared_tx: Option<broadcast::Sender<Transition>>,
    ) -> Self {
        config.failure_threshold = config.failure_threshold.max(1);
        config.half_open_max_calls = config.half_open_max_calls.max(1);
        config.success_threshold = config.success_threshold.max(1);
        let window = config.failure_rate.as_ref().map(Window::new);
        let (state_tx, _) = watch::channel(CircuitState::Closed);
        let (transitions_tx, _) = broadcast::channel(TRANSITION_CHANNEL_CAPACITY);
        Self {
            service,
            config,
            epoch: Instant::now(),
            word: AtomicU64::new(pack(0, CircuitState::Closed)),
            streak: Stamped::new(0, 0),
            open_until: AtomicU64::new(0),
            recovery: RecoveryMark::new(),
            window,
            guarded: Mutex::new(Guarded {
                probes: Vec::new(),
                next_probe_id: 0,
                probe_successes: 0,
                forced_by: None,
                last_transition: None,
                recovery_timer: None,
            }),
            state_tx,
            transitions_tx,
            shared_tx,
        }
    }

    /// The service this breaker guards.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The settings in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state. An OPEN breaker whose recovery timeout has passed
    /// still reads OPEN until the next call moves it to HALF_OPEN.
    #[inline]
    pub fn state(&self) -> CircuitState {
        unpack(self.word.load(Ordering::Acquire)).1
    }

    /// Asks to make a call. In CLOSED this is a single atomic load; in OPEN
    /// before the recovery timeout, two atomic loads more, and a clock read
    /// only when no recovery timer runs (it has fired, or the breaker opened
    /// outside a tokio runtime).
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejection<'_>> {
        let word = self.word.load(Ordering::Acquire);
        match unpack(word) {
            (generation, CircuitState::Closed) => Ok(Permit {
                breaker: self,
                generation,
                state: CircuitState::Closed,
                probe: None,
            }),
            (generation, CircuitState::Open) if self.recovery.is_running(generation) => {
                let until = self.open_until.load(Ordering::Acquire);
                Err(self.rejection(CircuitState::Open, Wait::Until(until)))
            }
            (_, CircuitState::Open) => self.acquire_open_by_the_clock(),
            (_, CircuitState::HalfOpen) => self.acquire_contended(),
            (_, CircuitState::ForcedOpen) => {
                Err(self.rejection(CircuitState::ForcedOpen, Wait::ForACommand))
            }
        }
    }

    /// Admission in OPEN with no recovery timer running: the clock says
    /// whether the recovery timeout has passed. Kept out of `try_acquire` so
    /// that the CLOSED path stays small enough to be inlined.
    fn acquire_open_by_the_clock(&self) -> Result<Permit<'_>, Rejection<'_>> {
        let now = self.nanos_since_epoch(Instant::now());
        let until = self.open_until.load(Ordering::Acquire);
        if now < until {
            Err(self.rejection(CircuitState::Open, Wait::Nanos(until - now)))
        } else {
            self.acquire_contended()
        }
    }

    /// Admission in OPEN-past-timeout and HALF_OPEN: under the lock, so that no
    /// more than `half_open_max_calls` probes are ever admitted at once.
    #[cold]
    fn acquire_contended(&self) -> Result<Permit<'_>, Rejection<'_>> {
        let mut guarded = self.guarded.lock();
        let now = Instant::now();
        let (generation, state) = unpack(self.word.load(Ordering::Acquire));
        let mut published = None;
        let result = match state {
            CircuitState::Closed => Ok(Permit {
                breaker: self,
                generation,
                state,
                probe: None,
            }),
            CircuitState::ForcedOpen => Err(self.rejection(state, Wait::ForACommand)),
            CircuitState::Open => {
                let until = self.open_until.load(Ordering::Acquire);
                let now_nanos = self.nanos_since_epoch(now);
                if now_nanos < until {
                    Err(self.rejection(state, Wait::Nanos(until - now_nanos)))
                } else {
                    published = Some(self.transition_locked(
                        &mut guarded,
                        CircuitState::HalfOpen,
                        TransitionReason::RecoveryTimeoutElapsed,
                    ));
                    self.admit_probe(&mut guarded, now)
                }
            }
            CircuitState::HalfOpen => self.admit_probe(&mut guarded, now),
        };
        drop(guarded);
        if let Some(transition) = published {
            log_transition(&transition);
        }
        result
    }

    fn admit_probe(
        &self,
        guarded: &mut Guarded,
        now: Instant,
    ) -> Result<Permit<'_>, Rejection<'_>> {
        // A probe that never reported back frees its slot after recovery_timeout.
        let timeout = self.config.recovery_timeout.get();
        guarded
            .probes
            .retain(|slot| now.saturating_duration_since(slot.started) < timeout);
        if guarded.probes.len() < self.config.half_open_max_calls as usize {
            let id = guarded.next_probe_id;
            guarded.next_probe_id += 1;
            guarded.probes.push(ProbeSlot { id, started: now });
            let (generation, _) = unpack(self.word.load(Ordering::Acquire));
            Ok(Permit {
                breaker: self,
                generation,
                state: CircuitState::HalfOpen,
                probe: Some(id),
            })
        } else {
            let oldest = guarded.probes.iter().map(|slot| slot.started).min();
            let now = self.nanos_since_epoch(now);
            let wait = oldest.map_or(Wait::ForACommand, |started| {
                Wait::Nanos(
                    self.nanos_since_epoch(started + timeout)
                        .saturating_sub(now),
                )
            });
            Err(self.rejection(CircuitState::HalfOpen, wait))
        }
    }

    #[inline]
    fn rejection(&self, state: CircuitState, wait: Wait) -> Rejection<'_> {
        Rejection {
            breaker: self,
            state,
            wait,
        }
    }

    /// Applies the outcome of a permitted call.
    #[inline]
    /// A result from an earlier generation is ignored: a CLOSED call's by the
    /// stamps of the streak and the window, a probe's under the lock.
    fn on_result(&self, generation: u64, probe: Option<u64>, outcome: Outcome) {
        match probe {
            None => self.on_closed_result(generation, outcome),
            Some(id) => self.on_probe_result(generation, id, outcome),
        }
    }

    #[inline]
    fn on_closed_result(&self, generation: u64, outcome: Outcome) {
        match outcome {
            Outcome::Success => {
                match self.streak.get(generation) {
                    None => return, // a result from an earlier generation
                    Some(0) => {}
                    Some(_) => {
                        self.streak.update(generation, |_| 0);
                    }
                }
                if let Some(window) = &self.window {
                    window.record(generation, false);
                }
            }
            Outcome::Failure => self.on_closed_failure(generation, Counted::AsACall),
            Outcome::Ignored => {}
        }
    }

    fn on_closed_failure(&self, generation: u64, counted: Counted) {
        // Checking the generation and counting are one compare-and-swap: a
        // failure whose generation ended, even a moment ago, counts nowhere.
        let Some(count) = self.streak.update(generation, |n| n.saturating_add(1)) else {
            return;
        };
        let rate_trip = match (&self.window, counted) {
            (Some(window), Counted::AsACall) => window.record(generation, true),
            _ => None,
        };
        let reason = if count >= self.config.failure_threshold {
            TransitionReason::ConsecutiveFailures { count }
        } else if let Some(counts) = rate_trip {
            TransitionReason::FailureRate {
                failures: counts.failures,
                calls: counts.calls,
            }
        } else {
            return;
        };
        self.transition_if(
            |g, s| g == generation && s == CircuitState::Closed,
            CircuitState::Open,
            reason,
        );
    }

    fn on_probe_result(&self, generation: u64, id: u64, outcome: Outcome) {
        let mut guarded = self.guarded.lock();
        let (current, state) = unpack(self.word.load(Ordering::Acquire));
        if current != generation || state != CircuitState::HalfOpen {
            return;
        }
        let Some(position) = guarded.probes.iter().position(|slot| slot.id == id) else {
            return; // its slot expired and was handed to another probe
        };
        guarded.probes.swap_remove(position);
        let published = match outcome {
            Outcome::Ignored => None,
            Outcome::Failure => Some(self.transition_locked(
                &mut guarded,
                CircuitState::Open,
                TransitionReason::ProbeFailed,
            )),
            Outcome::Success => {
                guarded.probe_successes += 1;
                let count = guarded.probe_successes;
                (count >= self.config.success_threshold).then(|| {
                    self.transition_locked(
                        &mut guarded,
                        CircuitState::Closed,
                        TransitionReason::ProbesSucceeded { count },
                    )
                })
            }
        };
        drop(guarded);
        if let Some(transition) = published {
            log_transition(&transition);
        }
    }

    /// Records a failure seen outside a permitted call, such as a failed health
    /// probe: it counts toward the consecutive-failure streak of a CLOSED
    /// breaker and reopens a HALF_OPEN one. It stays out of the failure-rate
    /// window, which is the share of *calls* that failed: probes come at a
    /// fixed pace whatever the traffic, and only their failures are evidence
    /// (a shallow health endpoint may answer while real calls fail).
    pub fn record_failure(&self) {
        match unpack(self.word.load(Ordering::Acquire)) {
            (generation, CircuitState::Closed) => {
                self.on_closed_failure(generation, Counted::InTheStreakOnly);
            }
            (generation, CircuitState::HalfOpen) => {
                self.transition_if(
                    |g, s| g == generation && s == CircuitState::HalfOpen,
                    CircuitState::Open,
                    TransitionReason::ProbeFailed,
                );
            }
            (_, CircuitState::Open | CircuitState::ForcedOpen) => {}
        }
    }

    /// A health check found the service healthy: an OPEN or HALF_OPEN breaker
    /// closes (the seed's rule). CLOSED and FORCED_OPEN are left alone.
    /// Returns whether the breaker moved.
    pub fn close_on_recovery(&self) -> bool {
        self.transition_if(
            |_, s| matches!(s, CircuitState::Open | CircuitState::HalfOpen),
            CircuitState::Closed,
            TransitionReason::HealthCheckRecovered,
        )
    }

    /// A health check found the service healthy, cautious variant: an OPEN
    /// breaker moves to HALF_OPEN so that real calls confirm the recovery.
    /// Returns whether the breaker moved.
    pub fn half_open_on_recovery(&self) -> bool {
        self.transition_if(
            |_, s| s == CircuitState::Open,
            CircuitState::HalfOpen,
            TransitionReason::HealthCheckRecovered,
        )
    }

    /// An operator's force-open: rejects every call until
    /// [`force_close`](Self::force_close) or [`reset`](Self::reset). `note` says
    /// who or why (logged and carried in the transition). A breaker the remote
    /// forced open passes to the operator, with no transition.
    pub fn force_open(&self, note: &str) {
        self.force_open_by(ForcedBy::Operator, note);
    }

    /// Forces the breaker open on behalf of `by`. Returns whether the breaker
    /// moved to FORCED_OPEN or passed to `by`: an operator takes over what the
    /// remote forced, the remote takes over nothing.
    pub fn force_open_by(&self, by: ForcedBy, note: &str) -> bool {
        let mut guarded = self.guarded.lock();
        if self.state() == CircuitState::ForcedOpen {
            let takes_over =
                by == ForcedBy::Operator && guarded.forced_by == Some(ForcedBy::Remote);
            if takes_over {
                guarded.forced_by = Some(by);
                drop(guarded);
                tracing::info!(
                    service = %self.service,
                    circuit_state = %CircuitState::ForcedOpen,
                    "Circuit breaker for {}: manual {} ({note}); the operator now holds what the remote forced open",
                    self.service,
                    ManualAction::ForceOpen
                );
            }
            return takes_over;
        }
        let transition = self.transition_locked(
            &mut guarded,
            CircuitState::ForcedOpen,
            manual_reason(ManualAction::ForceOpen, note),
        );
        guarded.forced_by = Some(by);
        drop(guarded);
        log_transition(&transition);
        true
    }

    /// Closes the breaker if it is FORCED_OPEN on behalf of `by` (and nobody
    /// took it over); returns whether it did. The remote watcher releases
    /// only what the remote forced.
    pub fn release(&self, by: ForcedBy, note: &str) -> bool {
        let mut guarded = self.guarded.lock();
        if self.state() != CircuitState::ForcedOpen || guarded.forced_by != Some(by) {
            return false;
        }
        let transition = self.transition_locked(
            &mut guarded,
            CircuitState::Closed,
            manual_reason(ManualAction::ForceClose, note),
        );
        drop(guarded);
        log_transition(&transition);
        true
    }

    /// Closes the breaker whatever its state and whoever forced it open,
    /// clearing failure counts.
    pub fn force_close(&self, note: &str) {
        self.manual_close(ManualAction::ForceClose, note);
    }

    /// Returns to a fresh CLOSED breaker: failure counts and window cleared.
    pub fn reset(&self, note: &str) {
        self.manual_close(ManualAction::Reset, note);
    }

    fn manual_close(&self, action: ManualAction, note: &str) {
        let mut guarded = self.guarded.lock();
        let (generation, state) = unpack(self.word.load(Ordering::Acquire));
        if state != CircuitState::Closed {
            let transition = self.transition_locked(
                &mut guarded,
                CircuitState::Closed,
                manual_reason(action, note),
            );
            drop(guarded);
            log_transition(&transition);
            return;
        }
        // Already CLOSED: no transition to publish, but a new generation, so
        // that the counts start afresh and calls admitted before count nowhere.
        let generation = generation + 1;
        self.restamp_counts(generation, CircuitState::Closed);
        self.word
            .store(pack(generation, CircuitState::Closed), Ordering::Release);
        drop(guarded);
        tracing::info!(
            service = %self.service,
            circuit_state = %CircuitState::Closed,
            generation,
            "Circuit breaker for {}: manual {action} ({note}); counts cleared",
            self.service
        );
    }

    /// Moves to `to` if `allowed(generation, state)` holds under the lock.
    fn transition_if(
        &self,
        allowed: impl FnOnce(u64, CircuitState) -> bool,
        to: CircuitState,
        reason: TransitionReason,
    ) -> bool {
        let mut guarded = self.guarded.lock();
        let (generation, state) = unpack(self.word.load(Ordering::Acquire));
        if !allowed(generation, state) {
            return false;
        }
        let transition = self.transition_locked(&mut guarded, to, reason);
        drop(guarded);
        log_transition(&transition);
        true
    }

    /// Performs a transition. Caller holds the lock; logging is left to the
    /// caller, after the lock is released.
    fn transition_locked(
        &self,
        guarded: &mut Guarded,
        to: CircuitState,
        reason: TransitionReason,
    ) -> Transition {
        let (generation, from) = unpack(self.word.load(Ordering::Acquire));
        let generation = generation + 1;
        let at = Instant::now();
        self.restamp_counts(generation, to);
        if let Some(timer) = guarded.recovery_timer.take() {
            timer.abort();
        }
        match to {
            CircuitState::Open => {
                let deadline = at + self.config.recovery_timeout.get();
                self.open_until
                    .store(self.nanos_since_epoch(deadline), Ordering::Release);
                guarded.recovery_timer = self.recovery.start(generation, deadline);
            }
            CircuitState::Closed | CircuitState::ForcedOpen => {}
            CircuitState::HalfOpen => {
                guarded.probes.clear();
                guarded.probe_successes = 0;
            }
        }
        guarded.forced_by = None;
        self.word.store(pack(generation, to), Ordering::Release);
        let transition = Transition {
            service: self.service.clone(),
            from,
            to,
            reason,
            at,
            wall_time: SystemTime::now(),
            generation,
        };
        guarded.last_transition = Some(transition.clone());
        self.state_tx.send_replace(to);
        // Sends fail only when nobody listens, which is fine.
        let _ = self.transitions_tx.send(transition.clone());
        if let Some(shared) = &self.shared_tx {
            let _ = shared.send(transition.clone());
        }
        transition
    }

    /// Stamps the streak and the window with `generation`, before the state
    /// word publishes it: results of earlier generations then count nowhere.
    /// Entering CLOSED starts them afresh; other states keep them as they
    /// were (for snapshots). Caller holds the lock.
    fn restamp_counts(&self, generation: u64, to: CircuitState) {
        let fresh = to == CircuitState::Closed;
        let streak = if fresh { 0 } else { self.streak.count() };
        self.streak.restamp(generation, streak);
        if let Some(window) = &self.window {
            window.restamp(generation, fresh);
        }
    }

    /// Watches the state; the receiver holds the current state at once.
    pub fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.state_tx.subscribe()
    }

    /// Every transition of this breaker from now on.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions_tx.subscribe()
    }

    /// A point-in-time view for status APIs.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let guarded = self.guarded.lock();
        let (generation, state) = unpack(self.word.load(Ordering::Acquire));
        let retry_after = (state == CircuitState::Open)
            .then(|| self.wait_until(self.open_until.load(Ordering::Acquire)));
        let failure_rate = self.window.as_ref().and_then(|window| {
            let counts = window.counts();
            (counts.calls > 0).then(|| f64::from(counts.failures) / f64::from(counts.calls))
        });
        BreakerSnapshot {
            service: self.service.clone(),
            state,
            forced_by: guarded.forced_by,
            generation,
            consecutive_failures: self.streak.count(),
            failure_rate,
            last_transition: guarded.last_transition.clone(),
            retry_after,
        }
    }

    /// The time left before `deadline` (nanoseconds since `epoch`), at least
    /// one timer tick: a deadline just passed is acted on when the runtime's
    /// timer fires, or by the next call.
    fn wait_until(&self, deadline: u64) -> Duration {
        let now = self.nanos_since_epoch(Instant::now());
        match deadline.checked_sub(now) {
            Some(left) => nanos(left).max(TIMER_TICK),
            None => TIMER_TICK,
        }
    }

    #[inline]
    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

fn manual_reason(action: ManualAction, note: &str) -> TransitionReason {
    TransitionReason::Manual {
        action,
        note: Arc::from(note),
    }
}

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// Logs a transition: WARN when the breaker opens, INFO otherwise.
fn log_transition(t: &Transition) {
    // A level in `tracing::event!` must be a constant, hence one arm per level.
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                $level,
                service = %t.service,
                circuit_state = %t.to,
                { callguard_core::telemetry::field::FROM_STATE } = %t.from,
                reason = %t.reason,
                generation = t.generation,
                "Circuit breaker for {}: {} -> {} ({})",
                t.service, t.from, t.to, t.reason
            )
        };
    }
    if matches!(t.to, CircuitState::Open | CircuitState::ForcedOpen) {
        at!(tracing::Level::WARN);
    } else {
        at!(tracing::Level::INFO);
    }
}

/// Proof that a call was admitted. Report how it ended with exactly one of
/// [`success`](Self::success), [`failure`](Self::failure),
/// [`ignore`](Self::ignore) or [`record_error`](Self::record_error). A permit
/// dropped without a report frees its HALF_OPEN probe slot and counts nothing.
#[must_use = "report the call's outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    state: CircuitState,
    probe: Option<u64>,
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("service", &self.breaker.service)
            .field("state", &self.state)
            .field("generation", &self.generation)
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

impl Permit<'_> {
    /// The breaker's state when the call was admitted (CLOSED or HALF_OPEN).
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// The generation the call was admitted under.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// The call failed in a way that says the service is unusable.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    /// The call ended in a way that says nothing about the service (a 400, a 429).
    pub fn ignore(self) {
        self.finish(Outcome::Ignored);
    }

    /// Records `error` as a failure if it counts toward the breaker
    /// (DESIGN.md), otherwise ignores it.
    pub fn record_error(self, error: &ServiceError) {
        if error.counts_toward_breaker() {
            self.failure();
        } else {
            self.ignore();
        }
    }

    #[inline]
    fn finish(mut self, outcome: Outcome) {
        let probe = self.probe.take();
        self.breaker.on_result(self.generation, probe, outcome);
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(id) = self.probe.take() {
            self.breaker
                .on_result(self.generation, Some(id), Outcome::Ignored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::ConfigDuration;

    fn breaker(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::new(ServiceName::new("elevenlabs").unwrap(), config)
    }

    fn seed() -> CircuitBreaker {
        breaker(BreakerConfig::default())
    }

    /// Opens when half of the last 4 calls failed; a streak never opens it.
    fn windowed() -> CircuitBreaker {
        breaker(BreakerConfig {
            failure_threshold: 100,
            failure_rate: Some(crate::FailureRateConfig {
                threshold: 0.5,
                window_size: 4,
                minimum_calls: 4,
            }),
            ..BreakerConfig::default()
        })
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().unwrap().failure();
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures() {
        let b = seed();
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        let rejected = b.try_acquire().unwrap_err();
        assert_eq!(rejected.state(), CircuitState::Open);
        assert_eq!(rejected.retry_after(), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_breaks_the_streak() {
        let b = seed();
        fail(&b);
        b.try_acquire().unwrap().success();
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn request_level_errors_do_not_count() {
        let b = seed();
        let bad_request = callguard_core::classify_status(400, None, SystemTime::now()).unwrap();
        let rate_limited = callguard_core::classify_status(429, None, SystemTime::now()).unwrap();
        for _ in 0..10 {
            b.try_acquire().unwrap().record_error(&bad_request);
            b.try_acquire().unwrap().record_error(&rate_limited);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        let unauthorized = callguard_core::classify_status(401, None, SystemTime::now()).unwrap();
        b.try_acquire().unwrap().record_error(&unauthorized);
        b.try_acquire().unwrap().record_error(&unauthorized);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_timeout_admits_one_probe_then_closes() {
        let b = seed();
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Some(Duration::from_secs(1))
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.try_acquire().unwrap();
        assert_eq!(probe.state(), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire().unwrap_err().state(), CircuitState::HalfOpen);
        probe.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    /// While the recovery timer runs, a rejection trusts it rather than the
    /// clock: a deadline between two ticks of the runtime's timer is acted
    /// on at the next tick, and until then the wait is one tick, never zero.
    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_moves_on_when_its_timer_fires() {
        let b = seed();
        tokio::time::advance(Duration::from_micros(500)).await;
        fail(&b);
        fail(&b); // the deadline is 10.0005 s, the timer's tick 10.001 s
        tokio::task::yield_now().await; // the recovery timer starts
        tokio::time::advance(Duration::from_secs(10)).await;
        let due = b.try_acquire().unwrap_err();
        assert_eq!(due.state(), CircuitState::Open);
        assert_eq!(due.retry_after(), Some(TIMER_TICK));
        assert_eq!(b.snapshot().retry_after, Some(TIMER_TICK));
        tokio::time::advance(Duration::from_micros(500)).await;
        assert_eq!(b.try_acquire().unwrap().state(), CircuitState::HalfOpen);
    }

    /// The timer of an earlier OPEN generation stands for nothing later: a
    /// breaker reopened early waits out its own timeout.
    #[tokio::test(start_paused = true)]
    async fn a_reopened_breaker_waits_its_own_timeout() {
        let b = seed();
        fail(&b);
        fail(&b); // OPEN until 10 s
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.half_open_on_recovery());
        b.record_failure(); // OPEN again, until 15 s
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Some(Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.try_acquire().unwrap().state(), CircuitState::HalfOpen);
    }

    /// A timer that ends without firing (here: dropped with its runtime)
    /// leaves the clock in charge; the breaker is never stuck OPEN.
    #[test]
    fn a_timer_dropped_with_its_runtime_leaves_the_clock_in_charge() {
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let b = breaker(BreakerConfig {
            recovery_timeout: ConfigDuration::from_secs(3600),
            ..BreakerConfig::default()
        });
        paused().block_on(async {
            fail(&b);
            fail(&b);
            tokio::task::yield_now().await; // the recovery timer starts
        });
        paused().block_on(async {
            assert!(b.try_acquire().is_err());
            tokio::time::advance(Duration::from_secs(3600)).await;
            assert_eq!(b.try_acquire().unwrap().state(), CircuitState::HalfOpen);
        });
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_a_full_timeout() {
        let b = seed();
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Some(Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_frees_its_slot_after_the_recovery_timeout() {
        let b = seed();
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let lost = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            b.try_acquire().unwrap_err().retry_after(),
            Some(Duration::from_secs(6))
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        let second = b.try_acquire().expect("slot reclaimed");
        lost.failure(); // too late: its slot was reclaimed, so it is ignored
        assert_eq!(b.state(), CircuitState::HalfOpen);
        second.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_frees_its_slot_at_once() {
        let b = seed();
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_from_an_earlier_generation_are_ignored() {
        let b = seed();
        let slow = b.try_acquire().unwrap();
        fail(&b);
        fail(&b);
        b.force_close("operator");
        fail(&b);
        slow.failure(); // admitted before the breaker opened and closed again
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_of_a_closed_breaker_starts_a_generation() {
        for close in [CircuitBreaker::reset, CircuitBreaker::force_close] {
            let b = windowed();
            let mut transitions = b.transitions();
            let before = b.try_acquire().unwrap();
            fail(&b);
            close(&b, "operator");
            assert_eq!(b.snapshot().generation, 1);
            assert!(transitions.try_recv().is_err(), "no transition published");
            before.failure(); // admitted before the reset
            let snapshot = b.snapshot();
            assert_eq!(snapshot.state, CircuitState::Closed);
            assert_eq!(snapshot.consecutive_failures, 0);
            assert_eq!(snapshot.failure_rate, None, "an empty window");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn success_threshold_needs_that_many_probes() {
        let b = breaker(BreakerConfig {
            success_threshold: 2,
            half_open_max_calls: 2,
            ..BreakerConfig::default()
        });
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let first = b.try_acquire().unwrap();
        let second = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only two probes at a time");
        first.success();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        second.success();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_window_opens_without_a_streak() {
        let b = windowed();
        for _ in 0..2 {
            b.try_acquire().unwrap().success();
            fail(&b);
        }
        assert_eq!(b.state(), CircuitState::Open);
        let reason = b.snapshot().last_transition.unwrap().reason;
        assert_eq!(
            reason,
            TransitionReason::FailureRate {
                failures: 2,
                calls: 4
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn manual_control_and_health_recovery() {
        let b = seed();
        b.force_open("maintenance");
        assert_eq!(b.try_acquire().unwrap_err().retry_after(), None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(b.state(), CircuitState::ForcedOpen, "never times out");
        b.close_on_recovery();
        assert_eq!(
            b.state(),
            CircuitState::ForcedOpen,
            "health checks leave it alone"
        );
        b.reset("maintenance over");
        assert_eq!(b.state(), CircuitState::Closed);

        fail(&b);
        fail(&b);
        b.half_open_on_recovery();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
        b.close_on_recovery();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_operator_outranks_the_remote() {
        let b = seed();
        let forced_by = |b: &CircuitBreaker| b.snapshot().forced_by;
        assert!(b.force_open_by(ForcedBy::Remote, "remote"));
        assert_eq!(forced_by(&b), Some(ForcedBy::Remote));
        // An operator's note may read "remote"; ownership is not the note.
        b.force_open("remote");
        assert_eq!(forced_by(&b), Some(ForcedBy::Operator));
        assert_eq!(b.snapshot().generation, 1, "taking over is no transition");
        assert!(!b.release(ForcedBy::Remote, "remote"));
        assert!(!b.force_open_by(ForcedBy::Remote, "remote"));
        assert_eq!(forced_by(&b), Some(ForcedBy::Operator));
        b.force_close("done");
        assert_eq!((b.state(), forced_by(&b)), (CircuitState::Closed, None));

        assert!(b.force_open_by(ForcedBy::Remote, "remote"));
        assert!(b.release(ForcedBy::Remote, "remote"));
        assert_eq!(b.state(), CircuitState::Closed);
        b.force_open("maintenance");
        assert!(!b.release(ForcedBy::Remote, "remote"));
        assert_eq!(b.state(), CircuitState::ForcedOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn health_probe_failures_open_without_calls() {
        let b = seed();
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_calls_stay_out_of_the_window() {
        let b = windowed();
        for _ in 0..4 {
            b.try_acquire().unwrap().success();
        }
        b.record_failure();
        b.record_failure();
        let snapshot = b.snapshot();
        assert_eq!(snapshot.state, CircuitState::Closed);
        assert_eq!(snapshot.failure_rate, Some(0.0));
        assert_eq!(snapshot.consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_every_transition_in_order() {
        let b = breaker(BreakerConfig {
            recovery_timeout: ConfigDuration::from_secs(1),
            ..BreakerConfig::default()
        });
        let mut watch = b.subscribe();
        let mut transitions = b.transitions();
        fail(&b);
        fail(&b);
        assert!(watch.has_changed().unwrap());
        assert_eq!(*watch.borrow_and_update(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.try_acquire().unwrap().success();
        let seen: Vec<_> = std::iter::from_fn(|| transitions.try_recv().ok())
            .map(|t| (t.from, t.to, t.generation))
            .collect();
        assert_eq!(
            seen,
            vec![
                (CircuitState::Closed, CircuitState::Open, 1),
                (CircuitState::Open, CircuitState::HalfOpen, 2),
                (CircuitState::HalfOpen, CircuitState::Closed, 3),
            ]
        );
        assert_eq!(*watch.borrow(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_reads_like_its_owned_form() {
        let b = seed();
        fail(&b);
        fail(&b);
        let rejection = b.try_acquire().unwrap_err();
        assert_eq!(rejection.service().as_str(), "elevenlabs");
        assert_eq!(
            rejection.to_string(),
            "circuit breaker for elevenlabs is OPEN; retry after 10.0s"
        );
        assert_eq!(
            BreakerOpen::from(rejection),
            BreakerOpen {
                service: ServiceName::new("elevenlabs").unwrap(),
                state: CircuitState::Open,
                retry_after: Some(Duration::from_secs(10)),
            }
        );
    }

    #[test]
    fn rejection_reads_well() {
        let rejection = BreakerOpen {
            service: ServiceName::new("elevenlabs").unwrap(),
            state: CircuitState::Open,
            retry_after: Some(Duration::from_millis(8500)),
        };
        assert_eq!(
            rejection.to_string(),
            "circuit breaker for elevenlabs is OPEN; retry after 8.5s"
        );
    }
}
