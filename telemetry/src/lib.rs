//! The callguard agent's observability: where its logs, traces and metrics go.
//!
//! [`init`] installs the global `tracing` subscriber and returns the
//! [`Telemetry`] handle that keeps its exporters running:
//!
//! - `json_file`: the local log file, the record of truth, one JSON object
//!   per line in the schema of `callguard_core::telemetry`, rotated by size
//!   and/or day (`rotation`);
//! - `console`: lines for people on stderr, the things to notice rather than
//!   every event (`-v`, `-q`), and the campaign's progress ([`Progress`]);
//! - `otel`: OpenTelemetry ids for every span, OTLP export when the
//!   standard `OTEL_*` variables ask for it, the failed exports counted, and
//!   the `traceparent` a request carries;
//! - `sheets`: the counts of the Google Sheets rows
//!   (`callguard-sheets-logger` is the layer);
//! - `metrics`: the Prometheus registry, fed as an event sink, the one
//!   counter store of a campaign;
//! - `serve`: `/metrics` over HTTP.
//!
//! `[logging]` and `[metrics]` are read into [`LoggingConfig`] and
//! [`MetricsConfig`], sections of the agent's config.

mod config;
mod console;
mod error;
mod json_file;
mod metrics;
mod otel;
mod rotation;
mod serve;
mod sheets;
mod subscriber;

pub use config::{ByteSize, DEFAULT_LISTEN, LoggingConfig, MetricsConfig, RotationConfig};
pub use console::{Progress, ProgressSnapshot, Verbosity};
pub use error::TelemetryError;
pub use json_file::{JsonFileLayer, LogFileError};
pub use metrics::{ContactGauge, Metrics, StoreStatus, Totals};
pub use otel::{
    AGENT_SERVICE_NAME, ExportFailures, MOCKS_SERVICE_NAME, OtlpProtocol, otlp_protocol,
    traceparent,
};
pub use serve::{CONTENT_TYPE_OPENMETRICS, MetricsServer};
pub use sheets::SheetsCounts;
pub use subscriber::{Telemetry, init, init_mocks};
