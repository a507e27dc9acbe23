//! How a call made through the executor can end without a result.

use std::fmt;
use std::time::Duration;

use callguard_breaker::BreakerOpen;
use callguard_core::{ServiceError, ServiceName};

/// Why transient failures stopped being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// `max_retries` retries were made.
    MaxRetries,
    /// The service's retry budget allows no more retries for now.
    Budget,
    /// The next retry would start at or after the call's deadline.
    Deadline,
    /// `max_concurrency_retries` retries after concurrency `429`s were made.
    ConcurrencyRetries,
}

impl StopReason {
    /// A short snake_case name for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MaxRetries => "max_retries",
            Self::Budget => "budget",
            Self::Deadline => "deadline",
            Self::ConcurrencyRetries => "concurrency_retries",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MaxRetries => "no retries left",
            Self::Budget => "retry budget exhausted",
            Self::Deadline => "the next retry would pass the deadline",
            Self::ConcurrencyRetries => "no retries left after concurrency limits",
        })
    }
}

/// A call that ended without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The breaker was OPEN (or its probe slots taken): the attempt numbered
    /// `retry_count` was not made. The call ends at once, without sleeping;
    /// the caller should defer it until `rejection.retry_after`.
    #[error("{} call rejected (retry {retry_count}): {rejection}", rejection.service)]
    Rejected {
        /// The breaker's answer.
        rejection: BreakerOpen,
        /// The retry count of the attempt that was not made (0: the first).
        retry_count: u32,
        /// The error of the last attempt made, if any was.
        last_error: Option<ServiceError>,
    },
    /// A permanent error: retrying cannot help.
    #[error("{service} call failed permanently (retry {retry_count}): {error}")]
    Permanent {
        /// The service called.
        service: ServiceName,
        /// The retry count of the failed attempt.
        retry_count: u32,
        /// The error.
        error: ServiceError,
    },
    /// Transient errors, and no more retries: they were used up, the retry
    /// budget was empty, or the deadline would have passed.
    #[error("{service} call failed after {attempts} attempt(s), {reason}: {error}")]
    Exhausted {
        /// The service called.
        service: ServiceName,
        /// Attempts made, the first included.
        attempts: u32,
        /// Why no further retry was made.
        reason: StopReason,
        /// The last error.
        error: ServiceError,
    },
    /// The service's limiter did not send the attempt numbered `retry_count`
    /// (no slot in time, or its rate used up): the call ends at once, and the
    /// caller should defer it until `error`'s `retry_after`.
    #[error("{service} call not sent (retry {retry_count}): {error}")]
    Throttled {
        /// The service called.
        service: ServiceName,
        /// The retry count of the attempt that was not sent (0: the first).
        retry_count: u32,
        /// The limiter's refusal, an [`ErrorKind::Throttled`](callguard_core::ErrorKind::Throttled)
        /// error with the wait it suggests.
        error: ServiceError,
        /// The error of the last attempt sent, if any was.
        last_error: Option<ServiceError>,
    },
}

impl CallError {
    /// The service called.
    pub fn service(&self) -> &ServiceName {
        match self {
            Self::Rejected { rejection, .. } => &rejection.service,
            Self::Permanent { service, .. }
            | Self::Exhausted { service, .. }
            | Self::Throttled { service, .. } => service,
        }
    }

    /// The retry count of the last attempt made or, for a rejection, of the
    /// attempt that was rejected (0: the first attempt).
    pub fn retry_count(&self) -> u32 {
        match self {
            Self::Rejected { retry_count, .. }
            | Self::Permanent { retry_count, .. }
            | Self::Throttled { retry_count, .. } => *retry_count,
            Self::Exhausted { attempts, .. } => attempts.saturating_sub(1),
        }
    }

    /// The last error a service answered with; `None` when the breaker
    /// rejected, or the limiter did not send, the first attempt.
    pub fn last_error(&self) -> Option<&ServiceError> {
        match self {
            Self::Rejected { last_error, .. } | Self::Throttled { last_error, .. } => {
                last_error.as_ref()
            }
            Self::Permanent { error, .. } | Self::Exhausted { error, .. } => Some(error),
        }
    }

    /// When trying again makes sense: for a rejection the breaker's estimate,
    /// for a call not sent the limiter's, otherwise the server's `Retry-After`,
    /// if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rejected { rejection, .. } => rejection.retry_after,
            Self::Permanent { error, .. }
            | Self::Exhausted { error, .. }
            | Self::Throttled { error, .. } => error.retry_after(),
        }
    }

    /// Whether the breaker rejected the call (the service is considered down).
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected { .. })
    }

    /// Whether the service's limiter did not send the call (defer it).
    pub fn is_throttled(&self) -> bool {
        matches!(self, Self::Throttled { .. })
    }

    /// Whether the call failed for good (a permanent error).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::{CircuitState, ErrorKind};

    fn service() -> ServiceName {
        ServiceName::new("elevenlabs").unwrap()
    }

    fn unavailable() -> ServiceError {
        ServiceError::new(ErrorKind::Unavailable, "service unavailable").with_status(503)
    }

    #[test]
    fn accessors_and_messages() {
        let exhausted = CallError::Exhausted {
            service: service(),
            attempts: 4,
            reason: StopReason::MaxRetries,
            error: unavailable(),
        };
        assert_eq!(exhausted.retry_count(), 3);
        assert_eq!(exhausted.last_error(), Some(&unavailable()));
        assert_eq!(
            exhausted.to_string(),
            "elevenlabs call failed after 4 attempt(s), no retries left: \
             transient error (unavailable), HTTP 503: service unavailable"
        );

        let rejected = CallError::Rejected {
            rejection: BreakerOpen {
                service: service(),
                state: CircuitState::Open,
                retry_after: Some(Duration::from_secs(10)),
            },
            retry_count: 2,
            last_error: None,
        };
        assert!(rejected.is_rejected() && !rejected.is_permanent());
        assert_eq!(rejected.service().as_str(), "elevenlabs");
        assert_eq!(rejected.retry_after(), Some(Duration::from_secs(10)));
        assert_eq!(rejected.last_error(), None);
        assert_eq!(
            rejected.to_string(),
            "elevenlabs call rejected (retry 2): circuit breaker for elevenlabs is OPEN; retry after 10.0s"
        );

        let permanent = CallError::Permanent {
            service: service(),
            retry_count: 1,
            error: ServiceError::new(ErrorKind::Unauthorized, "unauthorized").with_status(401),
        };
        assert!(permanent.is_permanent());
        assert_eq!(permanent.retry_count(), 1);
        assert_eq!(permanent.retry_after(), None);
    }
}
