//! The SQL both database backends run: one table of contacts, every state
//! change a single `UPDATE … WHERE <the lease is still held> RETURNING state`
//! statement, so each change is atomic and one under a lost lease returns no row.
//!
//! Statements use `$n` placeholders (PostgreSQL); SQLite reads the same text
//! with `?n`, which binds the same way. Times differ by dialect: SQLite is
//! given them from the agent's clock, PostgreSQL reads `now()` — the
//! database's clock, one for every agent sharing the queue — and is given
//! lengths instead (a lease in ms, a wait in µs), so an agent whose clock
//! runs ahead can neither take a lease still live nor set one that outlives
//! its length. "Now" is therefore each statement's last parameter: SQLite
//! binds it, PostgreSQL's text has none. A row's `due_at` is when it may be
//! leased: 0 or the wake time for a pending contact, the not-before time for a
//! deferred one, the lease's expiry for one in flight — so one ordered index
//! scan finds the next contact, whether new, due again, or abandoned by a dead
//! agent.

use crate::model::{ContactState, Lease, Leased, StoreError};

/// States a contact can still be leased from (in flight: once its lease expired).
const OPEN: &str = "state IN ('pending', 'deferred', 'in_flight')";

/// The row is still held under the lease: `$1` id, `$2` owner, `$3` attempt.
const HELD: &str = "id = $1 AND state = 'in_flight' AND lease_owner = $2 AND attempts = $3";

/// The database's clock in unix milliseconds (PostgreSQL; `now()` is the
/// statement's start, each statement being a transaction of its own).
const DB_NOW: &str = "floor(extract(epoch FROM now()) * 1000)::bigint";

/// The statements of one table, for one dialect.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) schema: String,
    /// `$1` id, `$2` data, `$3` now (SQLite; one row).
    pub(crate) insert_one: String,
    /// `$1` ids, `$2` data (PostgreSQL; arrays).
    pub(crate) insert_many: String,
    /// `$1` owner, `$2` lease expiry (PostgreSQL: the lease's length), `$3`
    /// now → id, data, attempts, deferrals, progress, seq of at most the
    /// lease batch rows (in no order).
    pub(crate) lease: String,
    /// Held, `$4` new expiry (PostgreSQL: the lease's length) → state.
    pub(crate) renew: String,
    /// Held, `$4` progress → state.
    pub(crate) save_progress: String,
    /// Held, `$4` now → state.
    pub(crate) complete: String,
    /// The held contacts to complete → the ids completed. PostgreSQL: `$1`
    /// ids, `$2` owners, `$3` attempts (arrays, one element per contact);
    /// SQLite: `$1` a JSON array of `[id, owner, attempt, now]`.
    pub(crate) complete_many: String,
    /// Held, `$4` service, `$5` reason, `$6` now → state.
    pub(crate) fail: String,
    /// Held, `$4` max deferrals, `$5` not before (PostgreSQL: the wait in
    /// µs), `$6` service, `$7` reason, `$8` progress, `$9` whether it counts
    /// toward the max (1 or 0), `$10` now → state (`deferred` or `expired`).
    pub(crate) defer: String,
    /// Held, `$4` now → state.
    pub(crate) release: String,
    /// `$1` owner, `$2` now.
    pub(crate) release_owner: String,
    /// `$1` service, `$2` now.
    pub(crate) wake_service: String,
    /// `$1` service, `$2` the new not-before time (PostgreSQL: the wait in µs).
    pub(crate) postpone_service: String,
    pub(crate) counts: String,
    /// The earliest due time (PostgreSQL: how many ms from now, below zero
    /// when already due).
    pub(crate) next_due: String,
    /// `$1` id, `$2` attempt → the state the contact was left in by that
    /// lease, if it is the last one taken (PostgreSQL: whether a change
    /// whose answer was lost landed).
    pub(crate) settled_by: String,
    /// `$1` state.
    pub(crate) list: String,
    pub(crate) list_all: String,
    /// `$1` state, `$2` now.
    pub(crate) requeue: String,
}

/// Which database the text is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// Checks that `table` is a plain SQL identifier (it is spliced into the text).
pub(crate) fn check_table_name(table: &str) -> Result<(), StoreError> {
    let mut chars = table.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first_ok
        && table.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(StoreError::Location(format!(
            "table name {table:?} must be a lowercase SQL identifier (a-z, 0-9, _; at most 63)"
        )))
    }
}

