//! One contact's call: LLM → TTS → CRM, each stage through `Retry(Breaker(...))`
//! with its service's breaker, falling back along the stage's chain of
//! alternate services, and resuming at the stage that could not run when a
//! deferred contact comes back.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_core::{ServiceError, ServiceName};
use callguard_retry::{AttemptContext, CallError, Executor};
use tracing::Instrument;

use crate::clients::{
    CallOutcome, CallRecord, CrmClient, LlmClient, Prompt, RequestContext, TtsClient,
};
use crate::queue::QueuedContact;

/// A service in a stage's chain: its client and the executor holding its
/// breaker and retry policy.
pub struct Stage<C> {
    /// The service's name.
    pub service: ServiceName,
    /// Its client.
    pub client: C,
    /// Retry around its breaker.
    pub executor: Arc<Executor>,
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
}

enum StageFailure {
    Failed(ServiceName, String),
    Unavailable(ServiceName, Option<Duration>),
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
    /// Runs the stages not yet done for `entry`, recording progress in it.
    pub async fn call(&self, entry: &mut QueuedContact, trace_id: &str) -> CallResult {
        let span = tracing::info_span!(
            "call",
            contact_id = %entry.contact.id,
            trace_id = %trace_id,
            outcome = tracing::field::Empty,
        );
        let result = self.run_stages(entry).instrument(span.clone()).await;
        let outcome = match &result {
            CallResult::Completed => "completed",
            CallResult::Failed { .. } => "failed",
            CallResult::Unavailable { .. } => "deferred",
        };
        span.record("outcome", outcome);
        result
    }

    async fn run_stages(&self, entry: &mut QueuedContact) -> CallResult {
        let contact = &entry.contact;
        let context = RequestContext::new(&contact.id);
        let started_at = SystemTime::now();

        if entry.progress.script.is_none() {
            let prompt = Prompt::for_contact(contact);
            let script = run_chain(&self.llm, |client, _| {
                client.generate_script(context, &prompt)
            })
            .await;
            match script {
                Ok(script) => entry.progress.script = Some(script),
                Err(failure) => return failure.into(),
            }
        }
        let script = entry.progress.script.as_deref().unwrap_or_default();

        if entry.progress.audio_bytes.is_none() {
            match run_chain(&self.tts, |client, _| client.synthesize(context, script)).await {
                Ok(audio) => entry.progress.audio_bytes = Some(audio.bytes.len() as u64),
                Err(failure) => return failure.into(),
            }
        }

        let record = entry.progress.crm_record.get_or_insert_with(|| {
            let record = CallRecord::new(
                contact,
                CallOutcome::Completed,
                started_at,
                SystemTime::now(),
            )
            .with_script(script);
            match entry.progress.audio_bytes {
                Some(bytes) => record.with_audio_bytes(bytes),
                None => record,
            }
        });
        match run_chain(&self.crm, |client, _| client.record_call(context, record)).await {
            Ok(record_id) => {
                tracing::info!(crm_record = %record_id, "Call completed and recorded");
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
        }
    }
}

/// Tries each service of a stage's chain in turn. A permanent error ends the
/// stage; an unavailable service hands over to the next in the chain; when
/// none is left the stage is unavailable on its primary service.
async fn run_chain<'a, C, T, Fut>(
    chain: &'a Chain<C>,
    mut attempt: impl FnMut(&'a C, AttemptContext) -> Fut,
) -> Result<T, StageFailure>
where
    Fut: Future<Output = Result<T, ServiceError>>,
{
    let mut primary_wait = None;
    for (index, link) in chain.links().enumerate() {
        let span = tracing::info_span!("stage", service = %link.service);
        let result = link
            .executor
            .call(|context| attempt(&link.client, context))
            .instrument(span.clone())
            .await;
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if error.is_permanent() {
            return Err(StageFailure::Failed(
                link.service.clone(),
                error.to_string(),
            ));
        }
        let retry_after = unavailable_for(&error);
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

/// How long a transient failure asks the contact to wait: the breaker's
/// `retry_after` when it rejected, or the service's `Retry-After`.
fn unavailable_for(error: &CallError) -> Option<Duration> {
    error
        .retry_after()
        .or_else(|| error.last_error().and_then(ServiceError::retry_after))
}
