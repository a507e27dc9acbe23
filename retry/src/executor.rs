//! The executor: `Retry(Breaker(attempt))` for one service.
//!
//! Every attempt first asks the breaker for a permit and reports its outcome on
//! it, so the breaker sees every attempt, retries included. The retry loop then
//! reads the breaker's answer:
//!
//! * the breaker rejects the attempt → the call ends at once with
//!   [`CallError::Rejected`], without sleeping;
//! * success → the result;
//! * a permanent error → [`CallError::Permanent`] at once;
//! * a transient error → the next delay (backoff, jitter or the server's
//!   `Retry-After`), unless retries are used up, the retry budget is empty or
//!   the next retry would start at or past the deadline
//!   ([`CallError::Exhausted`]), or the failure left the breaker OPEN: then the
//!   next attempt would be rejected, so the call ends at once with
//!   [`CallError::Rejected`] instead of sleeping first (DESIGN.md: "Retry stops
//!   at once, without sleeping, when the breaker rejects the attempt"). The
//!   caller defers the call until the breaker's `retry_after`.
//!
//! Two kinds of transient error are not failures of the service, and are
//! treated apart:
//!
//! * a `429` that says the service is at its concurrency limit
//!   ([`ErrorKind::ConcurrencyLimited`]) is retried after the policy's
//!   `concurrency_delay` (or the server's `Retry-After`). The backoff does not
//!   move on, the retry does not count toward `max_retries` (the call may
//!   make one more attempt for each) and the retry budget is neither spent
//!   nor asked: the service answered at once that a slot is not free *yet*,
//!   which is no sign of an outage, and a burst of such answers — many calls
//!   meeting a limit they had not yet learnt — must not leave real failures
//!   without retries. `max_concurrency_retries` bounds them per call;
//! * a call that the service's own limiter did not send
//!   ([`ErrorKind::Throttled`]: no slot within its queue timeout) ends at
//!   once with [`CallError::Throttled`], for the caller to defer: the wait for
//!   a slot is bounded, and ends in a deferral, never in a failure.
//!
//! A first-try success costs the breaker's lock-free admission and success
//! (and the retry budget's refill, when one is set), and nothing else: no
//! allocation, no clock read unless the call has a deadline or an event sink
//! or a DEBUG-level tracing subscriber wants the attempt's duration, no event
//! built unless a sink is set (≈ 32 ns over the bare call, BENCHMARKS.md).
//! The retry loop is a separate future, boxed only once a transient failure
//! asks for a retry, so the future of every call stays small.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callguard_breaker::{BreakerOpen, CircuitBreaker};
use callguard_core::{
    AttemptInfo, CircuitState, ConfigDuration, ErrorKind, ResilienceEvent, ServiceError,
    ServiceName, ValidationError,
};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::budget::RetryBudget;
use crate::error::{CallError, StopReason};
use crate::policy::RetryPolicy;
use crate::sink::EventSink;

/// Logs a failed attempt at `$level` with the fields every such line carries
/// (`service`, `retry_count`, `circuit_state`, `error_category`, `error_kind`,
/// `http_status`), any `{ extra = fields, }`, and the message
/// `"{service} call failed (attempt n/N): {error}; {what happens next}"`.
macro_rules! attempt_failed {
    ($level:expr, $executor:expr, $attempt:expr, $error:expr, { $($extra:tt)* }, $($next:tt)+) => {
        tracing::event!(
            $level,
            service = %$executor.service(),
            retry_count = $attempt.retry_count(),
            circuit_state = $attempt.circuit_state.as_str(),
            error_category = $error.category().as_str(),
            error_kind = $error.kind().as_str(),
            http_status = $error.status(),
            $($extra)*
            "{} call failed (attempt {}/{}): {}; {}",
            $executor.service(),
            $attempt.retry_count() + 1,
            $attempt.max_attempts,
            $error,
            format_args!($($next)+),
        )
    };
}

/// What an attempt is told about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptContext {
    /// Retries before this attempt: 0 for the first. Idempotency keys and trace
    /// attributes are built from it.
    pub retry_count: u32,
    /// The breaker's state when the attempt was admitted (CLOSED or HALF_OPEN).
    pub circuit_state: CircuitState,
    /// The call's deadline, if it has one, so the attempt can bound its own
    /// request timeout.
    pub deadline: Option<Instant>,
}

