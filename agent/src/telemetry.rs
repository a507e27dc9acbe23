//! Logging and tracing set-up: one JSON object per line to the local log file
//! (the record of truth), human-readable lines on the console, and spans
//! exported over OTLP when the standard `OTEL_*` variables ask for it.
//!
//! Every JSON line carries the seed's fields — `timestamp`, `level`, `service`,
//! `message`, `retry_count`, `circuit_state` — plus `error_category`,
//! `contact_id`, `trace_id` and `span_id`, each `null` when it does not apply.
//! Fields of the enclosing spans (the per-contact `call` span carries
//! `contact_id`, a stage span carries `service`) are copied onto each event,
//! the innermost value winning, so a line can be read on its own.
//!
//! Spans always get OpenTelemetry ids, exported or not: `trace_id`/`span_id`
//! of a line are those of its innermost span, and the `traceparent` sent to a
//! service is that of the attempt span, so logs, traces and the services' own
//! records correlate whether or not a collector is configured. Without
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! nothing is exported and nothing is said about it.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::Key;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use serde_json::{Map, Value};
use tokio::runtime::RuntimeFlavor;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use callguard_clients::TRACEPARENT_HEADER;
use callguard_sheets_logger::{SheetsConfig, SheetsHandle, SheetsLayer, SheetsStats};

use crate::config::LoggingConfig;

/// Fields every JSON line has, `null` when they do not apply.
pub const REQUIRED_FIELDS: [&str; 10] = [
    "timestamp",
    "level",
    "service",
    "message",
    "retry_count",
    "circuit_state",
    "error_category",
    "contact_id",
    "trace_id",
    "span_id",
];

/// The service name spans are exported under when neither `OTEL_SERVICE_NAME`
/// nor `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names one: the agent's.
pub const AGENT_SERVICE_NAME: &str = "callguard";
/// The same for the `callguard mocks` process.
pub const MOCKS_SERVICE_NAME: &str = "callguard-mocks";

/// How long flushing spans at shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct LogFileError {
    path: PathBuf,
    source: std::io::Error,
}

/// A `tracing` layer writing JSON lines to a file.
pub struct JsonFileLayer {
    writer: Mutex<LineWriter<File>>,
    /// The subscriber the layer is part of, to ask its OpenTelemetry layer
    /// for span ids.
    dispatch: OnceLock<WeakDispatch>,
}

impl JsonFileLayer {
    /// Appends to `path`, creating it and its directory if needed.
    pub fn open(path: &Path) -> Result<Self, LogFileError> {
        let error = |source| LogFileError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        Ok(Self {
            writer: Mutex::new(LineWriter::new(file)),
            dispatch: OnceLock::new(),
        })
    }
}

/// Span fields kept in the span's extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonFileLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        );
        line.insert(
            "level".into(),
            Value::from(level_name(*event.metadata().level())),
        );
        event.record(&mut JsonVisitor(&mut line));
        // Asked before any span's extensions are borrowed below.
        let ids = ctx
            .event_scope(event)
            .and_then(|mut scope| scope.next())
            .zip(self.dispatch.get().and_then(WeakDispatch::upgrade))
            .and_then(|(span, dispatch)| otel_ids(&span.id(), &dispatch));
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost span first: its fields win over outer ones.
            for span in scope {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    // `otel.*` fields name and mark spans for the exporter only.
                    for (key, value) in fields.iter().filter(|(k, _)| !k.starts_with("otel.")) {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".into(), Value::from(trace_id));
            line.insert("span_id".into(), Value::from(span_id));
        }
        for key in REQUIRED_FIELDS {
            line.entry(key).or_insert(Value::Null);
        }
        line.insert("target".into(), Value::from(event.metadata().target()));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A failing log disk must not stop calls; the console still shows the event.
        let _ = writer.write_all(text.as_bytes());
    }
}

