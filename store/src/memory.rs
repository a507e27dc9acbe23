//! The in-memory backend: the same rows and rules as the SQL backends, kept in
//! a map with an ordered index of due times; lost when the process ends.

use parking_lot::Mutex;
use std::collections::BTreeSet;

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{
    ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, Millis, NewContact, Outcome,
    StoreError,
};

struct Row {
    id: String,
    data: String,
    state: ContactState,
    due_at: Millis,
    lease_owner: Option<Arc<str>>,
    attempts: u32,
    deferrals: u32,
    service: Option<String>,
    last_error: Option<String>,
    progress: String,
}

#[derive(Default)]
struct Inner {
    /// Rows in import order; the index is the row's sequence number.
    rows: Vec<Row>,
    /// The index of each row, found by the row's own id (kept once, in the row).
    by_id: HashTable<usize>,
    hasher: RandomState,
    /// (due_at, seq) of every unfinished row.
    due: BTreeSet<(Millis, usize)>,
    /// The owner of the last lease, shared by the rows it holds (one store
    /// leases under one name, so a lease need not copy it).
    owner: Option<Arc<str>>,
}

impl Inner {
    /// The index of the row of `id`.
    fn seq(&self, id: &str) -> Option<usize> {
        let rows = &self.rows;
        self.by_id
            .find(self.hasher.hash_one(id), |&seq| rows[seq].id == id)
            .copied()
    }

    /// `owner`, shared with the rows leased to it before.
    fn owner(&mut self, owner: &str) -> Arc<str> {
        match &self.owner {
            Some(known) if **known == *owner => known.clone(),
            _ => self.owner.insert(Arc::from(owner)).clone(),
        }
    }

    fn set_due(&mut self, seq: usize, state: ContactState, due_at: Millis) {
        let row = &mut self.rows[seq];
        if !row.state.is_terminal() {
            self.due.remove(&(row.due_at, seq));
        }
        row.state = state;
        row.due_at = due_at;
        if !state.is_terminal() {
            self.due.insert((due_at, seq));
        }
    }

    fn held(&mut self, owner: &str, lease: &Lease) -> Result<usize, StoreError> {
        let lost = || StoreError::LeaseLost {
            contact_id: lease.contact_id.clone(),
        };
        let seq = self.seq(&lease.contact_id).ok_or_else(lost)?;
        let row = &self.rows[seq];
        let held = row.state == ContactState::InFlight
            && row.lease_owner.as_deref() == Some(owner)
            && row.attempts == lease.attempt;
        if held { Ok(seq) } else { Err(lost()) }
    }
}

/// Contacts in a map, guarded by one mutex.
pub(crate) struct MemoryBackend {
    inner: Mutex<Inner>,
    /// Most contacts one lease takes.
    lease_batch: usize,
}

impl MemoryBackend {
    pub(crate) fn new(lease_batch: usize) -> Self {
        Self {
            inner: Mutex::default(),
            lease_batch,
        }
    }

    pub(crate) async fn import(
        &self,
        contacts: &[NewContact],
        _now: Millis,
    ) -> Result<ImportReport, StoreError> {
        Ok(self.import_now(contacts.iter().cloned()))
    }

    pub(crate) fn import_now(
        &self,
        contacts: impl IntoIterator<Item = NewContact>,
    ) -> ImportReport {
        let contacts = contacts.into_iter();
        let mut inner = self.inner.lock();
        let expected = contacts.size_hint().0;
        inner.rows.reserve(expected);
        let Inner {
            rows,
            by_id,
            hasher,
            due,
            ..
        } = &mut *inner;
        by_id.reserve(expected, |&seq| hasher.hash_one(&rows[seq].id));
        let mut report = ImportReport::default();
        for contact in contacts {
            // One hash a contact: the entry finds the id or the slot for it.
            let slot = by_id.entry(
                hasher.hash_one(&contact.id),
                |&seq| rows[seq].id == contact.id,
                |&seq| hasher.hash_one(&rows[seq].id),
            );
            let Entry::Vacant(slot) = slot else {
                report.existing += 1;
                continue;
            };
            let seq = rows.len();
            slot.insert(seq);
            rows.push(Row {
                id: contact.id,
                data: contact.data,
                state: ContactState::Pending,
                due_at: 0,
                lease_owner: None,
                attempts: 0,
                deferrals: 0,
                service: None,
                last_error: None,
                progress: String::new(),
            });
            due.insert((0, seq));
            report.added += 1;
        }
        report
    }

