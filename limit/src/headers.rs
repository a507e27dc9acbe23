//! The limit headers a provider sends with its answers, read once per answer
//! into a small `Copy` value that outlives the response (its body may still
//! have to be read to classify it).
//!
//! The names are [`callguard_core::limit_headers`]; the resets are Go
//! durations (`1s`, `6m0s`, `20ms`, `59.856s`).

use std::time::Duration;

use callguard_core::limit_headers::{
    CURRENT_CONCURRENT_REQUESTS, MAXIMUM_CONCURRENT_REQUESTS, REMAINING_REQUESTS, REMAINING_TOKENS,
    RESET_REQUESTS, RESET_TOKENS,
};
use callguard_core::retry_after::MAX_RETRY_AFTER;
use http::{HeaderMap, HeaderValue};

/// One header of an answer, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reading<T> {
    /// Not sent.
    #[default]
    Absent,
    /// Sent and understood.
    Value(T),
    /// Sent, but not a value this header can take.
    Garbage,
}

impl<T: Copy> Reading<T> {
    /// The value, when one was sent and understood.
    pub fn value(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Garbage => None,
        }
    }
}

/// The limit headers of one answer. `NONE` (or `Default`) for a request that
/// got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProviderHeaders {
    /// `maximum-concurrent-requests`: at least 1.
    pub maximum_concurrent: Reading<u32>,
    /// `current-concurrent-requests`.
    pub current_concurrent: Reading<u32>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Reading<u64>,
    /// `x-ratelimit-reset-requests`.
    pub reset_requests: Reading<Duration>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Reading<u64>,
    /// `x-ratelimit-reset-tokens`.
    pub reset_tokens: Reading<Duration>,
}

impl ProviderHeaders {
    /// No header at all.
    pub const NONE: Self = Self {
        maximum_concurrent: Reading::Absent,
        current_concurrent: Reading::Absent,
        remaining_requests: Reading::Absent,
        reset_requests: Reading::Absent,
        remaining_tokens: Reading::Absent,
        reset_tokens: Reading::Absent,
    };

    /// Reads the limit headers of an answer. A header that is sent but is
    /// not a value it can take (`maximum-concurrent-requests: 0` or `ten`,
    /// a reset of `soon`) reads as [`Reading::Garbage`]; a header sent twice
    /// reads as its first value.
    ///
    /// One pass over the answer's headers, each name matched against ours:
    /// looking ours up by `&str` would parse and hash all six names in every
    /// answer (a third of the resilience layer's own cost per call).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut read = Self::NONE;
        for (name, value) in headers {
            match name.as_str() {
                MAXIMUM_CONCURRENT_REQUESTS => first(&mut read.maximum_concurrent, value, |v| {
                    v.parse::<u32>().ok().filter(|&n| n >= 1)
                }),
                CURRENT_CONCURRENT_REQUESTS => {
                    first(&mut read.current_concurrent, value, |v| v.parse().ok());
                }
                REMAINING_REQUESTS => {
                    first(&mut read.remaining_requests, value, |v| v.parse().ok())
                }
                RESET_REQUESTS => first(&mut read.reset_requests, value, parse_reset),
                REMAINING_TOKENS => first(&mut read.remaining_tokens, value, |v| v.parse().ok()),
                RESET_TOKENS => first(&mut read.reset_tokens, value, parse_reset),
                _ => {}
            }
        }
        read
    }

    /// The name of the first header sent with garbage in it, if any.
    pub fn garbage(&self) -> Option<&'static str> {
        [
            (
                self.maximum_concurrent == Reading::Garbage,
                MAXIMUM_CONCURRENT_REQUESTS,
            ),
            (
                self.current_concurrent == Reading::Garbage,
                CURRENT_CONCURRENT_REQUESTS,
            ),
            (
                self.remaining_requests == Reading::Garbage,
                REMAINING_REQUESTS,
            ),
            (self.reset_requests == Reading::Garbage, RESET_REQUESTS),
            (self.remaining_tokens == Reading::Garbage, REMAINING_TOKENS),
            (self.reset_tokens == Reading::Garbage, RESET_TOKENS),
        ]
        .into_iter()
        .find_map(|(garbage, name)| garbage.then_some(name))
    }

    /// How long admission should pause: when the requests (or tokens) left
    /// are 0, until the reset the answer gives for them (the later of the
    /// two when both are used up). A 0 without a usable reset is not acted on.
    pub fn exhausted_for(&self) -> Option<Duration> {
        let requests = (self.remaining_requests == Reading::Value(0))
            .then(|| self.reset_requests.value())
            .flatten();
        let tokens = (self.remaining_tokens == Reading::Value(0))
            .then(|| self.reset_tokens.value())
            .flatten();
        requests.max(tokens).filter(|wait| !wait.is_zero())
    }
}

/// Reads `value` into `slot` unless an earlier value of the same header did.
fn first<T>(slot: &mut Reading<T>, value: &HeaderValue, parse: impl FnOnce(&str) -> Option<T>) {
    if matches!(slot, Reading::Absent) {
        *slot = match value.to_str().ok().map(str::trim).and_then(parse) {
            Some(value) => Reading::Value(value),
            None => Reading::Garbage,
        };
    }
}

