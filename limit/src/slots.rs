//! Slots for calls in flight: a tokio `Semaphore` whose limit can move while
//! calls hold slots.
//!
//! A slot is a permit taken and forgotten at once; giving it back adds one.
//! A higher limit adds permits. A lower one forgets the free permits it can
//! and records the rest as a debt, paid by the next slots to come back
//! (they are forgotten instead of added): the lower limit holds at once for
//! new calls, and calls in flight are not touched. Should a slot come back
//! while a lower limit is being set, one extra call may get in before the
//! debt is paid; never fewer than the limit. "No limit" is `u32::MAX`
//! permits, far below the semaphore's own maximum.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The limit that means "no limit".
pub(crate) const UNLIMITED: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct Slots {
    semaphore: Semaphore,
    /// The limit the permits stand for.
    limit: AtomicU32,
    /// Permits to forget as they come back.
    debt: AtomicU32,
    in_flight: AtomicU32,
    waiting: AtomicU32,
}

/// A caller counted as waiting until dropped.
pub(crate) struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            semaphore: Semaphore::new(limit as usize),
            limit: AtomicU32::new(limit),
            debt: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Takes a free slot, if there is one (none is free while others wait).
    pub(crate) fn try_take(&self) -> bool {
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                self.taken(permit);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for a slot, first come first served.
    pub(crate) async fn take(&self) {
        match self.semaphore.acquire().await {
            Ok(permit) => self.taken(permit),
            Err(_) => unreachable!("the semaphore is never closed"),
        }
    }

    fn taken(&self, permit: SemaphorePermit<'_>) {
        permit.forget();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let paid = self
            .debt
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
            .is_ok();
        if !paid {
            self.semaphore.add_permits(1);
        }
    }

    /// Counts a caller as waiting, unless `max` already are.
    pub(crate) fn enqueue(&self, max: u32) -> Option<Queued<'_>> {
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w < max).then_some(w + 1)
            })
            .ok()
            .map(|_| Queued(&self.waiting))
    }

    /// Moves the limit to `limit`. Callers serialise their calls (the
    /// limiter's state lock); slots may come back meanwhile.
    pub(crate) fn resize(&self, limit: u32) {
        let old = self.limit.swap(limit, Ordering::Relaxed);
        if limit > old {
            let grow = limit - old;
            let paid = match self
                .debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                    Some(d.saturating_sub(grow))
                }) {
                Ok(before) | Err(before) => before.min(grow),
            };
            self.semaphore.add_permits((grow - paid) as usize);
        } else if limit < old {
            let shrink = old - limit;
            // At most `shrink` ≤ u32::MAX are forgotten.
            let forgotten = self.semaphore.forget_permits(shrink as usize) as u32;
            self.debt.fetch_add(shrink - forgotten, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(slots: &Slots) -> u32 {
        let mut n = 0;
        while slots.try_take() {
            n += 1;
        }
        n
    }

    #[test]
    fn a_lower_limit_holds_for_new_calls_while_old_ones_finish() {
        let slots = Slots::new(5);
        assert_eq!(take_all(&slots), 5);
        slots.resize(2);
        assert_eq!(slots.limit(), 2);
        for in_flight in [4, 3, 2] {
            slots.release();
            assert!(!slots.try_take(), "{in_flight} still in flight");
            assert_eq!(slots.in_flight(), in_flight);
        }
        slots.release();
        assert_eq!(take_all(&slots), 1, "below the new limit: one slot is free");
        assert_eq!(slots.in_flight(), 2);
    }

    #[test]
    fn a_higher_limit_first_cancels_the_debt() {
        let slots = Slots::new(4);
        assert_eq!(take_all(&slots), 4);
        slots.resize(1); // 3 in debt
        slots.resize(3); // 1 in debt
        slots.release();
        assert!(!slots.try_take(), "the debt took the slot back");
        slots.release();
        assert!(slots.try_take());
        assert!(!slots.try_take());
        assert_eq!(slots.in_flight(), 3);
    }

    #[test]
    fn unlimited_and_back() {
        let slots = Slots::new(UNLIMITED);
        assert!((0..1000).all(|_| slots.try_take()));
        slots.resize(10);
        assert!(!slots.try_take());
        for _ in 0..995 {
            slots.release();
        }
        assert_eq!(take_all(&slots), 5);
        slots.resize(UNLIMITED);
        assert!((0..1000).all(|_| slots.try_take()));
    }

    #[test]
    fn the_queue_is_bounded_and_its_places_come_back() {
        let slots = Slots::new(1);
        let first = slots.enqueue(2).unwrap();
        let second = slots.enqueue(2).unwrap();
        assert!(slots.enqueue(2).is_none());
        assert_eq!(slots.waiting(), 2);
        drop(first);
        assert!(slots.enqueue(2).is_some());
        drop(second);
        assert_eq!(slots.waiting(), 0);
        assert!(slots.enqueue(0).is_none(), "a queue of 0 takes nobody");
    }
}
