//! The global subscriber and the [`Telemetry`] handle that keeps its
//! exporters running: the JSON-lines file, the console, the OpenTelemetry
//! layer and the Google Sheets rows, each with its own level filter, and
//! dependencies' own chatter (HTTP, gRPC and exporter internals) kept at WARN
//! so that exporting never traces itself.

use std::fmt;
use std::time::Duration;

use callguard_sheets_logger::{SheetsConfig, SheetsHandle, SheetsLayer, SheetsStats};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::RuntimeFlavor;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::config::LoggingConfig;
use crate::console::{self, ConsoleLayer, Verbosity};
use crate::error::TelemetryError;
use crate::json_file::JsonFileLayer;
use crate::otel::{
    AGENT_SERVICE_NAME, ExportFailures, MOCKS_SERVICE_NAME, otlp_protocol, tracer_provider,
};
use crate::sheets::SheetsCounts;

/// How long flushing spans at shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the span exporter running; dropping it flushes the spans not yet
/// sent (waiting up to 5 s) and stops it. Hold it for the life of the
/// command and drop it at the end.
#[must_use = "dropping the guard flushes and stops the span exporter"]
pub struct Telemetry {
    /// Set while spans are being exported.
    exporting: Option<SdkTracerProvider>,
    /// Set when log rows go to a Google Sheet.
    sheets: Option<SheetsCounts>,
    /// The exports that failed.
    export_failures: ExportFailures,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// The count of span batches the OTLP exporter could not send.
    pub fn export_failures(&self) -> ExportFailures {
        self.export_failures.clone()
    }

    /// The Google Sheets export's counts, when it is configured.
    pub fn sheets_counts(&self) -> Option<SheetsCounts> {
        self.sheets.clone()
    }

    /// Sends the log rows still waiting for the Google Sheet (within
    /// `deadline`) and logs what was sent and dropped; `None` without a
    /// Sheet, or once it has been flushed. Spans are flushed when the guard
    /// is dropped.
    pub async fn flush_sheets(&mut self, deadline: Duration) -> Option<SheetsStats> {
        let stats = self.sheets.as_ref()?.flush_and_shutdown(deadline).await?;
        if stats.rows_dropped > 0 {
            tracing::warn!(
                "Google Sheets: {} log rows sent, {} dropped",
                stats.rows_sent,
                stats.rows_dropped
            );
        } else {
            tracing::info!("Google Sheets: {} log rows sent", stats.rows_sent);
        }
        Some(stats)
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.is_exporting())
            .finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let Some(provider) = self.exporting.take() else {
            return;
        };
        // The batch exporter runs on the tokio runtime; waiting for it on a
        // worker thread must hand that worker's tasks over first.
        let flush = move || {
            let _ = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush);
            }
            _ => flush(),
        }
    }
}

/// Installs the agent's global subscriber: the JSON-lines file at
/// `logging.path` (INFO and above from every target, rotated by
/// `logging.rotation`), the console at `logging.console_level` saying as
/// much as `verbosity` asks, the OpenTelemetry layer (exporting when the
/// `OTEL_*` variables say so, service name `callguard` by default) and, with
/// `sheets`, the Google Sheets rows. Dependencies' own chatter (HTTP
/// internals, the exporter's) is kept at WARN. Call within the tokio runtime.
pub fn init(
    logging: &LoggingConfig,
    sheets: Option<&SheetsConfig>,
    verbosity: Verbosity,
) -> Result<Telemetry, TelemetryError> {
    let file = JsonFileLayer::open(&logging.path, &logging.rotation)?;
    let sheets = sheets.map(SheetsLayer::new).transpose()?;
    install(
        Some(file),
        sheets,
        (&logging.console_level, verbosity),
        AGENT_SERVICE_NAME,
    )
}

/// Installs the `callguard mocks` process's subscriber: the console at
/// `console_level`, a line per event, and the OpenTelemetry layer (service
/// name `callguard-mocks` by default), without a log file.
pub fn init_mocks(console_level: &str) -> Result<Telemetry, TelemetryError> {
    install(
        None,
        None,
        (console_level, Verbosity::Verbose),
        MOCKS_SERVICE_NAME,
    )
}

fn install(
    file: Option<JsonFileLayer>,
    sheets: Option<(SheetsLayer, SheetsHandle)>,
    (console_level, verbosity): (&str, Verbosity),
    default_service: &str,
) -> Result<Telemetry, TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let protocol = otlp_protocol(|name| std::env::var(name).ok())?;
    let export_failures = ExportFailures::default();
    let provider = tracer_provider(
        protocol,
        |name| std::env::var(name).ok(),
        default_service,
        &export_failures,
    )?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let console_level: LevelFilter = console_level.parse().unwrap_or(LevelFilter::INFO);
    let terminal = console::install(verbosity);
    let console = ConsoleLayer::new(verbosity, terminal).with_filter(quiet(console_level));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("callguard"))
        .with_filter(quiet(LevelFilter::INFO));
    let (sheets_layer, sheets) = sheets.unzip();
    let subscriber = tracing_subscriber::registry()
        .with(console)
        .with(otel)
        .with(sheets_layer.with_filter(quiet(LevelFilter::INFO)));
    // A second init (in tests) keeps the first subscriber. (`Option<Layer>`
    // would not pass the dispatch on to the file layer, hence two arms.)
    let _ = match file {
        Some(file) => subscriber
            .with(file.with_filter(quiet(LevelFilter::INFO)))
            .try_init(),
        None => subscriber.try_init(),
    };
    Ok(Telemetry {
        exporting: protocol.map(|_| provider),
        sheets: sheets.map(SheetsCounts::new),
        export_failures,
    })
}

/// INFO-level (or `level`) events from our code; WARN and above from the
/// HTTP, gRPC and exporter internals, so exporting never traces itself.
fn quiet(level: LevelFilter) -> Targets {
    Targets::new()
        .with_default(level)
        .with_target("hyper", LevelFilter::WARN)
        .with_target("hyper_util", LevelFilter::WARN)
        .with_target("reqwest", LevelFilter::WARN)
        .with_target("h2", LevelFilter::WARN)
        .with_target("tower", LevelFilter::WARN)
        .with_target("tonic", LevelFilter::WARN)
        .with_target("opentelemetry", LevelFilter::WARN)
        .with_target("opentelemetry_sdk", LevelFilter::WARN)
        .with_target("opentelemetry_otlp", LevelFilter::WARN)
}
