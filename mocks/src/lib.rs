//! HTTP fakes of the services the callguard agent calls — ElevenLabs TTS, an
//! OpenAI-compatible LLM and a CRM — on one port, each under its own path
//! prefix (`http://ADDR/elevenlabs`, `/llm`, `/crm`), with a fault-injection
//! control API under `/_control`; ElevenLabs' concurrency limit and the
//! LLM's requests per minute are enforced as the real services do, when set
//! ([`MockLimits`]). Beside them, [`SmtpSink`] runs a real SMTP server
//! (aiosmtpd, a child process) for email tests, and [`FaultProxy`] breaks
//! TCP links to real servers (cut, refuse, blackhole, latency).
//!
//! In-process use (tests, `callguard simulate`):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
//!
//! let server = MockServer::start(MockConfig::default()).await?;
//! let tts_url = server.base_url(Service::Elevenlabs);
//! server.inject(
//!     Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
//!         .starting_after(Duration::from_secs(3))
//!         .lasting(Duration::from_secs(20)),
//! )?;
//! // ... point a client at `tts_url` ...
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! As a process, `callguard mocks --listen 127.0.0.1:8080` calls [`serve`].
//! All fault timing uses `tokio::time`, so tests under a paused clock work.

mod config;
mod control;
mod crm;
mod fault;
mod gate;
mod limits;
mod llm;
mod logs;
mod proxy;
mod server;
mod service;
mod sinks;
mod smtp;
mod state;
mod stats;
mod tracing_ctx;
mod tts;

pub use config::{MockConfig, MockKeys};
pub use crm::{CrmRecord, IDEMPOTENCY_HEADER};
pub use fault::{Fault, FaultId, FaultMode, FaultState, ListedFault};
pub use gate::{CONTACT_HEADER, SYSTEM_BUSY};
pub use limits::{
    ConcurrencyLimit, ConcurrencyState, LimitsState, MockLimits, RateState, RequestRate,
};
pub use llm::{GEMINI_CHAT_PATH, MockLlm, OPENAI_CHAT_PATH};
pub use logs::LogCapture;
pub use proxy::{
    ConditionState, FaultProxy, LatencyState, ProxyConditions, ProxyError, ProxySpec, ProxyState,
};
pub use server::{MockError, MockServer, serve};
pub use service::{EndpointKind, Service};
pub use sinks::failures::SinkFailure;
pub use sinks::sheets::{SHEETS_STATIC_TOKEN, SheetsAppend};
pub use sinks::telegram::{
    TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_TEXT_LIMIT, TelegramRequest,
};
pub use sinks::token::{
    DEFAULT_TOKEN_LIFETIME, TEST_SERVICE_ACCOUNT_EMAIL, TokenRequest, test_service_account_json,
};
pub use sinks::webhook::WebhookRequest;
pub use smtp::{SmtpFlap, SmtpSink};
pub use stats::{OUTCOME_RESET, OUTCOME_TIMEOUT, ServiceStats, Stats};
