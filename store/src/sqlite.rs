//! The SQLite backend: one file in WAL mode. Operations run on the calling
//! task, one at a time under an async lock: with `synchronous = NORMAL` a
//! commit only appends to the WAL in the page cache (a committed change
//! survives the process being killed; only a power loss may take the last
//! commits), which is cheaper than handing each operation to another thread.
//! What can block runs on tokio's blocking pool instead: an operation that
//! finds the file locked by another process waits there, and the WAL is
//! copied back into the database (with its `fsync`) there, by a second
//! connection, every [`CHECKPOINT_EVERY`] operations.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::Mutex;

use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    Progress, StoreError,
};
use crate::sql::{Dialect, Statements, parse_state};

/// How long an operation waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Operations between two checkpoints of the WAL into the database file.
const CHECKPOINT_EVERY: u32 = 512;

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "sqlite",
        message: error.to_string(),
    }
}

/// Why an operation stopped: the file was locked by another process (so it
/// is run again where it may wait), or an error to report.
enum Fault {
    Busy,
    Store(StoreError),
}

impl From<rusqlite::Error> for Fault {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Busy,
            _ => Self::Store(db(error)),
        }
    }
}

impl From<StoreError> for Fault {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// An operation on the connection; it may run twice (after a busy first try).
trait Work<T>: Fn(&mut Connection, &Statements) -> Result<T, Fault> + Send + 'static {}

impl<T, F> Work<T> for F where
    F: Fn(&mut Connection, &Statements) -> Result<T, Fault> + Send + 'static
{
}

/// The store's file: the connection operations run on, and a second one
/// that checkpoints the WAL.
pub(crate) struct SqliteBackend {
    connection: Arc<Mutex<Connection>>,
    sql: Arc<Statements>,
    checkpoint: Arc<Checkpoint>,
}

/// Checkpoints the WAL on the blocking pool, one at a time.
struct Checkpoint {
    connection: std::sync::Mutex<Connection>,
    running: AtomicBool,
    operations: AtomicU32,
}

impl Checkpoint {
    /// Counts an operation, starting a checkpoint every [`CHECKPOINT_EVERY`].
    fn count(self: &Arc<Self>) {
        let done = self.operations.fetch_add(1, Ordering::Relaxed) + 1;
        if done % CHECKPOINT_EVERY != 0 || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = this
                .connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // PASSIVE never blocks the writer; what it cannot copy now is
            // copied next time.
            if let Err(e) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("SQLite store: WAL checkpoint failed (will try again): {e}");
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

impl SqliteBackend {
    pub(crate) async fn open(
        path: &Path,
        table: &str,
        lease_batch: usize,
    ) -> Result<Self, StoreError> {
        let sql = Arc::new(Statements::new(table, Dialect::Sqlite, lease_batch)?);
        let path = path.to_owned();
        let schema = sql.schema.clone();
        let (connection, checkpointer) =
            tokio::task::spawn_blocking(move || open_file(&path, &schema))
                .await
                .map_err(db)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            sql,
            checkpoint: Arc::new(Checkpoint {
                connection: std::sync::Mutex::new(checkpointer),
                running: AtomicBool::new(false),
                operations: AtomicU32::new(0),
            }),
        })
    }

    /// Runs `work` on the connection: here, or on the blocking pool if the
    /// file is locked by another process.
    async fn run<T: Send + 'static>(&self, work: impl Work<T>) -> Result<T, StoreError> {
        let mut connection = self.connection.clone().lock_owned().await;
        let result = match work(&mut connection, &self.sql) {
            Ok(value) => Ok(value),
            Err(Fault::Store(error)) => Err(error),
            Err(Fault::Busy) => {
                let sql = self.sql.clone();
                tokio::task::spawn_blocking(move || {
                    connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
                    let result = work(&mut connection, &sql);
                    connection.busy_timeout(Duration::ZERO).map_err(db)?;
                    match result {
                        Ok(value) => Ok(value),
                        Err(Fault::Store(error)) => Err(error),
                        Err(Fault::Busy) => Err(db(format!(
                            "the file stayed locked by another process for {BUSY_TIMEOUT:?}"
                        ))),
                    }
                })
                .await
                .map_err(db)?
            }
        };
        self.checkpoint.count();
        result
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let contacts = contacts.to_vec();
        self.run(move |connection, sql| {
            let transaction = connection.transaction()?;
            let mut report = ImportReport::default();
            {
                let mut insert = transaction.prepare_cached(&sql.insert_one)?;
                for contact in &contacts {
                    match insert.execute(params![contact.id, contact.data, now])? {
                        0 => report.existing += 1,
                        _ => report.added += 1,
                    }
                }
            }
            transaction.commit()?;
            Ok(report)
        })
        .await
    }

