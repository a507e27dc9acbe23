//! What an alert says: its kind and severity, the service, the error, the
//! contact, the breaker state, when, and a trace id; built from resilience
//! events and breaker transitions, and rendered as plain text for people.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use callguard_core::{
    CircuitState, ErrorCategory, ErrorKind, ResilienceEvent, ServiceError, ServiceName, Transition,
};

/// What triggered an alert (DESIGN.md, "Alerts").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// A call failed with a permanent error.
    PermanentFailure,
    /// A call's transient failures used up its retries (or deadline or budget).
    RetriesExhausted,
    /// A circuit breaker opened.
    BreakerOpened,
    /// A circuit breaker closed again: the resolve notice.
    BreakerClosed,
}

impl AlertKind {
    /// The snake_case name used in logs, payloads and counts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PermanentFailure => "permanent_failure",
            Self::RetriesExhausted => "retries_exhausted",
            Self::BreakerOpened => "breaker_opened",
            Self::BreakerClosed => "breaker_closed",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Good news: something recovered.
    Info,
    /// Something failed, the service as a whole still works.
    Warning,
    /// A service is unusable: its breaker opened, or it refuses our credentials.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert. Build it with [`Alert::new`] or from an event
/// ([`Alert::from_event`], [`Alert::from_transition`]), then add what is known
/// with the `with_` methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alert {
    /// A unique id (32 lowercase hex digits), the same on every retry of its
    /// delivery, so a receiver can drop duplicates.
    pub id: String,
    /// What triggered it.
    pub kind: AlertKind,
    /// How urgent it is.
    pub severity: Severity,
    /// The service it is about.
    pub service: ServiceName,
    /// One line for people: `elevenlabs circuit breaker opened`.
    pub summary: String,
    /// The error or the reason, secret-free (e.g. the `ServiceError`'s text).
    pub detail: String,
    /// Transient or permanent, when an error caused it.
    pub error_category: Option<ErrorCategory>,
    /// The error's kind, when an error caused it.
    pub error_kind: Option<ErrorKind>,
    /// The contact being called, if any.
    pub contact_id: Option<String>,
    /// The service's breaker state, when known.
    pub circuit_state: Option<CircuitState>,
    /// When it happened.
    pub time: SystemTime,
    /// A W3C trace id (32 lowercase hex digits) to find the matching logs.
    pub trace_id: String,
    /// Alerts of the same (service, kind) suppressed by the cooldown since the
    /// last one sent; set by the manager.
    pub suppressed: u32,
}