/// A reset time: a Go duration (`1s`, `6m0s`, `20ms`, `1h2m3.5s`, `1.5µs`)
/// or a plain number of seconds (`20`, `0.5`), at most
/// [`MAX_RETRY_AFTER`]. `None` for anything else.
pub fn parse_reset(value: &str) -> Option<Duration> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let number_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len())
    };
    let number = |s: &str| -> Option<f64> {
        // Digits with at most one point, and at least one digit.
        (s.bytes().any(|b| b.is_ascii_digit()) && s.matches('.').count() <= 1)
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut rest = value;
    let mut seconds = 0.0;
    if number_end(rest) == rest.len() {
        seconds = number(rest)?;
    } else {
        while !rest.is_empty() {
            let end = number_end(rest);
            let amount = number(&rest[..end])?;
            rest = &rest[end..];
            // Longest unit first, so `ms` is not read as `m` followed by `s`.
            let (unit, scale) = UNITS
                .iter()
                .filter(|(unit, _)| rest.starts_with(unit))
                .max_by_key(|(unit, _)| unit.len())?;
            seconds += amount * scale;
            rest = &rest[unit.len()..];
        }
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .map(|wait| wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn resets_read_as_go_durations_or_seconds() {
        for (text, wait) in [
            ("1s", ms(1_000)),
            ("6m0s", ms(360_000)),
            ("20ms", ms(20)),
            ("59.856s", ms(59_856)),
            ("1h2m3.5s", ms(3_723_500)),
            ("1.5µs", Duration::from_nanos(1_500)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            (" 20 ", ms(20_000)),
            ("0.5", ms(500)),
            ("0s", Duration::ZERO),
            ("99999h", MAX_RETRY_AFTER),
        ] {
            assert_eq!(parse_reset(text), Some(wait), "{text:?}");
        }
        for garbage in [
            "", "soon", "-1s", "1..5s", "1x", "s", "1s2", ".s", "1 s", "NaN",
        ] {
            assert_eq!(parse_reset(garbage), None, "{garbage:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_every_limit_header() {
        let seen = ProviderHeaders::from_headers(&headers(&[
            (MAXIMUM_CONCURRENT_REQUESTS, "5"),
            (CURRENT_CONCURRENT_REQUESTS, "3"),
            (REMAINING_REQUESTS, "0"),
            (RESET_REQUESTS, "1.5s"),
            (REMAINING_TOKENS, "1200"),
            (RESET_TOKENS, "6m0s"),
        ]));
        assert_eq!(seen.maximum_concurrent, Reading::Value(5));
        assert_eq!(seen.current_concurrent, Reading::Value(3));
        assert_eq!(seen.remaining_requests, Reading::Value(0));
        assert_eq!(seen.reset_requests, Reading::Value(ms(1_500)));
        assert_eq!(seen.remaining_tokens, Reading::Value(1200));
        assert_eq!(seen.reset_tokens, Reading::Value(ms(360_000)));
        assert_eq!(seen.garbage(), None);
        assert_eq!(seen.exhausted_for(), Some(ms(1_500)));
        assert_eq!(
            ProviderHeaders::from_headers(&HeaderMap::new()),
            ProviderHeaders::NONE
        );
    }

    #[test]
    fn names_are_read_in_any_case_and_a_repeated_header_by_its_first_value() {
        let mut map = HeaderMap::new();
        map.insert("Content-Type", HeaderValue::from_static("audio/mpeg"));
        map.insert("Maximum-Concurrent-Requests", HeaderValue::from_static("4"));
        map.append(CURRENT_CONCURRENT_REQUESTS, HeaderValue::from_static("2"));
        map.append(CURRENT_CONCURRENT_REQUESTS, HeaderValue::from_static("ten"));
        let seen = ProviderHeaders::from_headers(&map);
        assert_eq!(seen.maximum_concurrent, Reading::Value(4));
        assert_eq!(seen.current_concurrent, Reading::Value(2));
        assert_eq!(seen.garbage(), None);
    }

    #[test]
    fn garbage_is_told_from_absence() {
        let seen = ProviderHeaders::from_headers(&headers(&[
            (MAXIMUM_CONCURRENT_REQUESTS, "0"),
            (CURRENT_CONCURRENT_REQUESTS, "many"),
            (RESET_REQUESTS, "whenever"),
        ]));
        assert_eq!(seen.maximum_concurrent, Reading::Garbage, "a limit of 0");
        assert_eq!(seen.current_concurrent, Reading::Garbage);
        assert_eq!(seen.remaining_requests, Reading::Absent);
        assert_eq!(seen.garbage(), Some(MAXIMUM_CONCURRENT_REQUESTS));
        let mut map = HeaderMap::new();
        map.insert(
            MAXIMUM_CONCURRENT_REQUESTS,
            HeaderValue::from_bytes(b"\xff5").unwrap(),
        );
        assert_eq!(
            ProviderHeaders::from_headers(&map).maximum_concurrent,
            Reading::Garbage,
            "not text"
        );
    }

    #[test]
    fn exhaustion_needs_a_zero_and_a_reset() {
        let exhausted = |pairs: &[(&'static str, &str)]| {
            ProviderHeaders::from_headers(&headers(pairs)).exhausted_for()
        };
        assert_eq!(
            exhausted(&[(REMAINING_REQUESTS, "1"), (RESET_REQUESTS, "1s")]),
            None
        );
        assert_eq!(exhausted(&[(REMAINING_REQUESTS, "0")]), None);
        assert_eq!(
            exhausted(&[(REMAINING_REQUESTS, "0"), (RESET_REQUESTS, "soon")]),
            None
        );
        assert_eq!(
            exhausted(&[
                (REMAINING_REQUESTS, "0"),
                (RESET_REQUESTS, "2s"),
                (REMAINING_TOKENS, "0"),
                (RESET_TOKENS, "7s"),
            ]),
            Some(ms(7_000)),
            "the later reset"
        );
        assert_eq!(
            exhausted(&[(REMAINING_TOKENS, "0"), (RESET_TOKENS, "20ms")]),
            Some(ms(20))
        );
    }
}
