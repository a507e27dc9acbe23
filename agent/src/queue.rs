//! The call queue: the agent's view of its call store (`callguard-store`) —
//! contacts waiting to be called, contacts deferred until a not-before time
//! (or until their service's breaker closes), and how each contact ended.
//!
//! Every contact the queue hands out is leased: its state can change only
//! under that lease, so a contact never gets a second terminal state, and a
//! contact whose worker (or whole agent) died returns once the lease expires.
//! Store errors do not stop the campaign: a change that could not be saved
//! leaves the contact in flight, and it comes back when its lease expires.
//!
//! On a store over I/O (SQLite, PostgreSQL) a contact's final state is
//! saved in the background: the worker goes on to its next contact at once,
//! and the save shares a store transaction with other workers' changes. One
//! task per queue runs the saves, all at once, fed through a channel: a send
//! per contact, where a task per save cost a spawn. Counts, lists and the
//! release at shutdown wait for the saves still running. The memory store
//! answers at once, so there the worker saves in line: a send, a wake-up of
//! the saving task and its bookkeeping would cost more than the save. A
//! crash before a save leaves the contact in flight, to be called again
//! once its lease expires; its CRM write repeats under the same idempotency
//! key and creates nothing new (the CRM keeps the first record).
//!
//! A queue made over its own memory store ([`CallQueue::new`]) keeps the
//! contacts it was given and hands each out shared, without a copy: that
//! store lives and dies with the process, so nothing else can write its
//! rows, and a contact's JSON there would be written and read only to come
//! back to the value the queue already had. Contacts added later
//! ([`CallQueue::import`]) and every other store's are read from their JSON.

use parking_lot::Mutex;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use callguard_clients::CallRecord;
use callguard_core::ServiceName;
use callguard_store::{
    CallStore, ContactState, ContactStatus, Counts, ImportReport, Lease, Leased, NewContact,
    Renewals, StoreError, StoreLocation, StoreSettings,
};
use callguard_telemetry::{ContactGauge, StoreStatus};
use foldhash::{HashMap, HashSet};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::config::QueueConfig;
use crate::contacts::Contact;

/// Work already done for a contact, kept across deferrals and restarts so a
/// contact resumes at the stage that could not run. Saved with a deferral as
/// the store's progress text: JSON of the agent's own, which the store keeps
/// and never reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The LLM's script, once written.
    pub script: Option<String>,
    /// Size of the speech audio, once synthesized.
    pub audio_bytes: Option<u64>,
    /// The CRM record, once built: kept (and saved with a deferral) so that
    /// a write repeated after a deferral sends the same record under the
    /// same idempotency key.
    pub crm_record: Option<CallRecord>,
}

/// [`Progress`] as saved: written from borrowed parts, read with the record
/// as a JSON value of its own, so that a record which no longer reads is
/// built again instead of failing the contact.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Saved<Script, Record> {
    #[serde(skip_serializing_if = "Option::is_none")]
    script: Option<Script>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audio_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crm_record: Option<Record>,
}

impl Progress {
    /// The progress saved as `text` (empty when none was), or why it cannot
    /// be read.
    fn from_saved(contact_id: &str, text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        let saved: Saved<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("stored progress unreadable: {e}"))?;
        let crm_record = saved.crm_record.and_then(|value| {
            serde_json::from_value(value)
                .map_err(|e| {
                    tracing::warn!(
                        contact_id = %contact_id,
                        "Stored CRM record unreadable ({e}); it is built again"
                    );
                })
                .ok()
        });
        Ok(Self {
            script: saved.script,
            audio_bytes: saved.audio_bytes,
            crm_record,
        })
    }

    /// The text to save: empty for no progress.
    fn to_saved(&self) -> String {
        if *self == Self::default() {
            return String::new();
        }
        let saved = Saved {
            script: self.script.as_deref(),
            audio_bytes: self.audio_bytes,
            crm_record: self.crm_record.as_ref(),
        };
        // Strings, numbers and a record of strings and times always serialize.
        serde_json::to_string(&saved).unwrap_or_default()
    }
}

