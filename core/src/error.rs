//! The error taxonomy: what went wrong with a call to an external service, whether
//! retrying can help (transient vs permanent) and whether it says the *service* is
//! unusable (counts toward its circuit breaker) or only one *request* was bad.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Whether an error may go away on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// Retrying later may succeed (5xx, timeouts, connection failures, 429).
    Transient,
    /// Retrying the same request cannot succeed (4xx, unparseable responses).
    Permanent,
}

impl ErrorCategory {
    /// The lowercase name used in logs (`transient`, `permanent`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of failure a call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service answered 5xx (other than 501): it is down or overloaded.
    Unavailable,
    /// No answer in time: a request timeout or HTTP 408.
    Timeout,
    /// The connection could not be established (refused, DNS, TLS handshake).
    Connect,
    /// The connection was reset or closed mid-exchange.
    ConnectionReset,
    /// HTTP 429: the client is sending too much (a rate limit, or the service
    /// is overloaded: ElevenLabs' `system_busy`). Retried with backoff.
    RateLimited,
    /// HTTP 429 because the service is at its limit of concurrent requests
    /// (ElevenLabs' `too_many_concurrent_requests`): a slot frees as soon as
    /// one of the requests in flight ends, so it is retried soon, without
    /// growing the backoff, and it shrinks the service's concurrency limit.
    ConcurrencyLimited,
    /// Not sent: callguard's own limiter for the service had no slot in time
    /// (its queue was full, or `queue_timeout` passed, or the service's rate
    /// limit is used up). The call ends at once, to be deferred.
    Throttled,
    /// HTTP 401: the credentials are missing or wrong.
    Unauthorized,
    /// HTTP 403: the credentials are not allowed to do this.
    Forbidden,
    /// HTTP 402 or a quota message: the account can make no more calls.
    QuotaExceeded,
    /// HTTP 501: the service does not implement what was asked.
    NotImplemented,
    /// HTTP 400, 405, 409, 413, 422 and other 4xx: this one request is wrong.
    InvalidRequest,
    /// HTTP 404 or 410: the addressed resource does not exist.
    NotFound,
    /// The service answered, but with a body that cannot be used.
    BadResponse,
}

impl ErrorKind {
    /// Whether errors of this kind may go away on a retry.
    pub const fn category(self) -> ErrorCategory {
        match self {
            Self::Unavailable
            | Self::Timeout
            | Self::Connect
            | Self::ConnectionReset
            | Self::RateLimited
            | Self::ConcurrencyLimited
            | Self::Throttled => ErrorCategory::Transient,
            Self::Unauthorized
            | Self::Forbidden
            | Self::QuotaExceeded
            | Self::NotImplemented
            | Self::InvalidRequest
            | Self::NotFound
            | Self::BadResponse => ErrorCategory::Permanent,
        }
    }

    /// Whether an error of this kind is recorded as a failure by the service's
    /// circuit breaker.
    ///
    /// Failures that say the *service* is unusable count: outages, timeouts,
    /// connection failures, rejected credentials, exhausted quota, garbage
    /// responses. Failures about one *request* (400, 404, 422) do not, since one
    /// bad contact must not stop everyone's calls; nor does 429, which says the
    /// service is healthy but wants us to slow down; nor does a call that
    /// callguard's own limiter did not send.
    pub const fn counts_toward_breaker(self) -> bool {
        match self {
            Self::Unavailable
            | Self::Timeout
            | Self::Connect
            | Self::ConnectionReset
            | Self::Unauthorized
            | Self::Forbidden
            | Self::QuotaExceeded
            | Self::NotImplemented
            | Self::BadResponse => true,
            Self::RateLimited
            | Self::ConcurrencyLimited
            | Self::Throttled
            | Self::InvalidRequest
            | Self::NotFound => false,
        }
    }

    /// The snake_case name used in logs and metrics (`unavailable`, `rate_limited`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::ConnectionReset => "connection_reset",
            Self::RateLimited => "rate_limited",
            Self::ConcurrencyLimited => "concurrency_limited",
            Self::Throttled => "throttled",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::QuotaExceeded => "quota_exceeded",
            Self::NotImplemented => "not_implemented",
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::BadResponse => "bad_response",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call to an external service, classified.
///
/// The detail is a human-readable explanation. It must never contain secrets:
/// clients build it from status lines and response excerpts, never from request
/// headers or URLs that carry keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ServiceError {
    kind: ErrorKind,
    status: Option<u16>,
    retry_after: Option<Duration>,
    detail: Cow<'static, str>,
}