impl Alert {
    /// An alert of `kind` about `service`, at the current time with a fresh
    /// trace id and the kind's usual severity.
    pub fn new(
        kind: AlertKind,
        service: ServiceName,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            id: random_id(),
            kind,
            severity: match kind {
                AlertKind::BreakerOpened => Severity::Critical,
                AlertKind::BreakerClosed => Severity::Info,
                AlertKind::PermanentFailure | AlertKind::RetriesExhausted => Severity::Warning,
            },
            service,
            summary: summary.into(),
            detail: detail.into(),
            error_category: None,
            error_kind: None,
            contact_id: None,
            circuit_state: None,
            time: SystemTime::now(),
            trace_id: random_id(),
            suppressed: 0,
        }
    }

    /// The alert an event calls for: a permanent failure, exhausted retries or
    /// a breaker transition that opens or closes; `None` for the others
    /// (successes, scheduled retries, rejected calls).
    pub fn from_event(event: &ResilienceEvent) -> Option<Self> {
        match event {
            ResilienceEvent::PermanentFailure {
                service,
                retry_count,
                error,
            } => {
                let tries = retry_count + 1;
                Some(Self::for_error(
                    AlertKind::PermanentFailure,
                    service,
                    format!("{service} call failed permanently (attempt {tries})"),
                    error,
                ))
            }
            ResilienceEvent::RetriesExhausted {
                service,
                attempts,
                error,
            } => Some(Self::for_error(
                AlertKind::RetriesExhausted,
                service,
                format!("{service} call failed after {attempts} attempt(s)"),
                error,
            )),
            ResilienceEvent::BreakerTransition(transition) => Self::from_transition(transition),
            _ => None,
        }
    }

    /// The alert a breaker transition calls for: into OPEN or FORCED_OPEN (the
    /// breaker opened) or into CLOSED (the resolve notice); `None` for
    /// OPEN → HALF_OPEN.
    pub fn from_transition(transition: &Transition) -> Option<Self> {
        let service = &transition.service;
        let (kind, summary) = match transition.to {
            CircuitState::Open | CircuitState::ForcedOpen => (
                AlertKind::BreakerOpened,
                format!("{service} circuit breaker opened: calls are rejected"),
            ),
            CircuitState::Closed if transition.from != CircuitState::Closed => (
                AlertKind::BreakerClosed,
                format!("{service} circuit breaker closed again: calls pass (resolved)"),
            ),
            _ => return None,
        };
        let detail = format!(
            "{} → {}: {}",
            transition.from, transition.to, transition.reason
        );
        let mut alert =
            Self::new(kind, service.clone(), summary, detail).with_circuit_state(transition.to);
        alert.time = transition.wall_time;
        Some(alert)
    }

    fn for_error(
        kind: AlertKind,
        service: &ServiceName,
        summary: String,
        error: &ServiceError,
    ) -> Self {
        let mut alert = Self::new(kind, service.clone(), summary, error.to_string());
        alert.error_category = Some(error.category());
        alert.error_kind = Some(error.kind());
        if error.counts_toward_breaker() && !error.is_transient() {
            // 401, 403, quota: every call to the service will fail the same way.
            alert.severity = Severity::Critical;
        }
        alert
    }

    /// Names the contact being called.
    #[must_use]
    pub fn with_contact(mut self, contact_id: impl Into<String>) -> Self {
        self.contact_id = Some(contact_id.into());
        self
    }

    /// Records the breaker state.
    #[must_use]
    pub fn with_circuit_state(mut self, state: CircuitState) -> Self {
        self.circuit_state = Some(state);
        self
    }

    /// Uses the trace id of the call that failed, so the alert leads to its logs.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = trace_id.into();
        self
    }

    /// Overrides the severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// `2026-03-01T12:00:00Z`.
    pub fn time_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.time).to_string()
    }

    /// A subject line: `[callguard] CRITICAL elevenlabs: elevenlabs circuit breaker opened…`.
    pub fn subject(&self) -> String {
        format!(
            "[callguard] {} {}: {}",
            self.severity.as_str().to_uppercase(),
            self.service,
            self.summary
        )
    }

    /// The plain-text body: the summary, then one labelled line per fact.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let mut line = |label: &str, value: &dyn fmt::Display| {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "{label:<15} {value}");
        };
        line("Severity:", &self.severity.as_str().to_uppercase());
        line("Service:", &self.service);
        line("Alert:", &self.kind);
        line("What happened:", &self.summary);
        line("Details:", &self.detail);
        if let Some(category) = self.error_category {
            line("Error category:", &category);
        }
        if let Some(kind) = self.error_kind {
            line("Error kind:", &kind);
        }
        if let Some(contact) = &self.contact_id {
            line("Contact:", contact);
        }
        if let Some(state) = self.circuit_state {
            line("Breaker state:", &state);
        }
        line("Time:", &self.time_rfc3339());
        line("Trace id:", &self.trace_id);
        if self.suppressed > 0 {
            line(
                "Suppressed:",
                &format!(
                    "{} similar alert(s) since the last one (cooldown)",
                    self.suppressed
                ),
            );
        }
        text
    }
}

