//! The PostgreSQL backend: one queue shared by several agent processes.
//!
//! A contact is leased by one statement that picks the next due row with
//! `FOR UPDATE SKIP LOCKED`, so concurrent agents never take the same row and
//! never wait on each other; the lease has an expiry the holder renews, and a
//! row whose lease expired (its agent died) is due again. Every statement is
//! prepared once and runs in autocommit, each one a transaction of its own.
//! Completions are the exception, being the most frequent change: those
//! waiting together go as one statement, so the server's per-statement cost
//! is shared the way SQLite's group commit shares a transaction. With a
//! settle wait (`StoreSettings::settle_wait`) a completion waits for others,
//! and a lease sends the waiting ones ahead of itself on the connection,
//! costing it no extra round trip; without one it goes at once. A completion
//! alone runs the single-row statement. A fresh import is followed by
//! `ANALYZE`, so the planner knows the table's size from the first lease
//! (unanalysed, it takes a new table for a tiny one and scans it whole).

use std::collections::HashSet;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use crate::StoreSettings;
use crate::completions::{self, Completion};
use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, LeasedBatch, Millis, NewContact,
    Outcome, Progress, StoreError,
};
use crate::sql::{Dialect, LeasedRow, Statements, leased_batch, parse_state};

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
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

fn count(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

struct Prepared {
    insert_many: Statement,
    lease: Statement,
    renew: Statement,
    save_progress: Statement,
    complete: Statement,
    complete_many: Statement,
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

/// A connection to the shared queue.
pub(crate) struct PostgresBackend {
    /// How long a completion waits for others ([`StoreSettings::settle_wait`]).
    settle_wait: Duration,
    /// Refreshes the planner's statistics after an import.
    analyze: String,
    client: Client,
    prepared: Prepared,
    connection: tokio::task::JoinHandle<()>,
    completions: parking_lot::Mutex<Vec<Completion>>,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PostgresBackend {
    /// Connects (no TLS) and creates the table if it does not exist yet.
    pub(crate) async fn connect(url: &str, settings: &StoreSettings) -> Result<Self, StoreError> {
        let table = &settings.table;
        let sql = Statements::new(table, Dialect::Postgres, settings.lease_batch_size())?;
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
            complete_many: prepare(&sql.complete_many).await?,
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
            settle_wait: settings.settle_wait,
            analyze: format!("ANALYZE {table}"),
            client,
            prepared,
            connection,
            completions: parking_lot::Mutex::default(),
        })
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        // Bounded batches keep each statement's parameters modest.
        for batch in contacts.chunks(5000) {
            let ids: Vec<&str> = batch.iter().map(|c| c.id.as_str()).collect();
            let data: Vec<&str> = batch.iter().map(|c| c.data.as_str()).collect();
            let added = self
                .client
                .execute(&self.prepared.insert_many, &[&ids, &data, &now])
                .await
                .map_err(db)?;
            let added = count(i64::try_from(added).unwrap_or(i64::MAX));
            report.added += added;
            report.existing += batch.len() - added;
        }
        // The contacts are in either way; without fresh statistics the
        // leases are only slower.
        if report.added > 0
            && let Err(e) = self.client.batch_execute(&self.analyze).await
        {
            tracing::warn!("PostgreSQL call store: ANALYZE after the import failed: {e}");
        }
        Ok(report)
    }

    pub(crate) async fn lease(
        &self,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<LeasedBatch, StoreError> {
        // The completions waiting go first, on the same connection: they
        // cost the lease no extra round trip.
        let params: [&(dyn ToSql + Sync); 3] = [&owner, &now, &until];
        let ((), rows) = tokio::join!(
            self.send_waiting_completions(),
            self.client.query(&self.prepared.lease, &params)
        );
        let rows = rows
            .map_err(db)?
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
        Ok(leased_batch(rows))
    }

    /// Runs `statement` on a held row with `extra` parameters after the
    /// lease's three; the row's new state, or `LeaseLost` if it is not held.
    async fn held(
        &self,
        owner: &str,
        lease: &Lease,
        statement: &Statement,
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<ContactState, StoreError> {
        let attempt = int(lease.attempt);
        let mut values: Vec<&(dyn ToSql + Sync)> = vec![&lease.contact_id, &owner, &attempt];
        values.extend_from_slice(extra);
        let row = self
            .client
            .query_opt(statement, &values)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::LeaseLost {
                contact_id: lease.contact_id.clone(),
            })?;
        parse_state(&lease.contact_id, row.try_get(0).map_err(db)?)
    }

    pub(crate) async fn renew(
        &self,
        owner: &str,
        lease: &Lease,
        until: Millis,
    ) -> Result<(), StoreError> {
        self.held(owner, lease, &self.prepared.renew, &[&until])
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
        self.held(owner, lease, &self.prepared.save_progress, &[&progress])
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
        let p = &self.prepared;
        match outcome {
            Outcome::Completed => self.complete(owner, lease, now).await,
            Outcome::Released => self.held(owner, lease, &p.release, &[&now]).await,
            Outcome::Failed { service, reason } => {
                self.held(owner, lease, &p.fail, &[&now, service, reason])
                    .await
            }
            Outcome::Deferred {
                service,
                reason,
                not_before,
                max_deferrals,
                counted,
                progress,
            } => {
                let max = int(*max_deferrals);
                let counted = int(*counted);
                let progress = progress.to_json();
                self.held(
                    owner,
                    lease,
                    &p.defer,
                    &[&now, &max, not_before, service, reason, &progress, &counted],
                )
                .await
            }
        }
    }

    /// Completes the held contact in a batch with every completion waiting:
    /// at once, or — given a settle wait — in the batch the next lease sends
    /// before itself, or else the one this caller sends after that wait.
    async fn complete(
        &self,
        owner: &str,
        lease: &Lease,
        now: Millis,
    ) -> Result<ContactState, StoreError> {
        let (completion, mut answered) = Completion::new(owner, lease, now);
        self.completions_lock().push(completion);
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
        let batch = std::mem::take(&mut *self.completions_lock());
        if !batch.is_empty() {
            self.send_completions(batch).await;
        }
    }

    /// Sends `batch` as one statement and answers each completion in it.
    async fn send_completions(&self, batch: Vec<Completion>) {
        let done = match batch.as_slice() {
            [one] => self.complete_one(one).await,
            _ => self.complete_many(&batch).await,
        };
        completions::answer(batch, done);
    }

    /// A completion alone: the single-row statement, cheaper than the
    /// batch's join. The ids completed (the one, or none).
    async fn complete_one(&self, one: &Completion) -> Result<HashSet<String>, StoreError> {
        let attempt = int(one.attempt);
        let row = self
            .client
            .query_opt(
                &self.prepared.complete,
                &[&one.contact_id, &one.owner, &attempt, &one.at],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|_| one.contact_id.clone()).into_iter().collect())
    }

    /// The ids `batch` completed, in one statement.
    async fn complete_many(&self, batch: &[Completion]) -> Result<HashSet<String>, StoreError> {
        let ids: Vec<&str> = batch.iter().map(|c| c.contact_id.as_str()).collect();
        let owners: Vec<&str> = batch.iter().map(|c| c.owner.as_str()).collect();
        let attempts: Vec<i32> = batch.iter().map(|c| int(c.attempt)).collect();
        let ats: Vec<Millis> = batch.iter().map(|c| c.at).collect();
        let rows = self
            .client
            .query(
                &self.prepared.complete_many,
                &[&ids, &owners, &attempts, &ats],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| row.try_get::<_, String>(0).map_err(db))
            .collect()
    }

    fn completions_lock(&self) -> parking_lot::MutexGuard<'_, Vec<Completion>> {
        self.completions.lock()
    }

    async fn update(
        &self,
        statement: &Statement,
        text: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        let changed = self
            .client
            .execute(statement, &[&text, &now])
            .await
            .map_err(db)?;
        Ok(count(i64::try_from(changed).unwrap_or(i64::MAX)))
    }

    pub(crate) async fn release_owner(
        &self,
        owner: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(&self.prepared.release_owner, owner, now).await
    }

    pub(crate) async fn wake_service(
        &self,
        service: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(&self.prepared.wake_service, service, now).await
    }

    pub(crate) async fn postpone_service(
        &self,
        service: &str,
        until: Millis,
    ) -> Result<usize, StoreError> {
        self.update(&self.prepared.postpone_service, service, until)
            .await
    }

    pub(crate) async fn requeue(
        &self,
        state: ContactState,
        now: Millis,
    ) -> Result<usize, StoreError> {
        self.update(&self.prepared.requeue, state.as_str(), now)
            .await
    }

    pub(crate) async fn counts(&self) -> Result<Counts, StoreError> {
        let rows = self
            .client
            .query(&self.prepared.counts, &[])
            .await
            .map_err(db)?;
        let mut counts = Counts::default();
        for row in rows {
            let state: &str = row.try_get(0).map_err(db)?;
            let n: i64 = row.try_get(1).map_err(db)?;
            counts.add(parse_state("", state)?, count(n));
        }
        Ok(counts)
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let row = self
            .client
            .query_one(&self.prepared.next_due, &[])
            .await
            .map_err(db)?;
        row.try_get(0).map_err(db)
    }

    pub(crate) async fn list(&self, state: ContactState) -> Result<Vec<ContactStatus>, StoreError> {
        let rows = self
            .client
            .query(&self.prepared.list, &[&state.as_str()])
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
    }
}
