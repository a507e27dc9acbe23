//! Group commit for the database backends: every operation is a job queued
//! here; one drainer at a time takes whatever jobs are waiting and runs them
//! in a single transaction, then answers each caller. An answer is sent only
//! after the commit, so an acknowledged change is exactly as durable as one
//! committed alone — but concurrent workers share one commit (and, for
//! PostgreSQL, one pipelined exchange) instead of paying one each.
//!
//! No drainer runs while the queue is empty: the first job queued starts one,
//! and it stops when it finds the queue empty (checked and marked under the
//! same lock as the queueing, so no job is left behind).

use std::sync::{Mutex, PoisonError};

use crate::model::StoreError;

/// Jobs waiting for the next transaction.
pub(crate) struct Batcher<J> {
    queue: Mutex<Waiting<J>>,
}

struct Waiting<J> {
    jobs: Vec<J>,
    draining: bool,
}

impl<J> Default for Batcher<J> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Waiting {
                jobs: Vec::new(),
                draining: false,
            }),
        }
    }
}

impl<J> Batcher<J> {
    /// Queues `job`; `true` if no drainer runs, so the caller must start one.
    pub(crate) fn push(&self, job: J) -> bool {
        let mut waiting = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.jobs.push(job);
        !std::mem::replace(&mut waiting.draining, true)
    }

    /// The jobs waiting (at most `max`, oldest first), or `None` — and the
    /// drainer must stop — when there are none.
    pub(crate) fn take(&self, max: usize) -> Option<Vec<J>> {
        let mut waiting = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.jobs.is_empty() {
            waiting.draining = false;
            return None;
        }
        let cut = waiting.jobs.len().min(max);
        let rest = waiting.jobs.split_off(cut);
        Some(std::mem::replace(&mut waiting.jobs, rest))
    }

    /// Drops every waiting job (their callers see the store's worker gone)
    /// and lets the next job start a drainer: called when a drainer dies.
    pub(crate) fn reset(&self) {
        let mut waiting = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.jobs.clear();
        waiting.draining = false;
    }
}

/// Ends a drainer's turn if it unwinds, so later jobs start a new one.
pub(crate) struct DrainGuard<'a, J>(pub(crate) &'a Batcher<J>);

impl<J> Drop for DrainGuard<'_, J> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.reset();
        }
    }
}

/// Answers one caller once its transaction has ended: with its own result if
/// the transaction committed (`None`), else with the commit's error.
pub(crate) type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// The reply of a job whose work gave `result`: sends it on `answer`, or the
/// transaction's error when it did not commit (a job's own error stands).
pub(crate) fn reply<T: Send + 'static>(
    result: Result<T, StoreError>,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    backend: &'static str,
) -> Reply {
    Box::new(move |rolled_back: Option<&str>| {
        let result = match (rolled_back, result) {
            (Some(why), Ok(_)) => Err(StoreError::Database {
                backend,
                message: format!("not committed: {why}"),
            }),
            (_, result) => result,
        };
        // The caller may have given up waiting; the change stands either way.
        let _ = answer.send(result);
    })
}

/// Most jobs in one transaction (for PostgreSQL, `join_all` polls up to 30
/// futures in order, so their statements are sent in order).
pub(crate) const MAX_BATCH: usize = 30;