impl Statements {
    /// The statements for `table`, leasing up to `lease_batch` contacts at
    /// once (spliced in as a literal: SQLite plans a statement again each
    /// time a bound `LIMIT` changes).
    pub(crate) fn new(
        table: &str,
        dialect: Dialect,
        lease_batch: usize,
    ) -> Result<Self, StoreError> {
        check_table_name(table)?;
        let t = table;
        // SQLite's `seq` is the rowid, free to key the table by. PostgreSQL
        // keys it by `id`: every update that moves a row into or out of the
        // due index inserts into each of the table's indexes, so `seq` (only
        // ever read) has none.
        let (seq, id, millis, lock) = match dialect {
            Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "UNIQUE", "INTEGER", ""),
            Dialect::Postgres => (
                "BIGINT GENERATED ALWAYS AS IDENTITY",
                "PRIMARY KEY",
                "BIGINT",
                " FOR UPDATE SKIP LOCKED",
            ),
        };
        let states = ContactState::ALL
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        // The contacts to complete, as rows of (contact_id, holder, attempt,
        // at): no name the table has, so `RETURNING id` is the table's (the
        // only column SQLite's `RETURNING` may name).
        let done = match dialect {
            Dialect::Sqlite => {
                "(SELECT value ->> 0 AS contact_id, value ->> 1 AS holder, \
                 value ->> 2 AS attempt, value ->> 3 AS at FROM json_each($1)) AS done"
            }
            Dialect::Postgres => {
                "UNNEST($1::text[], $2::text[], $3::int[]) AS done(contact_id, holder, attempt)"
            }
        };
        let settle = |set: &str| format!("UPDATE {t} SET {set} WHERE {HELD} RETURNING state");
        // Parameter `n` as the time now, a time `n` ms or µs from now.
        let now = |n: u8| match dialect {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => DB_NOW.to_owned(),
        };
        let after_ms = |n: u8| match dialect {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("({DB_NOW} + ${n}::bigint)"),
        };
        // Rounded up, so a not-before time is never early.
        let after_us = |n: u8| match dialect {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => {
                format!("ceil(extract(epoch FROM now()) * 1000 + ${n}::bigint / 1000.0)::bigint")
            }
        };
        let done_at = match dialect {
            Dialect::Sqlite => "done.at",
            Dialect::Postgres => DB_NOW,
        };
        let statements = Self {
            schema: format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    seq {seq},
                    id TEXT NOT NULL {id},
                    data TEXT NOT NULL,
                    state TEXT NOT NULL CHECK (state IN ({states})),
                    due_at {millis} NOT NULL,
                    lease_owner TEXT,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    deferrals INTEGER NOT NULL DEFAULT 0,
                    service TEXT,
                    last_error TEXT,
                    progress TEXT NOT NULL DEFAULT '',
                    updated_at {millis} NOT NULL
                );
                CREATE INDEX IF NOT EXISTS {t}_due ON {t} (due_at, seq) WHERE {OPEN};"
            ),
            insert_one: format!(
                "INSERT INTO {t} (id, data, state, due_at, updated_at) \
                 VALUES ($1, $2, 'pending', 0, $3) ON CONFLICT (id) DO NOTHING"
            ),
            insert_many: format!(
                "INSERT INTO {t} (id, data, state, due_at, updated_at) \
                 SELECT id, data, 'pending', 0, {DB_NOW} \
                 FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS new(id, data, n) \
                 ORDER BY n ON CONFLICT (id) DO NOTHING"
            ),
            lease: format!(
                "UPDATE {t} SET state = 'in_flight', lease_owner = $1, due_at = {}, \
                 attempts = attempts + 1, updated_at = {} \
                 WHERE id IN (SELECT id FROM {t} WHERE {OPEN} AND due_at <= {} \
                 ORDER BY due_at, seq LIMIT {lease_batch}{lock}) \
                 RETURNING id, data, attempts, deferrals, progress, seq",
                after_ms(2),
                now(3),
                now(3)
            ),
            renew: settle(&format!("due_at = {}", after_ms(4))),
            save_progress: settle("progress = $4"),
            complete: settle(&format!(
                "state = 'completed', lease_owner = NULL, updated_at = {}",
                now(4)
            )),
            complete_many: format!(
                "UPDATE {t} AS held SET state = 'completed', lease_owner = NULL, updated_at = {done_at} \
                 FROM {done} \
                 WHERE held.id = done.contact_id AND held.state = 'in_flight' \
                 AND held.lease_owner = done.holder AND held.attempts = done.attempt \
                 RETURNING id"
            ),
            fail: settle(&format!(
                "state = 'failed', lease_owner = NULL, service = $4, last_error = $5, updated_at = {}",
                now(6)
            )),
            defer: settle(&format!(
                "deferrals = deferrals + $9, \
                 state = CASE WHEN deferrals + $9 > $4 THEN 'expired' ELSE 'deferred' END, \
                 lease_owner = NULL, due_at = {}, service = $6, last_error = $7, progress = $8, \
                 updated_at = {}",
                after_us(5),
                now(10)
            )),
            release: settle(&format!(
                "state = 'pending', lease_owner = NULL, due_at = {0}, updated_at = {0}",
                now(4)
            )),
            release_owner: format!(
                "UPDATE {t} SET state = 'pending', lease_owner = NULL, due_at = {0}, updated_at = {0} \
                 WHERE state = 'in_flight' AND lease_owner = $1",
                now(2)
            ),
            wake_service: format!(
                "UPDATE {t} SET state = 'pending', due_at = {0}, updated_at = {0} \
                 WHERE state = 'deferred' AND service = $1 AND due_at > {0}",
                now(2)
            ),
            postpone_service: format!(
                "UPDATE {t} SET due_at = {0} \
                 WHERE state = 'deferred' AND service = $1 AND due_at < {0}",
                after_us(2)
            ),
            counts: format!("SELECT state, COUNT(*) FROM {t} GROUP BY state"),
            next_due: match dialect {
                Dialect::Sqlite => format!("SELECT MIN(due_at) FROM {t} WHERE {OPEN}"),
                Dialect::Postgres => {
                    format!("SELECT MIN(due_at) - {DB_NOW} FROM {t} WHERE {OPEN}")
                }
            },
            settled_by: format!("SELECT state FROM {t} WHERE id = $1 AND attempts = $2"),
            list: format!(
                "SELECT id, state, attempts, deferrals, service, last_error, lease_owner \
                 FROM {t} WHERE state = $1 ORDER BY seq"
            ),
            list_all: format!(
                "SELECT id, state, attempts, deferrals, service, last_error, lease_owner \
                 FROM {t} ORDER BY seq"
            ),
            requeue: format!(
                "UPDATE {t} SET state = 'pending', deferrals = 0, due_at = {0}, lease_owner = NULL, \
                 updated_at = {0} WHERE state = $1",
                now(2)
            ),
        };
        Ok(match dialect {
            Dialect::Postgres => statements,
            Dialect::Sqlite => statements.map(|text| text.replace('$', "?")),
        })
    }

    fn map(self, f: impl Fn(String) -> String) -> Self {
        Self {
            schema: f(self.schema),
            insert_one: f(self.insert_one),
            insert_many: f(self.insert_many),
            lease: f(self.lease),
            renew: f(self.renew),
            save_progress: f(self.save_progress),
            complete: f(self.complete),
            complete_many: f(self.complete_many),
            fail: f(self.fail),
            defer: f(self.defer),
            release: f(self.release),
            release_owner: f(self.release_owner),
            wake_service: f(self.wake_service),
            postpone_service: f(self.postpone_service),
            counts: f(self.counts),
            next_due: f(self.next_due),
            settled_by: f(self.settled_by),
            list: f(self.list),
            list_all: f(self.list_all),
            requeue: f(self.requeue),
        }
    }
}

