//! Conversions from breaker and limiter types to their protobuf messages, and
//! the mapping of breaker states to gRPC health statuses.

use callguard_breaker::BreakerSnapshot;
use callguard_core::{CircuitState, ServiceName, Transition};
use callguard_limit::LimitSnapshot;
use callguard_proto::callguard::v1::{Breaker, BreakerTransition, Limiter, breaker::State};
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use tonic::Status;

/// CLOSED serves; OPEN, HALF_OPEN and FORCED_OPEN do not (HALF_OPEN admits only
/// probes, so a load balancer should not send regular traffic yet).
pub(crate) fn serving_status(state: CircuitState) -> ServingStatus {
    serving(state.is_closed())
}

pub(crate) fn serving(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

fn proto_state(state: CircuitState) -> State {
    match state {
        CircuitState::Closed => State::Closed,
        CircuitState::Open => State::Open,
        CircuitState::HalfOpen => State::HalfOpen,
        CircuitState::ForcedOpen => State::ForcedOpen,
    }
}

/// A breaker's message, with its service's limiter when there is one.
pub(crate) fn breaker_message(
    snapshot: &BreakerSnapshot,
    limiter: Option<&LimitSnapshot>,
) -> Breaker {
    let last = snapshot.last_transition.as_ref();
    Breaker {
        name: snapshot.service.to_string(),
        state: proto_state(snapshot.state).into(),
        consecutive_failures: snapshot.consecutive_failures,
        failure_rate: snapshot.failure_rate,
        last_transition_time: last.map(|t| t.wall_time.into()),
        last_transition_reason: last.map(|t| t.reason.to_string()).unwrap_or_default(),
        retry_after: snapshot
            .retry_after
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
        generation: snapshot.generation,
        limiter: limiter.map(limiter_message),
    }
}

fn limiter_message(snapshot: &LimitSnapshot) -> Limiter {
    Limiter {
        mode: snapshot.mode.as_str().to_owned(),
        limit: snapshot.limit,
        provider_limit: snapshot.provider_limit,
        in_flight: snapshot.in_flight,
        waiting: snapshot.waiting,
        paused_for: snapshot
            .paused_for
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
    }
}

pub(crate) fn transition_message(transition: &Transition) -> BreakerTransition {
    BreakerTransition {
        name: transition.service.to_string(),
        from: proto_state(transition.from).into(),
        to: proto_state(transition.to).into(),
        reason: transition.reason.to_string(),
        time: Some(transition.wall_time.into()),
        generation: transition.generation,
    }
}

/// NOT_FOUND naming the service when its name is short enough to be one
/// (a client's arbitrary string is not echoed at any length).
pub(crate) fn unknown_service(name: &str) -> Status {
    if name.len() <= ServiceName::MAX_LEN {
        Status::not_found(format!("unknown service {name:?}"))
    } else {
        Status::not_found("unknown service")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_serves() {
        assert_eq!(serving_status(CircuitState::Closed), ServingStatus::Serving);
        for state in [
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
        ] {
            assert_eq!(serving_status(state), ServingStatus::NotServing, "{state}");
        }
    }

    #[test]
    fn states_keep_their_names_on_the_wire() {
        for state in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
            CircuitState::ForcedOpen,
        ] {
            assert_eq!(proto_state(state).as_str_name(), state.as_str());
        }
    }

    #[test]
    fn long_unknown_names_are_not_echoed() {
        assert!(unknown_service("tts").message().contains("\"tts\""));
        let long = "x".repeat(1000);
        assert!(!unknown_service(&long).message().contains(&long));
    }
}