/// The OpenTelemetry trace and span id of the span `id`, as lowercase hex,
/// when the OpenTelemetry layer tracks it.
fn otel_ids(id: &Id, dispatch: &Dispatch) -> Option<(String, String)> {
    let cx = tracing_opentelemetry::get_otel_context(id, dispatch)?;
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

/// The W3C `traceparent` of `span`, to send with a request made in it; `None`
/// when the span has no OpenTelemetry context (no subscriber, or one without
/// the OpenTelemetry layer).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut carrier);
    });
    carrier.remove(TRACEPARENT_HEADER)
}

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
    /// The OTLP exporter could not be built.
    #[error("cannot set up the OTLP span exporter: {0}")]
    Exporter(String),
    /// The Google Sheets exporter could not be set up.
    #[error("cannot set up the Google Sheets log export: {0}")]
    Sheets(#[from] callguard_sheets_logger::SetupError),
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP over gRPC (the default; port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies, `POST /v1/traces` (port 4318).
    HttpProtobuf,
}

/// Reads the standard variables: `Ok(None)` when no OTLP endpoint is set (or
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`), else the
/// protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, gRPC when neither is set. The exporter
/// itself reads the endpoint, headers, timeout and the resource variables.
pub fn otlp_protocol(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpProtocol>, TelemetryError> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let endpoint =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if endpoint.is_none() || disabled || no_exporter {
        return Ok(None);
    }
    let (variable, value) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
        None => match set("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_PROTOCOL", value),
            None => return Ok(Some(OtlpProtocol::Grpc)),
        },
    };
    match value.trim() {
        "grpc" => Ok(Some(OtlpProtocol::Grpc)),
        "http/protobuf" => Ok(Some(OtlpProtocol::HttpProtobuf)),
        _ => Err(TelemetryError::Protocol { variable, value }),
    }
}

/// The resource spans are exported with: the `OTEL_SERVICE_NAME` /
/// `OTEL_RESOURCE_ATTRIBUTES` ones, with `default_service` as `service.name`
/// when they name none.
fn resource(default_service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(default_service.to_owned())
            .build()
    }
}

/// Counts the span batches the OTLP exporter could not send (each failed
/// export is one batch; its spans are lost). Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct ExportFailures(Arc<AtomicU64>);

impl ExportFailures {
    /// Failed exports so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A span exporter counting the exports of `inner` that fail.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    failures: ExportFailures,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for CountingExporter<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.failures.0.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The tracer provider: ids for every span, and a batch exporter on the
/// tokio runtime, counting its failures in `failures`, when `protocol` is
/// set. Must be called within the runtime.
fn tracer_provider(
    protocol: Option<OtlpProtocol>,
    default_service: &str,
    failures: &ExportFailures,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(default_service));
    if let Some(protocol) = protocol {
        let exporter = match protocol {
            OtlpProtocol::Grpc => SpanExporter::builder().with_tonic().build(),
            OtlpProtocol::HttpProtobuf => SpanExporter::builder().with_http().build(),
        }
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let exporter = CountingExporter {
            inner: exporter,
            failures: failures.clone(),
        };
        builder = builder.with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
        );
    }
    Ok(builder.build())
}

/// The Google Sheets export's counts, readable while it runs and after it
/// has stopped. Clones share them.
#[derive(Debug, Clone)]
pub struct SheetsCounts(Arc<Mutex<SheetsState>>);

#[derive(Debug)]
struct SheetsState {
    /// Set while sending: it has the live counts.
    handle: Option<SheetsHandle>,
    /// The counts when the handle was last taken.
    last: SheetsStats,
}

impl SheetsCounts {
    fn new(handle: SheetsHandle) -> Self {
        Self(Arc::new(Mutex::new(SheetsState {
            handle: Some(handle),
            last: SheetsStats::default(),
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SheetsState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counts so far.
    pub fn stats(&self) -> SheetsStats {
        let state = self.lock();
        state
            .handle
            .as_ref()
            .map_or(state.last, SheetsHandle::stats)
    }

    /// Flushes and stops the export (once; later calls return `None`).
    async fn flush_and_shutdown(&self, deadline: Duration) -> Option<SheetsStats> {
        let handle = {
            let mut state = self.lock();
            let handle = state.handle.take()?;
            state.last = handle.stats();
            handle
        };
        let stats = handle.flush_and_shutdown(deadline).await;
        self.lock().last = stats;
        Some(stats)
    }
}

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
/// `logging.path` (INFO and above from every target), the console at
/// `logging.console_level`, the OpenTelemetry layer (exporting when the
/// `OTEL_*` variables say so, service name `callguard` by default) and, with
/// `sheets`, the Google Sheets rows. Dependencies' own chatter (HTTP
/// internals, the exporter's) is kept at WARN. Call within the tokio runtime.
pub fn init(
    logging: &LoggingConfig,
    sheets: Option<&SheetsConfig>,
) -> Result<Telemetry, TelemetryError> {
    let file = JsonFileLayer::open(&logging.path)?;
    let sheets = sheets.map(SheetsLayer::new).transpose()?;
    install(
        Some(file),
        sheets,
        &logging.console_level,
        AGENT_SERVICE_NAME,
    )
}

/// Installs the `callguard mocks` process's subscriber: the console at
/// `console_level` and the OpenTelemetry layer (service name
/// `callguard-mocks` by default), without a log file.
pub fn init_mocks(console_level: &str) -> Result<Telemetry, TelemetryError> {
    install(None, None, console_level, MOCKS_SERVICE_NAME)
}

fn install(
    file: Option<JsonFileLayer>,
    sheets: Option<(SheetsLayer, SheetsHandle)>,
    console_level: &str,
    default_service: &str,
) -> Result<Telemetry, TelemetryError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let protocol = otlp_protocol(|name| std::env::var(name).ok())?;
    let export_failures = ExportFailures::default();
    let provider = tracer_provider(protocol, default_service, &export_failures)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let console_level: LevelFilter = console_level.parse().unwrap_or(LevelFilter::INFO);
    let console = tracing_subscriber::fmt::layer()
        .with_writer(ConsoleWriter)
        .compact()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(quiet(console_level));
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

/// Writes log lines to stderr; on a terminal it first clears the line, where a
/// progress line may be standing.
#[derive(Clone, Copy)]
struct ConsoleWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleLine;
    fn make_writer(&'a self) -> Self::Writer {
        ConsoleLine {
            cleared: !std::io::stderr().is_terminal(),
        }
    }
}

/// One console log line.
struct ConsoleLine {
    cleared: bool,
}

impl Write for ConsoleLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        if !self.cleared {
            stderr.write_all(b"\r\x1b[2K")?;
            self.cleared = true;
        }
        stderr.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn level_name(level: Level) -> &'static str {
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
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_required_and_span_fields() {
        let dir = std::env::temp_dir().join(format!("callguard-log-{}", std::process::id()));
        let path = dir.join("test.jsonl");
        let _ = std::fs::remove_file(&path);
        let layer = JsonFileLayer::open(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("call", contact_id = "c-7", trace_id = "abc");
            let _call = call.enter();
            let stage = tracing::info_span!("tts", service = "elevenlabs");
            let _stage = stage.enter();
            tracing::warn!(
                retry_count = 1u32,
                circuit_state = "CLOSED",
                error_category = "transient",
                "Retrying in 5s"
            );
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["level"], "WARNING");
        assert_eq!(line["service"], "elevenlabs");
        assert_eq!(line["contact_id"], "c-7");
        assert_eq!(line["trace_id"], "abc");
        assert_eq!(line["retry_count"], 1);
        assert_eq!(line["message"], "Retrying in 5s");
        for key in REQUIRED_FIELDS {
            assert!(line.get(key).is_some(), "{key} missing");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lines_carry_the_spans_otel_ids_and_traceparent_matches() {
        let dir = std::env::temp_dir().join(format!("callguard-otel-log-{}", std::process::id()));
        let path = dir.join("test.jsonl");
        let _ = std::fs::remove_file(&path);
        let provider =
            tracer_provider(None, AGENT_SERVICE_NAME, &ExportFailures::default()).unwrap();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let subscriber = tracing_subscriber::registry()
            .with(JsonFileLayer::open(&path).unwrap())
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (call_ids, attempt_ids, header) = tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("call", contact_id = "c-1");
            let attempt = call.in_scope(|| tracing::info_span!("attempt", retry_count = 0u32));
            attempt.in_scope(|| tracing::info!("inside the attempt"));
            call.in_scope(|| tracing::info!("inside the call"));
            tracing::info!("outside");
            let ids = |span: &tracing::Span| {
                let cx = span.context();
                let s = cx.span();
                let c = s.span_context();
                (c.trace_id().to_string(), c.span_id().to_string())
            };
            (ids(&call), ids(&attempt), traceparent(&attempt))
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(call_ids.0, attempt_ids.0, "one trace per call");
        assert_ne!(call_ids.1, attempt_ids.1);
        assert_eq!(lines[0]["trace_id"], attempt_ids.0.as_str());
        assert_eq!(lines[0]["span_id"], attempt_ids.1.as_str());
        assert_eq!(lines[0]["contact_id"], "c-1");
        assert_eq!(lines[1]["span_id"], call_ids.1.as_str());
        assert_eq!(lines[2]["trace_id"], Value::Null);
        assert_eq!(lines[2]["span_id"], Value::Null);
        assert_eq!(
            header.as_deref(),
            Some(format!("00-{}-{}-01", attempt_ids.0, attempt_ids.1).as_str())
        );
        assert_eq!(call_ids.0.len(), 32);
        assert_ne!(call_ids.0, "0".repeat(32));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An exporter whose exports fail every other time.
    #[derive(Debug, Default)]
    struct Flaky(AtomicU64);

    impl opentelemetry_sdk::trace::SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.0.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "collector unreachable".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn failed_exports_are_counted() {
        use opentelemetry_sdk::trace::SpanExporter as _;
        let failures = ExportFailures::default();
        let exporter = CountingExporter {
            inner: Flaky::default(),
            failures: failures.clone(),
        };
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(exporter.export(Vec::new()).await.is_ok());
        }
        assert_eq!(results, [true, false, true, false, true]);
        assert_eq!(failures.get(), 2);
    }

    #[test]
    fn no_traceparent_without_the_otel_layer() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("attempt");
            assert_eq!(traceparent(&span), None);
        });
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn exporting_needs_an_endpoint_and_defaults_to_grpc() {
        assert_eq!(otlp_protocol(env(&[])).unwrap(), None);
        // Without an endpoint even a bad protocol is not looked at.
        assert_eq!(
            otlp_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")])).unwrap(),
            None
        );
        assert_eq!(
            otlp_protocol(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(
            otlp_protocol(env(&[endpoint])).unwrap(),
            Some(OtlpProtocol::Grpc)
        );
        assert_eq!(
            otlp_protocol(env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4318/v1/traces"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap(),
            Some(OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(
            otlp_protocol(env(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]))
            .unwrap(),
            Some(OtlpProtocol::Grpc)
        );
        assert_eq!(
            otlp_protocol(env(&[endpoint, ("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert_eq!(
            otlp_protocol(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).unwrap(),
            None
        );
        let error = otlp_protocol(env(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && error.contains("http/json"),
            "{error}"
        );
    }
}
