//! The PostgreSQL backend: one queue shared by several agent processes.
//!
//! A contact is leased by one statement that picks the next due row with
//! `FOR UPDATE SKIP LOCKED`, so concurrent agents never take the same row and
//! never wait on each other; the lease has an expiry the holder renews, and a
//! row whose lease expired (its agent died) is due again. Lease times come
//! from the database's clock (`now()`), so agents whose clocks disagree still
//! agree on when a lease ends. Every statement runs in autocommit, each one a
//! transaction of its own, prepared once per connection.
//! Completions are the exception, being the most frequent change: those
//! waiting together go as one statement, so the server's per-statement cost
//! is shared the way SQLite's group commit shares a transaction. With a
//! settle wait (`StoreSettings::settle_wait`) a completion waits for others,
//! and a lease sends the waiting ones beside itself, costing it no extra
//! wait; without one it goes at once. A completion alone runs the single-row
//! statement. A fresh import is followed by `ANALYZE`, so the planner knows
//! the table's size from the first lease (unanalysed, it takes a new table
//! for a tiny one and scans it whole).
//!
//! Connections come from a small pool (deadpool-postgres rather than bb8:
//! it checks a connection as it hands it out instead of from a reaper task,
//! caches prepared statements per connection, and bounds how long making
//! one may take). The store keeps each connection it takes and shares it:
//! statements are spread over them in turn, and those on one connection are
//! pipelined, as tokio-postgres allows — holding a connection per statement
//! cost a quarter of the pipeline's contacts/s in round trips and server
//! wake-ups. A connection that broke is dropped and the statement runs
//! again on a fresh one, for as long as its kind allows ([`reconnect`]); a
//! change under a lease whose answer was lost is recognised on the retry by
//! the state that lease left (`Statements::settled_by`).

mod connect;
mod reconnect;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::StoreSettings;
use crate::completions::{self, Completion};
use crate::health::{Reachability, StoreHealth};
use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    StoreError,
};
use crate::sql::{Dialect, LeasedRow, Statements, leased_in_order, parse_state};

pub(crate) use connect::ConnectOptions;
use connect::with_causes;
use reconnect::{Backoff, Persistence, connection_lost, pool_unavailable};

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "postgres",
        message: error.to_string(),
    }
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        backend: "postgres",
        message: error.to_string(),
    }
}

