//! The SQLite backend: one file in WAL mode, written with group commit.
//! Each operation joins a queue; whichever caller gets the connection next
//! runs everything queued in one `BEGIN IMMEDIATE … COMMIT` on its own task
//! and answers each caller after the commit, so workers that touch the store
//! at the same time share a transaction's fixed cost (locks, WAL frames).
//! A final state may wait (`StoreSettings::settle_wait`) for another caller's
//! transaction to ride in, and completions waiting together run as one
//! statement. With `synchronous = NORMAL` a commit only appends to the WAL
//! (a committed change survives the process being killed; only a power loss
//! may take the last commits), so it is cheaper to run it here than to hand
//! it to another thread. What can block runs on tokio's blocking pool instead: a
//! transaction that finds the file locked by another process waits there,
//! and the WAL is copied back into the database (with its `fsync`) there, by
//! a second connection, every [`CHECKPOINT_EVERY`] transactions.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use tokio::sync::{Mutex, oneshot};

use crate::StoreSettings;
use crate::completions::{self, Completion};
use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    StoreError,
};
use crate::sql::{Dialect, LeasedRow, Statements, leased_in_order, parse_state};

/// How long a transaction waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Transactions between two checkpoints of the WAL into the database file.
const CHECKPOINT_EVERY: u32 = 256;

/// When an operation's transaction starts.
#[derive(Clone, Copy)]
enum Start {
    /// At once (or as soon as the running one has committed).
    Now,
    /// With the next operation that starts one, or after this long.
    WithNext(Duration),
}

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "sqlite",
        message: error.to_string(),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        db(error)
    }
}

/// Whether `error` says another process holds the file's lock.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// An operation waiting for the next transaction: it runs, keeps its
/// result, and returns how to answer its caller once the transaction ended.
type Job = Box<dyn FnOnce(&mut Connection, &Statements) -> Answer + Send>;

/// Answers a caller: with its operation's result, or — given why — with the
/// failure of the transaction that held it.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Completions waiting for the job that runs them: while there are any, one
/// such job is queued.
type Completions = Arc<parking_lot::Mutex<Vec<Completion>>>;

/// The job's hold on the completions waiting: it takes them when it runs,
/// and — dropped unrun, with the transaction that held it — answers them with
/// the error, so that none waits for good and the next completion queues a
/// job again.
struct CompletionBatch(Option<Completions>);

impl CompletionBatch {
    /// The completions waiting now (none after the first call).
    fn take(&mut self) -> Vec<Completion> {
        self.0.take().map_or_else(Vec::new, |completions| {
            std::mem::take(&mut *completions.lock())
        })
    }
}

impl Drop for CompletionBatch {
    fn drop(&mut self) {
        let batch = self.take();
        if !batch.is_empty() {
            completions::answer(batch, Err(did_not_run()));
        }
    }
}

/// Completes `batch` with one statement — the single-row one for a
/// completion alone; the ids it completed.
fn complete_batch(
    connection: &mut Connection,
    sql: &Statements,
    batch: &[Completion],
) -> Result<HashSet<String>, StoreError> {
    if let [one] = batch {
        let completed = connection
            .prepare_cached(&sql.complete)?
            .query_row(
                params![one.contact_id, one.owner, one.attempt, one.at],
                |_| Ok(()),
            )
            .optional()?;
        return Ok(completed
            .map(|()| one.contact_id.clone())
            .into_iter()
            .collect());
    }
    let rows: Vec<(&str, &str, u32, Millis)> = batch
        .iter()
        .map(|c| (c.contact_id.as_str(), c.owner.as_str(), c.attempt, c.at))
        .collect();
    let rows = serde_json::to_string(&rows).map_err(db)?;
    let mut statement = connection.prepare_cached(&sql.complete_many)?;
    let done = statement
        .query_map([rows], |row| row.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(done)
}

/// The store's file: the connection transactions run on, the operations
/// waiting for it, and a second connection that checkpoints the WAL.
pub(crate) struct SqliteBackend {
    connection: Arc<Mutex<Connection>>,
    waiting: parking_lot::Mutex<Vec<Job>>,
    completions: Completions,
    /// When a final state's transaction starts ([`StoreSettings::settle_wait`]).
    settle: Start,
    sql: Arc<Statements>,
    checkpoint: Arc<Checkpoint>,
}

/// Checkpoints the WAL on the blocking pool, one at a time.
struct Checkpoint {
    connection: parking_lot::Mutex<Connection>,
    running: AtomicBool,
    transactions: AtomicU32,
}

impl Checkpoint {
    /// Counts a transaction, starting a checkpoint every [`CHECKPOINT_EVERY`].
    fn count(self: &Arc<Self>) {
        let done = self.transactions.fetch_add(1, Ordering::Relaxed) + 1;
        if done % CHECKPOINT_EVERY != 0 || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let connection = this.connection.lock();
            // PASSIVE never blocks the writer; what it cannot copy now is
            // copied next time.
            if let Err(e) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!("SQLite store: WAL checkpoint failed (will try again): {e}");
            }
            this.running.store(false, Ordering::Release);
        });
    }
}

