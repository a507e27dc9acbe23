//! The local log file, the record of truth: one JSON object per line.
//!
//! Every line carries the schema's [`REQUIRED_FIELDS`] — `timestamp`,
//! `level`, `service`, `message`, `retry_count`, `circuit_state`,
//! `error_category`, `contact_id`, `trace_id`, `span_id` — each `null` when it
//! does not apply, plus the event's own fields and its `target`. Fields of
//! the enclosing spans (the per-contact `call` span carries `contact_id`, a
//! stage span carries `service`) are copied onto each event, the innermost
//! value winning, so a line can be read on its own. `trace_id`/`span_id` are
//! the OpenTelemetry ids of the innermost span, when the subscriber has the
//! OpenTelemetry layer. The file is rotated by `[logging.rotation]`
//! (`rotation`), each line written whole.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use callguard_core::telemetry::{REQUIRED_FIELDS, field, level_name};
use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::config::RotationConfig;
use crate::rotation::RotatingFile;

/// A log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct LogFileError {
    path: PathBuf,
    source: std::io::Error,
}

/// A `tracing` layer writing JSON lines to a file.
pub struct JsonFileLayer {
    writer: Mutex<RotatingFile>,
    /// The subscriber the layer is part of, to ask its OpenTelemetry layer
    /// for span ids.
    dispatch: OnceLock<WeakDispatch>,
}

impl JsonFileLayer {
    /// Appends to `path`, creating it and its directory if needed, and
    /// rotates it by `rotation`.
    pub fn open(path: &Path, rotation: &RotationConfig) -> Result<Self, LogFileError> {
        let error = |source| LogFileError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let file = RotatingFile::open(path, rotation).map_err(error)?;
        Ok(Self {
            writer: Mutex::new(file),
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
            field::TIMESTAMP.into(),
            Value::from(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
        );
        line.insert(
            field::LEVEL.into(),
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
            line.insert(field::TRACE_ID.into(), Value::from(trace_id));
            line.insert(field::SPAN_ID.into(), Value::from(span_id));
        }
        for key in REQUIRED_FIELDS {
            line.entry(key).or_insert(Value::Null);
        }
        line.insert("target".into(), Value::from(event.metadata().target()));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // A failing log disk must not stop calls; the console still shows the event.
        let _ = self.writer.lock().write_line(text.as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_required_and_span_fields() {
        let dir = callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), "log");
        let path = dir.join("test.jsonl");
        let layer = JsonFileLayer::open(&path, &RotationConfig::default()).unwrap();
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
