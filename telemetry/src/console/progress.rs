//! Where a campaign stands: a bar redrawn in place on a terminal
//! (`indicatif`), a plain line every ten seconds elsewhere, nothing with `-q`.

use std::fmt::Write as _;
use std::time::Duration;

use callguard_core::CircuitState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use super::{Verbosity, console, print_line};

/// How often a plain progress line is printed off a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often the bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(250);

/// Where a campaign stands, as the progress shows it.
#[derive(Debug, Clone, Default)]
pub struct ProgressSnapshot {
    /// Contacts given to the campaign.
    pub total: usize,
    /// Completed.
    pub completed: usize,
    /// Failed.
    pub failed: usize,
    /// Expired.
    pub expired: usize,
    /// Waiting for their service.
    pub deferred: usize,
    /// Being called.
    pub in_flight: usize,
    /// Each service's breaker.
    pub breakers: Vec<(String, CircuitState)>,
}

impl ProgressSnapshot {
    fn done(&self) -> usize {
        self.completed + self.failed + self.expired
    }

    /// `17 done · 2 deferred · 1 failed · llm CLOSED · elevenlabs OPEN`.
    fn counts(&self) -> String {
        let mut text = format!(
            "{} done · {} deferred · {} failed",
            self.completed, self.deferred, self.failed
        );
        if self.expired > 0 {
            let _ = write!(text, " · {} expired", self.expired);
        }
        for (service, state) in &self.breakers {
            let _ = write!(text, " · {service} {state}");
        }
        text
    }
}

/// The campaign's progress display.
pub struct Progress {
    shown: Shown,
    started: Instant,
}

enum Shown {
    Bar(ProgressBar),
    /// Plain lines on a fixed schedule: the next is due at `due`.
    Plain {
        due: Instant,
    },
    Off,
}

impl Progress {
    /// Starts the display the console calls for: a bar on a terminal, plain
    /// lines elsewhere (and when no console was installed), nothing with `-q`.
    pub fn start(total: usize) -> Self {
        let shown = match console().map(|c| (c.verbosity, c.terminal)) {
            Some((Verbosity::Quiet, _)) => Shown::Off,
            Some((_, true)) => {
                let bar = ProgressBar::with_draw_target(
                    Some(total as u64),
                    ProgressDrawTarget::stderr_with_hz(4),
                );
                bar.set_style(
                    ProgressStyle::with_template(
                        "[{elapsed_precise}] {bar:20.cyan/blue} {pos}/{len} · {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("█▉▊▋▌▍▎▏ "),
                );
                if let Some(console) = console() {
                    *console.bar.lock() = Some(bar.clone());
                }
                Shown::Bar(bar)
            }
            // The first plain line ten seconds in: a short run needs none.
            _ => Shown::Plain {
                due: Instant::now() + PLAIN_EVERY,
            },
        };
        Self {
            shown,
            started: Instant::now(),
        }
    }

    /// How often [`update`](Self::update) is worth calling; `None` when
    /// nothing is shown.
    pub fn every(&self) -> Option<Duration> {
        match self.shown {
            Shown::Bar(_) => Some(BAR_EVERY),
            // Checked every second, printed every ten: a tick a little early
            // does not skip a line.
            Shown::Plain { .. } => Some(Duration::from_secs(1)),
            Shown::Off => None,
        }
    }

    /// Shows `now`: redraws the bar, or prints a plain line when one is due
    /// (every ten seconds from the start).
    pub fn update(&mut self, now: &ProgressSnapshot) {
        match &mut self.shown {
            Shown::Bar(bar) => {
                bar.set_length(now.total as u64);
                bar.set_position(now.done() as u64);
                bar.set_message(now.counts());
            }
            Shown::Plain { due } => {
                if plain_line_due(due) {
                    print_line(&format!(
                        "[{:>6.1}s] {}/{} · {}\n",
                        self.started.elapsed().as_secs_f64(),
                        now.done(),
                        now.total,
                        now.counts()
                    ));
                }
            }
            Shown::Off => {}
        }
    }

    /// Shows `message` in place of the counts, which cannot be read for now
    /// (the call store is out of reach): on the bar, or as the plain line
    /// when one is due.
    pub fn hold(&mut self, message: String) {
        match &mut self.shown {
            Shown::Bar(bar) => bar.set_message(message),
            Shown::Plain { due } => {
                if plain_line_due(due) {
                    print_line(&format!(
                        "[{:>6.1}s] {message}\n",
                        self.started.elapsed().as_secs_f64()
                    ));
                }
            }
            Shown::Off => {}
        }
    }

    /// Clears the bar, so that the summary follows the story's last line.
    pub fn finish(self) {
        if let Shown::Bar(bar) = self.shown {
            if let Some(console) = console() {
                console.bar.lock().take();
            }
            bar.finish_and_clear();
        }
    }
}

/// Whether a plain line is due now; if so, `due` moves to the next one.
fn plain_line_due(due: &mut Instant) -> bool {
    let now = Instant::now();
    if now < *due {
        return false;
    }
    while *due <= now {
        *due += PLAIN_EVERY;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_name_each_breaker_once() {
        let now = ProgressSnapshot {
            total: 20,
            completed: 12,
            failed: 1,
            expired: 0,
            deferred: 5,
            in_flight: 2,
            breakers: vec![
                ("llm".into(), CircuitState::Closed),
                ("elevenlabs".into(), CircuitState::Open),
            ],
        };
        assert_eq!(
            now.counts(),
            "12 done · 5 deferred · 1 failed · llm CLOSED · elevenlabs OPEN"
        );
        assert_eq!(now.done(), 13);
    }
}
