//! A count-based sliding window of call outcomes, updated with atomics only.
//!
//! Each record claims the next slot of a ring (`fetch_add` on a cursor) and swaps
//! its outcome in; the failure count is adjusted by the difference between the
//! outcome written and the one it replaced. At rest the count is exact; while
//! several threads record at once it may be off by the records in flight, which
//! is harmless for a threshold check and keeps the CLOSED hot path lock-free.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use crate::config::FailureRateConfig;

const EMPTY: u8 = 0;
const SUCCESS: u8 = 1;
const FAILURE: u8 = 2;

pub(crate) struct Window {
    slots: Box<[AtomicU8]>,
    cursor: AtomicU64,
    failures: AtomicI64,
    threshold: f64,
    minimum_calls: u64,
}

/// Failures and calls currently in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowCounts {
    pub(crate) failures: u32,
    pub(crate) calls: u32,
}

impl Window {
    pub(crate) fn new(config: &FailureRateConfig) -> Self {
        Self {
            slots: (0..config.window_size)
                .map(|_| AtomicU8::new(EMPTY))
                .collect(),
            cursor: AtomicU64::new(0),
            failures: AtomicI64::new(0),
            threshold: config.threshold,
            minimum_calls: u64::from(config.minimum_calls),
        }
    }

    /// Records one outcome; returns the counts when a failure brought the rate
    /// to the threshold (successes never trip).
    pub(crate) fn record(&self, failed: bool) -> Option<WindowCounts> {
        let index = self.cursor.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[(index % self.slots.len() as u64) as usize];
        let new = if failed { FAILURE } else { SUCCESS };
        let old = slot.swap(new, Ordering::AcqRel);
        match (old == FAILURE, failed) {
            (true, false) => {
                self.failures.fetch_sub(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.failures.fetch_add(1, Ordering::AcqRel);
            }
            _ => {}
        }
        if !failed {
            return None;
        }
        let counts = self.counts();
        let tripped = u64::from(counts.calls) >= self.minimum_calls
            && f64::from(counts.failures) >= self.threshold * f64::from(counts.calls);
        tripped.then_some(counts)
    }

    pub(crate) fn counts(&self) -> WindowCounts {
        let recorded = self.cursor.load(Ordering::Acquire);
        let calls = recorded.min(self.slots.len() as u64) as u32;
        let failures = self
            .failures
            .load(Ordering::Acquire)
            .clamp(0, i64::from(calls)) as u32;
        WindowCounts { failures, calls }
    }

    pub(crate) fn clear(&self) {
        for slot in &*self.slots {
            slot.store(EMPTY, Ordering::Relaxed);
        }
        self.failures.store(0, Ordering::Release);
        self.cursor.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(threshold: f64, window_size: u32, minimum_calls: u32) -> Window {
        Window::new(&FailureRateConfig {
            threshold,
            window_size,
            minimum_calls,
        })
    }

    #[test]
    fn trips_only_after_minimum_calls() {
        let w = window(0.5, 4, 4);
        assert_eq!(w.record(true), None, "1 call < minimum");
        assert_eq!(w.record(true), None);
        assert_eq!(w.record(false), None);
        assert_eq!(
            w.record(true),
            Some(WindowCounts {
                failures: 3,
                calls: 4
            })
        );
    }

    #[test]
    fn old_outcomes_slide_out() {
        let w = window(0.75, 4, 4);
        for _ in 0..4 {
            w.record(false);
        }
        assert_eq!(w.record(true), None, "1 of 4 failed");
        assert_eq!(w.record(true), None, "2 of 4 failed");
        assert_eq!(
            w.record(true).map(|c| c.failures),
            Some(3),
            "the three oldest successes have slid out"
        );
        for _ in 0..4 {
            w.record(false);
        }
        assert_eq!(
            w.counts(),
            WindowCounts {
                failures: 0,
                calls: 4
            }
        );
    }

    #[test]
    fn clear_forgets_everything() {
        let w = window(0.5, 3, 1);
        w.record(true);
        w.clear();
        assert_eq!(
            w.counts(),
            WindowCounts {
                failures: 0,
                calls: 0
            }
        );
    }
}
