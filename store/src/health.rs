//! Whether the store's database answers, as its statements find it: since
//! when it has been out of reach (none while it answers), and how many
//! statements failed. The agent shows it on `/metrics`, in its gRPC health
//! and on the progress line.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::time::Instant;

/// The store's reachability at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// When the database stopped answering (wall clock and `tokio` time), or
    /// `None` while it answers.
    pub unreachable_since: Option<(SystemTime, Instant)>,
    /// Statements that failed, each try counted (a lost connection, a
    /// refused statement; not a lease found lost).
    pub errors: u64,
}

/// What the backend's statements found.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    /// Whether `down_since` is set: an answer takes no lock while all is well.
    down: AtomicBool,
    down_since: Mutex<Option<(SystemTime, Instant)>>,
    errors: AtomicU64,
}

impl Reachability {
    /// A statement got its answer.
    pub(crate) fn answered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let mut down = self.down_since.lock();
        self.down.store(false, Ordering::Release);
        if let Some((since, _)) = down.take() {
            let out = since.elapsed().unwrap_or_default();
            tracing::warn!("Call store reachable again after {:.1}s", out.as_secs_f64());
        }
    }

    /// A statement failed; `lost` if the database could not be reached.
    pub(crate) fn failed(&self, lost: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if lost {
            let mut down = self.down_since.lock();
            if down.is_none() {
                tracing::warn!("Call store unreachable; reconnecting");
                *down = Some((SystemTime::now(), Instant::now()));
                self.down.store(true, Ordering::Release);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> StoreHealth {
        StoreHealth {
            unreachable_since: *self.down_since.lock(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}
