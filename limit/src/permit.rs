//! A slot held by one attempt, and how the attempt ended.

use std::fmt;
use std::time::Duration;

use callguard_core::{ErrorKind, ServiceError};
use tokio::time::Instant;

use crate::headers::ProviderHeaders;
use crate::limiter::Limiter;

/// How an attempt that held a slot ended, as the limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The service answered (anything but the errors below; a `4xx` about
    /// the request, too, was an answer). An adaptive limit times it.
    Success,
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
    /// The outcome of an attempt that ended with `error`.
    pub fn of_error(error: &ServiceError) -> Self {
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
            _ => Self::Success,
        }
    }

    /// The outcome of an attempt that ended with `result`.
    pub fn of<T>(result: &Result<T, ServiceError>) -> Self {
        result.as_ref().err().map_or(Self::Success, Self::of_error)
    }
}

/// A slot held for one attempt. [`complete`](Self::complete) it with how the
/// attempt ended and the headers of the answer; dropping it without that (a
/// cancelled attempt) gives the slot back and teaches the limit nothing.
#[must_use = "a permit holds a slot until it is completed or dropped"]
pub struct Permit<'a> {
    limiter: &'a Limiter,
    /// When the slot was taken, if the limit learns from latency.
    admitted: Option<Instant>,
}

impl<'a> Permit<'a> {
    pub(crate) fn new(limiter: &'a Limiter, timed: bool) -> Self {
        Self {
            limiter,
            admitted: timed.then(Instant::now),
        }
    }

    /// The attempt ended with `outcome`, and its answer carried `headers`
    /// ([`ProviderHeaders::NONE`] when there was no answer). Gives the slot back.
    pub fn complete(self, outcome: Outcome, headers: &ProviderHeaders) {
        let latency: Option<Duration> = self.admitted.map(|at| at.elapsed());
        self.limiter.learn(outcome, latency, headers);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("service", self.limiter.service())
            .field("admitted", &self.admitted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::classify_status;
    use std::time::SystemTime;

    #[test]
    fn outcomes_of_errors() {
        let status = |code| classify_status(code, None, SystemTime::UNIX_EPOCH).unwrap();
        let busy = callguard_core::refine_by_body(
            status(429),
            br#"{"detail":{"status":"too_many_concurrent_requests"}}"#,
        );
        assert_eq!(Outcome::of_error(&busy), Outcome::ConcurrencyLimited);
        assert_eq!(Outcome::of_error(&status(429)), Outcome::RateLimited);
        assert_eq!(Outcome::of_error(&status(408)), Outcome::Timeout);
        assert_eq!(Outcome::of_error(&status(503)), Outcome::Failed);
        assert_eq!(Outcome::of_error(&status(422)), Outcome::Success);
        assert_eq!(Outcome::of_error(&status(401)), Outcome::Success);
        assert_eq!(Outcome::of(&Ok::<_, ServiceError>(())), Outcome::Success);
        assert_eq!(Outcome::of::<()>(&Err(status(504))), Outcome::Failed);
    }
}
