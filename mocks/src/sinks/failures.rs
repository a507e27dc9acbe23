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
/// normally again.
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
        }
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
        callguard_core::config::at_least("count", self.count, 1)
    }

    /// The wait in whole seconds, rounded up.
    pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    }
}

/// A queue of scripted failures: one entry per request to fail.
#[derive(Default)]
pub(crate) struct Failures(VecDeque<(StatusCode, Option<Duration>)>);

impl Failures {
    /// Queues `failure`; returns how many are queued now.
    pub(crate) fn push(&mut self, failure: SinkFailure) -> Result<usize, ValidationError> {
        failure.validate()?;
        let status = StatusCode::from_u16(failure.status)
            .map_err(|_| ValidationError::new("status", failure.status, "an HTTP status"))?;
        for _ in 0..failure.count {
            self.0
                .push_back((status, failure.retry_after.map(ConfigDuration::get)));
        }
        Ok(self.0.len())
    }

    pub(crate) fn pop(&mut self) -> Option<(StatusCode, Option<Duration>)> {
        self.0.pop_front()
    }

    /// Removes every queued failure; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let cleared = self.0.len();
        self.0.clear();
        cleared
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
}
