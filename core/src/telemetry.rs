//! The log schema and the trace-context header, named once for every crate
//! that writes or reads them.
//!
//! The JSON log file, the Google Sheets rows and the breaker's transition
//! event spell their field names through [`field`]; the JSON file and the
//! Sheets rows spell levels through [`level_name`]. A field renamed here is
//! renamed for all of them, so a reader cannot drift from its writer.

use tracing::Level;

/// The field names of a log event, as the JSON lines and the Sheets rows
/// carry them.
pub mod field {
    /// When the event happened: RFC 3339, UTC, milliseconds.
    pub const TIMESTAMP: &str = "timestamp";
    /// The event's level, spelt by [`level_name`](super::level_name).
    pub const LEVEL: &str = "level";
    /// The service called (a stage span carries it).
    pub const SERVICE: &str = "service";
    /// The event's text (`tracing`'s own name for it).
    pub const MESSAGE: &str = "message";
    /// Retries made before the attempt.
    pub const RETRY_COUNT: &str = "retry_count";
    /// The circuit breaker's state; on a transition, the state entered.
    pub const CIRCUIT_STATE: &str = "circuit_state";
    /// `transient` or `permanent`.
    pub const ERROR_CATEGORY: &str = "error_category";
    /// The contact being called (the `call` span carries it).
    pub const CONTACT_ID: &str = "contact_id";
    /// The OpenTelemetry trace id, 32 lowercase hex digits.
    pub const TRACE_ID: &str = "trace_id";
    /// The OpenTelemetry span id, 16 lowercase hex digits.
    pub const SPAN_ID: &str = "span_id";
    /// The state a circuit breaker left: only a breaker transition's event
    /// has it, which is how log sinks tell transitions from other events.
    pub const FROM_STATE: &str = "from_state";
}

/// Fields every JSON log line has, `null` when they do not apply: the seed's
/// six, then the error category, the contact and the OpenTelemetry ids.
pub const REQUIRED_FIELDS: [&str; 10] = [
    field::TIMESTAMP,
    field::LEVEL,
    field::SERVICE,
    field::MESSAGE,
    field::RETRY_COUNT,
    field::CIRCUIT_STATE,
    field::ERROR_CATEGORY,
    field::CONTACT_ID,
    field::TRACE_ID,
    field::SPAN_ID,
];

/// The W3C trace-context header a request to a service carries.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A level as log lines spell it: the seed's names, `WARNING` for
/// [`Level::WARN`].
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_spelt_as_the_seed_spells_them() {
        let names = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .map(level_name);
        assert_eq!(names, ["ERROR", "WARNING", "INFO", "DEBUG", "TRACE"]);
    }
}
