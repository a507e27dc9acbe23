//! The delivery channels — email, Telegram, webhook — behind one small trait
//! the delivery workers drive, and the HTTP plumbing two of them share.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use callguard_core::ServiceError;

use crate::Alert;

pub(crate) mod email;
pub(crate) mod http;
pub(crate) mod telegram;
pub(crate) mod webhook;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChannelKind {
    /// E-mail through SMTP.
    Email,
    /// A Telegram bot's messages to a chat.
    Telegram,
    /// A signed JSON POST.
    Webhook,
}

impl ChannelKind {
    /// `email`, `telegram` or `webhook`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Telegram => "telegram",
            Self::Webhook => "webhook",
        }
    }

    /// The name of the channel's own circuit breaker (and of its retry logs):
    /// `alerts-email`, `alerts-telegram`, `alerts-webhook`.
    pub const fn breaker_name(self) -> &'static str {
        match self {
            Self::Email => "alerts-email",
            Self::Telegram => "alerts-telegram",
            Self::Webhook => "alerts-webhook",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boxed future of one delivery attempt.
pub(crate) type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>>;

/// What a delivery worker needs of a channel. An alert goes out in one or
/// more parts (Telegram splits long texts); each part is one request, retried
/// on its own, so a retry never repeats a part already delivered.
pub(crate) trait Channel: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ChannelKind;

    /// How many requests `alert` takes.
    fn parts(&self, _alert: &Alert) -> usize {
        1
    }

    /// One attempt at sending part `part` of `alert`. Errors are classified
    /// and free of secrets.
    fn send<'a>(&'a self, alert: &'a Alert, part: usize) -> Sending<'a>;
}
