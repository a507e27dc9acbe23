//! callguard's call store: every contact of a campaign with its state
//! (pending, in flight under a lease, deferred until a time, completed, failed
//! with a reason, expired), its attempts, last error and resume progress —
//! the holder's own text, which the store keeps with the contact and never
//! reads, so it knows contacts, leases and states and nothing of the calls.
//!
//! One [`CallStore`] fronts three backends with the same rules: in memory (for
//! simulations and as a baseline), SQLite (one file, the default of
//! `callguard run`) and PostgreSQL (one queue shared by several agents). A
//! worker takes a contact with a lease ([`CallStore::next`]), renews the lease
//! while the call runs ([`CallStore::keep_alive`], on the worker's own
//! [`Renewals`]) and settles it under that
//! lease; a contact whose lease expires (its agent died) is due again, and a
//! change under a lease that was lost is refused, so no contact gets two
//! terminal states.
//!
//! Times that must survive a restart are wall-clock unix milliseconds. The
//! store reads them from a clock anchored to the wall clock when it opens and
//! advanced by `tokio::time`, so tests on a paused clock move stored times too.

mod completions;
mod health;
mod memory;
mod model;
mod postgres;
mod sql;
mod sqlite;

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;

pub use health::StoreHealth;
pub use model::{
    ContactState, ContactStatus, Counts, Deferral, ImportReport, Lease, Leased, NewContact,
    StoreError,
};

use model::{Millis, Outcome, from_millis, to_millis};

/// Where the contacts are kept.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// In this process only (`memory:`).
    Memory,
    /// A SQLite file (`sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`); the URL
    /// may hold a password, so it never prints.
    Postgres(String),
}

impl StoreLocation {
    /// Reads `memory:`, `sqlite:PATH` or a `postgres://` URL.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url == "memory:" {
            Ok(Self::Memory)
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Location("sqlite: needs a file path".into()));
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Bad TLS parameters are refused here, before anything connects.
            postgres::ConnectOptions::parse(url)?;
            Ok(Self::Postgres(url.to_owned()))
        } else {
            Err(StoreError::Location(
                "expected memory:, sqlite:PATH or postgres://…".into(),
            ))
        }
    }
}

/// Shows the location without a password.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory:"),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// `postgres://user:secret@host/db?password=x` → `postgres://user:[redacted]@host/db`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{user}:[redacted]@{host}")
        }
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}/{path}")
}

/// How the store leases and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// How long a lease lasts unless renewed; a dead agent's contacts return
    /// to the queue this long after its last renewal.
    pub lease: Duration,
    /// How often a shared (PostgreSQL) queue is checked for other agents'
    /// changes while nothing is due.
    pub poll_interval: Duration,
    /// Deferrals a contact may have; the next one expires it.
    pub max_deferrals: u32,
    /// The table (SQLite and PostgreSQL): one campaign per table.
    pub table: String,
    /// Most contacts one look at the queue leases: the ones not handed out
    /// at once wait (leased) for the next [`CallStore::next`] calls, so a
    /// store serving several workers leases once per batch rather than once
    /// per contact. 1 leases only what is asked for.
    pub lease_batch: usize,
    /// How long a final state (completed, failed, deferred, released) may
    /// wait to share the database's work with other changes — a SQLite
    /// transaction, a PostgreSQL batch of completions — before it goes on
    /// its own. Zero (the default) adds no wait; a caller that saves final
    /// states in the background gains fewer, larger writes from a little.
    pub settle_wait: Duration,
    /// Most connections a PostgreSQL store keeps open. Statements share
    /// them, pipelined; one (the default) costs the server least — each
    /// more spreads the same statements over more server processes.
    pub pool_size: usize,
    /// How long connecting to PostgreSQL (TCP, TLS, authentication) may take.
    pub connect_timeout: Duration,
}

