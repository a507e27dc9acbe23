//! A count stamped with the state generation it counts for, in one atomic word.
//!
//! A result checks its generation against the state word, then updates a
//! count; a transition may come in between. Stamping the count with the
//! generation and updating it by compare-and-swap makes "still my generation"
//! and "count me" one atomic step: a result from an earlier generation finds
//! another stamp and counts nowhere. The stamp is the generation's low 32
//! bits; a result would have to wait out 2³² transitions between its load and
//! its swap to be mistaken for a current one.

use crate::sync::{AtomicU64, Ordering};

pub(crate) struct Stamped(AtomicU64);

#[inline]
fn pack(generation: u64, count: u32) -> u64 {
    (generation << 32) | u64::from(count)
}

#[inline]
fn stamp_of(word: u64) -> u32 {
    (word >> 32) as u32
}

#[inline]
fn count_of(word: u64) -> u32 {
    word as u32
}

impl Stamped {
    pub(crate) fn new(generation: u64, count: u32) -> Self {
        Self(AtomicU64::new(pack(generation, count)))
    }

    /// The count, if it is stamped with `generation`.
    #[inline]
    pub(crate) fn get(&self, generation: u64) -> Option<u32> {
        let word = self.0.load(Ordering::Acquire);
        (stamp_of(word) == generation as u32).then_some(count_of(word))
    }

    /// The count, whatever its stamp (for snapshots, taken under the lock
    /// that every restamp holds).
    pub(crate) fn count(&self) -> u32 {
        count_of(self.0.load(Ordering::Acquire))
    }

    /// Replaces the count `generation` sees by `update(count)`, atomically
    /// with checking the stamp; `None` when the count belongs to another
    /// generation. Returns the new count.
    #[inline]
    pub(crate) fn update(&self, generation: u64, update: impl Fn(u32) -> u32) -> Option<u32> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            if stamp_of(word) != generation as u32 {
                return None;
            }
            let count = update(count_of(word));
            match self.0.compare_exchange_weak(
                word,
                pack(generation, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(count),
                Err(actual) => word = actual,
            }
        }
    }

    /// Stamps the count with `generation` and sets it to `count`; updates
    /// still in flight for an earlier generation then fail. A swap, not a
    /// store: as a read-modify-write it is ordered after every update it
    /// overtakes in the loom model too (a plain store there may be placed
    /// before an update it raced). It runs under the lock, off the hot path.
    pub(crate) fn restamp(&self, generation: u64, count: u32) {
        self.0.swap(pack(generation, count), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_counts_only_in_its_own_generation() {
        let streak = Stamped::new(7, 0);
        assert_eq!(streak.update(7, |n| n + 1), Some(1));
        assert_eq!(streak.update(6, |n| n + 1), None);
        streak.restamp(8, 0);
        assert_eq!(streak.update(7, |n| n + 1), None, "a late result");
        assert_eq!(streak.get(8), Some(0));
        assert_eq!(streak.get(7), None);
        assert_eq!(streak.update(8, |n| n + 1), Some(1));
        assert_eq!(streak.count(), 1);
    }

    #[test]
    fn the_stamp_is_the_generations_low_bits() {
        let streak = Stamped::new(u64::from(u32::MAX), 3);
        streak.restamp(u64::from(u32::MAX) + 1, 0);
        assert_eq!(streak.get(1 << 32), Some(0));
        assert_eq!(streak.update(u64::from(u32::MAX), |n| n + 1), None);
    }
}
