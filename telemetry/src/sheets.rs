//! The Google Sheets export's counts, kept readable after the export has been
//! flushed and stopped, for `/metrics` and the summary.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use callguard_sheets_logger::{SheetsHandle, SheetsStats};

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
    pub(crate) fn new(handle: SheetsHandle) -> Self {
        Self(Arc::new(Mutex::new(SheetsState {
            handle: Some(handle),
            last: SheetsStats::default(),
        })))
    }

    /// The counts so far.
    pub fn stats(&self) -> SheetsStats {
        let state = self.0.lock();
        state
            .handle
            .as_ref()
            .map_or(state.last, SheetsHandle::stats)
    }

    /// Flushes and stops the export (once; later calls return `None`).
    pub(crate) async fn flush_and_shutdown(&self, deadline: Duration) -> Option<SheetsStats> {
        let handle = {
            let mut state = self.0.lock();
            let handle = state.handle.take()?;
            state.last = handle.stats();
            handle
        };
        let stats = handle.flush_and_shutdown(deadline).await;
        self.0.lock().last = stats;
        Some(stats)
    }
}
