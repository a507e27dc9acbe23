//! The SQLite backend: one file in WAL mode, one connection driven from
//! tokio's blocking pool. With `synchronous = NORMAL` a committed change
//! survives the process being killed (the WAL is on disk); only a power loss
//! may take the last commits.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    Progress, StoreError,
};
use crate::sql::{Dialect, Statements, parse_state};

fn db(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        backend: "sqlite",
        message: error.to_string(),
    }
}

/// A connection to the store's file.
pub(crate) struct SqliteBackend {
    connection: Arc<Mutex<Connection>>,
    sql: Arc<Statements>,
}

impl SqliteBackend {
    pub(crate) async fn open(path: &Path, table: &str) -> Result<Self, StoreError> {
        let sql = Arc::new(Statements::new(table, Dialect::Sqlite)?);
        let path = path.to_owned();
        let schema = sql.schema.clone();
        let connection = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| db(format!("cannot create {}: {e}", dir.display())))?;
            }
            let connection = Connection::open(&path)
                .map_err(|e| db(format!("cannot open {}: {e}", path.display())))?;
            connection
                .execute_batch(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
                )
                .map_err(db)?;
            connection.execute_batch(&schema).map_err(db)?;
            Ok::<_, StoreError>(connection)
        })
        .await
        .map_err(db)??;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            sql,
        })
    }

    /// Runs `work` on the connection in the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Statements) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        let sql = self.sql.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection, &sql)
        })
        .await
        .map_err(db)?
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        let contacts = contacts.to_vec();
        self.run(move |connection, sql| {
            let transaction = connection.transaction().map_err(db)?;
            let mut report = ImportReport::default();
            {
                let mut insert = transaction.prepare_cached(&sql.insert_one).map_err(db)?;
                for contact in &contacts {
                    match insert
                        .execute(params![contact.id, contact.data, now])
                        .map_err(db)?
                    {
                        0 => report.existing += 1,
                        _ => report.added += 1,
                    }
                }
            }
            transaction.commit().map_err(db)?;
            Ok(report)
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
        self.run(move |connection, sql| {
            let row = connection
                .prepare_cached(&sql.lease)
                .map_err(db)?
                .query_row(params![owner, now, until], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })
                .optional()
                .map_err(db)?;
            row.map(|(contact_id, data, attempt, deferrals, progress)| {
                let progress = Progress::from_json(&contact_id, &progress)?;
                Ok(Leased {
                    lease: Lease {
                        contact_id,
                        attempt,
                    },
                    data,
                    deferrals,
                    progress,
                })
            })
            .transpose()
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
                .prepare_cached(&statement)
                .map_err(db)?
                .query_row(rusqlite::params_from_iter(values), |row| {
                    row.get::<_, String>(0)
                })
                .optional()
                .map_err(db)?;
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
                .prepare_cached(pick(sql))
                .map_err(db)?
                .execute(params![text, now])
                .map_err(db)
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
            let mut statement = connection.prepare_cached(&sql.counts).map_err(db)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, usize>(1)?))
                })
                .map_err(db)?;
            let mut counts = Counts::default();
            for row in rows {
                let (state, n) = row.map_err(db)?;
                counts.add(parse_state("", &state)?, n);
            }
            Ok(counts)
        })
        .await
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.run(|connection, sql| {
            connection
                .prepare_cached(&sql.next_due)
                .map_err(db)?
                .query_row([], |row| row.get::<_, Option<Millis>>(0))
                .map_err(db)
        })
        .await
    }

    pub(crate) async fn list(&self, state: ContactState) -> Result<Vec<ContactStatus>, StoreError> {
        self.run(move |connection, sql| {
            let mut statement = connection.prepare_cached(&sql.list).map_err(db)?;
            let rows = statement
                .query_map([state.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u32>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, Option<String>>(6)?,
                    ))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (id, state, attempts, deferrals, service, last_error, lease_owner) =
                    row.map_err(db)?;
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