    pub(crate) async fn lease(
        &self,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Vec<Leased>, StoreError> {
        let mut inner = self.inner.lock();
        let mut leased = Vec::new();
        let owner = inner.owner(owner);
        while leased.len() < self.lease_batch {
            let Some(&(due_at, seq)) = inner.due.first() else {
                break;
            };
            if due_at > now {
                break;
            }
            inner.set_due(seq, ContactState::InFlight, until);
            let row = &mut inner.rows[seq];
            row.attempts += 1;
            row.lease_owner = Some(owner.clone());
            leased.push(Leased {
                lease: Lease {
                    contact_id: row.id.clone(),
                    attempt: row.attempts,
                },
                data: row.data.clone(),
                deferrals: row.deferrals,
                progress: row.progress.clone(),
            });
        }
        Ok(leased)
    }

    pub(crate) async fn renew(
        &self,
        owner: &str,
        lease: &Lease,
        until: Millis,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        let seq = inner.held(owner, lease)?;
        inner.set_due(seq, ContactState::InFlight, until);
        Ok(())
    }

    pub(crate) async fn save_progress(
        &self,
        owner: &str,
        lease: &Lease,
        progress: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        let seq = inner.held(owner, lease)?;
        progress.clone_into(&mut inner.rows[seq].progress);
        Ok(())
    }

    pub(crate) async fn settle(
        &self,
        owner: &str,
        lease: &Lease,
        outcome: &Outcome<'_>,
        now: Millis,
    ) -> Result<ContactState, StoreError> {
        let mut inner = self.inner.lock();
        let seq = inner.held(owner, lease)?;
        let (state, due_at) = match outcome {
            Outcome::Completed => (ContactState::Completed, now),
            Outcome::Failed { service, reason } => {
                let row = &mut inner.rows[seq];
                row.service = Some((*service).to_owned());
                row.last_error = Some((*reason).to_owned());
                (ContactState::Failed, now)
            }
            Outcome::Deferred {
                service,
                reason,
                not_before,
                max_deferrals,
                counted,
                progress,
                ..
            } => {
                let row = &mut inner.rows[seq];
                row.deferrals += counted;
                row.service = Some((*service).to_owned());
                row.last_error = Some((*reason).to_owned());
                (*progress).clone_into(&mut row.progress);
                let state = if row.deferrals > *max_deferrals {
                    ContactState::Expired
                } else {
                    ContactState::Deferred
                };
                (state, *not_before)
            }
            Outcome::Released => (ContactState::Pending, now),
        };
        inner.rows[seq].lease_owner = None;
        inner.set_due(seq, state, due_at);
        Ok(state)
    }

    /// Moves the rows `pick` chooses to pending, due at `now`.
    fn requeue_where(&self, now: Millis, pick: impl Fn(&Row) -> bool) -> usize {
        let mut inner = self.inner.lock();
        let chosen: Vec<usize> = (0..inner.rows.len())
            .filter(|&seq| pick(&inner.rows[seq]))
            .collect();
        for &seq in &chosen {
            inner.rows[seq].lease_owner = None;
            inner.set_due(seq, ContactState::Pending, now);
        }
        chosen.len()
    }

    pub(crate) async fn release_owner(
        &self,
        owner: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        Ok(self.requeue_where(now, |row| {
            row.state == ContactState::InFlight && row.lease_owner.as_deref() == Some(owner)
        }))
    }

    pub(crate) async fn wake_service(
        &self,
        service: &str,
        now: Millis,
    ) -> Result<usize, StoreError> {
        Ok(self.requeue_where(now, |row| {
            row.state == ContactState::Deferred
                && row.service.as_deref() == Some(service)
                && row.due_at > now
        }))
    }

    pub(crate) async fn postpone_service(
        &self,
        service: &str,
        until: Millis,
        _wait: Duration,
    ) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock();
        let chosen: Vec<usize> = (0..inner.rows.len())
            .filter(|&seq| {
                let row = &inner.rows[seq];
                row.state == ContactState::Deferred
                    && row.service.as_deref() == Some(service)
                    && row.due_at < until
            })
            .collect();
        for &seq in &chosen {
            inner.set_due(seq, ContactState::Deferred, until);
        }
        Ok(chosen.len())
    }

    pub(crate) async fn requeue(
        &self,
        state: ContactState,
        now: Millis,
    ) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock();
        for row in inner.rows.iter_mut().filter(|row| row.state == state) {
            row.deferrals = 0;
        }
        drop(inner);
        Ok(self.requeue_where(now, |row| row.state == state))
    }

    pub(crate) async fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for row in &self.inner.lock().rows {
            counts.add(row.state, 1);
        }
        Ok(counts)
    }

    pub(crate) async fn next_due(&self, _now: Millis) -> Result<Option<Millis>, StoreError> {
        Ok(self.inner.lock().due.first().map(|&(due_at, _)| due_at))
    }

    /// The contacts in `state`, or every contact (`None`), under one lock.
    pub(crate) async fn list(
        &self,
        state: Option<ContactState>,
    ) -> Result<Vec<ContactStatus>, StoreError> {
        Ok(self
            .inner
            .lock()
            .rows
            .iter()
            .filter(|row| state.is_none_or(|state| row.state == state))
            .map(|row| ContactStatus {
                id: row.id.clone(),
                state: row.state,
                attempts: row.attempts,
                deferrals: row.deferrals,
                service: row.service.clone(),
                last_error: row.last_error.clone(),
                lease_owner: row.lease_owner.as_deref().map(str::to_owned),
            })
            .collect())
    }
}