/// A random id: 32 lowercase hex digits, never all zero (a valid W3C trace id).
fn random_id() -> String {
    let id = fastrand::u128(1..);
    format!("{id:032x}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use callguard_core::{ManualAction, TransitionReason};

    use super::*;

    fn crm() -> ServiceName {
        ServiceName::new("crm").unwrap()
    }

    fn transition(from: CircuitState, to: CircuitState, reason: TransitionReason) -> Transition {
        Transition {
            service: crm(),
            from,
            to,
            reason,
            at: tokio::time::Instant::now(),
            wall_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            generation: 3,
        }
    }

    #[test]
    fn events_that_are_no_alerts() {
        let rejected = ResilienceEvent::CallRejected {
            service: crm(),
            circuit_state: CircuitState::Open,
            retry_count: 0,
            retry_after: None,
        };
        assert_eq!(Alert::from_event(&rejected), None);
        let half_open = transition(
            CircuitState::Open,
            CircuitState::HalfOpen,
            TransitionReason::RecoveryTimeoutElapsed,
        );
        assert_eq!(Alert::from_transition(&half_open), None);
    }

    #[test]
    fn permanent_failures_carry_the_error() {
        let event = ResilienceEvent::PermanentFailure {
            service: crm(),
            retry_count: 0,
            error: ServiceError::new(ErrorKind::InvalidRequest, "bad request").with_status(400),
        };
        let alert = Alert::from_event(&event).unwrap();
        assert_eq!(alert.kind, AlertKind::PermanentFailure);
        assert_eq!(alert.severity, Severity::Warning);
        assert_eq!(alert.error_category, Some(ErrorCategory::Permanent));
        assert_eq!(alert.error_kind, Some(ErrorKind::InvalidRequest));
        assert!(alert.detail.contains("HTTP 400"), "{}", alert.detail);

        let unauthorized = ResilienceEvent::PermanentFailure {
            service: crm(),
            retry_count: 1,
            error: ServiceError::new(ErrorKind::Unauthorized, "unauthorized").with_status(401),
        };
        let alert = Alert::from_event(&unauthorized).unwrap();
        assert_eq!(
            alert.severity,
            Severity::Critical,
            "the service is unusable"
        );
        assert_eq!(alert.summary, "crm call failed permanently (attempt 2)");
    }

    #[test]
    fn transitions_open_and_resolve() {
        let opened = transition(
            CircuitState::Closed,
            CircuitState::Open,
            TransitionReason::ConsecutiveFailures { count: 2 },
        );
        let alert = Alert::from_transition(&opened).unwrap();
        assert_eq!(alert.kind, AlertKind::BreakerOpened);
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.circuit_state, Some(CircuitState::Open));
        assert_eq!(alert.detail, "CLOSED → OPEN: 2 consecutive failures");
        assert_eq!(alert.time_rfc3339(), "2023-11-14T22:13:20Z");

        let forced = transition(
            CircuitState::Closed,
            CircuitState::ForcedOpen,
            TransitionReason::Manual {
                action: ManualAction::ForceOpen,
                note: Arc::from("maintenance"),
            },
        );
        assert_eq!(
            Alert::from_transition(&forced).unwrap().kind,
            AlertKind::BreakerOpened
        );

        let closed = transition(
            CircuitState::HalfOpen,
            CircuitState::Closed,
            TransitionReason::ProbesSucceeded { count: 1 },
        );
        let alert = Alert::from_event(&ResilienceEvent::BreakerTransition(closed)).unwrap();
        assert_eq!(alert.kind, AlertKind::BreakerClosed);
        assert_eq!(alert.severity, Severity::Info);
    }

    #[test]
    fn text_reads_well() {
        let mut alert = Alert::new(
            AlertKind::RetriesExhausted,
            crm(),
            "crm call failed after 4 attempt(s)",
            "transient error (unavailable), HTTP 503: service unavailable",
        )
        .with_contact("c-17")
        .with_circuit_state(CircuitState::Closed)
        .with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
        alert.error_category = Some(ErrorCategory::Transient);
        alert.suppressed = 3;
        alert.time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            alert.subject(),
            "[callguard] WARNING crm: crm call failed after 4 attempt(s)"
        );
        assert_eq!(
            alert.text(),
            "Severity:       WARNING\n\
             Service:        crm\n\
             Alert:          retries_exhausted\n\
             What happened:  crm call failed after 4 attempt(s)\n\
             Details:        transient error (unavailable), HTTP 503: service unavailable\n\
             Error category: transient\n\
             Contact:        c-17\n\
             Breaker state:  CLOSED\n\
             Time:           2023-11-14T22:13:20Z\n\
             Trace id:       4bf92f3577b34da6a3ce929d0e0e4736\n\
             Suppressed:     3 similar alert(s) since the last one (cooldown)\n"
        );
    }

    #[test]
    fn trace_ids_are_w3c_shaped() {
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(id, random_id());
    }
}
