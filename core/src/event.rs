//! Resilience events: what the breaker and the retry executor publish and what
//! the health checker, alerts, logs and metrics consume.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::ServiceError;
use crate::service::ServiceName;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CircuitState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are rejected until the recovery timeout has passed.
    Open,
    /// A limited number of probe calls decide whether to close or reopen.
    HalfOpen,
    /// Opened by an operator or a remote health server; only a manual command closes it.
    ForcedOpen,
}

impl CircuitState {
    /// `CLOSED`, `OPEN`, `HALF_OPEN` or `FORCED_OPEN`, as in logs and the gRPC API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
            Self::ForcedOpen => "FORCED_OPEN",
        }
    }

    /// Whether calls are admitted without restriction.
    pub const fn is_closed(self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A manual command given to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManualAction {
    /// Reject every call until closed again by hand.
    ForceOpen,
    /// Close, clearing failure counts.
    ForceClose,
    /// Back to a fresh CLOSED breaker: counts and window cleared.
    Reset,
}

impl fmt::Display for ManualAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ForceOpen => "force_open",
            Self::ForceClose => "force_close",
            Self::Reset => "reset",
        })
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `count` consecutive failures reached the threshold.
    ConsecutiveFailures {
        /// Consecutive failures recorded.
        count: u32,
    },
    /// The failure rate over the sliding window passed its threshold.
    FailureRate {
        /// Failures in the window.
        failures: u32,
        /// Calls in the window.
        calls: u32,
    },
    /// OPEN for `recovery_timeout`: probes may go through.
    RecoveryTimeoutElapsed,
    /// `count` probes in HALF_OPEN succeeded.
    ProbesSucceeded {
        /// Successful probes.
        count: u32,
    },
    /// A probe in HALF_OPEN failed.
    ProbeFailed,
    /// A background health check found the service healthy.
    HealthCheckRecovered,
    /// A manual command (an operator, the admin API or a remote health server).
    Manual {
        /// What was done.
        action: ManualAction,
        /// Who or why, e.g. `"remote"` or an operator's note.
        note: Arc<str>,
    },
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConsecutiveFailures { count } => write!(f, "{count} consecutive failures"),
            Self::FailureRate { failures, calls } => {
                write!(f, "failure rate {failures}/{calls} over the window")
            }
            Self::RecoveryTimeoutElapsed => f.write_str("recovery timeout elapsed"),
            Self::ProbesSucceeded { count } => write!(f, "{count} probe(s) succeeded"),
            Self::ProbeFailed => f.write_str("probe failed"),
            Self::HealthCheckRecovered => f.write_str("health check recovered"),
            Self::Manual { action, note } if note.is_empty() => write!(f, "manual {action}"),
            Self::Manual { action, note } => write!(f, "manual {action}: {note}"),
        }
    }
}

/// One change of a breaker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's service.
    pub service: ServiceName,
    /// State before.
    pub from: CircuitState,
    /// State after.
    pub to: CircuitState,
    /// Why.
    pub reason: TransitionReason,
    /// When, on the runtime clock (virtual under paused test time).
    pub at: tokio::time::Instant,
    /// When, on the wall clock, for humans and other processes.
    pub wall_time: SystemTime,
    /// The generation entered; results from earlier generations are ignored.
    pub generation: u64,
}

/// Facts about one attempt, shared by several events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptInfo {
    /// The service called.
    pub service: ServiceName,
    /// Retries before this attempt (0 for the first attempt).
    pub retry_count: u32,
    /// The breaker state when the attempt was admitted.
    pub circuit_state: CircuitState,
    /// How long the attempt took.
    pub elapsed: Duration,
}

/// Something the resilience layer did or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResilienceEvent {
    /// An attempt succeeded.
    AttemptSucceeded(AttemptInfo),
    /// An attempt failed.
    AttemptFailed {
        /// The attempt.
        attempt: AttemptInfo,
        /// What went wrong.
        error: ServiceError,
    },
    /// A retry will be made after `delay`.
    RetryScheduled {
        /// The service called.
        service: ServiceName,
        /// The number of the coming retry (1-based).
        retry_count: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// Transient failures used up every retry (or the deadline or retry budget).
    RetriesExhausted {
        /// The service called.
        service: ServiceName,
        /// Attempts made, the first included.
        attempts: u32,
        /// The last error.
        error: ServiceError,
    },
    /// A permanent error ended the call without retrying.
    PermanentFailure {
        /// The service called.
        service: ServiceName,
        /// Retries made before it.
        retry_count: u32,
        /// The error.
        error: ServiceError,
    },
    /// The breaker rejected an attempt.
    CallRejected {
        /// The service.
        service: ServiceName,
        /// The breaker's state.
        circuit_state: CircuitState,
        /// The retry count of the attempt that was turned away (0: the first).
        retry_count: u32,
        /// When the breaker expects to admit calls again, if known.
        retry_after: Option<Duration>,
    },
    /// A breaker changed state.
    BreakerTransition(Transition),
    /// A contact went back to the queue because its stage's service (and
    /// every fallback) was unavailable.
    Deferred {
        /// The stage's primary service, whose breaker closing wakes the contact.
        service: ServiceName,
        /// How long the contact waits at most before it is due again.
        wait: Duration,
    },
}

impl ResilienceEvent {
    /// The service the event is about.
    pub fn service(&self) -> &ServiceName {
        match self {
            Self::AttemptSucceeded(attempt) | Self::AttemptFailed { attempt, .. } => {
                &attempt.service
            }
            Self::RetryScheduled { service, .. }
            | Self::RetriesExhausted { service, .. }
            | Self::PermanentFailure { service, .. }
            | Self::CallRejected { service, .. }
            | Self::Deferred { service, .. } => service,
            Self::BreakerTransition(t) => &t.service,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_print_as_in_the_seed_logs() {
        assert_eq!(CircuitState::HalfOpen.to_string(), "HALF_OPEN");
        assert_eq!(
            serde_json_string(CircuitState::ForcedOpen),
            "\"FORCED_OPEN\""
        );
    }

    fn serde_json_string(state: CircuitState) -> String {
        serde_json::to_string(&state).unwrap()
    }

    #[test]
    fn reasons_read_well() {
        let manual = TransitionReason::Manual {
            action: ManualAction::ForceOpen,
            note: Arc::from("remote"),
        };
        assert_eq!(manual.to_string(), "manual force_open: remote");
        assert_eq!(
            TransitionReason::ConsecutiveFailures { count: 2 }.to_string(),
            "2 consecutive failures"
        );
    }
}