/// Runs calls to one service: retry around its circuit breaker.
///
/// Cheap to share (`Arc<Executor>`) between tasks; calls do not contend on
/// anything but the breaker's and the budget's atomics.
pub struct Executor {
    breaker: Arc<CircuitBreaker>,
    policy: RetryPolicy,
    budget: Option<Arc<RetryBudget>>,
    sink: Option<Arc<dyn EventSink>>,
    jitter_seed: Option<u64>,
    /// Calls that needed a jitter generator, to vary a fixed seed per call.
    seeded_calls: AtomicU64,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("service", self.service())
            .field("policy", &self.policy)
            .field("budget", &self.budget)
            .field("sink", &self.sink.is_some())
            .field("jitter_seed", &self.jitter_seed)
            .finish()
    }
}

impl Executor {
    /// An executor for `breaker`'s service. Fails when the policy breaks a rule
    /// (keys as `retry.…`). When the policy configures a `budget`, a budget of
    /// this executor's own is made; share one between executors with
    /// [`with_budget`](Self::with_budget).
    pub fn new(breaker: Arc<CircuitBreaker>, policy: RetryPolicy) -> Result<Self, ValidationError> {
        policy.validate()?;
        let budget = match policy.budget {
            Some(config) => Some(Arc::new(
                RetryBudget::new(config).map_err(|e| e.in_section("retry"))?,
            )),
            None => None,
        };
        Ok(Self {
            breaker,
            policy,
            budget,
            sink: None,
            jitter_seed: None,
            seeded_calls: AtomicU64::new(0),
        })
    }

    /// Limits retries with `budget`, shared with every other user of it.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Publishes every attempt's events to `sink`.
    #[must_use]
    pub fn with_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Draws jitter from generators seeded from `seed` (one per call, in call
    /// order), for reproducible delays in tests.
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The service called.
    pub fn service(&self) -> &ServiceName {
        self.breaker.service()
    }

    /// The service's breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The retry settings.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The retry budget, when one is set.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// Calls `op` until it succeeds, fails permanently, is rejected by the
    /// breaker or runs out of retries. `op` is called once per attempt with the
    /// attempt's [`AttemptContext`]. The policy's `deadline`, if set, counts
    /// from this call.
    pub fn call<T, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, CallError>>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        // Not an `async fn`: the future is `run`'s own, not one wrapping it.
        let deadline = self.policy.deadline.map(|d| Instant::now() + d.get());
        self.run(deadline, op)
    }

