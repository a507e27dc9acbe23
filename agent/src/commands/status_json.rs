//! `callguard status --json`: the breakers of a running callguard as one
//! JSON object, for scripts. The field names are part of the interface
//! (README, "Health over gRPC"): new fields may be added, none renamed.

use std::time::{Duration, SystemTime};

use callguard_proto::callguard::v1::{Breaker, Limiter, breaker::State};
use serde::Serialize;

/// The whole answer: `{"breakers":[…]}`, in the server's order.
#[derive(Serialize)]
struct StatusJson<'a> {
    breakers: Vec<BreakerJson<'a>>,
}

/// One breaker.
#[derive(Serialize)]
struct BreakerJson<'a> {
    /// The service's name.
    service: &'a str,
    /// `CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN` (as in the logs'
    /// `circuit_state`), or `UNSPECIFIED` from a server that sent none.
    state: &'static str,
    consecutive_failures: u32,
    /// Failures over the sliding window, 0 to 1; `null` without a window.
    failure_rate: Option<f64>,
    /// How long until an open breaker admits a call, in whole milliseconds
    /// rounded up; `null` when it admits calls now.
    retry_after_ms: Option<u64>,
    /// RFC 3339, UTC, milliseconds; `null` before the first transition.
    last_transition_at: Option<String>,
    /// `null` before the first transition.
    last_transition_reason: Option<&'a str>,
    /// Bumped at every transition and reset.
    generation: u64,
    /// The service's concurrency limiter; `null` from a server that runs
    /// none (`health-server`).
    limiter: Option<LimiterJson<'a>>,
}

/// A service's limiter.
#[derive(Serialize)]
struct LimiterJson<'a> {
    /// `off`, `static` or `adaptive`.
    mode: &'a str,
    /// Calls that may be in flight now; `null`: no limit.
    limit: Option<u32>,
    /// The limit the provider announced last; `null` if none.
    provider_limit: Option<u32>,
    in_flight: u32,
    waiting: u32,
    /// While the provider says its rate is used up: how long admission still
    /// pauses, in whole milliseconds rounded up; `null` when it does not.
    paused_for_ms: Option<u64>,
}

/// `breakers` as the one-line JSON object `status --json` prints.
pub(crate) fn breakers_json(breakers: &[Breaker]) -> String {
    let status = StatusJson {
        breakers: breakers.iter().map(breaker_json).collect(),
    };
    // Strings, numbers and options only: serializing cannot fail.
    serde_json::to_string(&status).unwrap_or_default()
}

fn breaker_json(breaker: &Breaker) -> BreakerJson<'_> {
    let state = State::try_from(breaker.state).unwrap_or(State::Unspecified);
    BreakerJson {
        service: &breaker.name,
        state: state
            .as_str_name()
            .strip_prefix("STATE_")
            .unwrap_or(state.as_str_name()),
        consecutive_failures: breaker.consecutive_failures,
        failure_rate: breaker.failure_rate,
        retry_after_ms: breaker.retry_after.and_then(whole_millis),
        last_transition_at: breaker
            .last_transition_time
            .and_then(|t| SystemTime::try_from(t).ok())
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        last_transition_reason: Some(breaker.last_transition_reason.as_str())
            .filter(|reason| !reason.is_empty()),
        generation: breaker.generation,
        limiter: breaker.limiter.as_ref().map(limiter_json),
    }
}

fn limiter_json(limiter: &Limiter) -> LimiterJson<'_> {
    LimiterJson {
        mode: &limiter.mode,
        limit: limiter.limit,
        provider_limit: limiter.provider_limit,
        in_flight: limiter.in_flight,
        waiting: limiter.waiting,
        paused_for_ms: limiter.paused_for.and_then(whole_millis),
    }
}

/// A protobuf duration in whole milliseconds, rounded up.
fn whole_millis<D>(duration: D) -> Option<u64>
where
    Duration: TryFrom<D>,
{
    let duration = Duration::try_from(duration).ok()?;
    Some(u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn every_field_is_named_and_typed_for_scripts() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let breakers = [
            Breaker {
                name: "elevenlabs".into(),
                state: State::Open.into(),
                consecutive_failures: 2,
                failure_rate: Some(0.25),
                last_transition_time: Some(at.into()),
                last_transition_reason: "2 consecutive failures".into(),
                retry_after: Some(Duration::from_micros(6_999_600).try_into().unwrap()),
                generation: 3,
                limiter: Some(Limiter {
                    mode: "adaptive".into(),
                    limit: Some(4),
                    provider_limit: Some(5),
                    in_flight: 3,
                    waiting: 1,
                    paused_for: Some(Duration::from_micros(1_500).try_into().unwrap()),
                }),
            },
            Breaker {
                name: "llm".into(),
                state: State::HalfOpen.into(),
                ..Breaker::default()
            },
        ];
        let text = breakers_json(&breakers);
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!({"breakers": [
                {
                    "service": "elevenlabs",
                    "state": "OPEN",
                    "consecutive_failures": 2,
                    "failure_rate": 0.25,
                    "retry_after_ms": 7000,
                    "last_transition_at": "2023-11-14T22:13:20.250Z",
                    "last_transition_reason": "2 consecutive failures",
                    "generation": 3,
                    "limiter": {
                        "mode": "adaptive",
                        "limit": 4,
                        "provider_limit": 5,
                        "in_flight": 3,
                        "waiting": 1,
                        "paused_for_ms": 2,
                    },
                },
                {
                    "service": "llm",
                    "state": "HALF_OPEN",
                    "consecutive_failures": 0,
                    "failure_rate": null,
                    "retry_after_ms": null,
                    "last_transition_at": null,
                    "last_transition_reason": null,
                    "generation": 0,
                    "limiter": null,
                },
            ]})
        );
        assert_eq!(breakers_json(&[]), r#"{"breakers":[]}"#);
    }
}
