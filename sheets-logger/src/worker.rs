//! The background task that sends rows: batching by size and by interval,
//! backoff on `429` / `5xx` without reordering, and the final flush.
//!
//! Rows arrive through a bounded channel (the buffer). The task moves up to
//! `batch_size` of them into the batch and sends the batch when it is full or
//! when `flush_interval` has passed since the last request. A batch that fails
//! with a transient error stays at the head and is sent again after the
//! policy's backoff (or the server's `Retry-After`); meanwhile new rows wait in
//! the channel, so order is kept, and rows that find the channel full are
//! dropped and counted by the layer. A batch the API refuses for good (or that
//! runs out of retries) is dropped, counted, and logged locally.
//!
//! The task's own log events carry this crate's target, which the layer
//! ignores; anything logged while the task is being polled (reqwest and
//! friends included) is ignored too (see [`Quiet`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use callguard_core::ErrorKind;
use callguard_retry::{Backoff, RetryPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::SheetsClient;
use crate::row::Row;

/// What the handle asks of the task.
pub(crate) enum Command {
    /// Send every row logged so far, then answer.
    Flush(oneshot::Sender<()>),
    /// Send every row logged so far, giving up at the deadline, then stop.
    Shutdown { deadline: Instant },
}

/// Counters shared by the layer, the task and the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rows_sent: AtomicU64,
    pub(crate) rows_dropped: AtomicU64,
    pub(crate) rows_overflowed: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_failed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub(crate) struct Worker {
    pub(crate) rows: mpsc::Receiver<Row>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) client: SheetsClient,
    pub(crate) batch_size: usize,
    pub(crate) flush_interval: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) counters: Arc<Counters>,
    /// Rows taken from the channel and not yet sent or dropped, oldest first.
    pub(crate) batch: Vec<Row>,
    /// Overflow already reported in a log line.
    pub(crate) overflow_reported: u64,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        let mut next_flush = Instant::now() + self.flush_interval;
        let mut commands_open = true;
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv(), if commands_open => match command {
                    Some(Command::Flush(done)) => {
                        self.send_all().await;
                        next_flush = Instant::now() + self.flush_interval;
                        let _ = done.send(());
                    }
                    Some(Command::Shutdown { deadline }) => {
                        self.shutdown(deadline).await;
                        return;
                    }
                    // The handle is gone: keep serving the layer.
                    None => commands_open = false,
                },
                () = tokio::time::sleep_until(next_flush) => {
                    self.fill_batch();
                    if !self.batch.is_empty() {
                        self.send_batch().await;
                    }
                    self.report_overflow();
                    next_flush = Instant::now() + self.flush_interval;
                }
                row = self.rows.recv() => match row {
                    Some(row) => {
                        self.batch.push(row);
                        if self.batch.len() >= self.batch_size {
                            self.send_batch().await;
                            next_flush = Instant::now() + self.flush_interval;
                        }
                    }
                    // Every layer is gone: send what is left and stop.
                    None => {
                        self.send_all().await;
                        self.report_overflow();
                        return;
                    }
                },
            }
        }
    }

    /// Stops taking rows, sends what there is by `deadline`, counts the rest
    /// as dropped.
    async fn shutdown(&mut self, deadline: Instant) {
        self.rows.close();
        if tokio::time::timeout_at(deadline, self.send_all())
            .await
            .is_err()
        {
            let mut left = self.batch.len();
            self.batch.clear();
            while self.rows.try_recv().is_ok() {
                left += 1;
            }
            Counters::add(&self.counters.rows_dropped, left);
            tracing::warn!(
                rows = left,
                "sheets logger: shutdown deadline passed; rows not sent"
            );
        }
        self.report_overflow();
    }

    /// Sends the batch and every row waiting in the channel, a batch at a time.
    async fn send_all(&mut self) {
        loop {
            self.fill_batch();
            if self.batch.is_empty() {
                return;
            }
            self.send_batch().await;
        }
    }

    /// Tops the batch up with waiting rows, up to `batch_size`.
    fn fill_batch(&mut self) {
        while self.batch.len() < self.batch_size {
            match self.rows.try_recv() {
                Ok(row) => self.batch.push(row),
                Err(_) => return,
            }
        }
    }

    /// Sends the batch until it is accepted, refused for good, or out of
    /// retries; the batch is empty afterwards.
    async fn send_batch(&mut self) {
        let rows = self.batch.len();
        let mut backoff = Backoff::new(&self.retry);
        let mut renewed_token = false;
        loop {
            let error = match self.client.append(&self.batch).await {
                Ok(()) => {
                    Counters::add(&self.counters.requests_sent, 1);
                    Counters::add(&self.counters.rows_sent, rows);
                    self.batch.clear();
                    return;
                }
                Err(error) => error,
            };
            Counters::add(&self.counters.requests_failed, 1);
            // A cached token may have been revoked: fetch a new one, once.
            if error.kind() == ErrorKind::Unauthorized
                && !renewed_token
                && self.client.auth.invalidate()
            {
                renewed_token = true;
                continue;
            }
            if !error.is_transient() || backoff.retries() >= self.retry.max_retries {
                tracing::error!(
                    rows,
                    retries = backoff.retries(),
                    error = %error,
                    "sheets logger: rows dropped"
                );
                Counters::add(&self.counters.rows_dropped, rows);
                self.batch.clear();
                return;
            }
            let delay = backoff.next_delay(error.retry_after());
            tracing::debug!(
                rows,
                retry = backoff.retries(),
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "sheets logger: append failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Logs how many rows found the buffer full since the last report.
    fn report_overflow(&mut self) {
        let total = self.counters.rows_overflowed.load(Ordering::Relaxed);
        if total > self.overflow_reported {
            tracing::warn!(
                rows = total - self.overflow_reported,
                total,
                "sheets logger: buffer full; rows dropped"
            );
            self.overflow_reported = total;
        }
    }
}

thread_local! {
    /// Set while the worker is being polled on this thread.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is polling the worker (its events are not sent).
pub(crate) fn in_worker() -> bool {
    IN_WORKER.with(Cell::get)
}

/// A future whose polls are marked, so that events logged while it runs —
/// by this crate or by the HTTP client under it — never feed back into the
/// layer.
pub(crate) struct Quiet<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let outer = IN_WORKER.with(|flag| flag.replace(true));
        let polled = self.0.as_mut().poll(cx);
        IN_WORKER.with(|flag| flag.set(outer));
        polled
    }
}