    /// Like [`call`](Self::call), ending by `deadline` (or the policy's own
    /// deadline, whichever comes first): a retry that would start at or after
    /// it is not waited for.
    pub fn call_with_deadline<T, F, Fut>(
        &self,
        deadline: Instant,
        op: F,
    ) -> impl Future<Output = Result<T, CallError>>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let deadline = match self.policy.deadline {
            Some(d) => deadline.min(Instant::now() + d.get()),
            None => deadline,
        };
        self.run(Some(deadline), op)
    }

    async fn run<T, F, Fut>(&self, deadline: Option<Instant>, mut op: F) -> Result<T, CallError>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let timed = self.sink.is_some() || tracing::enabled!(tracing::Level::DEBUG);
        let first = Spent::default();
        match self.attempt(&mut op, first, deadline, timed).await {
            Attempted::Succeeded(value) => Ok(value),
            Attempted::Rejected(rejection) => Err(self.turned_away(rejection, first, None)),
            Attempted::Ended(error) => Err(error),
            Attempted::Throttled(failure) => Err(self.throttled(failure, None)),
            // The retry loop is a future of its own, on the heap: allocated only
            // when a retry may follow, so a first-try success stays small.
            Attempted::Transient(failure) => {
                Box::pin(self.retry(op, deadline, timed, failure)).await
            }
        }
    }

    /// Retries after the transient `failure` until the call ends.
    async fn retry<T, F, Fut>(
        &self,
        mut op: F,
        deadline: Option<Instant>,
        timed: bool,
        mut failure: Failure,
    ) -> Result<T, CallError>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut backoff = self.backoff();
        let mut spent = Spent::default();
        loop {
            let delay = match self.next_delay(&mut backoff, &mut spent, &failure, deadline) {
                Ok(delay) => delay,
                Err(give_up) => return Err(self.give_up(failure, give_up)),
            };
            tokio::time::sleep(delay).await;
            match self.attempt(&mut op, spent, deadline, timed).await {
                Attempted::Succeeded(value) => return Ok(value),
                Attempted::Rejected(rejection) => {
                    return Err(self.turned_away(rejection, spent, Some(failure.error)));
                }
                Attempted::Ended(error) => return Err(error),
                Attempted::Throttled(next) => {
                    return Err(self.throttled(next, Some(failure.error)));
                }
                Attempted::Transient(next) => failure = next,
            }
        }
    }

    /// One attempt through the breaker, after the retries `spent`.
    async fn attempt<T, F, Fut>(
        &self,
        op: &mut F,
        spent: Spent,
        deadline: Option<Instant>,
        timed: bool,
    ) -> Attempted<T>
    where
        F: FnMut(AttemptContext) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(rejection) => return Attempted::Rejected(rejection.into()),
        };
        let circuit_state = permit.state();
        let started = timed.then(Instant::now);
        let context = AttemptContext {
            retry_count: spent.retry_count(),
            circuit_state,
            deadline,
        };
        let error = match op(context).await {
            Ok(value) => {
                permit.success();
                if let Some(budget) = &self.budget {
                    budget.record_success();
                }
                self.succeeded(spent, circuit_state, started);
                return Attempted::Succeeded(value);
            }
            Err(error) => {
                permit.record_error(&error);
                error
            }
        };
        let attempt = Attempt {
            spent,
            max_attempts: self.max_attempts(spent),
            circuit_state,
            elapsed: started.map(|s| s.elapsed()),
        };
        self.emit(|| ResilienceEvent::AttemptFailed {
            attempt: attempt.info(self.service()),
            error: error.clone(),
        });
        if !error.is_transient() {
            return Attempted::Ended(self.permanent(&attempt, error));
        }
        match error.kind() {
            ErrorKind::Throttled => return Attempted::Throttled(Failure { attempt, error }),
            // Not a failure of the service: the budget is left alone.
            ErrorKind::ConcurrencyLimited => {}
            _ => {
                if let Some(budget) = &self.budget {
                    budget.record_failure();
                }
            }
        }
        Attempted::Transient(Failure { attempt, error })
    }

    /// Attempts a call may make after the retries `spent`: the policy's, and
    /// one more for each retry after a concurrency `429`.
    fn max_attempts(&self, spent: Spent) -> u32 {
        self.policy.max_attempts().saturating_add(spent.concurrency)
    }

    /// After a transient failure: the wait before the next attempt, or why
    /// there is none; the retry is added to `spent`. A scheduled retry is
    /// logged and published.
    fn next_delay(
        &self,
        backoff: &mut Backoff<'_>,
        spent: &mut Spent,
        failure: &Failure,
        deadline: Option<Instant>,
    ) -> Result<Duration, GiveUp> {
        let concurrency = failure.error.kind() == ErrorKind::ConcurrencyLimited;
        if let Some(reason) = self.stop_reason(*spent, concurrency) {
            return Err(GiveUp::Exhausted(reason));
        }
        if let Some(rejection) = self.open_breaker() {
            return Err(GiveUp::BreakerOpen(rejection));
        }
        let delay = if concurrency {
            // Soon, and the backoff stays where it is.
            failure
                .error
                .retry_after()
                .unwrap_or(self.policy.concurrency_delay.get())
                .min(self.policy.max_delay.get())
        } else {
            backoff.next_delay(failure.error.retry_after())
        };
        if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
            return Err(GiveUp::Exhausted(StopReason::Deadline));
        }
        if concurrency {
            spent.concurrency += 1;
        } else {
            spent.retries += 1;
        }
        self.log_retrying(&failure.attempt, &failure.error, delay, concurrency);
        self.emit(|| ResilienceEvent::RetryScheduled {
            service: self.service().clone(),
            retry_count: spent.retry_count(),
            delay,
        });
        Ok(delay)
    }

    fn give_up(&self, failure: Failure, give_up: GiveUp) -> CallError {
        let Failure { attempt, error } = failure;
        match give_up {
            GiveUp::Exhausted(reason) => self.exhausted(&attempt, reason, error),
            GiveUp::BreakerOpen(rejection) => {
                self.log_not_retried(&attempt, &error, &rejection);
                self.rejected(rejection, attempt.retry_count() + 1, Some(error))
            }
        }
    }

    /// Why no retry may follow a transient failure after the retries
    /// `spent`; `concurrency`: the failure was a concurrency `429`.
    fn stop_reason(&self, spent: Spent, concurrency: bool) -> Option<StopReason> {
        if concurrency {
            (spent.concurrency >= self.policy.max_concurrency_retries)
                .then_some(StopReason::ConcurrencyRetries)
        } else if spent.retries >= self.policy.max_retries {
            Some(StopReason::MaxRetries)
        } else if self.budget.as_ref().is_some_and(|b| !b.can_retry()) {
            Some(StopReason::Budget)
        } else {
            None
        }
    }

    /// The rejection the next attempt would meet, if the breaker is OPEN now.
    fn open_breaker(&self) -> Option<BreakerOpen> {
        if !matches!(
            self.breaker.state(),
            CircuitState::Open | CircuitState::ForcedOpen
        ) {
            return None;
        }
        let snapshot = self.breaker.snapshot();
        matches!(
            snapshot.state,
            CircuitState::Open | CircuitState::ForcedOpen
        )
        .then(|| BreakerOpen {
            service: snapshot.service,
            state: snapshot.state,
            retry_after: snapshot.retry_after,
        })
    }

    /// The delays of one call's retries.
    fn backoff(&self) -> Backoff<'_> {
        match self.jitter_seed {
            Some(seed) => Backoff::with_seed(
                &self.policy,
                seed.wrapping_add(self.seeded_calls.fetch_add(1, Ordering::Relaxed)),
            ),
            None => Backoff::new(&self.policy),
        }
    }

    fn emit(&self, event: impl FnOnce() -> ResilienceEvent) {
        if let Some(sink) = &self.sink {
            sink.on_event(&event());
        }
    }

    fn succeeded(&self, spent: Spent, circuit_state: CircuitState, started: Option<Instant>) {
        let retry_count = spent.retry_count();
        let elapsed = started.map(|s| s.elapsed());
        tracing::debug!(
            service = %self.service(),
            retry_count,
            circuit_state = circuit_state.as_str(),
            elapsed_ms = elapsed.map(millis),
            "{} call succeeded (attempt {}/{})",
            self.service(),
            retry_count + 1,
            self.max_attempts(spent),
        );
        self.emit(|| {
            ResilienceEvent::AttemptSucceeded(AttemptInfo {
                service: self.service().clone(),
                retry_count,
                circuit_state,
                elapsed: elapsed.unwrap_or_default(),
            })
        });
    }

    fn permanent(&self, attempt: &Attempt, error: ServiceError) -> CallError {
        attempt_failed!(
            tracing::Level::ERROR,
            self,
            attempt,
            error,
            {},
            "not retrying a permanent error"
        );
        self.emit(|| ResilienceEvent::PermanentFailure {
            service: self.service().clone(),
            retry_count: attempt.retry_count(),
            error: error.clone(),
        });
        CallError::Permanent {
            service: self.service().clone(),
            retry_count: attempt.retry_count(),
            error,
        }
    }

    fn exhausted(&self, attempt: &Attempt, reason: StopReason, error: ServiceError) -> CallError {
        let attempts = attempt.retry_count() + 1;
        attempt_failed!(
            tracing::Level::ERROR, self, attempt, error, { stop_reason = reason.as_str(), },
            "giving up: {reason}"
        );
        self.emit(|| ResilienceEvent::RetriesExhausted {
            service: self.service().clone(),
            attempts,
            error: error.clone(),
        });
        CallError::Exhausted {
            service: self.service().clone(),
            attempts,
            reason,
            error,
        }
    }

    /// A retry scheduled after `delay`; at INFO after a concurrency `429`
    /// (`concurrency`), which is load-shaping, not a fault.
    fn log_retrying(
        &self,
        attempt: &Attempt,
        error: &ServiceError,
        delay: Duration,
        concurrency: bool,
    ) {
        if concurrency {
            attempt_failed!(
                tracing::Level::INFO, self, attempt, error, { delay_ms = millis(delay), },
                "retrying in {} (not counted toward max_retries)", Rounded(delay)
            );
        } else {
            attempt_failed!(
                tracing::Level::WARN, self, attempt, error, { delay_ms = millis(delay), },
                "retrying in {}", Rounded(delay)
            );
        }
    }

    /// The service's limiter did not send the attempt: the call ends, to be
    /// deferred; logged at INFO (the limiter works as meant).
    fn throttled(&self, failure: Failure, last_error: Option<ServiceError>) -> CallError {
        let Failure { attempt, error } = failure;
        attempt_failed!(
            tracing::Level::INFO,
            self,
            attempt,
            error,
            { retry_after_ms = error.retry_after().map(millis), },
            "not sent; the call ends to be deferred"
        );
        CallError::Throttled {
            service: self.service().clone(),
            retry_count: attempt.retry_count(),
            error,
            last_error,
        }
    }

    fn log_not_retried(&self, attempt: &Attempt, error: &ServiceError, rejection: &BreakerOpen) {
        attempt_failed!(
            tracing::Level::WARN,
            self,
            attempt,
            error,
            {},
            "not retrying: {rejection}"
        );
    }

    /// The breaker turned away the attempt after the retries `spent`: logged
    /// at INFO for a first attempt (a known outage), at WARN when it cuts
    /// retries short.
    fn turned_away(
        &self,
        rejection: BreakerOpen,
        spent: Spent,
        last_error: Option<ServiceError>,
    ) -> CallError {
        let retry_count = spent.retry_count();
        macro_rules! log_at {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    service = %self.service(),
                    retry_count,
                    circuit_state = rejection.state.as_str(),
                    retry_after_ms = rejection.retry_after.map(millis),
                    "{} call rejected (attempt {}/{}): {}",
                    self.service(),
                    retry_count + 1,
                    self.max_attempts(spent),
                    rejection,
                )
            };
        }
        if retry_count == 0 {
            log_at!(tracing::Level::INFO);
        } else {
            log_at!(tracing::Level::WARN);
        }
        self.rejected(rejection, retry_count, last_error)
    }

    /// A rejection of the attempt numbered `retry_count`, published.
    fn rejected(
        &self,
        rejection: BreakerOpen,
        retry_count: u32,
        last_error: Option<ServiceError>,
    ) -> CallError {
        self.emit(|| ResilienceEvent::CallRejected {
            service: self.service().clone(),
            circuit_state: rejection.state,
            retry_count,
            retry_after: rejection.retry_after,
        });
        CallError::Rejected {
            rejection,
            retry_count,
            last_error,
        }
    }
}

