//! Classification of HTTP statuses and transport failures into [`ServiceError`]s,
//! following the rules in DESIGN.md.

use std::time::SystemTime;

use crate::error::{ErrorKind, ServiceError};
use crate::retry_after::parse_retry_after;

/// Classifies an HTTP response status.
///
/// Returns `None` for 2xx. `retry_after` is the raw `Retry-After` header, honoured
/// on 429 and 503; an unparseable value is ignored (the computed backoff applies).
pub fn classify_status(
    status: u16,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<ServiceError> {
    let kind = match status {
        200..=299 => return None,
        408 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        401 => ErrorKind::Unauthorized,
        402 => ErrorKind::QuotaExceeded,
        403 => ErrorKind::Forbidden,
        404 | 410 => ErrorKind::NotFound,
        400..=499 => ErrorKind::InvalidRequest,
        501 => ErrorKind::NotImplemented,
        500..=599 => ErrorKind::Unavailable,
        // 1xx as a final status, 3xx the client did not follow, or nonsense.
        _ => ErrorKind::BadResponse,
    };
    let mut error = ServiceError::new(kind, status_reason(status)).with_status(status);
    if matches!(status, 429 | 503) {
        if let Some(wait) = retry_after.and_then(|v| parse_retry_after(v, now).ok()) {
            error = error.with_retry_after(wait);
        }
    }
    Some(error)
}

/// Refines a classified error by the service's own error code in its body.
///
/// A `429` whose body is ElevenLabs'
/// `{"detail":{"status":"too_many_concurrent_requests",…}}` becomes
/// [`ErrorKind::ConcurrencyLimited`]: the service is healthy and a slot
/// frees within one request's time. A `429` whose body is OpenAI's
/// `{"error":{"code":"insufficient_quota",…}}` (or that `type`) becomes
/// [`ErrorKind::QuotaExceeded`]: not a rate limit but a billing problem that
/// no wait cures — permanent, and counted by the breaker like a `402`.
/// Status, `Retry-After` and detail are kept. Every other error,
/// `system_busy`, `rate_limit_exceeded` and bodies that are not JSON
/// included, is returned as it is.
pub fn refine_by_body(error: ServiceError, body: &[u8]) -> ServiceError {
    if error.kind() != ErrorKind::RateLimited {
        return error;
    }
    #[derive(serde::Deserialize)]
    struct Body {
        /// ElevenLabs' error.
        detail: Option<Detail>,
        /// OpenAI's error.
        error: Option<OpenAiError>,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        status: String,
    }
    #[derive(serde::Deserialize)]
    struct OpenAiError {
        code: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let Ok(body) = serde_json::from_slice::<Body>(body) else {
        return error;
    };
    if body
        .detail
        .is_some_and(|detail| detail.status == TOO_MANY_CONCURRENT_REQUESTS)
    {
        return error.with_kind(ErrorKind::ConcurrencyLimited);
    }
    let quota = |code: &Option<String>| code.as_deref() == Some(INSUFFICIENT_QUOTA);
    if body.error.is_some_and(|e| quota(&e.code) || quota(&e.kind)) {
        return error.with_kind(ErrorKind::QuotaExceeded);
    }
    error
}

/// OpenAI's code for a `429` from an account out of credit.
pub const INSUFFICIENT_QUOTA: &str = "insufficient_quota";

/// ElevenLabs' code for a `429` over the plan's concurrency limit.
pub const TOO_MANY_CONCURRENT_REQUESTS: &str = "too_many_concurrent_requests";

fn status_reason(status: u16) -> &'static str {
    let named = match status {
        400 => "bad request",
        401 => "unauthorized",
        402 => "payment required",
        403 => "forbidden",
        404 => "not found",
        405 => "method not allowed",
        408 => "request timeout",
        409 => "conflict",
        410 => "gone",
        413 => "payload too large",
        422 => "unprocessable entity",
        429 => "too many requests",
        500 => "internal server error",
        501 => "not implemented",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "",
    };
    match (named, status / 100) {
        ("", 3) => "unexpected redirect",
        ("", 4) => "client error",
        ("", 5) => "server error",
        ("", _) => "unexpected status",
        (named, _) => named,
    }
}

/// A failure below HTTP: the request never got a usable response.
///
/// HTTP clients map their own error types onto these (for reqwest:
/// `is_timeout`, `is_connect`, and I/O errors such as `ConnectionReset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportFailure {
    /// No response within the request or connect timeout.
    Timeout,
    /// The connection could not be opened.
    Connect,
    /// The connection was reset or closed before the response was complete.
    Reset,
    /// The response body exceeded the configured size cap.
    BodyTooLarge,
}

