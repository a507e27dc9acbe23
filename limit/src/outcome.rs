//! How an attempt that held a slot ended, as the limit sees it.

use std::time::Duration;

use callguard_core::{ErrorKind, ServiceError};

/// How an attempt that held a slot ended, as the limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The service answered (anything but the errors below; a `4xx` about
    /// the request, too, was an answer) after `latency`, from sending the
    /// request to the answer. An adaptive limit learns from it; every limit
    /// uses it to suggest when a refused call should come back.
    Success {
        /// The attempt's time.
        latency: Duration,
    },
    /// `429 too_many_concurrent_requests`: over the service's concurrency
    /// limit. The limit shrinks.
    ConcurrencyLimited,
    /// Any other `429` (a rate limit, `system_busy`): the retry layer backs
    /// off and the rate headers pause admission; the concurrency limit stays.
    RateLimited,
    /// No answer in time: overload. The limit shrinks.
    Timeout,
    /// Another failure (refused connection, `5xx`): no signal for the limit —
    /// the circuit breaker deals with outages.
    Failed,
}

impl Outcome {
    /// The outcome of an attempt that ended with `result` after `latency`.
    pub fn of<T>(result: &Result<T, ServiceError>, latency: Duration) -> Self {
        let Err(error) = result else {
            return Self::Success { latency };
        };
        match error.kind() {
            ErrorKind::ConcurrencyLimited => Self::ConcurrencyLimited,
            ErrorKind::RateLimited => Self::RateLimited,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Unavailable
            | ErrorKind::Connect
            | ErrorKind::ConnectionReset
            | ErrorKind::Throttled
            | ErrorKind::BadResponse => Self::Failed,
            // The service answered, about this request or this account.
            _ => Self::Success { latency },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::classify_status;
    use std::time::SystemTime;

    #[test]
    fn outcomes_of_results() {
        let latency = Duration::from_millis(150);
        let of = |code| {
            let error = classify_status(code, None, SystemTime::UNIX_EPOCH).unwrap();
            Outcome::of::<()>(&Err(error), latency)
        };
        let busy = callguard_core::refine_by_body(
            classify_status(429, None, SystemTime::UNIX_EPOCH).unwrap(),
            br#"{"detail":{"status":"too_many_concurrent_requests"}}"#,
        );
        assert_eq!(
            Outcome::of::<()>(&Err(busy), latency),
            Outcome::ConcurrencyLimited
        );
        assert_eq!(of(429), Outcome::RateLimited);
        assert_eq!(of(408), Outcome::Timeout);
        assert_eq!(of(503), Outcome::Failed);
        assert_eq!(of(504), Outcome::Failed);
        assert_eq!(of(422), Outcome::Success { latency });
        assert_eq!(of(401), Outcome::Success { latency });
        assert_eq!(
            Outcome::of(&Ok::<_, ServiceError>(()), latency),
            Outcome::Success { latency }
        );
    }
}