/// How one attempt ended.
enum Attempted<T> {
    Succeeded(T),
    /// The breaker did not admit it.
    Rejected(BreakerOpen),
    /// Failed permanently: the call ends.
    Ended(CallError),
    /// Not sent by the service's limiter: the call ends, to be deferred.
    Throttled(Failure),
    /// Failed with a transient error: a retry may follow.
    Transient(Failure),
}

/// A transient failure.
struct Failure {
    attempt: Attempt,
    error: ServiceError,
}

/// Why no retry follows a transient failure.
enum GiveUp {
    Exhausted(StopReason),
    BreakerOpen(BreakerOpen),
}

/// Retries scheduled so far in one call, by what they count toward: the
/// call's one count of its retries.
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    /// After failures: toward `max_retries`.
    retries: u32,
    /// After concurrency `429`s: toward `max_concurrency_retries`.
    concurrency: u32,
}

impl Spent {
    /// The number of the next attempt, counted in retries: 0 for the first.
    fn retry_count(self) -> u32 {
        self.retries + self.concurrency
    }
}

/// A failed attempt, as logs and events describe it.
struct Attempt {
    /// The retries made before it.
    spent: Spent,
    /// The attempts the call may make, as of this one.
    max_attempts: u32,
    circuit_state: CircuitState,
    elapsed: Option<Duration>,
}

impl Attempt {
    /// Retries before this attempt: 0 for the first.
    fn retry_count(&self) -> u32 {
        self.spent.retry_count()
    }

    fn info(&self, service: &ServiceName) -> AttemptInfo {
        AttemptInfo {
            service: service.clone(),
            retry_count: self.retry_count(),
            circuit_state: self.circuit_state,
            elapsed: self.elapsed.unwrap_or_default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A delay as people read it: `10s`, `7s 250ms` (rounded to milliseconds).
struct Rounded(Duration);

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ConfigDuration::from_millis(millis(self.0)).fmt(f)
    }
}
