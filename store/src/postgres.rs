//! The PostgreSQL backend: one queue shared by several agent processes.
//!
//! A contact is leased by one statement that picks the next due row with
//! `FOR UPDATE SKIP LOCKED`, so concurrent agents never take the same row and
//! never wait on each other; the lease has an expiry the holder renews, and a
//! row whose lease expired (its agent died) is due again. Every statement is
//! prepared once.
//!
//! Operations are group-committed ([`crate::batch`]): one task at a time
//! sends every operation waiting as `BEGIN`, the statements and `COMMIT`,
//! pipelined on the one connection, and answers each caller after the commit
//! — so concurrent workers share one commit and one exchange with the server
//! instead of a round trip and a commit each. An operation waiting alone runs
//! in autocommit. If one statement of a batch fails the transaction is rolled
//! back and every operation in it reports the failure (none was made): the
//! agent then treats it as unsaved, as it does any store error. Leases taken
//! in a batch are row-locked until its commit, so other agents skip them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::{join_all, join3};
use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::batch::{Batcher, DrainGuard, MAX_BATCH, Reply, reply};
use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    Progress, StoreError,
};
use crate::sql::{Dialect, Statements, parse_state};

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "postgres",
        message: error.to_string(),
    }
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn count(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

struct Prepared {
    insert_many: Statement,
    lease: Statement,
    renew: Statement,
    save_progress: Statement,
    complete: Statement,
    fail: Statement,
    defer: Statement,
    release: Statement,
    release_owner: Statement,
    wake_service: Statement,
    postpone_service: Statement,
    counts: Statement,
    next_due: Statement,
    list: Statement,
    requeue: Statement,
}

/// What a job's work returns: the result, boxed (it borrows the connection).
type Work<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An owned statement parameter.
type Param = Box<dyn ToSql + Send + Sync>;

/// Picks one of the prepared statements.
type Pick = fn(&Prepared) -> &Statement;

/// One operation's work: whether its statement failed at the database
/// (which aborts the transaction), and its reply.
type JobFn = Box<
    dyn for<'a> FnOnce(
            &'a Client,
            &'a Prepared,
        ) -> Pin<Box<dyn Future<Output = (bool, Reply)> + Send + 'a>>
        + Send,
>;

/// One operation waiting for a batch.
struct Job {
    /// Runs more than one statement (an import), so it runs outside any
    /// batch: a pipelined transaction holds only what is sent before COMMIT.
    alone: bool,
    work: JobFn,
}

/// The connection and the operations waiting for it.
struct Shared {
    client: Client,
    prepared: Prepared,
    jobs: Batcher<Job>,
}

impl Shared {
    /// Runs batches until no job waits.
    async fn drain(self: Arc<Self>) {
        let _guard = DrainGuard(&self.jobs);
        let (client, prepared) = (&self.client, &self.prepared);
        while let Some(batch) = self.jobs.take(MAX_BATCH) {
            let (alone, batch): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|job| job.alone);
            if batch.len() < 2 {
                // Nothing to share a transaction with: autocommit.
                for job in alone.into_iter().chain(batch) {
                    (job.work)(client, prepared).await.1(None);
                }
                continue;
            }
            // One exchange: BEGIN, every statement and COMMIT are sent in
            // this order before any answer is read (each future sends its
            // message when first polled, and they are polled in order). If a
            // statement fails the transaction aborts and COMMIT rolls it back.
            let (begun, done, committed) = join3(
                client.batch_execute("BEGIN"),
                join_all(batch.into_iter().map(|job| (job.work)(client, prepared))),
                client.batch_execute("COMMIT"),
            )
            .await;
            let rolled_back = if let Err(e) = begun {
                Some(format!("cannot begin: {e}"))
            } else if done.iter().any(|(failed, _)| *failed) {
                Some("another change of the same transaction failed".to_owned())
            } else {
                committed.err().map(|e| e.to_string())
            };
            for (_, answer) in done {
                answer(rolled_back.as_deref());
            }
            for job in alone {
                (job.work)(client, prepared).await.1(None);
            }
        }
    }
}