/// A contact handed to a worker, under its lease.
#[derive(Debug, Clone)]
pub struct QueuedContact {
    /// Who to call (shared with the queue that keeps it, when it does).
    pub contact: Arc<Contact>,
    /// How often the contact has been deferred.
    pub deferrals: u32,
    /// Stages already done.
    pub progress: Progress,
    lease: Lease,
}

impl QueuedContact {
    /// The lease this contact is held under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The contact, its progress (for a call to add to) and its lease,
    /// borrowed apart: the lease is renewed while the call runs.
    pub fn split(&mut self) -> (&Contact, &mut Progress, &Lease) {
        (&self.contact, &mut self.progress, &self.lease)
    }
}

/// How a contact ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Terminal {
    /// Every stage succeeded.
    Completed,
    /// A permanent error ended it.
    Failed {
        /// The service that failed.
        service: String,
        /// Why.
        reason: String,
    },
}

/// Whether a deferral is for a busy service (not counted toward
/// `max_deferrals`) or an unavailable one.
#[derive(Clone, Copy)]
enum Busy {
    No,
    Yes,
}

/// What became of a deferral request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Back in the queue until the not-before time (or its breaker closes).
    Requeued,
    /// Deferred too often: the contact expired.
    Expired,
    /// The store could not record it: the contact returns when its lease expires.
    Unsaved,
}

/// Counts of contacts by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Waiting to be called (the store's `pending`).
    pub ready: usize,
    /// Waiting for a not-before time.
    pub deferred: usize,
    /// Being called now.
    pub in_flight: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended failed.
    pub failed: usize,
    /// Ended expired.
    pub expired: usize,
}

impl QueueCounts {
    /// Contacts not ended: ready, deferred or in flight.
    pub fn unfinished(&self) -> usize {
        self.ready + self.deferred + self.in_flight
    }

    /// Contacts ended: completed, failed or expired.
    pub fn ended(&self) -> usize {
        self.completed + self.failed + self.expired
    }

    /// Every contact.
    pub fn total(&self) -> usize {
        self.unfinished() + self.ended()
    }
}

impl From<Counts> for QueueCounts {
    fn from(counts: Counts) -> Self {
        Self {
            ready: counts.pending,
            deferred: counts.deferred,
            in_flight: counts.in_flight,
            completed: counts.completed,
            failed: counts.failed,
            expired: counts.expired,
        }
    }
}

/// The queue shared by the workers.
pub struct CallQueue {
    store: Arc<CallStore>,
    /// The last counts read from the store ([`refresh_counts`](Self::refresh_counts)).
    counts: Mutex<QueueCounts>,
    settling: Arc<Settling>,
    /// Final states to save, to the task that saves them (started with the
    /// first, on the runtime of the campaign).
    saves: OnceLock<mpsc::UnboundedSender<(Lease, Terminal)>>,
    /// The contacts [`new`](Self::new) was given, by id, handed out without
    /// a round trip through JSON or a copy (the module's docs).
    kept: HashSet<Kept>,
}

/// A contact the queue keeps, found by its id (which it holds once).
struct Kept(Arc<Contact>);

impl Borrow<str> for Kept {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Kept {}

impl Hash for Kept {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// Final states being saved in the background, and how state changes went.
#[derive(Default)]
struct Settling {
    /// Saves still running.
    running: AtomicUsize,
    /// Told when the last running save ends.
    idle: Notify,
    /// Calls abandoned because their lease was lost while they ran.
    abandoned: AtomicU64,
    /// The leases of state changes the store refused as no longer held,
    /// told apart when counted ([`Settling::refusals`]).
    refused: Mutex<Vec<Lease>>,
    /// The contacts given a terminal state through this queue, each with the
    /// attempt of the lease it was given under.
    ended: Mutex<HashMap<String, u32>>,
    /// Contacts the store accepted a second terminal state for.
    ended_twice: AtomicU64,
}

/// State changes refused as no longer held, by whose the contact was.
struct Refusals {
    /// Under a lease another worker or agent had taken over.
    taken_over: u64,
    /// Under the very lease this queue had already ended the contact with:
    /// its holder ending it a second time.
    repeated: u64,
}

impl Settling {
    /// Logs a state change under `lease` that was not made, keeping refusals.
    fn record<T>(&self, lease: &Lease, result: Result<T, StoreError>) -> Option<T> {
        let contact_id = lease.contact_id();
        match result {
            Ok(value) => Some(value),
            Err(e @ StoreError::LeaseLost { .. }) => {
                self.refused.lock().push(lease.clone());
                tracing::warn!(contact_id = %contact_id, "State change refused: {e}");
                None
            }
            Err(e) => {
                tracing::error!(
                    contact_id = %contact_id,
                    "State change not saved (the contact returns when its lease expires): {e}"
                );
                None
            }
        }
    }