impl StoreSettings {
    /// The lease batch, at least one contact.
    fn lease_batch_size(&self) -> usize {
        self.lease_batch.max(1)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_deferrals: 5,
            table: "callguard_contacts".into(),
            lease_batch: 1,
            settle_wait: Duration::ZERO,
            pool_size: 1,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

enum Backend {
    Memory(memory::MemoryBackend),
    Sqlite(sqlite::SqliteBackend),
    Postgres(Box<postgres::PostgresBackend>),
}

/// Calls the same method on whichever backend the store has. The SQL
/// backends' futures are boxed: their state is kilobytes (a statement on its
/// connection), and unboxed it would be carried — and copied as it moves — by
/// every future of the store and of its callers, on the memory backend too;
/// one allocation per statement is nothing beside its round trip.
macro_rules! dispatch {
    ($store:expr, $method:ident($($arg:expr),*)) => {
        match &$store.backend {
            Backend::Memory(b) => b.$method($($arg),*).await,
            Backend::Sqlite(b) => Box::pin(b.$method($($arg),*)).await,
            Backend::Postgres(b) => Box::pin(b.$method($($arg),*)).await,
        }
    };
}

/// When one holder — a worker, taking one contact after another — renews
/// the lease it holds: every third of a lease, on one timer kept for as long
/// as the holder, rather than a timer made and torn down per contact. A lease
/// taken between two ticks is renewed at the next, a third of a lease or less
/// after it was taken; one taken after the holder missed a tick (it was
/// waiting for a contact) is renewed at once.
#[derive(Debug)]
pub struct Renewals(tokio::time::Interval);

/// Wall-clock time read through `tokio::time`.
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn new() -> Self {
        Self::ahead(Duration::ZERO)
    }

    /// A clock reading `by` later than the wall clock.
    fn ahead(by: Duration) -> Self {
        Self {
            wall: SystemTime::now() + by,
            mono: Instant::now(),
        }
    }

    fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }

    fn now_millis(&self) -> Millis {
        to_millis(self.now())
    }

    /// The first whole millisecond at or after `wait` from now. Rounding up
    /// matters: a contact deferred until an OPEN breaker admits calls again
    /// must not wake a fraction of a millisecond early, only to be turned
    /// away — and deferred — once more.
    fn not_before(&self, wait: Duration) -> Millis {
        let at = (self.now() + wait)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let millis = at.as_nanos().div_ceil(1_000_000);
        Millis::try_from(millis).unwrap_or(Millis::MAX)
    }

    /// The `tokio` instant at which the clock reads `millis`.
    fn instant_at(&self, millis: Millis) -> Instant {
        let at = from_millis(millis);
        match at.duration_since(self.wall) {
            Ok(after) => self.mono + after,
            Err(before) => self
                .mono
                .checked_sub(before.duration())
                .unwrap_or(self.mono),
        }
    }
}

