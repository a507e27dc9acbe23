//! One contact's call: LLM → TTS → CRM, each stage through
//! `Retry(Breaker(Limit(attempt)))` with its service's breaker and limiter,
//! falling back along the stage's chain of alternate services while one is
//! down, and resuming at the stage that could not run when a deferred contact
//! comes back.
//!
//! An attempt the breaker admitted takes a slot of the service's limiter,
//! holds it while its request is out, and gives it back with how the attempt
//! ended and the limit headers of the answer. A call the limiter did not send
//! (no slot within `queue_timeout`) defers the contact at once, without
//! trying the fallbacks: the service is busy, not down (DESIGN.md, "Provider
//! limits").
//!
//! Spans: `call` (one per pass over a contact: `contact_id`, `outcome`) →
//! one per stage and service tried (named `llm`, `tts` or `crm`: `service`,
//! `outcome`) → one client span per attempt (`retry_count`, `circuit_state`
//! at admission, `error.type`, `error_category`, and the HTTP attributes the
//! client records: `http.request.method`, `url.full`, `server.address`,
//! `http.response.status_code`). Each request carries the `traceparent` of its
//! attempt span. Events logged inside (breaker transitions, retries, the
//! deferral) become span events.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_clients::{
    Answered, CallOutcome, CallRecord, CrmClient, LlmClient, Prompt, Recorded, RequestContext,
    TtsClient,
};
use callguard_core::{ErrorKind, ServiceError, ServiceName};
use callguard_limit::{Limiter, Outcome};
use callguard_retry::{AttemptContext, CallError, Executor};
use callguard_telemetry as telemetry;
use tokio::time::Instant;
use tracing::Instrument;

use crate::contacts::Contact;
use crate::queue::Progress;

/// A service in a stage's chain: its client, the executor holding its
/// breaker and retry policy, and its limiter.
pub struct Stage<C> {
    /// The service's name.
    pub service: ServiceName,
    /// Its client.
    pub client: C,
    /// Retry around its breaker.
    pub executor: Arc<Executor>,
    /// The slots of its attempts, inside the breaker.
    pub limiter: Arc<Limiter>,
}

/// How one pass over a contact ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// Every stage succeeded.
    Completed,
    /// A permanent error: retrying cannot help.
    Failed {
        /// The service that failed.
        service: ServiceName,
        /// Why, readable and free of secrets.
        reason: String,
    },
    /// The stage's service (and its fallbacks) cannot be used now: defer.
    Unavailable {
        /// The stage's primary service, whose breaker closing wakes the contact.
        service: ServiceName,
        /// When the breaker expects to admit calls again, if known.
        retry_after: Option<Duration>,
    },
    /// A service of the stage is up but busy — its limiter had no slot for
    /// the call in time: defer, without counting toward `max_deferrals`.
    Busy {
        /// The stage's primary service, which the contact is deferred on.
        service: ServiceName,
        /// When the limiter expects a slot to be free.
        retry_after: Option<Duration>,
    },
}

enum StageFailure {
    Failed(ServiceName, String),
    Unavailable(ServiceName, Option<Duration>),
    Busy(ServiceName, Option<Duration>),
}

/// A stage's services: the primary, then the fallbacks tried in turn while it
/// is unavailable.
pub struct Chain<C> {
    /// The stage's own service; its breaker decides when a deferred contact wakes.
    pub primary: Stage<C>,
    /// Alternates, in order.
    pub fallbacks: Vec<Stage<C>>,
}

impl<C> Chain<C> {
    fn links(&self) -> impl Iterator<Item = &Stage<C>> {
        std::iter::once(&self.primary).chain(&self.fallbacks)
    }
}

/// The three stages.
pub struct Pipeline {
    /// Writes the script.
    pub llm: Chain<LlmClient>,
    /// Speaks it.
    pub tts: Chain<TtsClient>,
    /// Records the call.
    pub crm: Chain<CrmClient>,
}

impl Pipeline {
    /// The limiter of every service the stages use, once each.
    pub fn limiters(&self) -> Vec<Arc<Limiter>> {
        let llm = self.llm.links().map(|link| &link.limiter);
        let tts = self.tts.links().map(|link| &link.limiter);
        let crm = self.crm.links().map(|link| &link.limiter);
        llm.chain(tts).chain(crm).cloned().collect()
    }
}

