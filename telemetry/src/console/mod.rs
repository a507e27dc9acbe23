//! The console, for people: on stderr, one line per thing to notice — breaker
//! transitions, alerts, failures with their reason, retries, recoveries with
//! the deferred contacts they wake — and, on a terminal, a progress bar below
//! them; off a terminal, plain lines with no control codes and the progress
//! as an occasional line. `-v` brings back a line per call event (a
//! contact's deferral, a rejected first attempt), `-q` leaves the warnings
//! and errors. The JSON log file records every event whatever the console shows.
//!
//! Which events are shown is decided by what they are about, not by their
//! level alone: an INFO event about one contact (in a span or with a field
//! `contact_id`) is a call's detail; the same level from the breakers, the
//! alerts or the campaign as a whole is part of the story.

mod layer;
mod progress;

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use indicatif::ProgressBar;
use parking_lot::Mutex;

pub(crate) use layer::ConsoleLayer;
pub use progress::{Progress, ProgressSnapshot};

/// How much the console says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verbosity {
    /// Warnings and errors, and the summary (`-q`); no progress.
    Quiet,
    /// The story: what a person should notice, and the progress.
    #[default]
    Normal,
    /// Every event at the console level, a line per call event too (`-v`).
    Verbose,
}

/// The console of this process, set once by the subscriber's installation.
struct Console {
    verbosity: Verbosity,
    /// Whether stderr is a terminal: a bar and colours, or plain lines.
    terminal: bool,
    /// The progress bar while one is drawn; lines are printed above it.
    bar: Mutex<Option<ProgressBar>>,
}

static CONSOLE: OnceLock<Console> = OnceLock::new();

/// Sets the console's verbosity (the first call wins) and says whether stderr
/// is a terminal.
pub(crate) fn install(verbosity: Verbosity) -> bool {
    CONSOLE
        .get_or_init(|| Console {
            verbosity,
            terminal: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        })
        .terminal
}

fn console() -> Option<&'static Console> {
    CONSOLE.get()
}

/// Writes one line to stderr, above the progress bar if one is drawn.
fn print_line(line: &str) {
    let write = || {
        let mut stderr = std::io::stderr().lock();
        // A closed stderr must not stop calls; the JSON file has the event.
        let _ = stderr.write_all(line.as_bytes());
    };
    match console().and_then(|c| c.bar.lock().clone()) {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}
