//! Clients of the services a call agent uses — ElevenLabs text-to-speech
//! ([`TtsClient`]), an OpenAI-compatible LLM ([`LlmClient`]) and the CRM
//! ([`CrmClient`]) — speaking their real request shapes.
//!
//! Each client owns one `reqwest::Client` with the service's connect and
//! request timeouts, and every answer goes through one shared reader: the
//! status is classified by `callguard_core::classify_status` (with
//! `Retry-After`), transport failures become `TransportFailure`s, the body is
//! read chunk by chunk up to `max_response_bytes`, and a body that cannot be
//! used is an `ErrorKind::BadResponse`. Every request carries `X-Contact-Id`
//! and, when the caller has one, `traceparent`, and ends at the call's
//! deadline if that comes before `request_timeout` (see [`RequestContext`]).
//! Each call answers the value with the answer's limit headers
//! ([`Answered`]: `.result` is the value) for the service's limiter, read
//! before the body; a
//! `429` is refined by its body (`too_many_concurrent_requests` is
//! `ErrorKind::ConcurrencyLimited`).
//! Keys never appear in `Debug` output or error details.

mod config;
mod contact;
mod crm;
mod http;
mod llm;
mod tts;

use callguard_core::ValidationError;

pub use config::HttpServiceConfig;
pub use contact::Contact;
pub use crm::{CallOutcome, CallRecord, CrmClient, IDEMPOTENCY_KEY_HEADER, Recorded};
pub use http::{Answered, CONTACT_ID_HEADER, RequestContext, TRACEPARENT_HEADER};
pub use llm::{LlmAuth, LlmClient, LlmSettings, Prompt, TokenLimitParam};
pub use tts::{Audio, TtsClient, TtsSettings};

/// Why a client could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientSetupError {
    /// A config value breaks a rule (keys relative to the service's section
    /// until [`ClientSetupError::in_section`] prefixes them).
    #[error(transparent)]
    Config(#[from] ValidationError),
    /// The HTTP client itself could not be built (e.g. TLS set-up failed).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl ClientSetupError {
    /// Prefixes a config error's key with the service's section, e.g.
    /// `services.elevenlabs`.
    #[must_use]
    pub fn in_section(self, section: &str) -> Self {
        match self {
            Self::Config(error) => Self::Config(error.in_section(section)),
            other => other,
        }
    }
}