/// The error of a completion whose batch never ran.
fn not_sent() -> StoreError {
    db("the completion was not sent")
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn count(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

fn micros(wait: Duration) -> i64 {
    i64::try_from(wait.as_micros()).unwrap_or(i64::MAX)
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// What a statement is run for: its rows, or how many rows it changed.
trait Answer: Sized {
    /// One try of the prepared `statement` on `client`.
    async fn of(
        client: &Object,
        statement: &Statement,
        params: &Params<'_>,
    ) -> Result<Self, tokio_postgres::Error>;
}

impl Answer for Vec<Row> {
    async fn of(
        client: &Object,
        statement: &Statement,
        params: &Params<'_>,
    ) -> Result<Self, tokio_postgres::Error> {
        client.query(statement, params).await
    }
}

/// The rows changed.
impl Answer for u64 {
    async fn of(
        client: &Object,
        statement: &Statement,
        params: &Params<'_>,
    ) -> Result<Self, tokio_postgres::Error> {
        client.execute(statement, params).await
    }
}

/// One try of `text` on `client`.
async fn attempt<A: Answer>(
    client: &Object,
    text: &str,
    params: &Params<'_>,
) -> Result<A, tokio_postgres::Error> {
    let statement = client.prepare_cached(text).await?;
    A::of(client, &statement, params).await
}

/// A pool of connections to the shared queue.
pub(crate) struct PostgresBackend {
    /// How long a completion waits for others ([`StoreSettings::settle_wait`]).
    settle_wait: Duration,
    /// The lease's length in ms, which the database adds to its clock.
    lease_ms: i64,
    /// How long a change under a lease keeps trying: the lease's length,
    /// after which the contact is due again anyway.
    persist: Persistence,
    sql: Statements,
    /// Refreshes the planner's statistics after an import.
    analyze: String,
    pool: Pool,
    /// The connections taken from the pool, shared (`pool_size` of them).
    shared: Vec<parking_lot::Mutex<Option<Arc<Object>>>>,
    /// The next of `shared` to use.
    turn: AtomicUsize,
    completions: parking_lot::Mutex<Vec<Completion>>,
    reachability: Reachability,
}

impl PostgresBackend {
    /// Connects (with TLS as the URL's `sslmode` says) and creates the table
    /// if it does not exist yet. A connection that cannot be made stops here
    /// with one line naming the `sslmode` and the cause.
    pub(crate) async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let table = &settings.table;
        let sql = Statements::new(table, Dialect::Postgres, settings.lease_batch_size())?;
        let options = ConnectOptions::parse(url)?;
        let mut config = options.config.clone();
        config.connect_timeout(settings.connect_timeout);
        let manager = Manager::from_config(
            config,
            options.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let size = settings.pool_size.max(1);
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| options.refused(e))?;
        let client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => options.refused(with_causes(&e)),
            deadpool_postgres::PoolError::Timeout(_) => options.refused(format!(
                "no connection within {:?} (queue.connect_timeout)",
                settings.connect_timeout
            )),
            e => options.refused(with_causes(&e)),
        })?;
        // Agents starting together would race to create the table: one at a time.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('callguard-store:{table}')); {} COMMIT;",
                sql.schema
            ))
            .await
            .map_err(db)?;
        let shared = std::iter::once(Some(Arc::new(client)))
            .chain(std::iter::repeat_with(|| None))
            .take(size)
            .map(parking_lot::Mutex::new)
            .collect();
        let lease_ms = i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            settle_wait: settings.settle_wait,
            lease_ms,
            persist: Persistence::For(settings.lease),
            analyze: format!("ANALYZE {table}"),
            sql,
            pool,
            shared,
            turn: AtomicUsize::new(0),
            completions: parking_lot::Mutex::default(),
            reachability: Reachability::default(),
        })
    }

    /// What the statements found of the database's reachability.
    pub(crate) fn health(&self) -> StoreHealth {
        self.reachability.snapshot()
    }

    /// The next shared connection, taken from the pool if its slot is empty
    /// or holds one that closed.
    async fn connection(&self) -> Result<Arc<Object>, deadpool_postgres::PoolError> {
        let slot = &self.shared[self.turn.fetch_add(1, Ordering::Relaxed) % self.shared.len()];
        {
            let mut held = slot.lock();
            match held.as_ref() {
                Some(client) if !client.is_closed() => return Ok(client.clone()),
                // Back to the pool (which discards it) once no statement holds it.
                Some(_) => *held = None,
                None => {}
            }
        }
        let fresh = Arc::new(self.pool.get().await?);
        // Another statement may have filled the slot meanwhile: this one
        // goes back to the pool after use.
        slot.lock().get_or_insert_with(|| fresh.clone());
        Ok(fresh)
    }

    /// Forgets `broken`, so no statement is sent on it again.
    fn discard(&self, broken: &Arc<Object>) {
        for slot in &self.shared {
            let mut held = slot.lock();
            if held.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
                *held = None;
            }
        }
    }

    /// Runs `text` on a shared connection. A connection that broke is
    /// forgotten and the statement runs again on a fresh one, as
    /// `persistence` allows. With the answer: whether an earlier try may
    /// have landed (its answer lost with the connection).
    async fn run<A: Answer>(
        &self,
        persistence: Persistence,
        text: &str,
        params: &Params<'_>,
    ) -> Result<(A, bool), StoreError> {
        let mut backoff = Backoff::new(persistence);
        let mut may_have_landed = false;
        loop {
            let error = match self.connection().await {
                Ok(client) => match attempt(&client, text, params).await {
                    Ok(answer) => {
                        self.reachability.answered();
                        return Ok((answer, may_have_landed));
                    }
                    Err(e) if connection_lost(&e) => {
                        self.discard(&client);
                        may_have_landed = true;
                        unavailable(e)
                    }
                    Err(e) => {
                        self.reachability.failed(false);
                        return Err(db(e));
                    }
                },
                Err(e) if pool_unavailable(&e) => unavailable(e),
                Err(e) => {
                    self.reachability.failed(false);
                    return Err(db(e));
                }
            };
            self.reachability.failed(true);
            if !backoff.wait().await {
                return Err(error);
            }
        }
    }

    /// The rows of `text` with `params`.
    async fn query(
        &self,
        persistence: Persistence,
        text: &str,
        params: &Params<'_>,
    ) -> Result<(Vec<Row>, bool), StoreError> {
        self.run(persistence, text, params).await
    }

    /// The rows `text` changed with `params` (one try more on a fresh
    /// connection: these callers report a failure and carry on).
    async fn execute(&self, text: &str, params: &Params<'_>) -> Result<usize, StoreError> {
        let (changed, _) = self.run::<u64>(Persistence::Once, text, params).await?;
        Ok(count(changed))
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        _now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        // Bounded batches keep each statement's parameters modest.
        for batch in contacts.chunks(5000) {
            let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
            let data: Vec<&str> = batch.iter().map(|c| c.data.as_str()).collect();
            let added = self.execute(&self.sql.insert_many, &[&ids, &data]).await?;
            report.added += added;
            report.existing += batch.len() - added;
        }
        // The contacts are in either way; without fresh statistics the
        // leases are only slower.
        if report.added > 0 {
            if let Err(e) = self.execute(&self.analyze, &[]).await {
                tracing::warn!("PostgreSQL call store: ANALYZE after the import failed: {e}");
            }
        }
        Ok(report)
    }

    pub(crate) async fn lease(
        &self,
        owner: &str,
        _now: Millis,
        _until: Millis,
    ) -> Result<Vec<Leased>, StoreError> {
        // The completions waiting go at the same time: they cost the lease
        // no extra wait.
        let params: [&(dyn ToSql + Sync); 2] = [&owner, &self.lease_ms];
        let ((), rows) = tokio::join!(
            self.send_waiting_completions(),
            self.query(Persistence::Once, &self.sql.lease, &params)
        );
        let rows = rows?
            .0
            .iter()
            .map(|row| {
                let attempt: i32 = row.try_get(2).map_err(db)?;
                let deferrals: i32 = row.try_get(3).map_err(db)?;
                Ok(LeasedRow {
                    seq: row.try_get(5).map_err(db)?,
                    contact_id: row.try_get(0).map_err(db)?,
                    data: row.try_get(1).map_err(db)?,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    deferrals: u32::try_from(deferrals).unwrap_or(0),
                    progress: row.try_get(4).map_err(db)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(leased_in_order(rows))
    }

    /// Runs `statement` on a held row with `extra` parameters after the
    /// lease's three, trying until it lands; the row's new state, or
    /// `LeaseLost` if it is not held. If the row is not held on a retry
    /// after a lost answer, the state the lease left it in tells whether an
    /// earlier try landed: a state in `landed` says it did.
    async fn held(
        &self,
        owner: &str,
        lease: &Lease,
        statement: &str,
        extra: &Params<'_>,
        landed: &[ContactState],
    ) -> Result<ContactState, StoreError> {
        let attempt = int(lease.attempt);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&lease.contact_id, &owner, &attempt];
        values.extend_from_slice(extra);
        let (rows, may_have_landed) = self.query(self.persist, statement, &values).await?;
        match rows.first() {
            Some(row) => parse_state(&lease.contact_id, row.try_get(0).map_err(db)?),
            None if may_have_landed => match self.settled_by(lease).await? {
                Some(state) if landed.contains(&state) => Ok(state),
                _ => Err(lease_lost(lease)),
            },
            None => Err(lease_lost(lease)),
        }
    }

    /// The state `lease` left its contact in, if no later lease took it.
    async fn settled_by(&self, lease: &Lease) -> Result<Option<ContactState>, StoreError> {
        let attempt = int(lease.attempt);
        let (rows, _) = self
            .query(
                self.persist,
                &self.sql.settled_by,
                &[&lease.contact_id, &attempt],
            )
            .await?;
        rows.first()
            .map(|row| parse_state(&lease.contact_id, row.try_get(0).map_err(db)?))
            .transpose()
    }

    pub(crate) async fn renew(
        &self,
        owner: &str,
        lease: &Lease,
        _until: Millis,
    ) -> Result<(), StoreError> {
        self.held(owner, lease, &self.sql.renew, &[&self.lease_ms], &[])
            .await
            .map(drop)
    }

    pub(crate) async fn save_progress(
        &self,
        owner: &str,
        lease: &Lease,
        progress: &str,
    ) -> Result<(), StoreError> {
        self.held(owner, lease, &self.sql.save_progress, &[&progress], &[])
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
        let sql = &self.sql;
        match outcome {
            Outcome::Completed => self.complete(owner, lease, now).await,
            Outcome::Released => {
                self.held(owner, lease, &sql.release, &[], &[ContactState::Pending])
                    .await
            }
            Outcome::Failed { service, reason } => {
                self.held(
                    owner,
                    lease,
                    &sql.fail,
                    &[service, reason],
                    &[ContactState::Failed],
                )
                .await
            }
            Outcome::Deferred {
                service,
                reason,
                wait,
                max_deferrals,
                counted,
                progress,
                ..
            } => {
                let max = int(*max_deferrals);
                let counted = int(*counted);
                let wait = micros(*wait);
                self.held(
                    owner,
                    lease,
                    &sql.defer,
                    &[&max, &wait, service, reason, &progress, &counted],
                    &[ContactState::Deferred, ContactState::Expired],
                )
                .await
            }
        }
    }

    /// Completes the held contact in a batch with every completion waiting:
    /// at once, or — given a settle wait — in the batch the next lease sends
    /// beside itself, or else the one this caller sends after that wait.
    async fn complete(
        &self,
        owner: &str,
        lease: &Lease,
        now: Millis,
    ) -> Result<ContactState, StoreError> {
        let (completion, mut answered) = Completion::new(owner, lease, now);
        self.completions.lock().push(completion);
        if !self.settle_wait.is_zero() {
            tokio::select! {
                result = &mut answered => return result.map_err(|_| not_sent())?,
                () = tokio::time::sleep(self.settle_wait) => {}
            }
        }
        self.send_waiting_completions().await;
        answered.await.map_err(|_| not_sent())?
    }

    /// Sends the completions waiting now, if any, as one batch.
    async fn send_waiting_completions(&self) {
        let batch = std::mem::take(&mut *self.completions.lock());
        if !batch.is_empty() {
            let done = self.complete_batch(&batch).await;
            completions::answer(batch, done);
        }
    }

    /// The ids `batch` completed, in one statement — the single-row one for
    /// a completion alone, cheaper than the batch's join — trying until it
    /// lands. On a retry after a lost answer, a contact not completed now
    /// counts as completed if its lease left it so.
    async fn complete_batch(&self, batch: &[Completion]) -> Result<HashSet<String>, StoreError> {
        let (mut done, may_have_landed) = match batch {
            [one] => {
                let attempt = int(one.attempt);
                let (rows, may_have_landed) = self
                    .query(
                        self.persist,
                        &self.sql.complete,
                        &[&one.contact_id, &one.owner, &attempt],
                    )
                    .await?;
                let done = rows.first().map(|_| one.contact_id.clone());
                (done.into_iter().collect::<HashSet<_>>(), may_have_landed)
            }
            _ => {
                let ids: Vec<&str> = batch.iter().map(|c| c.contact_id.as_str()).collect();
                let owners: Vec<&str> = batch.iter().map(|c| c.owner.as_str()).collect();
                let attempts: Vec<i32> = batch.iter().map(|c| int(c.attempt)).collect();
                let (rows, may_have_landed) = self
                    .query(
                        self.persist,
                        &self.sql.complete_many,
                        &[&ids, &owners, &attempts],
                    )
                    .await?;
                let done = rows
                    .iter()
                    .map(|row| row.try_get::<_, String>(0).map_err(db))
                    .collect::<Result<_, _>>()?;
                (done, may_have_landed)
            }
        };
        if may_have_landed {
            for completion in batch {
                let lease = completion.lease();
                if !done.contains(&lease.contact_id)
                    && self.settled_by(&lease).await? == Some(ContactState::Completed)
                {
                    done.insert(lease.contact_id);
                }
            }
        }
        Ok(done)
    }

    pub(crate) async fn release_owner(
        &self,
        owner: &str,
        _now: Millis,
    ) -> Result<usize, StoreError> {
        self.execute(&self.sql.release_owner, &[&owner]).await
    }

    pub(crate) async fn wake_service(
        &self,
        service: &str,
        _now: Millis,
    ) -> Result<usize, StoreError> {
        self.execute(&self.sql.wake_service, &[&service]).await
    }

    pub(crate) async fn postpone_service(
        &self,
        service: &str,
        _until: Millis,
        wait: Duration,
    ) -> Result<usize, StoreError> {
        self.execute(&self.sql.postpone_service, &[&service, &micros(wait)])
            .await
    }

    pub(crate) async fn requeue(
        &self,
        state: ContactState,
        _now: Millis,
    ) -> Result<usize, StoreError> {
        self.execute(&self.sql.requeue, &[&state.as_str()]).await
    }

    pub(crate) async fn counts(&self) -> Result<Counts, StoreError> {
        let (rows, _) = self.query(Persistence::Once, &self.sql.counts, &[]).await?;
        let mut counts = Counts::default();
        for row in rows {
            let state: &str = row.try_get(0).map_err(db)?;
            let n: i64 = row.try_get(1).map_err(db)?;
            counts.add(
                parse_state("", state)?,
                usize::try_from(n).unwrap_or_default(),
            );
        }
        Ok(counts)
    }

    /// The earliest due time on the caller's clock (`now`): the database
    /// says how far ahead of its own clock it is.
    pub(crate) async fn next_due(&self, now: Millis) -> Result<Option<Millis>, StoreError> {
        let (rows, _) = self
            .query(Persistence::Once, &self.sql.next_due, &[])
            .await?;
        let ahead: Option<i64> = match rows.first() {
            Some(row) => row.try_get(0).map_err(db)?,
            None => None,
        };
        Ok(ahead.map(|ahead| now.saturating_add(ahead)))
    }

    /// The contacts in `state`, or every contact (`None`), in one statement.
    pub(crate) async fn list(
        &self,
        state: Option<ContactState>,
    ) -> Result<Vec<ContactStatus>, StoreError> {
        let (rows, _) = match state {
            Some(state) => {
                self.query(Persistence::Once, &self.sql.list, &[&state.as_str()])
                    .await?
            }
            None => {
                self.query(Persistence::Once, &self.sql.list_all, &[])
                    .await?
            }
        };
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get(0).map_err(db)?;
                let attempts: i32 = row.try_get(2).map_err(db)?;
                let deferrals: i32 = row.try_get(3).map_err(db)?;
                Ok(ContactStatus {
                    state: parse_state(&id, row.try_get(1).map_err(db)?)?,
                    id,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    deferrals: u32::try_from(deferrals).unwrap_or(0),
                    service: row.try_get(4).map_err(db)?,
                    last_error: row.try_get(5).map_err(db)?,
                    lease_owner: row.try_get(6).map_err(db)?,
                })
            })
            .collect()
    }
}

fn lease_lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost {
        contact_id: lease.contact_id.clone(),
    }
}