/// Shortest wait of [`CallStore::next`] between two looks, so a contact due
/// now but taken by a racing worker cannot make it spin.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// The call store: contacts, leases and states behind one interface.
pub struct CallStore {
    backend: Backend,
    location: StoreLocation,
    settings: StoreSettings,
    owner: String,
    clock: Clock,
    changed: Notify,
    closed: AtomicBool,
    /// Contacts leased ahead (see [`StoreSettings::lease_batch`]), in
    /// order, with when their lease last started.
    leased_ahead: Mutex<VecDeque<(Leased, Instant)>>,
    /// Set while a batch is leased ahead in the background.
    leasing_ahead: AtomicBool,
    /// Held while a batch is leased (with a lease batch above one), so
    /// batches are leased one at a time and [`CallStore::release_all`] can
    /// wait for what a background lease takes.
    leasing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for CallStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStore")
            .field("location", &self.location)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl CallStore {
    /// Opens (creating if needed) the store at `location`.
    pub async fn open(
        location: StoreLocation,
        settings: StoreSettings,
    ) -> Result<Self, StoreError> {
        let backend = match &location {
            StoreLocation::Memory => {
                Backend::Memory(memory::MemoryBackend::new(settings.lease_batch_size()))
            }
            StoreLocation::Sqlite(path) => {
                Backend::Sqlite(sqlite::SqliteBackend::open(path, &settings).await?)
            }
            StoreLocation::Postgres(url) => Backend::Postgres(Box::new(
                postgres::PostgresBackend::connect(url, &settings).await?,
            )),
        };
        Ok(Self::with_backend(backend, location, settings))
    }

    /// A store in this process's memory.
    pub fn memory(settings: StoreSettings) -> Self {
        Self::in_memory(settings, [])
    }

    /// A store in this process's memory holding `contacts` (imported as by
    /// [`import`](Self::import)).
    pub fn in_memory(
        settings: StoreSettings,
        contacts: impl IntoIterator<Item = NewContact>,
    ) -> Self {
        let backend = memory::MemoryBackend::new(settings.lease_batch_size());
        backend.import_now(contacts);
        Self::with_backend(Backend::Memory(backend), StoreLocation::Memory, settings)
    }

    fn with_backend(backend: Backend, location: StoreLocation, settings: StoreSettings) -> Self {
        Self {
            backend,
            location,
            settings,
            owner: default_owner(),
            clock: Clock::new(),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
            leased_ahead: Mutex::default(),
            leasing_ahead: AtomicBool::new(false),
            leasing: tokio::sync::Mutex::const_new(()),
        }
    }

    /// Names this store's leases `owner` instead of `host:pid:random`.
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Makes the store's clock read `by` ahead of the wall clock, as on a
    /// host whose clock runs fast (to test that skew does no harm).
    #[must_use]
    pub fn with_clock_ahead(mut self, by: Duration) -> Self {
        self.clock = Clock::ahead(by);
        self
    }

    /// Whether the database answers: since when it has been out of reach,
    /// and how many statements failed (memory and SQLite are always reached).
    pub fn health(&self) -> StoreHealth {
        match &self.backend {
            Backend::Postgres(b) => b.health(),
            Backend::Memory(_) | Backend::Sqlite(_) => StoreHealth {
                unreachable_since: None,
                errors: 0,
            },
        }
    }

    /// Where the contacts are kept.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// The settings the store runs with.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The name this store's leases carry.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether other processes may change the queue (so waiting polls).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Whether the contacts outlive the process.
    pub fn is_durable(&self) -> bool {
        !matches!(self.backend, Backend::Memory(_))
    }

    /// The store's wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Wakes every waiting [`next`](Self::next), with `notify_waiters`:
    /// `next` relies on it reaching a `Notified` that was never polled.
    fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Adds the contacts whose ids the store does not hold yet, in order;
    /// the others are left as they are.
    pub async fn import(&self, contacts: &[NewContact]) -> Result<ImportReport, StoreError> {
        let now = self.clock.now_millis();
        let report = dispatch!(self, import(contacts, now))?;
        self.changed();
        Ok(report)
    }

    /// Leases the next due contact, if one is due now: one leased ahead by
    /// an earlier look, or the first of a new batch. Once fewer than a batch
    /// are left leased ahead, the next batch is leased in the background,
    /// so a worker seldom waits for a lease; one that does (with a lease
    /// batch above one) waits for the lease already on its way rather than
    /// sending another.
    pub async fn try_lease(self: &Arc<Self>) -> Result<Option<Leased>, StoreError> {
        // A batch of one leaves nothing leased ahead: nothing to look at.
        let batched = self.settings.lease_batch_size() > 1;
        loop {
            if batched && let Some(leased) = self.take_leased_ahead_live().await? {
                return Ok(Some(leased));
            }
            // Batches are leased one at a time: a worker finding none left
            // waits for the batch being leased, if any, and takes from it.
            let leasing = if batched {
                Some(self.leasing.lock().await)
            } else {
                None
            };
            if leasing.is_some() && !self.leased_ahead.lock().is_empty() {
                continue;
            }
            let mut batch = self.lease_batch().await?.into_iter();
            let first = batch.next();
            self.keep_ahead(batch);
            return Ok(first);
        }
    }

    /// The first contact leased ahead whose lease still holds — renewed if
    /// it waited long enough to need it, as a running call's lease would
    /// have been; skipped if another agent has it since. Starts leasing the
    /// next batch once fewer than a batch are left.
    async fn take_leased_ahead_live(self: &Arc<Self>) -> Result<Option<Leased>, StoreError> {
        while let Some((leased, since, left)) = self.take_leased_ahead() {
            if left < self.settings.lease_batch_size() {
                self.lease_ahead();
            }
            if since.elapsed() < self.settings.lease / 3 {
                return Ok(Some(leased));
            }
            match self.renew(&leased.lease).await {
                Ok(()) => return Ok(Some(leased)),
                Err(StoreError::LeaseLost { .. }) => {}
                Err(error) => {
                    self.leased_ahead.lock().push_front((leased, since));
                    return Err(error);
                }
            }
        }
        Ok(None)
    }

    /// Leases a batch of due contacts, in import order.
    async fn lease_batch(&self) -> Result<Vec<Leased>, StoreError> {
        let now = self.clock.now_millis();
        let until = now.saturating_add(duration_millis(self.settings.lease));
        dispatch!(self, lease(&self.owner, now, until))
    }

    /// Leases the next batch in the background — one at a time, none once
    /// the store is closed — and adds it to the contacts leased ahead; a
    /// failure only means the next look leases for itself.
    fn lease_ahead(self: &Arc<Self>) {
        if self.settings.lease_batch_size() < 2
            || self.closed.load(Ordering::Acquire)
            || self.leasing_ahead.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let leasing = store.leasing.lock().await;
            // A worker's own lease may have filled the batch meanwhile.
            let wanted = store.leased_ahead.lock().len() < store.settings.lease_batch_size();
            if wanted && !store.closed.load(Ordering::Acquire) {
                match store.lease_batch().await {
                    Ok(batch) if !batch.is_empty() => {
                        store.keep_ahead(batch.into_iter());
                        store.changed();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("Leasing ahead failed (leased when needed): {e}"),
                }
            }
            drop(leasing);
            store.leasing_ahead.store(false, Ordering::Release);
        });
    }

