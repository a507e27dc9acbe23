//! Parsing of the HTTP `Retry-After` header (RFC 9110 §10.2.3): either a number of
//! seconds or an HTTP-date.

use std::time::{Duration, SystemTime};

/// Longest wait accepted from a server, so a hostile or broken header cannot park
/// a caller for years. Callers cap further with their own `max_delay`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A `Retry-After` value that is neither delta-seconds nor an HTTP-date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Retry-After value {value:?} is neither a number of seconds nor an HTTP-date")]
pub struct RetryAfterError {
    /// The rejected header value (trimmed, at most 64 characters).
    pub value: String,
}

/// Parses a `Retry-After` header value into the wait it asks for.
///
/// Delta-seconds (`"120"`) are taken as they are; an HTTP-date is measured from
/// `now`, and a date in the past means "retry now" (zero). Waits are capped at
/// [`MAX_RETRY_AFTER`]. Anything else — negative or fractional numbers, empty
/// strings, malformed dates — is an error, never a panic.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Result<Duration, RetryAfterError> {
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: delta-seconds. Overlong numbers saturate to the cap.
        let secs = trimmed.parse::<u64>().unwrap_or(u64::MAX);
        return Ok(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    match httpdate::parse_http_date(trimmed) {
        Ok(at) => Ok(at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER)),
        Err(_) => Err(RetryAfterError {
            value: trimmed.chars().take(64).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(
            parse_retry_after("120", at(0)),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", at(0)), Ok(Duration::ZERO));
    }

    #[test]
    fn http_date_is_measured_from_now() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        let now = at(784_111_777 - 30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Ok(Duration::from_secs(30))
        );
    }

    #[test]
    fn http_date_in_the_past_means_now() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(2_000_000_000)),
            Ok(Duration::ZERO)
        );
    }

    #[test]
    fn huge_values_are_capped() {
        assert_eq!(
            parse_retry_after("99999999999999999999999999", at(0)),
            Ok(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn garbage_is_rejected_with_the_value() {
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 99 Nov 1994 08:49:37 GMT",
            "12s",
        ] {
            let err = parse_retry_after(bad, at(0)).unwrap_err();
            assert_eq!(err.value, bad, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,80}") {
            let _ = parse_retry_after(&s, SystemTime::now());
        }

        #[test]
        fn any_delta_round_trips(secs in 0u64..86_400) {
            prop_assert_eq!(parse_retry_after(&secs.to_string(), at(0)), Ok(Duration::from_secs(secs)));
        }
    }
}
