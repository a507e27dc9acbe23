//! Why telemetry could not be set up.

use crate::json_file::LogFileError;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The JSON-lines log file could not be opened.
    #[error(transparent)]
    LogFile(#[from] LogFileError),
    /// `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` names a protocol not built in.
    #[error("{variable}={value:?} is not supported: use \"grpc\" or \"http/protobuf\"")]
    Protocol {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE` names a file that cannot be
    /// read or holds no certificate.
    #[error(
        "{variable}={path:?} must be a readable PEM file with at least one CERTIFICATE ({reason})"
    )]
    Certificate {
        /// The variable.
        variable: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up the OTLP span exporter: {0}")]
    Exporter(String),
    /// The Google Sheets exporter could not be set up.
    #[error("cannot set up the Google Sheets log export: {0}")]
    Sheets(#[from] callguard_sheets_logger::SetupError),
}