    /// Keeps `batch`, just leased, to hand out later; an empty one costs no
    /// lock (a batch of one leaves nothing after the contact taken at once).
    fn keep_ahead(&self, batch: impl ExactSizeIterator<Item = Leased>) {
        if batch.len() == 0 {
            return;
        }
        let since = Instant::now();
        self.leased_ahead
            .lock()
            .extend(batch.map(|leased| (leased, since)));
    }

    /// The first contact leased ahead, and how many are left; the lock is
    /// released on return, so it is never held across a renewal.
    fn take_leased_ahead(&self) -> Option<(Leased, Instant, usize)> {
        let mut ahead = self.leased_ahead.lock();
        let (leased, since) = ahead.pop_front()?;
        Some((leased, since, ahead.len()))
    }

    /// Leases the next contact, waiting for one to come due: woken by this
    /// store's own changes, at the earliest due time (a deferral's not-before
    /// or a lease's expiry), and — for a shared queue — every poll interval.
    /// `None` once every contact has ended, or when the store is closed.
    pub async fn next(self: &Arc<Self>) -> Result<Option<Leased>, StoreError> {
        loop {
            // Sees every change from here on: `notify_waiters` wakes a
            // `Notified` made before it even if never polled, so a contact
            // found due at once costs no waiter registered and removed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            if self.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            if let Some(leased) = self.try_lease().await? {
                return Ok(Some(leased));
            }
            let Some(due) = dispatch!(self, next_due(self.clock.now_millis()))? else {
                return Ok(None);
            };
            let now = Instant::now();
            let mut wake = self.clock.instant_at(due).max(now + MIN_WAIT);
            if self.is_shared() {
                wake = wake.min(now + self.settings.poll_interval);
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Extends the lease to a full lease period from now.
    pub async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let until = self
            .clock
            .now_millis()
            .saturating_add(duration_millis(self.settings.lease));
        dispatch!(self, renew(&self.owner, lease, until))
    }

    /// A holder's schedule of renewals, for [`keep_alive`](Self::keep_alive):
    /// every third of a lease from now on.
    pub fn renewals(&self) -> Renewals {
        let every = self.settings.lease / 3;
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Renewals(ticks)
    }

    /// Renews `lease` at each of `renewals`' ticks for as long as it is
    /// polled; returns only when the lease is lost. Run it beside the call.
    pub async fn keep_alive(&self, lease: &Lease, renewals: &mut Renewals) -> StoreError {
        loop {
            renewals.0.tick().await;
            match self.renew(lease).await {
                Ok(()) => {}
                Err(lost @ StoreError::LeaseLost { .. }) => return lost,
                Err(error) => tracing::warn!(
                    contact_id = %lease.contact_id,
                    "Cannot renew the lease (will try again): {error}"
                ),
            }
        }
    }

    /// Keeps `progress` for the held contact, so that the pass that takes it
    /// next — after a crash, or in another agent — resumes with it.
    pub async fn save_progress(&self, lease: &Lease, progress: &str) -> Result<(), StoreError> {
        dispatch!(self, save_progress(&self.owner, lease, progress))
    }

    async fn settle(
        &self,
        lease: &Lease,
        outcome: Outcome<'_>,
    ) -> Result<ContactState, StoreError> {
        let now = self.clock.now_millis();
        let state = dispatch!(self, settle(&self.owner, lease, &outcome, now))?;
        self.changed();
        Ok(state)
    }

    /// Ends the held contact as completed.
    pub async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
        self.settle(lease, Outcome::Completed).await.map(drop)
    }