impl ServiceError {
    /// An error of `kind` with a short explanation.
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            status: None,
            retry_after: None,
            detail: detail.into(),
        }
    }

    /// The same error as another kind: status, retry-after and detail are
    /// kept. For a client that learns more from the body than the status said.
    #[must_use]
    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Records the HTTP status the service answered with.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Records how long the service asked us to wait (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The same error with `detail` for its explanation: kind, status and
    /// retry-after are kept. For adding what a client learned after
    /// classifying, such as the server's reason from the response body.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The same error with `reason` appended to its detail
    /// (`"{detail}: {reason}"`), kind, status and retry-after kept; an empty
    /// `reason` leaves it as it is. For the server's reason from a response
    /// body.
    #[must_use]
    pub fn with_reason(self, reason: &str) -> Self {
        if reason.is_empty() {
            return self;
        }
        let detail = format!("{}: {reason}", self.detail);
        self.with_detail(detail)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Transient or permanent.
    pub fn category(&self) -> ErrorCategory {
        self.kind.category()
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.category() == ErrorCategory::Transient
    }

    /// Whether the service's breaker records this as a failure.
    pub fn counts_toward_breaker(&self) -> bool {
        self.kind.counts_toward_breaker()
    }

    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The wait the service asked for, when it sent `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error ({})", self.category(), self.kind)?;
        if let Some(status) = self.status {
            write!(f, ", HTTP {status}")?;
        }
        if let Some(wait) = self.retry_after {
            write!(f, ", retry after {}", humantime::format_duration(wait))?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_category_kind_status_and_detail() {
        let err = ServiceError::new(ErrorKind::Unavailable, "upstream overloaded")
            .with_status(503)
            .with_retry_after(Duration::from_secs(2));
        assert_eq!(
            err.to_string(),
            "transient error (unavailable), HTTP 503, retry after 2s: upstream overloaded"
        );
    }

    #[test]
    fn a_new_detail_keeps_kind_status_and_retry_after() {
        let err = ServiceError::new(ErrorKind::RateLimited, "too many requests")
            .with_status(429)
            .with_retry_after(Duration::from_secs(3))
            .with_detail("too many requests: slow down");
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(err.status(), Some(429));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(err.detail(), "too many requests: slow down");
    }

    #[test]
    fn a_reason_is_appended_to_the_detail_when_there_is_one() {
        let err = ServiceError::new(ErrorKind::RateLimited, "too many requests")
            .with_status(429)
            .with_retry_after(Duration::from_secs(3));
        assert_eq!(err.clone().with_reason(""), err);
        let explained = err.with_reason("slow down");
        assert_eq!(explained.detail(), "too many requests: slow down");
        assert_eq!(explained.status(), Some(429));
        assert_eq!(explained.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn request_level_errors_do_not_count_toward_the_breaker() {
        for kind in [
            ErrorKind::InvalidRequest,
            ErrorKind::NotFound,
            ErrorKind::RateLimited,
            ErrorKind::ConcurrencyLimited,
            ErrorKind::Throttled,
        ] {
            assert!(!kind.counts_toward_breaker(), "{kind}");
        }
        for kind in [
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::QuotaExceeded,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
        ] {
            assert!(kind.counts_toward_breaker(), "{kind}");
        }
    }

    #[test]
    fn limit_kinds_are_transient_with_their_own_names() {
        for (kind, name) in [
            (ErrorKind::ConcurrencyLimited, "concurrency_limited"),
            (ErrorKind::Throttled, "throttled"),
        ] {
            assert_eq!(kind.category(), ErrorCategory::Transient, "{kind}");
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        }
    }

    #[test]
    fn kind_names_round_trip_through_serde() {
        let json = serde_json::to_string(&ErrorKind::ConnectionReset).unwrap();
        assert_eq!(json, "\"connection_reset\"");
        assert_eq!(
            ErrorKind::ConnectionReset.as_str(),
            json.trim_matches('"'),
            "as_str and serde agree"
        );
    }
}