/// A connection to the shared queue.
pub(crate) struct PostgresBackend {
    shared: Arc<Shared>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PostgresBackend {
    /// Connects (no TLS) and creates the table if it does not exist yet.
    pub(crate) async fn connect(url: &str, table: &str) -> Result<Self, StoreError> {
        let sql = Statements::new(table, Dialect::Postgres)?;
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| db(format!("cannot connect: {e}")))?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!("PostgreSQL connection of the call store ended: {e}");
            }
        });
        // Agents starting together would race to create the table: one at a time.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(hashtext('callguard-store:{table}')); {} COMMIT;",
                sql.schema
            ))
            .await
            .map_err(db)?;
        let prepare = async |text: &str| client.prepare(text).await.map_err(db);
        let prepared = Prepared {
            insert_many: prepare(&sql.insert_many).await?,
            lease: prepare(&sql.lease).await?,
            renew: prepare(&sql.renew).await?,
            save_progress: prepare(&sql.save_progress).await?,
            complete: prepare(&sql.complete).await?,
            fail: prepare(&sql.fail).await?,
            defer: prepare(&sql.defer).await?,
            release: prepare(&sql.release).await?,
            release_owner: prepare(&sql.release_owner).await?,
            wake_service: prepare(&sql.wake_service).await?,
            postpone_service: prepare(&sql.postpone_service).await?,
            counts: prepare(&sql.counts).await?,
            next_due: prepare(&sql.next_due).await?,
            list: prepare(&sql.list).await?,
            requeue: prepare(&sql.requeue).await?,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                prepared,
                jobs: Batcher::default(),
            }),
            connection,
        })
    }

    /// Runs `work` (one statement) in the next batch; answers once the
    /// batch has committed.
    async fn run<T: Send + 'static>(
        &self,
        work: impl for<'a> FnOnce(&'a Client, &'a Prepared) -> Work<'a, T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_job(false, work).await
    }

    /// Runs `work` in the next batch, or in autocommit if `alone`.
    async fn run_job<T: Send + 'static>(
        &self,
        alone: bool,
        work: impl for<'a> FnOnce(&'a Client, &'a Prepared) -> Work<'a, T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let work: JobFn = Box::new(move |client, prepared| {
            Box::pin(async move {
                let result = work(client, prepared).await;
                let failed = matches!(result, Err(StoreError::Database { .. }));
                (failed, reply(result, answer, "postgres"))
            })
        });
        if self.shared.jobs.push(Job { alone, work }) {
            // Its handle is not needed: every job answers on its own channel.
            drop(tokio::spawn(self.shared.clone().drain()));
        }
        answered
            .await
            .map_err(|_| db("the store's worker stopped"))?
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let contacts = contacts.to_vec();
        // Several statements, each committed as it runs (as before batching).
        self.run_job(true, move |client, p| {
            Box::pin(async move {
                let mut report = ImportReport::default();
                // Bounded batches keep each statement's parameters modest.
                for batch in contacts.chunks(5000) {
                    let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
                    let data: Vec<&str> = batch.iter().map(|c| c.data.as_str()).collect();
                    let added = client
                        .execute(&p.insert_many, &[&ids, &data, &now])
                        .await
                        .map_err(db)?;
                    let added = count(i64::try_from(added).unwrap_or(i64::MAX));
                    report.added += added;
                    report.existing += batch.len() - added;
                }
                Ok(report)
            })
        })
        .await
    }

    pub(crate) async fn lease(
        &self,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Option<Leased>, StoreError> {
        let owner = owner.to_owned();
        self.run(move |client, p| {
            Box::pin(async move {
                let row = client
                    .query_opt(&p.lease, &[&owner, &now, &until])
                    .await
                    .map_err(db)?;
                row.map(|row| {
                    let contact_id: String = row.try_get(0).map_err(db)?;
                    let attempt: i32 = row.try_get(2).map_err(db)?;
                    let deferrals: i32 = row.try_get(3).map_err(db)?;
                    let progress: &str = row.try_get(4).map_err(db)?;
                    Ok(Leased {
                        progress: Progress::from_json(&contact_id, progress)?,
                        data: row.try_get(1).map_err(db)?,
                        deferrals: u32::try_from(deferrals).unwrap_or(0),
                        lease: Lease {
                            contact_id,
                            attempt: u32::try_from(attempt).unwrap_or(0),
                        },
                    })
                })
                .transpose()
            })
        })
        .await
    }

    /// Runs the statement `pick` chooses on a held row with `extra`
    /// parameters after the lease's three; the row's new state, or
    /// `LeaseLost` if it is not held.
    async fn held(
        &self,
        owner: &str,
        lease: &Lease,
        pick: Pick,
        extra: Vec<Param>,
    ) -> Result<ContactState, StoreError> {
        let owner = owner.to_owned();
        let contact_id = lease.contact_id.clone();
        let attempt = int(lease.attempt);
        self.run(move |client, p| {
            Box::pin(async move {
                let mut values: Vec<&(dyn ToSql + Sync)> = vec![&contact_id, &owner, &attempt];
                values.extend(extra.iter().map(|value| &**value as &(dyn ToSql + Sync)));
                let row = client.query_opt(pick(p), &values).await.map_err(db)?;
                let Some(row) = row else {
                    return Err(StoreError::LeaseLost { contact_id });
                };
                parse_state(&contact_id, row.try_get(0).map_err(db)?)
            })
        })
        .await
    }

    pub(crate) async fn renew(
        &self,
        owner: &str,
        lease: &Lease,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.held(owner, lease, |p| &p.renew, vec![Box::new(until)])
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
        self.held(owner, lease, |p| &p.save_progress, vec![Box::new(progress)])
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
        let text = |s: &str| -> Param { Box::new(s.to_owned()) };
        let (pick, extra): (Pick, Vec<Param>) = match outcome {
            Outcome::Completed => (|p| &p.complete, vec![Box::new(now)]),
            Outcome::Released => (|p| &p.release, vec![Box::new(now)]),
            Outcome::Failed { service, reason } => (
                |p| &p.fail,
                vec![Box::new(now), text(service), text(reason)],
            ),
            Outcome::Deferred {
                service,
                reason,
                not_before,
                max_deferrals,
                progress,
            } => (
                |p| &p.defer,
                vec![
                    Box::new(now),
                    Box::new(int(*max_deferrals)),
                    Box::new(*not_before),
                    text(service),
                    text(reason),
                    Box::new(progress.to_json()),
                ],
            ),
        };
        self.held(owner, lease, pick, extra).await
    }

    /// Runs an update taking a text and a time; returns the rows changed.
    async fn update(&self, pick: Pick, text: &str, now: Millis) -> Result<usize, StoreError> {
        let text = text.to_owned();
        self.run(move |client, p| {
            Box::pin(async move {
                let changed = client.execute(pick(p), &[&text, &now]).await.map_err(db)?;
                Ok(count(i64::try_from(changed).unwrap_or(i64::MAX)))
            })
        })
        .await
    }

    pub(crate) async fn release_owner(
        &self,
        owner: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|p| &p.release_owner, owner, now).await
    }

    pub(crate) async fn wake_service(
        &self,
        service: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|p| &p.wake_service, service, now).await
    }

    pub(crate) async fn postpone_service(
        &self,
        service: &str,
        until: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|p| &p.postpone_service, service, until).await
    }

    pub(crate) async fn requeue(
        &self,
        state: ContactState,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(|p| &p.requeue, state.as_str(), now).await
    }

    pub(crate) async fn counts(&self) -> Result<Counts, StoreError> {
        self.run(|client, p| {
            Box::pin(async move {
                let rows = client.query(&p.counts, &[]).await.map_err(db)?;
                let mut counts = Counts::default();
                for row in rows {
                    let state: &str = row.try_get(0).map_err(db)?;
                    let n: i64 = row.try_get(1).map_err(db)?;
                    counts.add(parse_state("", state)?, count(n));
                }
                Ok(counts)
            })
        })
        .await
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.run(|client, p| {
            Box::pin(async move {
                let row = client.query_one(&p.next_due, &[]).await.map_err(db)?;
                row.try_get(0).map_err(db)
            })
        })
        .await
    }

    pub(crate) async fn list(&self, state: ContactState) -> Result<Vec<ContactStatus>, StoreError> {
        self.run(move |client, p| {
            Box::pin(async move {
                let rows = client
                    .query(&p.list, &[&state.as_str()])
                    .await
                    .map_err(db)?;
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
            })
        })
        .await
    }
}