    /// Ends the held contact as failed at `service` because of `reason`.
    pub async fn fail(&self, lease: &Lease, service: &str, reason: &str) -> Result<(), StoreError> {
        self.settle(lease, Outcome::Failed { service, reason })
            .await
            .map(drop)
    }

    /// Puts the held contact back until `wait` from now (or until
    /// [`wake_service`](Self::wake_service) for `service`) with its progress,
    /// unless it was deferred `max_deferrals` times already: then it expires.
    pub async fn defer(
        &self,
        lease: &Lease,
        service: &str,
        reason: &str,
        wait: Duration,
        progress: &str,
    ) -> Result<Deferral, StoreError> {
        self.put_back(lease, service, reason, wait, progress, true)
            .await
    }

    /// Puts the held contact back like [`defer`](Self::defer), but without
    /// counting it toward `max_deferrals`, so it never expires for it: its
    /// service is up and busy (the agent's limiter had no slot for the call
    /// in time), and the contact only waits its turn.
    pub async fn defer_busy(
        &self,
        lease: &Lease,
        service: &str,
        reason: &str,
        wait: Duration,
        progress: &str,
    ) -> Result<Deferral, StoreError> {
        self.put_back(lease, service, reason, wait, progress, false)
            .await
    }

    async fn put_back(
        &self,
        lease: &Lease,
        service: &str,
        reason: &str,
        wait: Duration,
        progress: &str,
        counted: bool,
    ) -> Result<Deferral, StoreError> {
        let not_before = self.clock.not_before(wait);
        let outcome = Outcome::Deferred {
            service,
            reason,
            not_before,
            wait,
            max_deferrals: self.settings.max_deferrals,
            counted: u32::from(counted),
            progress,
        };
        Ok(match self.settle(lease, outcome).await? {
            ContactState::Expired => Deferral::Expired,
            _ => Deferral::Requeued,
        })
    }

