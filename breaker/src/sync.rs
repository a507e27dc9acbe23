//! Atomics and the mutex: `loom`'s when built with `--cfg loom` (the model
//! checks in `tests/loom.rs`), `std`'s atomics and `parking_lot`'s mutex
//! otherwise. Both mutexes lock the same way: `lock()` gives the guard.

#[cfg(loom)]
use loom::sync::MutexGuard;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// loom's mutex with `parking_lot`'s way of locking.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        // A model that panics fails anyway: a poisoned lock only repeats it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