    pub(crate) async fn lease(
        &self,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Vec<Leased>, StoreError> {
        let owner = owner.to_owned();
        self.run(move |connection, sql| {
            let mut statement = connection.prepare_cached(&sql.lease)?;
            let rows = statement.query_map(params![owner, now, until], |row| {
                Ok((
                    row.get::<_, i64>(5)?,
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, u32>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?;
            let mut leased = Vec::new();
            for row in rows {
                let (seq, contact_id, data, attempt, deferrals, progress) = row?;
                let progress = Progress::from_json(&contact_id, &progress)?;
                leased.push((
                    seq,
                    Leased {
                        lease: Lease {
                            contact_id,
                            attempt,
                        },
                        data,
                        deferrals,
                        progress,
                    },
                ));
            }
            leased.sort_unstable_by_key(|(seq, _)| *seq);
            Ok(leased.into_iter().map(|(_, leased)| leased).collect())
        })
        .await
    }

    /// Runs `statement` on a held row with `extra` parameters after the
    /// lease's three; the row's new state, or `LeaseLost` if it is not held.
    async fn held(
        &self,
        owner: &str,
        lease: &Lease,
        statement: &str,
        extra: Vec<Value>,
    ) -> Result<ContactState, StoreError> {
        let contact_id = lease.contact_id.clone();
        let mut values: Vec<Value> = vec![
            contact_id.clone().into(),
            owner.to_owned().into(),
            lease.attempt.into(),
        ];
        values.extend(extra);
        let statement = statement.to_owned();
        self.run(move |connection, _| {
            let state = connection
                .prepare_cached(&statement)?
                .query_row(rusqlite::params_from_iter(&values), |row| {
                    row.get::<_, String>(0)
                })
                .optional()?;
            match state {
                Some(state) => Ok(parse_state(&contact_id, &state)?),
                None => Err(StoreError::LeaseLost {
                    contact_id: contact_id.clone(),
                }
                .into()),
            }
        })
        .await
    }

    pub(crate) async fn renew(
        &self,
        owner: &str,
        lease: &Lease,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.held(owner, lease, &self.sql.renew, vec![until.into()])
            .await
            .map(drop)
    }

    pub(crate) async fn save_progress(
        &self,
        owner: &str,
        lease: &Lease,
        progress: &Progress,
    ) -> Result<(), StoreError> {
        let progress = progress.to_json();
        self.held(owner, lease, &self.sql.save_progress, vec![progress.into()])
            .await
            .map(drop)
    }

    pub(crate) async fn settle(
        &self,
        owner: &str,
        lease: &Lease,
        outcome: &Outcome<'_>,
        now: Millis,
    ) -> Result<ContactState, StoreError> {
        let mut extra: Vec<Value> = vec![now.into()];
        match outcome {
            Outcome::Completed | Outcome::Released => {}
            Outcome::Failed { service, reason } => {
                extra.extend([(*service).to_owned().into(), (*reason).to_owned().into()]);
            }
            Outcome::Deferred {
                service,
                reason,
                not_before,
                max_deferrals,
                progress,
            } => extra.extend([
                (*max_deferrals).into(),
                (*not_before).into(),
                (*service).to_owned().into(),
                (*reason).to_owned().into(),
                progress.to_json().into(),
            ]),
        }
        self.held(owner, lease, self.sql.settle(outcome), extra)
            .await
    }

    /// Runs an update taking a text and a time; returns the rows changed.
    async fn update(
        &self,
        pick: fn(&Statements) -> &str,
        text: String,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.run(move |connection, sql| {
            connection
                .prepare_cached(pick(sql))?
                .execute(params![text, now])
                .map_err(Fault::from)
        })
        .await
    }

    pub(crate) async fn release_owner(
        &self,
        owner: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|sql| &sql.release_owner, owner.to_owned(), now)
            .await
    }

    pub(crate) async fn wake_service(
        &self,
        service: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|sql| &sql.wake_service, service.to_owned(), now)
            .await
    }

    pub(crate) async fn postpone_service(
        &self,
        service: &str,
        until: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|sql| &sql.postpone_service, service.to_owned(), until)
            .await
    }

    pub(crate) async fn requeue(
        &self,
        state: ContactState,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|sql| &sql.requeue, state.as_str().to_owned(), now)
            .await
    }

    pub(crate) async fn counts(&self) -> Result<Counts, StoreError> {
        self.run(|connection, sql| {
            let mut statement = connection.prepare_cached(&sql.counts)?;
            let rows = statement.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, usize>(1)?))
            })?;
            let mut counts = Counts::default();
            for row in rows {
                let (state, n) = row?;
                counts.add(parse_state("", &state)?, n);
            }
            Ok(counts)
        })
        .await
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.run(|connection, sql| {
            connection
                .prepare_cached(&sql.next_due)?
                .query_row([], |row| row.get::<_, Option<Millis>>(0))
                .map_err(Fault::from)
        })
        .await
    }

    pub(crate) async fn list(&self, state: ContactState) -> Result<Vec<ContactStatus>, StoreError> {
        self.run(move |connection, sql| {
            let mut statement = connection.prepare_cached(&sql.list)?;
            let rows = statement.query_map([state.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, u32>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })?;
            rows.map(|row| {
                let (id, state, attempts, deferrals, service, last_error, lease_owner) = row?;
                Ok(ContactStatus {
                    state: parse_state(&id, &state)?,
                    id,
                    attempts,
                    deferrals,
                    service,
                    last_error,
                    lease_owner,
                })
            })
            .collect()
        })
        .await
    }
}

/// Opens (creating if needed) the file and its table: the connection for
/// operations (no busy wait, no automatic checkpoints) and the one for
/// checkpoints.
fn open_file(path: &Path, schema: &str) -> Result<(Connection, Connection), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| db(format!("cannot create {}: {e}", dir.display())))?;
    }
    let open = || {
        let connection = Connection::open(path)
            .map_err(|e| db(format!("cannot open {}: {e}", path.display())))?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(db)?;
        Ok::<_, StoreError>(connection)
    };
    let connection = open()?;
    connection.execute_batch(schema).map_err(db)?;
    connection
        .execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .map_err(db)?;
    connection.busy_timeout(Duration::ZERO).map_err(db)?;
    Ok((connection, open()?))
}
