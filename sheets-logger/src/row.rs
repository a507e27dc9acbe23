//! One sheet row per event: the columns, and the visitor that collects them
//! from an event's fields and its enclosing spans' fields.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use callguard_core::telemetry::{field, level_name};
use serde_json::Value;
use tracing::Level;
use tracing::field::{Field, Visit};

/// The columns of a row, in order: fields of the shared log schema. Put them
/// in the sheet's first row as a header if you like; rows are appended below
/// the table at `range`.
pub const COLUMNS: [&str; 9] = [
    field::TIMESTAMP,
    field::LEVEL,
    field::SERVICE,
    field::ERROR_CATEGORY,
    field::RETRY_COUNT,
    field::CIRCUIT_STATE,
    field::MESSAGE,
    field::CONTACT_ID,
    field::TRACE_ID,
];

/// Column fields an event or span may carry (everything but timestamp and level).
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields {
    service: Option<Value>,
    error_category: Option<Value>,
    retry_count: Option<Value>,
    circuit_state: Option<Value>,
    message: Option<String>,
    contact_id: Option<Value>,
    trace_id: Option<Value>,
    /// `key=value` of the event's other fields, appended to the message.
    extra: String,
}

impl Fields {
    fn slot(&mut self, name: &str) -> Option<&mut Option<Value>> {
        match name {
            field::SERVICE => Some(&mut self.service),
            field::ERROR_CATEGORY => Some(&mut self.error_category),
            field::RETRY_COUNT => Some(&mut self.retry_count),
            field::CIRCUIT_STATE => Some(&mut self.circuit_state),
            field::CONTACT_ID => Some(&mut self.contact_id),
            field::TRACE_ID => Some(&mut self.trace_id),
            _ => None,
        }
    }

    /// Whether a span carried any column field worth keeping.
    pub(crate) fn is_empty(&self) -> bool {
        [
            &self.service,
            &self.error_category,
            &self.retry_count,
            &self.circuit_state,
            &self.contact_id,
            &self.trace_id,
        ]
        .iter()
        .all(|v| v.is_none())
    }

    /// Fills the columns still empty from an enclosing span's fields.
    pub(crate) fn inherit(&mut self, outer: &Self) {
        let pairs = [
            (&mut self.service, &outer.service),
            (&mut self.error_category, &outer.error_category),
            (&mut self.retry_count, &outer.retry_count),
            (&mut self.circuit_state, &outer.circuit_state),
            (&mut self.contact_id, &outer.contact_id),
            (&mut self.trace_id, &outer.trace_id),
        ];
        for (mine, theirs) in pairs {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    fn set(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if let Some(slot) = self.slot(name) {
            *slot = Some(value);
        } else if name == field::MESSAGE {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if name != field::FROM_STATE && !name.starts_with("log.") {
            if !self.extra.is_empty() {
                self.extra.push(' ');
            }
            let _ = match value {
                Value::String(s) => write!(self.extra, "{name}={s}"),
                other => write!(self.extra, "{name}={other}"),
            };
        }
    }

    /// The row of an event at `level` logged at `at`.
    pub(crate) fn into_row(self, level: Level, at: SystemTime) -> Row {
        let cell = |v: Option<Value>| v.unwrap_or_else(|| Value::from(""));
        let message = match (self.message, self.extra.is_empty()) {
            (Some(m), true) => m,
            (Some(m), false) => format!("{m} ({})", self.extra),
            (None, _) => self.extra,
        };
        Row([
            Value::from(humantime::format_rfc3339_millis(at).to_string()),
            Value::from(level_name(level)),
            cell(self.service),
            cell(self.error_category),
            cell(self.retry_count),
            cell(self.circuit_state),
            Value::from(message),
            cell(self.contact_id),
            cell(self.trace_id),
        ])
    }
}

/// Collects [`Fields`] from an event's or a span's values.
pub(crate) struct FieldVisitor<'a>(pub(crate) &'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.set(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.set(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.set(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.set(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.set(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.set(field, Value::from(format!("{value:?}")));
    }
}

/// One row: the cells under [`COLUMNS`]; empty cells are `""`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Row(pub(crate) [Value; COLUMNS.len()]);

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(service: Option<&str>, contact: Option<&str>) -> Fields {
        Fields {
            service: service.map(Value::from),
            contact_id: contact.map(Value::from),
            ..Fields::default()
        }
    }

    #[test]
    fn inner_values_win_and_gaps_are_filled() {
        let mut inner = fields(Some("tts"), None);
        inner.inherit(&fields(Some("crm"), Some("c-1")));
        assert_eq!(inner.service, Some(Value::from("tts")));
        assert_eq!(inner.contact_id, Some(Value::from("c-1")));
    }

    #[test]
    fn rows_have_every_column_in_order() {
        let mut f = fields(Some("llm"), Some("c-9"));
        f.message = Some("boom".into());
        f.retry_count = Some(Value::from(2u64));
        f.extra = "status=503".into();
        let row = f.into_row(Level::WARN, SystemTime::UNIX_EPOCH);
        let cells: Vec<Value> = row.0.to_vec();
        assert_eq!(cells.len(), COLUMNS.len());
        assert_eq!(cells[0], Value::from("1970-01-01T00:00:00.000Z"));
        assert_eq!(cells[1], Value::from("WARNING"));
        assert_eq!(cells[2], Value::from("llm"));
        assert_eq!(cells[3], Value::from(""));
        assert_eq!(cells[4], Value::from(2u64));
        assert_eq!(cells[6], Value::from("boom (status=503)"));
        assert_eq!(cells[7], Value::from("c-9"));
        assert_eq!(serde_json::to_value(&row).unwrap()[1], "WARNING");
    }
}
