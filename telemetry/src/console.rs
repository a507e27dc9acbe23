//! Human-readable log lines on stderr, written so they do not mix with the
//! campaign's progress line.

use std::io::{IsTerminal, Write};

/// Writes log lines to stderr; on a terminal it first clears the line, where a
/// progress line may be standing.
#[derive(Clone, Copy)]
pub(crate) struct ConsoleWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleLine;
    fn make_writer(&'a self) -> Self::Writer {
        ConsoleLine {
            cleared: !std::io::stderr().is_terminal(),
        }
    }
}

/// One console log line.
pub(crate) struct ConsoleLine {
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
