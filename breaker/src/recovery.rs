//! The recovery timer of an OPEN breaker: while it runs, a rejection needs no
//! clock read to know that the recovery timeout has not passed.
//!
//! Entering OPEN inside a tokio runtime spawns a task that sleeps until the
//! generation's deadline. The task polls its sleep with a waker of its own,
//! which moves the mark the moment the runtime's timer fires — inside the
//! timer driver, before any task or `block_on` future runs again (under paused
//! time: inside `tokio::time::advance`, so a call right after advancing past
//! the timeout is admitted).
//!
//! The mark is one number per breaker that only grows: `2g + 1` while the
//! timer of OPEN generation `g` runs, `2g + 2` once it has fired or ended
//! without firing (aborted, dropped with its runtime, or never able to sleep).
//! A rejection in OPEN generation `g` skips the clock only on reading exactly
//! `2g + 1`; any other value sends it to the clock, as when no runtime was
//! there to start a timer. Since the mark only grows, no timer of an earlier
//! generation — late, aborted or racing a transition — can stand for a later
//! one, and a timer that ends without firing never leaves the breaker stuck.
//!
//! The timer only says that the clock is worth reading again; the call that
//! reads it makes the transition to HALF_OPEN, under the breaker's lock, as
//! without a timer. A timer that moved the breaker itself would publish
//! HALF_OPEN with no call to probe it and take the lock from the timer
//! driver; a cached coarse clock would need a ticker all the same and be
//! stale on both sides of the deadline.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};

use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::sync::{AtomicU64, Ordering};

/// Which OPEN generation's recovery timer is running; shared by a breaker
/// with its timer tasks.
pub(crate) struct RecoveryMark(Arc<AtomicU64>);

impl RecoveryMark {
    pub(crate) fn new() -> Self {
        Self(Arc::new(AtomicU64::new(0)))
    }

    /// Whether the timer of OPEN generation `generation` is running, that is,
    /// its deadline has not passed (as far as the runtime's timer knows).
    #[inline]
    pub(crate) fn is_running(&self, generation: u64) -> bool {
        self.0.load(Ordering::Acquire) == running(generation)
    }

    /// Starts the timer of OPEN generation `generation`, due at `deadline`, on
    /// the current tokio runtime; `None` without a runtime. The timer counts
    /// as running only once its sleep is registered with the runtime's timer;
    /// in a runtime without timers the task panics as any tokio sleep would
    /// there (tokio reports it), and the breaker keeps reading the clock.
    pub(crate) fn start(&self, generation: u64, deadline: Instant) -> Option<AbortHandle> {
        let runtime = Handle::try_current().ok()?;
        let timer = Arc::new(Timer {
            mark: Arc::clone(&self.0),
            generation,
        });
        let task = runtime.spawn(async move {
            // A panic (a runtime without timers) or an abort ends the timer
            // too: dropping `timer` marks it ended.
            let mut sleep = pin!(tokio::time::sleep_until(deadline));
            poll_fn(|cx| {
                let waker = Waker::from(Arc::new(FireOnWake {
                    timer: Arc::clone(&timer),
                    task: cx.waker().clone(),
                }));
                let polled = sleep.as_mut().poll(&mut Context::from_waker(&waker));
                if polled.is_pending() {
                    timer.raise(running(timer.generation));
                }
                polled
            })
            .await;
        });
        Some(task.abort_handle())
    }
}

/// The mark that says generation `generation`'s timer runs.
#[inline]
fn running(generation: u64) -> u64 {
    2 * generation + 1
}

/// The mark that says generation `generation`'s timer has ended.
fn ended(generation: u64) -> u64 {
    2 * generation + 2
}

/// One generation's timer; marks itself ended when dropped.
struct Timer {
    mark: Arc<AtomicU64>,
    generation: u64,
}

impl Timer {
    fn raise(&self, to: u64) {
        self.mark.fetch_max(to, Ordering::AcqRel);
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.raise(ended(self.generation));
    }
}

/// The waker the sleep is polled with: when the runtime's timer fires it,
/// the mark moves at once, then the task is woken to finish.
struct FireOnWake {
    timer: Arc<Timer>,
    task: Waker,
}

impl Wake for FireOnWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.timer.raise(ended(self.timer.generation));
        self.task.wake_by_ref();
    }
}
