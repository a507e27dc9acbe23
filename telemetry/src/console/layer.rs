//! The `tracing` layer that prints the console's lines: `HH:MM:SS LEVEL
//! message key=value…`, each field once — the event's own first, then its
//! spans' (innermost first) — leaving out `otel.*` fields and values the
//! message already says; without `-v`, only the fields that say who, where
//! and why.

use std::fmt::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{Verbosity, print_line};

/// The field naming the contact an event is about.
const CONTACT_ID: &str = "contact_id";

/// The fields printed unless `-v` asks for all: who, where and why. The rest
/// (states, delays, counts, ids) are in the message or the JSON log.
const FOR_PEOPLE: [&str; 6] = [
    CONTACT_ID, "service", "channel", "remote", "reason", "error",
];

/// Prints the events the verbosity shows.
pub(crate) struct ConsoleLayer {
    verbosity: Verbosity,
    /// On a terminal: colours, and lines kept to its width.
    colour: bool,
    width: Option<usize>,
}

impl ConsoleLayer {
    /// The layer; `terminal` if stderr is one (its width is read now).
    pub(crate) fn new(verbosity: Verbosity, terminal: bool) -> Self {
        let width = terminal
            .then(|| console::Term::stderr().size_checked())
            .flatten()
            .map(|(_, columns)| usize::from(columns));
        Self {
            verbosity,
            colour: terminal,
            width,
        }
    }
}

/// A span's fields, as the console prints them.
struct SpanFields(Vec<(&'static str, String)>);

/// Collects fields as text; the message apart.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name if name.starts_with("otel.") => {}
            name => {
                if let Some(kept) = self.fields.iter_mut().find(|(n, _)| *n == name) {
                    kept.1 = value;
                } else {
                    self.fields.push((name, value));
                }
            }
        }
    }
}

impl<S> Layer<S> for ConsoleLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(kept)) = extensions.get_mut::<SpanFields>() {
            let mut fields = Fields {
                message: String::new(),
                fields: std::mem::take(kept),
            };
            values.record(&mut fields);
            *kept = fields.fields;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(SpanFields(outer)) = span.extensions().get::<SpanFields>() {
                    for (name, value) in outer {
                        if !fields.fields.iter().any(|(n, _)| n == name) {
                            fields.fields.push((name, value.clone()));
                        }
                    }
                }
            }
        }
        let metadata = event.metadata();
        let about = About {
            a_contact: fields.fields.iter().any(|(name, _)| *name == CONTACT_ID),
            an_open_breaker: fields.fields.iter().any(|(name, value)| {
                *name == "circuit_state"
                    && matches!(value.as_str(), "OPEN" | "HALF_OPEN" | "FORCED_OPEN")
            }),
        };
        if !shows(self.verbosity, *metadata.level(), metadata.target(), about) {
            return;
        }
        print_line(&self.format(*metadata.level(), &fields));
    }
}

/// What an event is about, as far as the console cares.
#[derive(Debug, Clone, Copy, Default)]
struct About {
    /// One contact: a `contact_id` in the event or its spans.
    a_contact: bool,
    /// A breaker that is not closed (`circuit_state`).
    an_open_breaker: bool,
}

