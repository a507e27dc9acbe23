//! [`LogCapture`]: log output kept in memory, for tests that check what was
//! (or was not) logged.

use parking_lot::Mutex;
use std::io::Write;
use std::sync::Arc;

/// Everything written to it, kept in memory; clones share the same buffer.
///
/// Give it to a tracing subscriber as its writer — a closure returning a
/// clone, e.g. `fmt::layer().with_writer(move || capture.clone())` — and read
/// what was logged with [`text`](Self::text).
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let bytes = self.0.lock();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_what_was_written() {
        let capture = LogCapture::default();
        let mut writer = capture.clone();
        writer.write_all(b"one ").unwrap();
        write!(writer, "two").unwrap();
        assert_eq!(capture.text(), "one two");
    }
}