/// The error of an operation dropped unrun.
fn did_not_run() -> StoreError {
    db(format!(
        "the operation did not run: the file stayed locked by another process for \
         {BUSY_TIMEOUT:?}, or its transaction could not begin"
    ))
}

/// Runs `jobs` in one transaction and answers them; gives them back
/// untouched if the file is locked by another process.
fn commit(connection: &mut Connection, sql: &Statements, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        if is_busy(&error) {
            return Err(jobs);
        }
        // The jobs are dropped unrun: their callers get an error.
        tracing::error!("SQLite store: cannot begin a transaction: {error}");
        return Ok(());
    }
    let mut answers = Vec::with_capacity(jobs.len());
    let mut rolled_back = false;
    // Jobs left when the transaction is rolled back are dropped unrun:
    // their callers get an error.
    for job in jobs {
        answers.push(job(connection, sql));
        // Some errors (a full disk, say) roll the whole transaction back.
        rolled_back = connection.is_autocommit();
        if rolled_back {
            break;
        }
    }
    let failed = if rolled_back {
        Some("the transaction was rolled back".to_owned())
    } else {
        connection.execute_batch("COMMIT").err().map(|e| {
            let _ = connection.execute_batch("ROLLBACK");
            format!("commit failed: {e}")
        })
    };
    for answer in answers {
        answer(failed.as_deref());
    }
    Ok(())
}

