//! A count-based sliding window of call outcomes, updated with atomics only.
//!
//! The window counts for one generation of its breaker, the CLOSED one it was
//! last cleared for. A record claims the next position of a ring (a
//! compare-and-swap on the cursor), writes `generation | outcome` into that
//! slot, and moves the failure count by the difference between the outcome
//! written and the one it replaced; a slot written in an earlier generation
//! counts as empty. The cursor and the failure count are [`Stamped`] with the
//! generation, and a slot is never overwritten by an older generation, so a
//! record whose generation has gone — the breaker opened, or a reset cleared
//! the window meanwhile — changes nothing the current generation counts. The
//! count is therefore exactly the failures among the current generation's
//! slots once the records in flight have landed (while they land, a check may
//! see a call claimed but not yet written). Clearing is a restamp, O(1): the
//! old slots simply belong to an earlier generation.

use crate::config::FailureRateConfig;
use crate::stamped::Stamped;
use crate::sync::{AtomicU64, Ordering};

const EMPTY: u64 = 0;
const SUCCESS: u64 = 1;
const FAILURE: u64 = 2;

pub(crate) struct Window {
    /// `generation << 2 | outcome`.
    slots: Box<[AtomicU64]>,
    /// Records claimed, kept below twice the window's size.
    cursor: Stamped,
    /// Failures in the slots, as an `i32`: a record replacing a failure whose
    /// own count has not landed yet takes it below zero for a moment.
    failures: Stamped,
    threshold: f64,
    minimum_calls: u32,
}

/// Failures and calls currently in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowCounts {
    pub(crate) failures: u32,
    pub(crate) calls: u32,
}

impl Window {
    /// An empty window counting for the first generation (0).
    pub(crate) fn new(config: &FailureRateConfig) -> Self {
        Self {
            slots: (0..config.window_size.max(1))
                .map(|_| AtomicU64::new(EMPTY))
                .collect(),
            cursor: Stamped::new(0, 0),
            failures: Stamped::new(0, 0),
            threshold: config.threshold,
            minimum_calls: config.minimum_calls,
        }
    }

    fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Records the outcome of a call admitted in `generation`; returns the
    /// counts when a failure brought the rate to the threshold (successes
    /// never trip). A record from a generation the window no longer counts
    /// for changes nothing.
    #[inline]
    pub(crate) fn record(&self, generation: u64, failed: bool) -> Option<WindowCounts> {
        let size = self.size();
        let claimed = self
            .cursor
            .update(generation, |n| if n + 1 == 2 * size { size } else { n + 1 })?;
        let index = (claimed + size - 1) % size;
        let outcome = if failed { FAILURE } else { SUCCESS };
        let replaced = self.write(index as usize, generation, outcome)?;
        let failures = match (replaced == FAILURE, failed) {
            (true, false) => {
                self.failures.update(generation, |f| f.wrapping_sub(1));
                return None;
            }
            (false, false) => return None,
            (false, true) => self.failures.update(generation, |f| f.wrapping_add(1))?,
            (true, true) => self.failures.get(generation)?,
        };
        let calls = self.cursor.get(generation)?.min(size);
        let failures = u32::try_from(failures as i32).ok()?.min(calls);
        let tripped =
            calls >= self.minimum_calls && f64::from(failures) >= self.threshold * f64::from(calls);
        tripped.then_some(WindowCounts { failures, calls })
    }

    /// Writes `outcome` into slot `index` for `generation`; returns the
    /// outcome it replaced in that generation (EMPTY for an older one), or
    /// `None` if a newer generation owns the slot.
    #[inline]
    fn write(&self, index: usize, generation: u64, outcome: u64) -> Option<u64> {
        let slot = &self.slots[index];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let written_in = current >> 2;
            if written_in > generation {
                return None;
            }
            match slot.compare_exchange_weak(
                current,
                generation << 2 | outcome,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) if written_in == generation => return Some(current & 0b11),
                Ok(_) => return Some(EMPTY),
                Err(actual) => current = actual,
            }
        }
    }

    /// The counts, for snapshots (taken under the lock every restamp holds).
    pub(crate) fn counts(&self) -> WindowCounts {
        let calls = self.cursor.count().min(self.size());
        let failures = (self.failures.count() as i32).clamp(0, calls as i32) as u32;
        WindowCounts { failures, calls }
    }

    /// Counts for `generation` from now on: empty if `clear`, otherwise with
    /// the counts as they are, frozen against records of earlier generations.
    pub(crate) fn restamp(&self, generation: u64, clear: bool) {
        let (cursor, failures) = if clear {
            (0, 0)
        } else {
            (self.cursor.count(), self.failures.count())
        };
        self.failures.restamp(generation, failures);
        self.cursor.restamp(generation, cursor);
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
        assert_eq!(w.record(0, true), None, "1 call < minimum");
        assert_eq!(w.record(0, true), None);
        assert_eq!(w.record(0, false), None);
        assert_eq!(
            w.record(0, true),
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
            w.record(0, false);
        }
        assert_eq!(w.record(0, true), None, "1 of 4 failed");
        assert_eq!(w.record(0, true), None, "2 of 4 failed");
        assert_eq!(
            w.record(0, true).map(|c| c.failures),
            Some(3),
            "the three oldest successes have slid out"
        );
        // Far past twice the window's size, the ring keeps sliding.
        for _ in 0..21 {
            w.record(0, false);
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
    fn clearing_starts_a_generation_that_late_records_cannot_touch() {
        let w = window(0.5, 3, 1);
        w.record(0, true);
        w.restamp(1, true);
        assert_eq!(
            w.counts(),
            WindowCounts {
                failures: 0,
                calls: 0
            }
        );
        assert_eq!(w.record(0, true), None, "a record of generation 0 is late");
        assert_eq!(w.counts().calls, 0);
        // The slot generation 0 wrote counts as empty for generation 1.
        assert_eq!(w.record(1, false), None);
        assert_eq!(
            w.counts(),
            WindowCounts {
                failures: 0,
                calls: 1
            }
        );
    }

    #[test]
    fn a_slot_of_a_newer_generation_is_never_overwritten() {
        let w = window(0.5, 1, 1);
        w.restamp(2, true);
        assert!(w.record(2, true).is_some(), "1 of 1 failed");
        assert_eq!(w.write(0, 1, SUCCESS), None);
        assert_eq!(w.write(0, 2, SUCCESS), Some(FAILURE));
    }

    #[test]
    fn leaving_closed_freezes_the_counts() {
        let w = window(0.5, 4, 1);
        w.record(0, false);
        w.record(0, true);
        w.restamp(1, false);
        assert_eq!(w.record(0, true), None);
        assert_eq!(
            w.counts(),
            WindowCounts {
                failures: 1,
                calls: 2
            }
        );
    }
}