/// Whether the console shows an event at `level` from `target`: errors;
/// warnings, but not a contact's call turned away or cut short by a breaker
/// that is not closed (the breaker's own lines tell that); the breakers' and
/// the alerts' news; the campaign's own news (the agent's, about no one
/// contact). Not a library's routine (servers started and stopped, probes
/// that succeeded), nor a call's details.
fn shows(verbosity: Verbosity, level: Level, target: &str, about: About) -> bool {
    let from = |source: &str| {
        target
            .strip_prefix(source)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    let breaker_told = about.a_contact && about.an_open_breaker;
    let story = level == Level::ERROR
        || (level == Level::WARN && !breaker_told)
        || from("callguard_breaker")
        || from("callguard_alerts")
        || (!about.a_contact && (from("callguard_agent") || from("callguard")));
    match verbosity {
        Verbosity::Verbose => true,
        Verbosity::Normal => story,
        Verbosity::Quiet => story && level <= Level::WARN,
    }
}

impl ConsoleLayer {
    fn format(&self, level: Level, fields: &Fields) -> String {
        let mut line = String::with_capacity(160);
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        // `2025-01-02T03:04:05Z`: the time of day, UTC like the log file's.
        line.push_str(now.get(11..19).unwrap_or(&now));
        let (name, colour) = match level {
            Level::ERROR => ("ERROR", "\x1b[31m"),
            Level::WARN => (" WARN", "\x1b[33m"),
            Level::INFO => (" INFO", "\x1b[32m"),
            Level::DEBUG => ("DEBUG", "\x1b[34m"),
            Level::TRACE => ("TRACE", "\x1b[35m"),
        };
        if self.colour {
            let _ = write!(line, " {colour}{name}\x1b[0m ");
        } else {
            let _ = write!(line, " {name} ");
        }
        let shown: Vec<_> = fields
            .fields
            .iter()
            .filter(|(field, value)| {
                let said = !value.is_empty() && fields.message.contains(value.as_str());
                let wanted = self.verbosity == Verbosity::Verbose || FOR_PEOPLE.contains(field);
                wanted && !said
            })
            .collect();
        // On a terminal a line is kept to its width: the message gives way
        // in its middle (an error's body), keeping its start and its end
        // ("retrying in 5s") and the fields after it.
        let room = self.width.map(|width| {
            let fields: usize = shown
                .iter()
                .map(|(f, v)| f.len() + v.chars().count() + 2)
                .sum();
            // The time and level take 15 columns.
            width.saturating_sub(15 + fields)
        });
        line.push_str(&elide(&fields.message, room));
        for (field, value) in shown {
            if self.colour {
                let _ = write!(line, " \x1b[2m{field}=\x1b[0m{value}");
            } else {
                let _ = write!(line, " {field}={value}");
            }
        }
        line.push('\n');
        line
    }
}

/// `text` cut to `room` characters (at least 20) by an ellipsis in its middle.
fn elide(text: &str, room: Option<usize>) -> std::borrow::Cow<'_, str> {
    let length = text.chars().count();
    let Some(room) = room.map(|room| room.max(20)).filter(|room| length > *room) else {
        return text.into();
    };
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(length - tail).collect();
    format!("{start}…{end}").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calls_details_are_shown_only_when_verbose() {
        use Verbosity::*;
        let contact = About {
            a_contact: true,
            an_open_breaker: false,
        };
        let nobody = About::default();
        let deferral = |v| shows(v, Level::INFO, "callguard_agent::campaign", contact);
        assert!(!deferral(Normal) && !deferral(Quiet) && deferral(Verbose));
        let retry = |v| shows(v, Level::WARN, "callguard_retry::executor", contact);
        assert!(retry(Normal) && retry(Quiet));
        let turned_away = |v| {
            let about = About {
                an_open_breaker: true,
                ..contact
            };
            shows(v, Level::WARN, "callguard_retry::executor", about)
        };
        assert!(!turned_away(Normal) && !turned_away(Quiet) && turned_away(Verbose));
        let transition = |v| shows(v, Level::INFO, "callguard_breaker::breaker", contact);
        assert!(transition(Normal) && !transition(Quiet));
        let recovered = |v| shows(v, Level::INFO, "callguard_agent::campaign", nobody);
        assert!(recovered(Normal) && !recovered(Quiet));
        let routine = |v| shows(v, Level::INFO, "callguard_health::checker", nobody);
        assert!(!routine(Normal) && routine(Verbose));
        assert!(!shows(Normal, Level::INFO, "callguard_agentish", nobody));
        let failure = |v| shows(v, Level::ERROR, "callguard_agent::campaign", contact);
        assert!(failure(Quiet));
    }

    #[test]
    fn each_field_is_printed_once_and_not_when_the_message_says_it() {
        let fields = Fields {
            message: "Contact c-017 failed: 400 Bad Request".into(),
            fields: vec![
                ("contact_id", "c-017".into()),
                ("service", "crm".into()),
                ("error_category", "permanent".into()),
                ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ],
        };
        let line = ConsoleLayer::new(Verbosity::Normal, false).format(Level::ERROR, &fields);
        assert!(
            line.ends_with(" ERROR Contact c-017 failed: 400 Bad Request service=crm\n"),
            "{line}"
        );
        assert!(
            !line.contains('\x1b'),
            "no control codes off a terminal: {line}"
        );
        let narrow = ConsoleLayer {
            verbosity: Verbosity::Normal,
            colour: false,
            width: Some(100),
        };
        let retry = Fields {
            message: format!(
                "llm call failed (attempt 1/4): HTTP 503: {}; retrying in 5s",
                "x".repeat(200)
            ),
            fields: vec![("contact_id", "c-001".into())],
        };
        let line = narrow.format(Level::WARN, &retry);
        assert_eq!(line.trim_end().chars().count(), 100, "{line}");
        assert!(
            line.contains("WARN llm call failed (attempt")
                && line.ends_with("retrying in 5s contact_id=c-001\n"),
            "{line}"
        );
        let line = ConsoleLayer::new(Verbosity::Verbose, false).format(Level::ERROR, &fields);
        assert!(
            line.ends_with(
                " service=crm error_category=permanent trace_id=4bf92f3577b34da6a3ce929d0e0e4736\n"
            ),
            "{line}"
        );
    }
}
