//! Logging set-up: one JSON object per line to the local log file (the record of
//! truth) and human-readable lines on the console.
//!
//! Every JSON line carries the seed's fields — `timestamp`, `level`, `service`,
//! `message`, `retry_count`, `circuit_state` — plus `error_category`,
//! `contact_id` and `trace_id`, each `null` when it does not apply. Fields of
//! the enclosing spans (the per-contact `call` span carries `contact_id` and
//! `trace_id`, a stage span carries `service`) are copied onto each event, the
//! innermost value winning, so a line can be read on its own.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Fields every JSON line has, `null` when they do not apply.
pub const REQUIRED_FIELDS: [&str; 9] = [
    "timestamp",
    "level",
    "service",
    "message",
    "retry_count",
    "circuit_state",
    "error_category",
    "contact_id",
    "trace_id",
];

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
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost span first: its fields win over outer ones.
            for span in scope {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    for (key, value) in fields {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
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

/// Installs the global subscriber: the JSON-lines file at `path` (INFO and
/// above from every target) and the console at `console_level`. Dependencies'
/// own chatter (HTTP internals) is kept at WARN.
pub fn init(path: &Path, console_level: &str) -> Result<(), LogFileError> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let console_level: LevelFilter = console_level.parse().unwrap_or(LevelFilter::INFO);
    let quiet = |level| {
        Targets::new()
            .with_default(level)
            .with_target("hyper", LevelFilter::WARN)
            .with_target("hyper_util", LevelFilter::WARN)
            .with_target("reqwest", LevelFilter::WARN)
            .with_target("h2", LevelFilter::WARN)
            .with_target("tower", LevelFilter::WARN)
    };
    let file = JsonFileLayer::open(path)?.with_filter(quiet(LevelFilter::INFO));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(ConsoleWriter)
        .compact()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(quiet(console_level));
    // A second init (in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(file)
        .with(console)
        .try_init();
    Ok(())
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
}
