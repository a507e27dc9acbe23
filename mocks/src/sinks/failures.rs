//! Scripted failures of the sink fakes (Sheets, Telegram, webhook): what a
//! test or the control API asks for, and the queue each fake answers from
//! before it answers normally again.

use std::collections::VecDeque;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callguard_core::{ConfigDuration, ValidationError};
use serde::Deserialize;
use serde_json::json;

/// Failures a sink fake (Sheets, Telegram, webhook) answers with before it answers
/// normally again — or, with `then_ok`, over and over: a flapping sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFailure {
    /// The status to answer (400–599), e.g. 429, 400 or 500.
    pub status: u16,
    /// How many requests in a row get it (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// The wait asked for, rounded up to whole seconds: Telegram's
    /// `parameters.retry_after`, the webhook's `Retry-After` header.
    #[serde(default)]
    pub retry_after: Option<ConfigDuration>,
    /// Flapping: after the `count` failures, answer this many requests
    /// normally, then fail `count` again, for good (until cleared). It
    /// starts once the failures queued before it are used, and replaces an
    /// earlier flapping failure.
    #[serde(default)]
    pub then_ok: Option<u32>,
}

fn one() -> u32 {
    1
}

impl SinkFailure {
    /// `count` answers of `status`, without a wait.
    pub fn new(status: u16, count: u32) -> Self {
        Self {
            status,
            count,
            retry_after: None,
            then_ok: None,
        }
    }

    /// Flaps: after each `count` failures, `ok` normal answers, for good.
    #[must_use]
    pub fn then_ok(mut self, ok: u32) -> Self {
        self.then_ok = Some(ok);
        self
    }

    /// Asks the client to wait `wait`.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(ConfigDuration::new(wait));
        self
    }

    /// Checks the status is an error status and the count is not zero.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(400..=599).contains(&self.status) {
            return Err(ValidationError::new(
                "status",
                self.status,
                "an error status between 400 and 599",
            ));
        }
        callguard_core::config::at_least("count", self.count, 1)?;
        match self.then_ok {
            Some(ok) => callguard_core::config::at_least("then_ok", ok, 1),
            None => Ok(()),
        }
    }

    /// The wait in whole seconds, rounded up.
    pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    }
}

/// One failure answer: the status and the wait asked for.
type Answer = (StatusCode, Option<Duration>);

/// The scripted failures: a queue with one entry per request to fail, then
/// a flapping failure's cycle, if one was set.
#[derive(Default)]
pub(crate) struct Failures {
    queued: VecDeque<Answer>,
    flapping: Option<Flapping>,
}

/// A failure answered `failing` times, then `ok` normal answers, over again.
struct Flapping {
    answer: Answer,
    failing: u32,
    ok: u32,
    /// Where the next request falls in the cycle of `failing + ok`.
    position: u32,
}

impl Failures {
    /// Queues `failure` (or sets it flapping); returns how many failures
    /// wait now.
    pub(crate) fn push(&mut self, failure: SinkFailure) -> Result<usize, ValidationError> {
        failure.validate()?;
        let status = StatusCode::from_u16(failure.status)
            .map_err(|_| ValidationError::new("status", failure.status, "an HTTP status"))?;
        let answer = (status, failure.retry_after.map(ConfigDuration::get));
        match failure.then_ok {
            Some(ok) => {
                self.flapping = Some(Flapping {
                    answer,
                    failing: failure.count,
                    ok,
                    position: 0,
                });
            }
            None => self
                .queued
                .extend(std::iter::repeat_n(answer, failure.count as usize)),
        }
        Ok(self.waiting())
    }

    /// The failure to answer the next request with, if any.
    pub(crate) fn pop(&mut self) -> Option<Answer> {
        if let Some(answer) = self.queued.pop_front() {
            return Some(answer);
        }
        let flapping = self.flapping.as_mut()?;
        let fails = flapping.position < flapping.failing;
        flapping.position = (flapping.position + 1) % (flapping.failing + flapping.ok);
        fails.then_some(flapping.answer)
    }

    /// Removes every scripted failure; returns how many were waiting.
    pub(crate) fn clear(&mut self) -> usize {
        let cleared = self.waiting();
        self.queued.clear();
        self.flapping = None;
        cleared
    }

    /// The failures waiting: those queued, plus a flapping failure's `count`.
    fn waiting(&self) -> usize {
        self.queued.len() + self.flapping.as_ref().map_or(0, |f| f.failing as usize)
    }
}

/// The control answer to a failure posted as JSON: `201 {"queued":n}` or
/// `400 {"error":…}`.
pub(crate) fn queue_failure_from(
    body: &[u8],
    push: impl FnOnce(SinkFailure) -> Result<usize, ValidationError>,
) -> Response {
    let bad = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("invalid failure: {e}") })),
        )
            .into_response()
    };
    match serde_json::from_slice::<SinkFailure>(body) {
        Err(e) => bad(e.to_string()),
        Ok(failure) => match push(failure) {
            Ok(queued) => (StatusCode::CREATED, Json(json!({ "queued": queued }))).into_response(),
            Err(e) => bad(e.to_string()),
        },
    }
}

/// `response` with a `Retry-After` header asking for `wait` (rounded up to
/// whole seconds), if there is a wait.
pub(crate) fn with_retry_after(mut response: Response, wait: Option<Duration>) -> Response {
    if let Some(wait) = wait {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(SinkFailure::retry_after_secs(wait)),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_validated_and_queued() {
        let mut failures = Failures::default();
        assert_eq!(
            failures.push(SinkFailure::new(200, 1)).unwrap_err().key,
            "status"
        );
        assert_eq!(
            failures.push(SinkFailure::new(429, 0)).unwrap_err().key,
            "count"
        );
        assert_eq!(failures.push(SinkFailure::new(429, 2)).unwrap(), 2);
        assert_eq!(failures.push(SinkFailure::new(500, 1)).unwrap(), 3);
        assert_eq!(failures.pop().map(|(s, _)| s.as_u16()), Some(429));
        assert_eq!(failures.clear(), 2);
        assert_eq!(
            SinkFailure::retry_after_secs(Duration::from_millis(1500)),
            2
        );
    }

    #[test]
    fn a_flapping_failure_cycles_after_the_queued_ones() {
        let mut failures = Failures::default();
        assert_eq!(
            failures
                .push(SinkFailure::new(503, 1).then_ok(0))
                .unwrap_err()
                .key,
            "then_ok"
        );
        assert_eq!(failures.push(SinkFailure::new(429, 1)).unwrap(), 1);
        assert_eq!(
            failures.push(SinkFailure::new(503, 2).then_ok(1)).unwrap(),
            3
        );
        let answers: Vec<Option<u16>> = (0..8)
            .map(|_| failures.pop().map(|(s, _)| s.as_u16()))
            .collect();
        let (fail, ok) = (Some(503), None);
        assert_eq!(answers, [Some(429), fail, fail, ok, fail, fail, ok, fail]);
        assert_eq!(failures.clear(), 2);
        assert_eq!(failures.pop(), None);
    }
}