/// One row the lease statement returned, as stored.
pub(crate) struct LeasedRow {
    pub(crate) seq: i64,
    pub(crate) contact_id: String,
    pub(crate) data: String,
    pub(crate) attempt: u32,
    pub(crate) deferrals: u32,
    pub(crate) progress: String,
}

/// The leased rows in import order (`RETURNING` gives rows in no order).
pub(crate) fn leased_in_order(mut rows: Vec<LeasedRow>) -> Vec<Leased> {
    rows.sort_unstable_by_key(|row| row.seq);
    rows.into_iter()
        .map(|row| Leased {
            lease: Lease {
                contact_id: row.contact_id,
                attempt: row.attempt,
            },
            data: row.data,
            deferrals: row.deferrals,
            progress: row.progress,
        })
        .collect()
}

/// Parses a state read from the database.
pub(crate) fn parse_state(contact_id: &str, state: &str) -> Result<ContactState, StoreError> {
    state.parse().map_err(|message| StoreError::Corrupt {
        contact_id: contact_id.to_owned(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        assert!(check_table_name("callguard_contacts").is_ok());
        assert!(check_table_name("_t2").is_ok());
        for bad in [
            "",
            "2t",
            "Contacts",
            "t; DROP TABLE x",
            "a-b",
            &"t".repeat(64),
        ] {
            assert!(check_table_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sqlite_text_has_no_postgres_placeholders_or_locks() {
        let sqlite = Statements::new("t", Dialect::Sqlite, 1).unwrap();
        assert!(!sqlite.defer.contains('$') && sqlite.defer.contains("?10"));
        assert!(!sqlite.lease.contains("SKIP LOCKED") && !sqlite.lease.contains("now()"));
        let postgres = Statements::new("t", Dialect::Postgres, 1).unwrap();
        assert!(postgres.lease.contains("FOR UPDATE SKIP LOCKED"));
        // The database's clock, so the agent's "now" is no parameter.
        assert!(postgres.lease.contains("now()") && !postgres.lease.contains("$3"));
        assert!(postgres.defer.contains("$9") && !postgres.defer.contains("$10"));
        assert!(!postgres.release_owner.contains("$2"));
    }
}