/// The span of one pass over contact `contact_id`: run [`Pipeline::call`]
/// and what is done with its result (deferral, failure) inside it.
pub fn call_span(contact_id: &str) -> tracing::Span {
    tracing::info_span!(
        "call",
        otel.name = "call",
        contact_id = %contact_id,
        outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

impl Pipeline {
    /// Runs the stages not yet done for `contact`, recording them in
    /// `progress`, inside the current span (make it a [`call_span`]).
    pub async fn call(&self, contact: &Contact, progress: &mut Progress) -> CallResult {
        let result = self.run_stages(contact, progress).await;
        let span = tracing::Span::current();
        let outcome = match &result {
            CallResult::Completed => "completed",
            CallResult::Failed { .. } => {
                span.record("otel.status_code", "ERROR");
                "failed"
            }
            CallResult::Unavailable { .. } | CallResult::Busy { .. } => "deferred",
        };
        span.record("outcome", outcome);
        result
    }

    async fn run_stages(&self, contact: &Contact, progress: &mut Progress) -> CallResult {
        let context = RequestContext::new(&contact.id);
        let started_at = SystemTime::now();

        if progress.script.is_none() {
            let prompt = Prompt::for_contact(contact);
            let prompt = &prompt;
            let script = run_chain("llm", &self.llm, |client, deadline| async move {
                let traceparent = telemetry::traceparent(&tracing::Span::current());
                let context = context
                    .with_traceparent(traceparent.as_deref())
                    .with_deadline(deadline);
                client.generate_script(context, prompt).await
            })
            .await;
            match script {
                Ok(script) => progress.script = Some(script),
                Err(failure) => return failure.into(),
            }
        }
        let script = progress.script.as_deref().unwrap_or_default();

        if progress.audio_bytes.is_none() {
            let audio = run_chain("tts", &self.tts, |client, deadline| async move {
                let traceparent = telemetry::traceparent(&tracing::Span::current());
                let context = context
                    .with_traceparent(traceparent.as_deref())
                    .with_deadline(deadline);
                client.synthesize(context, script).await
            })
            .await;
            match audio {
                Ok(audio) => progress.audio_bytes = Some(audio.bytes.len() as u64),
                Err(failure) => return failure.into(),
            }
        }

        // Built once per contact and kept in its progress, so every retry —
        // and the pass after a deferral — sends the same body under the same
        // idempotency key.
        let record = progress.crm_record.get_or_insert_with(|| {
            let record = CallRecord::new(
                contact,
                CallOutcome::Completed,
                started_at,
                SystemTime::now(),
            )
            .with_script(script);
            match progress.audio_bytes {
                Some(bytes) => record.with_audio_bytes(bytes),
                None => record,
            }
        });
        let record = &*record;
        let recorded = run_chain("crm", &self.crm, |client, deadline| async move {
            let traceparent = telemetry::traceparent(&tracing::Span::current());
            let context = context
                .with_traceparent(traceparent.as_deref())
                .with_deadline(deadline);
            client.record_call(context, record).await
        })
        .await;
        match recorded {
            Ok(Recorded::Stored(record_id)) => {
                tracing::info!(crm_record = %record_id, "Call completed and recorded");
                CallResult::Completed
            }
            Ok(Recorded::Earlier) => {
                tracing::info!(
                    "Call completed; the CRM keeps the record an earlier pass wrote for this contact"
                );
                CallResult::Completed
            }
            Err(failure) => failure.into(),
        }
    }
}

impl From<StageFailure> for CallResult {
    fn from(failure: StageFailure) -> Self {
        match failure {
            StageFailure::Failed(service, reason) => Self::Failed { service, reason },
            StageFailure::Unavailable(service, retry_after) => Self::Unavailable {
                service,
                retry_after,
            },
            StageFailure::Busy(service, retry_after) => Self::Busy {
                service,
                retry_after,
            },
        }
    }
}

/// Tries each service of a stage's chain in turn. A permanent error ends the
/// stage; an unavailable service hands over to the next in the chain; when
/// none is left the stage is unavailable on its primary service. A call its
/// service's limiter did not send ends the stage at once, unavailable for the
/// limiter's suggested wait: that service is busy, and the next in the chain
/// is for outages. Each service
/// tried gets a span named `stage`, each attempt an [`attempt_span`], current
/// while `attempt` runs; `attempt` is given the call's deadline, which its
/// request must not outlive.
async fn run_chain<'a, C, T, Fut>(
    stage: &'static str,
    chain: &'a Chain<C>,
    attempt: impl Fn(&'a C, Option<Instant>) -> Fut + Copy,
) -> Result<T, StageFailure>
where
    Fut: Future<Output = Answered<T>>,
{
    let mut primary_wait = None;
    for (index, link) in chain.links().enumerate() {
        let span = tracing::info_span!(
            "stage",
            otel.name = stage,
            service = %link.service,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let call = link.executor.call(|context| {
            let span = attempt_span(&context);
            let recorded = span.clone();
            async move {
                let send = || attempt(&link.client, context.deadline);
                let result = limited(&link.limiter, context.deadline, send).await;
                if let Err(error) = &result {
                    record_error(&recorded, error);
                }
                result
            }
            .instrument(span)
        });
        // Pinned where it is made: instrumenting the pinned reference wraps
        // a pointer, not the kilobytes of the stage's future.
        let result = pin!(call).instrument(span.clone()).await;
        let error = match result {
            Ok(value) => {
                span.record("outcome", "success");
                return Ok(value);
            }
            Err(error) => error,
        };
        span.record("otel.status_code", "ERROR");
        if error.is_permanent() {
            span.record("outcome", "permanent");
            return Err(StageFailure::Failed(
                link.service.clone(),
                error.to_string(),
            ));
        }
        let retry_after = unavailable_for(&error);
        if error.is_throttled() {
            span.record("outcome", "throttled");
            return Err(StageFailure::Busy(
                chain.primary.service.clone(),
                retry_after,
            ));
        }
        span.record("outcome", "unavailable");
        if let Some(next) = chain.fallbacks.get(index) {
            span.in_scope(|| {
                tracing::warn!(
                    error_category = "transient",
                    "{} unavailable; falling back to {}",
                    link.service,
                    next.service
                );
            });
        }
        if index == 0 {
            primary_wait = retry_after;
        }
    }
    Err(StageFailure::Unavailable(
        chain.primary.service.clone(),
        primary_wait,
    ))
}

/// `Limit(attempt)`: the attempt `send` makes, sent once `limiter` gives it
/// a slot, which it gives back with how the attempt ended and the answer's
/// limit headers. No slot in time is an [`ErrorKind::Throttled`] error,
/// which ends the call for the contact to be deferred. An attempt cut off at
/// the call's `deadline` gives its slot back and teaches nothing: the time
/// was ours to end, not the service's overload. (The request's future is
/// made here, once there is a slot, and held only here: a future passed in
/// would be kept twice over in this one, kilobytes per attempt.)
async fn limited<T, Fut>(
    limiter: &Limiter,
    deadline: Option<Instant>,
    send: impl FnOnce() -> Fut,
) -> Result<T, ServiceError>
where
    Fut: Future<Output = Answered<T>>,
{
    let permit = limiter.acquire().await?;
    let sent = Instant::now();
    let Answered { result, headers } = send().await;
    let cut_off = matches!(&result, Err(error) if error.kind() == ErrorKind::Timeout)
        && deadline.is_some_and(|deadline| Instant::now() >= deadline);
    if cut_off {
        drop(permit);
    } else {
        permit.complete(Outcome::of(&result, sent.elapsed()), &headers);
    }
    result
}

/// The client span of one attempt. The service client records the HTTP
/// attributes (`url.full`, `server.address`, `server.port`,
/// `http.response.status_code`) into it as the request is made.
fn attempt_span(context: &AttemptContext) -> tracing::Span {
    tracing::info_span!(
        "attempt",
        otel.name = "POST",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        retry_count = context.retry_count,
        http.request.resend_count = context.retry_count,
        circuit_state = context.circuit_state.as_str(),
        http.request.method = "POST",
        url.full = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        error_category = tracing::field::Empty,
    )
}

/// Marks an attempt span failed: `error.type` is the HTTP status when there
/// was one (the semantic conventions' choice), else the error's kind.
fn record_error(span: &tracing::Span, error: &ServiceError) {
    let error_type = match error.status() {
        Some(status) => status.to_string(),
        None => error.kind().as_str().to_owned(),
    };
    span.record("error.type", error_type);
    span.record("error_category", error.category().as_str());
    span.record("otel.status_code", "ERROR");
}

/// How long a transient failure asks the contact to wait: the breaker's
/// `retry_after` when it rejected, or the service's `Retry-After`.
fn unavailable_for(error: &CallError) -> Option<Duration> {
    error
        .retry_after()
        .or_else(|| error.last_error().and_then(ServiceError::retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_limit::{LimitConfig, ProviderHeaders};

    fn timed_out() -> Answered<()> {
        Answered {
            result: Err(ServiceError::new(ErrorKind::Timeout, "no answer in time")),
            headers: ProviderHeaders::NONE,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_cut_off_at_the_calls_deadline_leaves_the_limit() {
        let service = ServiceName::new("elevenlabs").unwrap();
        let limiter = Limiter::new(service, LimitConfig::adaptive(4, 1, 10)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        let cut = limited(&limiter, Some(deadline), || async {
            tokio::time::sleep_until(deadline).await;
            timed_out()
        })
        .await;
        assert_eq!(cut.unwrap_err().kind(), ErrorKind::Timeout);
        let snapshot = limiter.snapshot();
        assert_eq!(snapshot.limit, Some(4), "our deadline, not overload");
        assert_eq!(snapshot.in_flight, 0, "the slot is back");

        let later = Instant::now() + Duration::from_secs(10);
        let slow = limited(&limiter, Some(later), || async { timed_out() }).await;
        assert!(slow.is_err());
        assert_eq!(
            limiter.snapshot().limit,
            Some(3),
            "the service's own timeout is overload"
        );
    }
}