impl TransportFailure {
    /// The classified error, with a secret-free explanation.
    pub fn into_error(self, detail: impl Into<std::borrow::Cow<'static, str>>) -> ServiceError {
        let kind = match self {
            Self::Timeout => ErrorKind::Timeout,
            Self::Connect => ErrorKind::Connect,
            Self::Reset => ErrorKind::ConnectionReset,
            Self::BodyTooLarge => ErrorKind::BadResponse,
        };
        ServiceError::new(kind, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCategory::{Permanent, Transient};
    use std::time::Duration;

    fn classify(status: u16) -> ServiceError {
        classify_status(status, None, SystemTime::UNIX_EPOCH).unwrap()
    }

    #[test]
    fn success_is_not_an_error() {
        for status in [200, 201, 204, 299] {
            assert!(classify_status(status, None, SystemTime::now()).is_none());
        }
    }

    #[test]
    fn transient_statuses() {
        for status in [500, 502, 503, 504, 599, 408, 429] {
            assert_eq!(classify(status).category(), Transient, "{status}");
        }
    }

    #[test]
    fn permanent_statuses() {
        for status in [400, 401, 403, 404, 405, 409, 410, 413, 422, 501] {
            assert_eq!(classify(status).category(), Permanent, "{status}");
        }
    }

    #[test]
    fn kinds_and_breaker_counting() {
        assert_eq!(classify(401).kind(), ErrorKind::Unauthorized);
        assert!(classify(401).counts_toward_breaker());
        assert!(classify(403).counts_toward_breaker());
        assert!(!classify(400).counts_toward_breaker());
        assert!(!classify(404).counts_toward_breaker());
        assert!(!classify(422).counts_toward_breaker());
        assert!(!classify(429).counts_toward_breaker());
        assert!(classify(503).counts_toward_breaker());
        assert_eq!(classify(501).kind(), ErrorKind::NotImplemented);
        assert_eq!(classify(302).kind(), ErrorKind::BadResponse);
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let now = SystemTime::UNIX_EPOCH;
        let wait = |status, header| {
            classify_status(status, Some(header), now)
                .unwrap()
                .retry_after()
        };
        assert_eq!(wait(503, "7"), Some(Duration::from_secs(7)));
        assert_eq!(
            wait(429, "Thu, 01 Jan 1970 00:01:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(wait(500, "7"), None);
        assert_eq!(wait(503, "whenever"), None, "garbage is ignored");
    }

    #[test]
    fn a_concurrency_429_is_told_apart_by_its_body() {
        let now = SystemTime::UNIX_EPOCH;
        let too_many = classify_status(429, Some("1"), now).unwrap();
        let refined = refine_by_body(
            too_many.clone(),
            br#"{"detail":{"status":"too_many_concurrent_requests","message":"Too many"}}"#,
        );
        assert_eq!(refined.kind(), ErrorKind::ConcurrencyLimited);
        assert_eq!(refined.status(), Some(429));
        assert_eq!(refined.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(refined.detail(), too_many.detail());
        assert_eq!(refined.category(), Transient);
        assert!(!refined.counts_toward_breaker());

        for other in [
            &br#"{"detail":{"status":"system_busy","message":"Busy"}}"#[..],
            br#"{"error":{"code":"rate_limit_exceeded","type":"requests"}}"#,
            br#"{"detail":"too_many_concurrent_requests"}"#,
            b"too_many_concurrent_requests",
            b"",
        ] {
            let kept = refine_by_body(too_many.clone(), other);
            assert_eq!(kept, too_many, "{}", String::from_utf8_lossy(other));
        }
        let unavailable = classify(503);
        assert_eq!(
            refine_by_body(
                unavailable.clone(),
                br#"{"detail":{"status":"too_many_concurrent_requests"}}"#
            ),
            unavailable,
            "only a 429 is refined"
        );
    }

    #[test]
    fn an_openai_quota_429_is_permanent() {
        let now = SystemTime::UNIX_EPOCH;
        let too_many = classify_status(429, Some("20"), now).unwrap();
        for body in [
            &br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#[..],
            br#"{"error":{"type":"insufficient_quota","code":null}}"#,
        ] {
            let refined = refine_by_body(too_many.clone(), body);
            assert_eq!(
                refined.kind(),
                ErrorKind::QuotaExceeded,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(refined.category(), Permanent, "never retried");
            assert!(refined.counts_toward_breaker(), "the account is unusable");
            assert_eq!(refined.status(), Some(429));
        }
        let rate = br#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            refine_by_body(too_many.clone(), rate).kind(),
            ErrorKind::RateLimited,
            "a rate limit stays a rate limit"
        );
    }

    #[test]
    fn transport_failures() {
        assert_eq!(
            TransportFailure::Reset.into_error("reset").category(),
            Transient
        );
        assert_eq!(
            TransportFailure::Connect.into_error("refused").kind(),
            ErrorKind::Connect
        );
        let too_large = TransportFailure::BodyTooLarge.into_error("over 10 MiB");
        assert_eq!(too_large.category(), Permanent);
    }
}
