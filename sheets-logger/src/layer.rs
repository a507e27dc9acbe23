//! The `tracing` layer, its handle, and setting both up from a
//! [`SheetsConfig`].
//!
//! `on_event` never waits: it checks the level (or the `from_state` field of
//! a breaker transition), formats the row and `try_send`s it to the bounded
//! buffer; a full buffer drops the row and counts it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use callguard_core::ValidationError;
use callguard_core::http::error_chain;
use callguard_core::telemetry::field;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::auth::{Auth, CredentialsError, ServiceAccountKey};
use crate::client::SheetsClient;
use crate::config::{Credential, MinLevel, SheetsConfig};
use crate::row::{FieldVisitor, Fields, Row};
use crate::worker::{Command, Counters, Quiet, Worker, in_worker};

/// The target of this crate's own events, which the layer never sends.
const OWN_TARGET: &str = env!("CARGO_CRATE_NAME");

/// Why the layer could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The config breaks a rule.
    #[error("invalid config: {0}")]
    Config(#[from] ValidationError),
    /// The service-account key cannot be used.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// Not called inside a tokio runtime, where the sending task runs.
    #[error("the sheets logger must be set up inside a tokio runtime")]
    NoRuntime,
}

/// Counts since the layer was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct SheetsStats {
    /// Rows the API accepted.
    pub rows_sent: u64,
    /// Rows never sent: the buffer was full (see `rows_overflowed`), the API
    /// refused their batch for good or retries ran out, the shutdown deadline
    /// passed, or they were logged after shutdown.
    pub rows_dropped: u64,
    /// Of `rows_dropped`, those that found the buffer full or closed.
    pub rows_overflowed: u64,
    /// Append requests the API accepted.
    pub requests_sent: u64,
    /// Append requests that failed (each failed attempt counts, retried or not).
    pub requests_failed: u64,
}

/// A `tracing` layer that sends chosen events as rows to Google Sheets.
///
/// Built with [`SheetsLayer::new`], which also returns the [`SheetsHandle`]
/// that flushes and stops the sending task.
pub struct SheetsLayer {
    rows: mpsc::Sender<Row>,
    min_level: MinLevel,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SheetsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SheetsLayer")
            .field("min_level", &self.min_level)
            .field(
                "buffered",
                &(self.rows.max_capacity() - self.rows.capacity()),
            )
            .finish_non_exhaustive()
    }
}

impl SheetsLayer {
    /// Validates `config`, loads the service-account key if one is
    /// configured, and spawns the sending task on the current tokio runtime.
    pub fn new(config: &SheetsConfig) -> Result<(Self, SheetsHandle), SetupError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SetupError::NoRuntime)?;
        let auth = match config
            .credential()
            .map_err(|e| e.in_section(SheetsConfig::SECTION))?
        {
            Credential::KeyFile(path) => Auth::service_account(ServiceAccountKey::from_file(path)?),
            Credential::Token(token) => Auth::Static(token.clone()),
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| SetupError::Http(error_chain(&e)))?;
        let api_base = config
            .api_base_url()
            .map_err(|e| e.in_section(SheetsConfig::SECTION))?;
        let client = SheetsClient::new(
            http,
            &api_base,
            &config.spreadsheet_id,
            &config.range,
            auth,
            config.request_timeout.get(),
        );
        let (rows_tx, rows_rx) = mpsc::channel(config.buffer_capacity);
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            rows: rows_rx,
            commands: commands_rx,
            client,
            batch_size: config.batch_size,
            flush_interval: config.flush_interval.get(),
            retry: config.retry.clone(),
            counters: Arc::clone(&counters),
            batch: Vec::with_capacity(config.batch_size),
            overflow_reported: 0,
        };
        let task = runtime.spawn(Quiet(Box::pin(worker.run())));
        let layer = Self {
            rows: rows_tx,
            min_level: config.min_level,
            counters: Arc::clone(&counters),
        };
        let handle = SheetsHandle {
            counters,
            commands: commands_tx,
            task,
        };
        Ok((layer, handle))
    }

    /// Whether `event` is one to send: at or above `min_level`, or a breaker
    /// transition, and not logged by this crate or its sending task.
    fn wanted(&self, event: &Event<'_>) -> bool {
        let meta = event.metadata();
        let wanted =
            self.min_level.admits(meta.level()) || meta.fields().field(field::FROM_STATE).is_some();
        wanted && !meta.target().starts_with(OWN_TARGET) && !in_worker()
    }
}

impl<S> Layer<S> for SheetsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut FieldVisitor(&mut fields));
        // Only spans with a column field cost an allocation.
        if fields.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<Fields>() {
            values.record(&mut FieldVisitor(fields));
        } else {
            let mut fields = Fields::default();
            values.record(&mut FieldVisitor(&mut fields));
            if !fields.is_empty() {
                extensions.insert(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !self.wanted(event) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut FieldVisitor(&mut fields));
        if let Some(scope) = ctx.event_scope(event) {
            // Innermost span first: its values win over outer ones.
            for span in scope {
                if let Some(outer) = span.extensions().get::<Fields>() {
                    fields.inherit(outer);
                }
            }
        }
        let row = fields.into_row(*event.metadata().level(), SystemTime::now());
        if self.rows.try_send(row).is_err() {
            // Full, or closed after shutdown. Logging here would re-enter the
            // subscriber on the caller's thread; the task reports the count.
            Counters::add(&self.counters.rows_dropped, 1);
            Counters::add(&self.counters.rows_overflowed, 1);
        }
    }
}

/// Controls the sending task: counters, flush, shutdown.
///
/// Dropping the handle does not stop the task: it keeps sending for as long
/// as the layer lives, and sends what is left when the layer is dropped.
#[derive(Debug)]
pub struct SheetsHandle {
    counters: Arc<Counters>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl SheetsHandle {
    /// The counts so far.
    pub fn stats(&self) -> SheetsStats {
        snapshot(&self.counters)
    }

    /// Sends every row logged before this call now (with retries), without
    /// waiting for the interval; returns once they are sent or dropped.
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Stops taking rows, sends the ones waiting, and stops the task. Rows
    /// not sent within `deadline` (retries included) are dropped and
    /// counted; rows logged afterwards are dropped and counted too. Returns
    /// the final counts.
    pub async fn flush_and_shutdown(self, deadline: Duration) -> SheetsStats {
        let Self {
            counters,
            commands,
            mut task,
        } = self;
        let at = Instant::now() + deadline;
        if commands
            .send(Command::Shutdown { deadline: at })
            .await
            .is_ok()
        {
            // The task stops itself at the deadline; the grace covers a task
            // stuck in a poll, which is then cancelled.
            if tokio::time::timeout_at(at + SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        snapshot(&counters)
    }
}

fn snapshot(c: &Counters) -> SheetsStats {
    SheetsStats {
        rows_sent: c.rows_sent.load(Ordering::Relaxed),
        rows_dropped: c.rows_dropped.load(Ordering::Relaxed),
        rows_overflowed: c.rows_overflowed.load(Ordering::Relaxed),
        requests_sent: c.requests_sent.load(Ordering::Relaxed),
        requests_failed: c.requests_failed.load(Ordering::Relaxed),
    }
}

/// How long past its deadline a stopping task is waited for.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
