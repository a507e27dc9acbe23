//! A global allocator for tests that counts the allocations made by one
//! thread while a [`Count`] runs on it. What other threads allocate
//! meanwhile — the test harness's own bookkeeping, say — is not counted, so
//! an assertion that a hot path allocates nothing holds exactly when the
//! path itself allocates nothing.
//!
//! ```
//! use callguard_alloc_counter::{Count, CountingAllocator};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! let count = Count::start();
//! let sum: u64 = (1..=10).sum(); // the path under test
//! assert_eq!((sum, count.allocations()), (55, 0));
//! ```

// Implementing `GlobalAlloc` is unsafe by nature; each method only counts
// and forwards to the system allocator with the caller's own arguments.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;

/// The system allocator, counting allocations (and reallocations) on
/// threads where a [`Count`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

thread_local! {
    // `const` initialisers with no destructor: reading them never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; counting touches only thread-locals
// that never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts this thread's allocations from [`start`](Self::start) until it is
/// dropped. It stays on its thread (it is not `Send`). One at a time on a
/// thread: the counter is the thread's, so a second `start` resets it to zero
/// and dropping either stops the counting.
#[derive(Debug)]
pub struct Count {
    not_send: PhantomData<*const ()>,
}

impl Count {
    /// Starts counting on this thread, from zero.
    pub fn start() -> Self {
        ALLOCATIONS.with(|n| n.set(0));
        COUNTING.with(|counting| counting.set(true));
        Self {
            not_send: PhantomData,
        }
    }

    /// Allocations and reallocations this thread made since the start
    /// (through [`CountingAllocator`], which must be the global allocator).
    pub fn allocations(&self) -> usize {
        ALLOCATIONS.with(Cell::get)
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        COUNTING.with(|counting| counting.set(false));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    #[test]
    fn counts_this_threads_allocations_while_counting() {
        let before = vec![0_u8; 16];
        let count = Count::start();
        assert_eq!(count.allocations(), 0);
        let mut grown = std::hint::black_box(Vec::<u64>::with_capacity(1));
        grown.extend(0..100);
        let mine = count.allocations();
        assert!(mine >= 2, "an allocation and a reallocation: {mine}");
        drop(count);
        let count = Count::start();
        drop(std::hint::black_box(before));
        assert_eq!(count.allocations(), 0, "a free is not an allocation");
    }

    #[test]
    fn another_threads_allocations_are_not_counted() {
        let (made, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let other = std::thread::spawn({
            let (made, stop) = (made.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    drop(std::hint::black_box(vec![0_u8; 64]));
                    made.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let count = Count::start();
        let seen = made.load(Ordering::Relaxed);
        while made.load(Ordering::Relaxed) < seen + 1_000 {
            std::hint::spin_loop();
        }
        assert_eq!(count.allocations(), 0);
        stop.store(true, Ordering::Relaxed);
        drop(count);
        other.join().unwrap();
    }
}