impl SqliteBackend {
    pub(crate) async fn open(path: &Path, settings: &StoreSettings) -> Result<Self, StoreError> {
        let sql = Arc::new(Statements::new(
            &settings.table,
            Dialect::Sqlite,
            settings.lease_batch_size(),
        )?);
        let path = path.to_owned();
        let schema = sql.schema.clone();
        let (connection, checkpointer) =
            tokio::task::spawn_blocking(move || open_file(&path, &schema))
                .await
                .map_err(db)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            waiting: parking_lot::Mutex::default(),
            completions: Arc::default(),
            settle: if settings.settle_wait.is_zero() {
                Start::Now
            } else {
                Start::WithNext(settings.settle_wait)
            },
            sql,
            checkpoint: Arc::new(Checkpoint {
                connection: parking_lot::Mutex::new(checkpointer),
                running: AtomicBool::new(false),
                transactions: AtomicU32::new(0),
            }),
        })
    }

    /// Runs `work` in the next transaction — this caller's, or one another
    /// caller runs first — and answers once it has committed.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Statements) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_from(Start::Now, work).await
    }

    /// Runs `work` in a transaction started as `start` says; answers once
    /// it has committed.
    async fn run_from<T: Send + 'static>(
        &self,
        start: Start,
        work: impl FnOnce(&mut Connection, &Statements) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection, sql| {
            let result = work(connection, sql);
            Box::new(move |failed: Option<&str>| {
                let _ = reply.send(match failed {
                    Some(why) if result.is_ok() => Err(db(why)),
                    _ => result,
                });
            })
        });
        self.waiting.lock().push(job);
        self.answer(start, answer).await
    }

    /// Waits for the answer of an operation queued as `start` says, running
    /// the transaction that holds it if nobody else does.
    async fn answer<T>(
        &self,
        start: Start,
        mut answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if let Start::WithNext(wait) = start {
            tokio::select! {
                answered = &mut answer => return answered.map_err(|_| did_not_run())?,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.commit_waiting().await?;
        answer.await.map_err(|_| did_not_run())?
    }

    /// Takes the connection and commits every operation waiting for it (none
    /// if an earlier caller already took them all).
    async fn commit_waiting(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone().lock_owned().await;
        let jobs = std::mem::take(&mut *self.waiting.lock());
        if jobs.is_empty() {
            return Ok(());
        }
        if let Err(jobs) = commit(&mut connection, &self.sql, jobs) {
            let sql = self.sql.clone();
            tokio::task::spawn_blocking(move || {
                let _ = connection.busy_timeout(BUSY_TIMEOUT);
                // Still locked after the wait: the jobs are dropped unrun,
                // and their callers get an error.
                let _ = commit(&mut connection, &sql, jobs);
                let _ = connection.busy_timeout(Duration::ZERO);
            })
            .await
            .map_err(db)?;
        }
        self.checkpoint.count();
        Ok(())
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let contacts = contacts.to_vec();
        self.run(move |connection, sql| {
            // All or nothing, within the transaction it shares.
            let savepoint = connection.savepoint()?;
            let mut report = ImportReport::default();
            {
                let mut insert = savepoint.prepare_cached(&sql.insert_one)?;
                for contact in &contacts {
                    match insert.execute(params![contact.id, contact.data, now])? {
                        0 => report.existing += 1,
                        _ => report.added += 1,
                    }
                }
            }
            savepoint.commit()?;
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
            let rows = statement
                .query_map(params![owner, until, now], |row| {
                    Ok(LeasedRow {
                        seq: row.get(5)?,
                        contact_id: row.get(0)?,
                        data: row.get(1)?,
                        attempt: row.get(2)?,
                        deferrals: row.get(3)?,
                        progress: row.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(leased_in_order(rows))
        })
        .await
    }

    /// Runs the statement `pick` names on a held row with `extra` parameters
    /// after the lease's three; the row's new state, or `LeaseLost` if it is
    /// not held.
    async fn held(
        &self,
        start: Start,
        owner: &str,
        lease: &Lease,
        pick: fn(&Statements) -> &str,
        extra: Vec<Value>,
    ) -> Result<ContactState, StoreError> {
        let contact_id = lease.contact_id.clone();
        let mut values: Vec<Value> = vec![
            contact_id.clone().into(),
            owner.to_owned().into(),
            lease.attempt.into(),
        ];
        values.extend(extra);
        self.run_from(start, move |connection, sql| {
            let state = connection
                .prepare_cached(pick(sql))?
                .query_row(rusqlite::params_from_iter(&values), |row| {
                    row.get::<_, String>(0)
                })
                .optional()?;
            match state {
                Some(state) => parse_state(&contact_id, &state),
                None => Err(StoreError::LeaseLost { contact_id }),
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
        self.held(
            Start::Now,
            owner,
            lease,
            |sql| &sql.renew,
            vec![until.into()],
        )
        .await
        .map(drop)
    }

    pub(crate) async fn save_progress(
        &self,
        owner: &str,
        lease: &Lease,
        progress: &str,
    ) -> Result<(), StoreError> {
        self.held(
            Start::Now,
            owner,
            lease,
            |sql| &sql.save_progress,
            vec![progress.to_owned().into()],
        )
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
        let at = Value::from(now);
        let (pick, extra): (fn(&Statements) -> &str, _) = match outcome {
            Outcome::Completed => return self.complete(owner, lease, now).await,
            Outcome::Released => (|sql| &sql.release, vec![at]),
            Outcome::Failed { service, reason } => (
                |sql| &sql.fail,
                vec![
                    (*service).to_owned().into(),
                    (*reason).to_owned().into(),
                    at,
                ],
            ),
            Outcome::Deferred {
                service,
                reason,
                not_before,
                max_deferrals,
                counted,
                progress,
                ..
            } => (
                |sql| &sql.defer,
                vec![
                    (*max_deferrals).into(),
                    (*not_before).into(),
                    (*service).to_owned().into(),
                    (*reason).to_owned().into(),
                    (*progress).to_owned().into(),
                    (*counted).into(),
                    at,
                ],
            ),
        };
        self.held(self.settle, owner, lease, pick, extra).await
    }

    /// Completes the held contact with every other completion waiting: the
    /// first to wait queues one job that runs a single statement for all of
    /// them, in the transaction it rides in.
    async fn complete(
        &self,
        owner: &str,
        lease: &Lease,
        now: Millis,
    ) -> Result<ContactState, StoreError> {
        let (completion, answer) = Completion::new(owner, lease, now);
        let first = {
            let mut waiting = self.completions.lock();
            waiting.push(completion);
            waiting.len() == 1
        };
        if first {
            let mut batch = CompletionBatch(Some(self.completions.clone()));
            self.waiting.lock().push(Box::new(move |connection, sql| {
                let batch = batch.take();
                let done = complete_batch(connection, sql, &batch);
                Box::new(move |failed: Option<&str>| {
                    let done = match failed {
                        Some(why) if done.is_ok() => Err(db(why)),
                        _ => done,
                    };
                    completions::answer(batch, done);
                })
            }));
        }
        self.answer(self.settle, answer).await
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
                .map_err(StoreError::from)
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
        _wait: Duration,
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

    pub(crate) async fn next_due(&self, _now: Millis) -> Result<Option<Millis>, StoreError> {
        self.run(|connection, sql| {
            connection
                .prepare_cached(&sql.next_due)?
                .query_row([], |row| row.get::<_, Option<Millis>>(0))
                .map_err(StoreError::from)
        })
        .await
    }

    /// The contacts in `state`, or every contact (`None`), in one statement.
    pub(crate) async fn list(
        &self,
        state: Option<ContactState>,
    ) -> Result<Vec<ContactStatus>, StoreError> {
        self.run(move |connection, sql| {
            let (text, params) = match state {
                Some(state) => (&sql.list, vec![state.as_str()]),
                None => (&sql.list_all, Vec::new()),
            };
            let mut statement = connection.prepare_cached(text)?;
            let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn completions_whose_job_is_dropped_unrun_are_answered_and_not_stuck() {
        let completions = Completions::default();
        let lease = Lease {
            contact_id: "a".into(),
            attempt: 1,
        };
        let (completion, answered) = Completion::new("agent-1", &lease, 0);
        completions.lock().push(completion);
        // The transaction holding the job could not begin: the job is dropped.
        drop(CompletionBatch(Some(completions.clone())));
        let error = tokio::time::timeout(Duration::from_secs(1), answered)
            .await
            .expect("answered, not left waiting")
            .expect("an answer, not a dropped sender")
            .expect_err("not completed");
        assert!(error.to_string().contains("did not run"), "{error}");
        assert!(
            completions.lock().is_empty(),
            "the next completion queues a job again"
        );
    }
}
