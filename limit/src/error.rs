//! Why a call got no slot: every refusal says when to try again, and becomes
//! a [`ServiceError`] of kind [`ErrorKind::Throttled`], which the retry
//! executor ends the call with, for the caller to defer.

use std::time::Duration;

use callguard_core::{ConfigDuration, ErrorKind, ServiceError, ServiceName};

/// A call the limiter did not admit. Never a failure of the service: the
/// call is to be deferred until [`retry_after`](Self::retry_after).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// `queue_length` calls already wait for a slot.
    #[error(
        "{service}: {queue_length} calls already wait for a slot; try again in {}",
        ConfigDuration::new(*retry_after)
    )]
    QueueFull {
        /// The service.
        service: ServiceName,
        /// The configured queue length.
        queue_length: u32,
        /// When a slot is likely to be free: the queue's expected drain time.
        retry_after: Duration,
    },
    /// No slot came free within `queue_timeout`.
    #[error(
        "{service}: no slot of {limit} came free within {}; try again in {}",
        ConfigDuration::new(*waited),
        ConfigDuration::new(*retry_after)
    )]
    TimedOut {
        /// The service.
        service: ServiceName,
        /// The limit at the time.
        limit: u32,
        /// How long the call waited.
        waited: Duration,
        /// When a slot is likely to be free.
        retry_after: Duration,
    },
    /// The rate is used up — callguard's own `rate`, or the provider said so
    /// (`x-ratelimit-remaining-requests: 0`) — until past the call's
    /// `queue_timeout`.
    #[error(
        "{service}: the request rate is used up for {}",
        ConfigDuration::new(*retry_after)
    )]
    RateExhausted {
        /// The service.
        service: ServiceName,
        /// When the rate allows a call again.
        retry_after: Duration,
    },
}

impl LimitError {
    /// The service whose limiter refused.
    pub fn service(&self) -> &ServiceName {
        match self {
            Self::QueueFull { service, .. }
            | Self::TimedOut { service, .. }
            | Self::RateExhausted { service, .. } => service,
        }
    }

    /// When trying again makes sense.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::QueueFull { retry_after, .. }
            | Self::TimedOut { retry_after, .. }
            | Self::RateExhausted { retry_after, .. } => *retry_after,
        }
    }
}

/// A refusal as the error of an attempt that was not sent:
/// [`ErrorKind::Throttled`] with the suggested wait as its `retry_after`.
impl From<LimitError> for ServiceError {
    fn from(error: LimitError) -> Self {
        let retry_after = error.retry_after();
        ServiceError::new(ErrorKind::Throttled, error.to_string()).with_retry_after(retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_a_throttled_service_error_with_its_wait() {
        let refusal = LimitError::TimedOut {
            service: ServiceName::new("elevenlabs").unwrap(),
            limit: 4,
            waited: Duration::from_secs(10),
            retry_after: Duration::from_millis(600),
        };
        assert_eq!(
            refusal.to_string(),
            "elevenlabs: no slot of 4 came free within 10s; try again in 600ms"
        );
        let error = ServiceError::from(refusal.clone());
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert_eq!(error.retry_after(), Some(Duration::from_millis(600)));
        assert!(error.is_transient() && !error.counts_toward_breaker());
        assert_eq!(error.detail(), refusal.to_string());
        assert_eq!(refusal.service().as_str(), "elevenlabs");
    }
}
