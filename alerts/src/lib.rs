//! Alerts for callguard (DESIGN.md, "Alerts"): tell people when a call fails
//! permanently, when retries are exhausted, when a circuit breaker opens (once
//! per transition, never per rejected call) and, as a resolve notice, when it
//! closes again.
//!
//! * [`Alert`]: kind, severity, service, error category, contact, breaker
//!   state, time and trace id; [`Alert::from_event`] and
//!   [`Alert::from_transition`] build one from what the resilience layer says.
//! * [`AlertManager`]: deduplicates per (service, kind) within a cooldown
//!   (reporting how many were suppressed in the next alert), then delivers off
//!   the call path — [`AlertManager::raise`] never waits — through one bounded
//!   queue per channel, each channel with its own retry policy and circuit
//!   breaker (callguard's own `Executor`). Outcomes are counted per channel
//!   ([`AlertCounts`]); [`AlertManager::shutdown`] flushes within a deadline.
//! * Channels ([`AlertsConfig`]): email (SMTP via lettre), Telegram (Bot API
//!   `sendMessage`) and a webhook (versioned JSON, HMAC-SHA256 signed; see
//!   [`webhook`]).
//!
//! Secrets (bot token, SMTP password, webhook secret) are
//! [`callguard_core::Secret`]s: they never appear in logs, errors or `Debug`.

mod alert;
mod channel;
mod config;
mod dedup;
mod manager;

pub use alert::{Alert, AlertKind, Severity};
pub use channel::ChannelKind;
pub use channel::telegram::TELEGRAM_MESSAGE_LIMIT;
pub use config::{
    AlertsConfig, Delivery, EmailConfig, MIN_WEBHOOK_SECRET_LEN, SmtpTls, TELEGRAM_API_BASE,
    TelegramConfig, WebhookConfig,
};
pub use manager::{AlertCounts, AlertManager, ChannelCounts, Raised};

/// The webhook's wire format: payload, headers and signature.
pub mod webhook {
    pub use crate::channel::webhook::{
        PAYLOAD_VERSION, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookPayload, sign,
    };
}

use callguard_core::ValidationError;

/// Why an [`AlertManager`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    /// The config breaks a rule.
    #[error("invalid alerts config: {0}")]
    Config(#[from] ValidationError),
    /// A channel's client could not be set up (e.g. its TLS configuration).
    #[error("the {channel} alert channel could not be set up: {reason}")]
    Client {
        /// The channel.
        channel: ChannelKind,
        /// Why, secret-free.
        reason: String,
    },
}