    /// The refusals so far, told apart by the lease each contact ended
    /// under: read once the saves have landed, since a holder's two ends of
    /// one contact may be answered in either order.
    fn refusals(&self) -> Refusals {
        let ended = self.ended.lock();
        let refused = self.refused.lock();
        let repeated = refused
            .iter()
            .filter(|lease| ended.get(lease.contact_id()) == Some(&lease.attempt()))
            .count() as u64;
        Refusals {
            taken_over: refused.len() as u64 - repeated,
            repeated,
        }
    }

    /// Notes that the store accepted a terminal state under `lease` (the
    /// contact's id moves into the set of ended contacts: no copy per contact).
    fn ended(&self, lease: Lease) {
        let (contact_id, attempt) = lease.into_parts();
        let twice = match self.ended.lock().entry(contact_id) {
            Entry::Vacant(first) => {
                first.insert(attempt);
                None
            }
            Entry::Occupied(mut again) => {
                again.insert(attempt);
                Some(again.key().clone())
            }
        };
        if let Some(contact_id) = twice {
            self.ended_twice.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                contact_id = %contact_id,
                "Contact {contact_id} was given a second terminal state"
            );
        }
    }

    /// One save ended, saved or not.
    fn save_ended(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no save is running.
    async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl CallQueue {
    /// A queue in memory holding `contacts`, in order (the simulation's
    /// default and the baseline of the benchmarks).
    pub fn new(contacts: impl IntoIterator<Item = Contact>, max_deferrals: u32) -> Self {
        let contacts = contacts.into_iter();
        let expected = contacts.size_hint().0;
        let mut kept = HashSet::with_capacity_and_hasher(expected, Default::default());
        let mut rows = Vec::with_capacity(expected);
        for contact in contacts {
            let id = contact.id.clone();
            // Ids are keys: the first of a repeated id is kept, as the store keeps it.
            if kept.insert(Kept(Arc::new(contact))) {
                rows.push(NewContact {
                    id,
                    data: String::new(),
                });
            }
        }
        let ready = rows.len();
        let store = CallStore::in_memory(
            StoreSettings {
                max_deferrals,
                ..StoreSettings::default()
            },
            rows,
        );
        let queue = Self {
            kept,
            ..Self::with_store(Arc::new(store))
        };
        queue.counts.lock().ready = ready;
        // Each contact ends once: room for all, with no growing on the way.
        queue.settling.ended.lock().reserve(ready);
        queue
    }

    /// Opens the store `[queue]` names.
    pub async fn open(config: &QueueConfig) -> Result<Self, StoreError> {
        let location = StoreLocation::parse(config.url.expose())?;
        let store = CallStore::open(location, config.store_settings()).await?;
        Ok(Self::with_store(Arc::new(store)))
    }

    /// A queue over `store` (counts are read at the first
    /// [`refresh_counts`](Self::refresh_counts)).
    pub fn with_store(store: Arc<CallStore>) -> Self {
        Self {
            store,
            counts: Mutex::new(QueueCounts::default()),
            settling: Arc::default(),
            saves: OnceLock::new(),
            kept: HashSet::default(),
        }
    }

    /// The store behind the queue.
    pub fn store(&self) -> &Arc<CallStore> {
        &self.store
    }

    /// Adds the contacts the store does not hold yet (ids are keys).
    pub async fn import(&self, contacts: &[Contact]) -> Result<ImportReport, StoreError> {
        let contacts: Vec<NewContact> = contacts.iter().map(new_contact).collect();
        let report = self.store.import(&contacts).await?;
        self.refresh_counts().await;
        Ok(report)
    }

    /// The next contact to call, waiting for deferred ones to come due. `None`
    /// when the queue is closed or when every contact has ended.
    pub async fn next(&self) -> Option<QueuedContact> {
        loop {
            match self.store.next().await {
                Ok(Some(leased)) => {
                    if let Some(entry) = self.entry(leased).await {
                        return Some(entry);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!("Call store unavailable: {e}; trying again");
                    tokio::time::sleep(self.store.settings().poll_interval).await;
                }
            }
        }
    }

    /// The leased contact, or `None` (and the contact failed) if its stored
    /// data or progress cannot be read: failed, or it would come back every
    /// time its lease expired and the campaign would never end.
    async fn entry(&self, leased: Leased) -> Option<QueuedContact> {
        let id = leased.lease.contact_id();
        let contact = match self.kept.get(id) {
            Some(Kept(contact)) => Ok(Arc::clone(contact)),
            None => serde_json::from_str::<Contact>(&leased.data)
                .map(Arc::new)
                .map_err(|e| format!("stored contact unreadable: {e}")),
        };
        let read =
            contact.and_then(|contact| Ok((contact, Progress::from_saved(id, &leased.progress)?)));
        match read {
            Ok((contact, progress)) => Some(QueuedContact {
                contact,
                progress,
                deferrals: leased.deferrals,
                lease: leased.lease,
            }),
            Err(reason) => {
                tracing::error!(contact_id = %id, "Contact {id} failed: {reason}");
                let failed = self.store.fail(&leased.lease, "store", &reason).await;
                if self.settling.record(&leased.lease, failed).is_some() {
                    self.settling.ended(leased.lease);
                }
                None
            }
        }
    }

    /// Ends an in-flight contact in a terminal state: saved at once on the
    /// memory store, in the background on the others, where
    /// [`settled`](Self::settled) waits for it.
    pub async fn finish(&self, entry: QueuedContact, terminal: Terminal) {
        // Only what the save needs goes.
        let QueuedContact { lease, .. } = entry;
        // The memory store answers at once: saved in line.
        if matches!(self.store.location(), StoreLocation::Memory) {
            save_final_state(&self.store, &self.settling, lease, terminal).await;
            return;
        }
        self.settling.running.fetch_add(1, Ordering::AcqRel);
        let saves = self.saves.get_or_init(|| {
            let (saves, to_save) = mpsc::unbounded_channel();
            tokio::spawn(save_final_states(
                self.store.clone(),
                self.settling.clone(),
                to_save,
            ));
            saves
        });
        if let Err(mpsc::error::SendError((lease, _))) = saves.send((lease, terminal)) {
            // The runtime that ran the saves is gone.
            tracing::error!(
                contact_id = %lease.contact_id(),
                "Final state not saved (the contact returns when its lease expires): \
                 the task saving final states has stopped"
            );
            self.settling.save_ended();
        }
    }

    /// Waits until every final state handed to [`finish`](Self::finish) so
    /// far is saved (or its save failed).
    pub async fn settled(&self) {
        self.settling.wait_idle().await;
    }

    /// Puts an in-flight contact back until `not_before` (or until
    /// [`wake_service`](Self::wake_service) for `service`) with its progress,
    /// unless it has been deferred `max_deferrals` times already, in which
    /// case it expires.
    pub async fn defer(
        &self,
        entry: QueuedContact,
        service: &ServiceName,
        not_before: Instant,
    ) -> Deferral {
        self.put_back(entry, service, not_before, Busy::No).await
    }

    /// Puts an in-flight contact back like [`defer`](Self::defer) because
    /// `service` is busy (its limiter had no slot in time): the deferral does
    /// not count toward `max_deferrals`, so waiting its turn never expires a
    /// contact.
    pub async fn defer_busy(
        &self,
        entry: QueuedContact,
        service: &ServiceName,
        not_before: Instant,
    ) -> Deferral {
        self.put_back(entry, service, not_before, Busy::Yes).await
    }

    async fn put_back(
        &self,
        entry: QueuedContact,
        service: &ServiceName,
        not_before: Instant,
        busy: Busy,
    ) -> Deferral {
        let wait = not_before.saturating_duration_since(Instant::now());
        let progress = entry.progress.to_saved();
        let result = match busy {
            Busy::No => {
                let reason = format!("{service} unavailable");
                self.store
                    .defer(&entry.lease, service.as_str(), &reason, wait, &progress)
                    .await
            }
            Busy::Yes => {
                let reason = format!("{service} busy");
                self.store
                    .defer_busy(&entry.lease, service.as_str(), &reason, wait, &progress)
                    .await
            }
        };
        match self.settling.record(&entry.lease, result) {
            Some(callguard_store::Deferral::Expired) => {
                self.settling.ended(entry.lease);
                Deferral::Expired
            }
            Some(_) => Deferral::Requeued,
            None => Deferral::Unsaved,
        }
    }

    /// A worker's schedule of lease renewals, kept across its contacts.
    pub fn renewals(&self) -> Renewals {
        self.store.renewals()
    }

    /// Renews `lease` on `renewals` for as long as it is polled; returns
    /// only when it is lost (counted in [`taken_over`](Self::taken_over)).
    pub async fn hold(&self, lease: &Lease, renewals: &mut Renewals) -> StoreError {
        let lost = self.store.keep_alive(lease, renewals).await;
        self.settling.abandoned.fetch_add(1, Ordering::Relaxed);
        lost
    }

    /// Makes every contact deferred on `service` due now (its breaker closed).
    /// Returns how many woke.
    pub async fn wake_service(&self, service: &ServiceName) -> usize {
        match self.store.wake_service(service.as_str()).await {
            Ok(woken) => woken,
            Err(e) => {
                tracing::error!(service = %service, "Cannot wake deferred contacts: {e}");
                0
            }
        }
    }

    /// Keeps every contact deferred on `service` waiting at least `wait`
    /// more (its breaker reopened for that long). Returns how many moved.
    pub async fn postpone_service(&self, service: &ServiceName, wait: Duration) -> usize {
        match self.store.postpone_service(service.as_str(), wait).await {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(service = %service, "Cannot postpone deferred contacts: {e}");
                0
            }
        }
    }

    /// Stops handing out contacts; what is not finished stays pending.
    pub fn close(&self) {
        self.store.close();
    }

    /// Gives back the contacts this agent still holds (after shutdown), so
    /// they are pending at once rather than when their leases expire.
    pub async fn release_held(&self) -> usize {
        self.settled().await;
        match self.store.release_all().await {
            Ok(released) => released,
            Err(e) => {
                tracing::warn!(
                    "Held contacts not released (they return when their leases expire): {e}"
                );
                0
            }
        }
    }

    /// Where every contact was at the last [`refresh_counts`](Self::refresh_counts).
    pub fn counts(&self) -> QueueCounts {
        *self.counts.lock()
    }

    /// Reads where every contact is now from the store.
    pub async fn refresh_counts(&self) -> QueueCounts {
        self.settled().await;
        match self.store.counts().await {
            Ok(counts) => {
                let counts = QueueCounts::from(counts);
                *self.counts.lock() = counts;
                counts
            }
            Err(e) => {
                tracing::warn!("Cannot count contacts: {e}");
                self.counts()
            }
        }
    }

    /// The contacts in `state`.
    pub async fn list(&self, state: ContactState) -> Vec<ContactStatus> {
        self.settled().await;
        self.store.list(state).await.unwrap_or_else(|e| {
            tracing::warn!("Cannot list {state} contacts: {e}");
            Vec::new()
        })
    }

    /// How each finished contact ended, by id (failed with its reason).
    pub async fn finished(&self) -> BTreeMap<String, ContactStatus> {
        let mut finished = BTreeMap::new();
        for state in [
            ContactState::Completed,
            ContactState::Failed,
            ContactState::Expired,
        ] {
            for status in self.list(state).await {
                finished.insert(status.id.clone(), status);
            }
        }
        finished
    }

    /// Leases lost: contacts whose lease expired while their call ran (a
    /// slow agent, a store out of reach) and were taken by another worker or
    /// agent — their calls abandoned, or their state changes refused (among
    /// the saves [`settled`](Self::settled) has waited for). The contact is
    /// the new holder's: neither lost nor a second terminal state.
    pub fn taken_over(&self) -> u64 {
        self.settling.abandoned.load(Ordering::Relaxed) + self.settling.refusals().taken_over
    }

    /// Contacts ended twice through this queue (among the saves
    /// [`settled`](Self::settled) has waited for): given a second terminal
    /// state by the store, or ended again by their holder under the lease
    /// that had already ended them (the store refuses that change, but the
    /// contact was the holder's own, not taken over).
    pub fn ended_twice(&self) -> u64 {
        self.settling.ended_twice.load(Ordering::Relaxed) + self.settling.refusals().repeated
    }

    /// Contacts not finished: in flight, ready and deferred (their ids).
    pub async fn pending(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for state in [
            ContactState::InFlight,
            ContactState::Pending,
            ContactState::Deferred,
        ] {
            ids.extend(self.list(state).await.into_iter().map(|s| s.id));
        }
        ids
    }

    /// How long a worker waits before trying a store that failed again.
    pub fn poll_interval(&self) -> Duration {
        self.store.settings().poll_interval
    }
}
/// `callguard_contacts{state}` on `/metrics`: the counts of the last
/// [`refresh_counts`](CallQueue::refresh_counts), by state.
impl ContactGauge for CallQueue {
    fn contacts_by_state(&self) -> Vec<(&'static str, usize)> {
        let counts = self.counts();
        vec![
            ("ready", counts.ready),
            ("deferred", counts.deferred),
            ("in_flight", counts.in_flight),
            ("completed", counts.completed),
            ("failed", counts.failed),
            ("expired", counts.expired),
        ]
    }

    fn store_status(&self) -> Option<StoreStatus> {
        let health = self.store.health();
        Some(StoreStatus {
            up: health.unreachable_since.is_none(),
            errors: health.errors,
        })
    }
}

/// Saves the final states handed to [`CallQueue::finish`], as many at once
/// as come, until the queue is dropped.
async fn save_final_states(
    store: Arc<CallStore>,
    settling: Arc<Settling>,
    mut to_save: mpsc::UnboundedReceiver<(Lease, Terminal)>,
) {
    futures_util::stream::poll_fn(|cx| to_save.poll_recv(cx))
        .for_each_concurrent(None, |(lease, terminal)| {
            let (store, settling) = (&store, &settling);
            async move {
                save_final_state(store, settling, lease, terminal).await;
                settling.save_ended();
            }
        })
        .await;
}

/// Saves `terminal` for the contact `lease` holds, noting how it went.
async fn save_final_state(
    store: &CallStore,
    settling: &Settling,
    lease: Lease,
    terminal: Terminal,
) {
    let result = match &terminal {
        Terminal::Completed => store.complete(&lease).await,
        Terminal::Failed { service, reason } => store.fail(&lease, service, reason).await,
    };
    if settling.record(&lease, result).is_some() {
        settling.ended(lease);
    }
}

fn new_contact(contact: &Contact) -> NewContact {
    NewContact {
        id: contact.id.clone(),
        // A struct of strings always serializes.
        data: serde_json::to_string(contact).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str) -> Contact {
        Contact {
            id: id.into(),
            name: format!("Name {id}"),
            phone: "+1-555-0100".into(),
            extra: [("company".to_owned(), "Acme".to_owned())].into(),
        }
    }

    fn tts() -> ServiceName {
        ServiceName::new("elevenlabs").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn hands_out_contacts_as_they_were_imported() {
        let queue = CallQueue::new([contact("a"), contact("b")], 5);
        assert_eq!(queue.counts().ready, 2);
        let a = queue.next().await.unwrap();
        assert_eq!(*a.contact, contact("a"));
        let b = queue.next().await.unwrap();
        queue.finish(a, Terminal::Completed).await;
        queue
            .finish(
                b,
                Terminal::Failed {
                    service: "crm".into(),
                    reason: "rejected".into(),
                },
            )
            .await;
        assert!(queue.next().await.is_none());
        let counts = queue.refresh_counts().await;
        assert_eq!((counts.completed, counts.failed), (1, 1));
        let finished = queue.finished().await;
        assert_eq!(finished["b"].last_error.as_deref(), Some("rejected"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_of_a_repeated_id_goes_out_and_contacts_imported_later_too() {
        let again = Contact {
            name: "Someone else".into(),
            ..contact("a")
        };
        let queue = CallQueue::new([contact("a"), again, contact("b")], 5);
        assert_eq!(queue.counts().ready, 2);
        // Kept as JSON, as every other store's contacts are.
        let report = queue.import(&[contact("c"), contact("b")]).await.unwrap();
        assert_eq!((report.added, report.existing), (1, 1));
        let mut handed_out = Vec::new();
        while let Some(entry) = queue.next().await {
            handed_out.push(Contact::clone(&entry.contact));
            queue.finish(entry, Terminal::Completed).await;
        }
        assert_eq!(handed_out, [contact("a"), contact("b"), contact("c")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferral_keeps_progress_and_the_crm_record() {
        let queue = CallQueue::new([contact("a")], 5);
        let start = Instant::now();
        let mut a = queue.next().await.unwrap();
        let record = CallRecord::new(
            &a.contact,
            callguard_clients::CallOutcome::Completed,
            std::time::SystemTime::now(),
            std::time::SystemTime::now(),
        )
        .with_script("Hello");
        a.progress = Progress {
            script: Some("Hello".into()),
            audio_bytes: Some(12),
            crm_record: Some(record.clone()),
        };
        let kept = a.progress.clone();
        let deferral = queue
            .defer(a, &tts(), start + Duration::from_secs(10))
            .await;
        assert_eq!(deferral, Deferral::Requeued);
        let again = queue.next().await.unwrap();
        // Not-before times are whole milliseconds, rounded up.
        let waited = Instant::now() - start;
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_millis(10_001),
            "{waited:?}"
        );
        assert_eq!(again.deferrals, 1);
        assert_eq!(again.progress.script, kept.script);
        let json = |r: &CallRecord| serde_json::to_value(r).unwrap();
        assert_eq!(
            again.progress.crm_record.as_ref().map(json),
            Some(json(&record)),
            "the same record, to the millisecond"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_contact_whose_saved_progress_cannot_be_read_fails_and_the_rest_go_out() {
        let queue = CallQueue::new(["a", "b", "c", "d", "e"].map(contact), 5);
        // Saved behind the queue's back, as a damaged file or a hand edit
        // would: an older store's empty default; not JSON, a field of the
        // wrong type, not an object; a record that no longer reads.
        let planted = [
            ("a", "{}"),
            ("b", "{not json"),
            ("c", r#"{"audio_bytes":"many"}"#),
            ("d", "null"),
            ("e", r#"{"script":"Hi","crm_record":{"unknown":1}}"#),
        ];
        let store = queue.store();
        let mut held = Vec::new();
        while let Some(leased) = store.try_lease().await.unwrap() {
            held.push(leased.lease);
        }
        assert_eq!(held.len(), planted.len());
        for lease in &held {
            let (_, text) = planted
                .iter()
                .find(|(id, _)| *id == lease.contact_id())
                .unwrap();
            store.save_progress(lease, text).await.unwrap();
            store.release(lease).await.unwrap();
        }

        let mut handed_out = Vec::new();
        while let Some(entry) = queue.next().await {
            handed_out.push((entry.contact.id.clone(), entry.progress.clone()));
            queue.finish(entry, Terminal::Completed).await;
        }
        let script_only = Progress {
            script: Some("Hi".into()),
            ..Progress::default()
        };
        assert_eq!(
            handed_out,
            [
                ("a".to_owned(), Progress::default()),
                ("e".to_owned(), script_only)
            ],
            "the record is built again"
        );
        let failed = queue.list(ContactState::Failed).await;
        let ids: Vec<&str> = failed.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d"]);
        for contact in &failed {
            let reason = contact.last_error.as_deref().unwrap_or_default();
            assert!(
                reason.starts_with("stored progress unreadable: "),
                "{}: {reason}",
                contact.id
            );
            assert_eq!(contact.service.as_deref(), Some("store"));
        }
        let counts = queue.refresh_counts().await;
        assert_eq!((counts.completed, counts.failed), (2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_breaker_wakes_its_deferred_contacts_early() {
        let queue = Arc::new(CallQueue::new([contact("a")], 5));
        let a = queue.next().await.unwrap();
        queue
            .defer(a, &tts(), Instant::now() + Duration::from_secs(60))
            .await;
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.map(|e| e.contact.id.clone()) }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(queue.wake_service(&tts()).await, 1);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_deferrals_expire() {
        let queue = CallQueue::new([contact("a")], 1);
        let entry = queue.next().await.unwrap();
        assert_eq!(
            queue.defer(entry, &tts(), Instant::now()).await,
            Deferral::Requeued
        );
        let entry = queue.next().await.unwrap();
        assert_eq!(
            queue.defer(entry, &tts(), Instant::now()).await,
            Deferral::Expired
        );
        assert!(queue.next().await.is_none());
        assert_eq!(queue.refresh_counts().await.expired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_keeps_the_rest_pending() {
        let queue = CallQueue::new([contact("a"), contact("b"), contact("c")], 5);
        let a = queue.next().await.unwrap();
        queue
            .defer(a, &tts(), Instant::now() + Duration::from_secs(5))
            .await;
        let _b_never_finishes = queue.next().await.unwrap();
        queue.close();
        assert!(queue.next().await.is_none());
        assert_eq!(queue.pending().await, ["b", "c", "a"]);
        assert_eq!(queue.release_held().await, 1);
        assert_eq!(queue.refresh_counts().await.ready, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_terminal_state_is_refused_and_counted() {
        let queue = CallQueue::new([contact("a")], 5);
        let a = queue.next().await.unwrap();
        let copy = a.clone();
        queue.finish(a, Terminal::Completed).await;
        // Finished twice: the second is refused, the lease no longer held —
        // by the holder's own first end, so a duplicate, not a take-over.
        queue.finish(copy, Terminal::Completed).await;
        queue.settled().await;
        assert_eq!((queue.ended_twice(), queue.taken_over()), (1, 0));
        assert_eq!(queue.refresh_counts().await.completed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_refused_because_another_worker_took_the_contact_is_a_take_over() {
        let queue = CallQueue::new([contact("a")], 5);
        let slow = queue.next().await.unwrap();
        // Its lease lost (here given back), another worker leases the
        // contact and ends it; the slow worker's end is refused.
        queue.store().release(slow.lease()).await.unwrap();
        let other = queue.next().await.unwrap();
        queue.finish(other, Terminal::Completed).await;
        queue.finish(slow, Terminal::Completed).await;
        queue.settled().await;
        assert_eq!((queue.ended_twice(), queue.taken_over()), (0, 1));
        assert_eq!(queue.refresh_counts().await.completed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_schedule_of_renewals_holds_each_contact_a_worker_takes() {
        let queue = CallQueue::new([contact("a"), contact("b")], 5);
        let mut renewals = queue.renewals();
        let mut call = async |held: Duration| {
            let entry = queue.next().await.unwrap();
            tokio::select! {
                () = tokio::time::sleep(held) => {}
                lost = queue.hold(entry.lease(), &mut renewals) => panic!("lost: {lost}"),
            }
            entry
        };
        let a = call(Duration::from_secs(5)).await;
        queue.finish(a, Terminal::Completed).await;
        // Taken 5 s into the schedule, held 40 s: past its lease of 30 s.
        let b = call(Duration::from_secs(40)).await;
        assert!(
            queue.store().try_lease().await.unwrap().is_none(),
            "b's lease was renewed on the schedule a's call left"
        );
        queue.finish(b, Terminal::Completed).await;
        assert_eq!(queue.refresh_counts().await.completed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lost_while_the_call_runs_is_counted_as_taken_over() {
        let queue = CallQueue::new([contact("a")], 5);
        let a = queue.next().await.unwrap();
        // No longer this call's: here given back to the queue.
        queue.store().release(a.lease()).await.unwrap();
        let lost = queue.hold(a.lease(), &mut queue.renewals()).await;
        assert!(matches!(lost, StoreError::LeaseLost { .. }), "{lost}");
        assert_eq!(queue.taken_over(), 1);
    }
}