    /// Gives the held contact back to the queue as pending, due now.
    pub async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.settle(lease, Outcome::Released).await.map(drop)
    }

    /// Gives back every contact this store holds (at shutdown), so none waits
    /// for its lease to expire. Returns how many.
    pub async fn release_all(&self) -> Result<usize, StoreError> {
        // What a background lease running now takes is released too.
        let _leasing = self.leasing.lock().await;
        self.leased_ahead.lock().clear();
        let now = self.clock.now_millis();
        let released = dispatch!(self, release_owner(&self.owner, now))?;
        self.changed();
        Ok(released)
    }

    /// Makes every contact deferred on `service` pending now (its breaker
    /// closed). Returns how many woke.
    pub async fn wake_service(&self, service: &str) -> Result<usize, StoreError> {
        let now = self.clock.now_millis();
        let woken = dispatch!(self, wake_service(service, now))?;
        if woken > 0 {
            self.changed();
        }
        Ok(woken)
    }

    /// Moves the not-before time of every contact deferred on `service` to
    /// at least `wait` from now (its breaker reopened until then), so none
    /// wakes only to be turned away again. Returns how many moved.
    pub async fn postpone_service(
        &self,
        service: &str,
        wait: Duration,
    ) -> Result<usize, StoreError> {
        let until = self.clock.not_before(wait);
        dispatch!(self, postpone_service(service, until, wait))
    }

    /// Stops handing out contacts: [`next`](Self::next) answers `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed();
    }

    /// Contacts by state.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        dispatch!(self, counts())
    }

    /// The contacts in `state`, in import order.
    pub async fn list(&self, state: ContactState) -> Result<Vec<ContactStatus>, StoreError> {
        dispatch!(self, list(Some(state)))
    }

    /// Every contact with its state, in import order, read at one moment
    /// (one statement): while other agents work, a contact moving between two
    /// states is seen in one of them, never in both or neither.
    pub async fn list_all(&self) -> Result<Vec<ContactStatus>, StoreError> {
        dispatch!(self, list(None))
    }

    /// Puts every `failed` or `expired` contact back as pending with its
    /// deferrals reset (progress, attempts and last error kept). Returns how many.
    pub async fn requeue(&self, state: ContactState) -> Result<usize, StoreError> {
        if !matches!(state, ContactState::Failed | ContactState::Expired) {
            return Err(StoreError::Unsupported(format!(
                "only failed or expired contacts can be requeued, not {state}"
            )));
        }
        let now = self.clock.now_millis();
        let requeued = dispatch!(self, requeue(state, now))?;
        self.changed();
        Ok(requeued)
    }
}

fn duration_millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

/// `host:pid:random`: unique per process, readable in `report`.
fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into());
    format!("{host}:{}:{:04x}", std::process::id(), fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_never_print_a_password() {
        assert_eq!(
            StoreLocation::parse("memory:").unwrap(),
            StoreLocation::Memory
        );
        assert_eq!(
            StoreLocation::parse("sqlite:data/calls.db").unwrap(),
            StoreLocation::Sqlite("data/calls.db".into())
        );
        assert_eq!(
            StoreLocation::parse("sqlite:///var/calls.db").unwrap(),
            StoreLocation::Sqlite("/var/calls.db".into())
        );
        assert!(StoreLocation::parse("sqlite:").is_err());
        assert!(StoreLocation::parse("mysql://x").is_err());
        let pg = StoreLocation::parse("postgres://agent:hunter2@db:5432/calls?password=hunter2")
            .unwrap();
        let shown = format!("{pg} {pg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://agent:[redacted]@db:5432/calls"),
            "{shown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = Clock::new();
        let start = clock.now_millis();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_millis() - start, 90_000);
        let ahead = clock.instant_at(start + 120_000) - Instant::now();
        // Stored times are whole milliseconds.
        assert!(
            ahead <= Duration::from_secs(30) && ahead > Duration::from_millis(29_998),
            "{ahead:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn not_before_never_comes_early() {
        let clock = Clock::new();
        for micros in [0, 1, 999, 1_000, 1_500, 10_000_001] {
            let wait = Duration::from_micros(micros);
            let due = from_millis(clock.not_before(wait));
            let exact = clock.now() + wait;
            let late = due
                .duration_since(exact)
                .expect("not before the exact time");
            assert!(
                late < Duration::from_millis(1),
                "{micros} µs: {late:?} late"
            );
        }
    }
}
