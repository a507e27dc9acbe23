//! The store's vocabulary: contact states, leases, counts and errors, shared
//! by every backend.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds: how times that must survive a restart are kept.
pub(crate) type Millis = i64;

/// `time` as unix milliseconds (0 before the epoch, saturating far ahead).
pub(crate) fn to_millis(time: SystemTime) -> Millis {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| {
        Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
    })
}

/// Unix milliseconds as a `SystemTime`.
pub(crate) fn from_millis(millis: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Where a contact is. Every contact is in exactly one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ContactState {
    /// Waiting to be called.
    Pending,
    /// Leased by an agent, which is calling it now.
    InFlight,
    /// Waiting for a not-before time (or for its service's breaker to close).
    Deferred,
    /// Every stage succeeded (terminal).
    Completed,
    /// A permanent error ended it (terminal).
    Failed,
    /// Deferred more than `max_deferrals` times (terminal).
    Expired,
}

impl ContactState {
    /// Every state, unfinished ones first.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::InFlight,
        Self::Deferred,
        Self::Completed,
        Self::Failed,
        Self::Expired,
    ];

    /// The name kept in the database and shown to people (`in_flight`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Deferred => "deferred",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Whether the contact has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Expired)
    }
}

impl fmt::Display for ContactState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContactState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown contact state {s:?}"))
    }
}

/// A contact to import: its id (the key) and its data (JSON, opaque to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    /// Unique within the store: importing the same id again changes nothing.
    pub id: String,
    /// The contact as the agent reads it back.
    pub data: String,
}

/// The right to work on one contact, held until the lease's expiry (renewed
/// while the call runs). Every state change names the lease; a change under a
/// lease that has expired and been taken by someone else is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub(crate) contact_id: String,
    pub(crate) attempt: u32,
}

impl Lease {
    /// The leased contact's id.
    pub fn contact_id(&self) -> &str {
        &self.contact_id
    }

    /// Which lease of the contact this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The contact's id and the attempt, taken apart without a copy.
    pub fn into_parts(self) -> (String, u32) {
        (self.contact_id, self.attempt)
    }
}

/// A contact handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    /// The lease to settle it under.
    pub lease: Lease,
    /// The contact's data as imported.
    pub data: String,
    /// How often it was deferred so far.
    pub deferrals: u32,
    /// The holder's resume state as last saved with the contact (empty
    /// until one is): text the store keeps and never reads.
    pub progress: String,
}

/// What became of a deferral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Deferral {
    /// Back in the queue until its not-before time (or its breaker closes).
    Requeued,
    /// Deferred too often: the contact expired.
    Expired,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Contacts new to the store.
    pub added: usize,
    /// Contacts whose id the store already held (left as they were).
    pub existing: usize,
}

/// Contacts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Waiting to be called.
    pub pending: usize,
    /// Being called (leased).
    pub in_flight: usize,
    /// Waiting for a not-before time.
    pub deferred: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended failed.
    pub failed: usize,
    /// Ended expired.
    pub expired: usize,
}

impl Counts {
    /// The count of one state.
    pub fn get(&self, state: ContactState) -> usize {
        match state {
            ContactState::Pending => self.pending,
            ContactState::InFlight => self.in_flight,
            ContactState::Deferred => self.deferred,
            ContactState::Completed => self.completed,
            ContactState::Failed => self.failed,
            ContactState::Expired => self.expired,
        }
    }

    pub(crate) fn add(&mut self, state: ContactState, n: usize) {
        let slot = match state {
            ContactState::Pending => &mut self.pending,
            ContactState::InFlight => &mut self.in_flight,
            ContactState::Deferred => &mut self.deferred,
            ContactState::Completed => &mut self.completed,
            ContactState::Failed => &mut self.failed,
            ContactState::Expired => &mut self.expired,
        };
        *slot += n;
    }

    /// Contacts in the store.
    pub fn total(&self) -> usize {
        ContactState::ALL.into_iter().map(|s| self.get(s)).sum()
    }

    /// Contacts not yet in a terminal state.
    pub fn unfinished(&self) -> usize {
        self.pending + self.in_flight + self.deferred
    }
}

/// One contact's record, as `report` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContactStatus {
    /// The contact's id.
    pub id: String,
    /// Where it is.
    pub state: ContactState,
    /// Leases taken so far (calls started).
    pub attempts: u32,
    /// Deferrals so far.
    pub deferrals: u32,
    /// The service it waits for, failed at or expired on.
    pub service: Option<String>,
    /// The last error seen (the failure's reason for a failed contact).
    pub last_error: Option<String>,
    /// The agent holding it, while in flight.
    pub lease_owner: Option<String>,
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("{backend} store: {message}")]
    Database {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What the database said.
        message: String,
    },
    /// The database could not be reached, or the connection broke while a
    /// statement ran: whether it took effect is unknown.
    #[error("{backend} store unreachable: {message}")]
    Unavailable {
        /// `postgres`.
        backend: &'static str,
        /// Why.
        message: String,
    },
    /// A setting of the store (a URL parameter) breaks a rule.
    #[error(transparent)]
    Invalid(#[from] callguard_core::ValidationError),
    /// The contact's lease expired and it was taken by another worker or
    /// agent, or it was already settled: the change was not made.
    #[error("contact {contact_id}: lease lost (it expired or the contact was settled elsewhere)")]
    LeaseLost {
        /// The contact.
        contact_id: String,
    },
    /// The store's location cannot be used.
    #[error("invalid store location: {0}")]
    Location(String),
    /// A stored value cannot be read back.
    #[error("contact {contact_id}: corrupt record: {message}")]
    Corrupt {
        /// The contact.
        contact_id: String,
        /// What is wrong.
        message: String,
    },
    /// The operation does not apply to that state.
    #[error("{0}")]
    Unsupported(String),
}

/// How a held contact is settled (the backends' single state-change path).
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Completed,
    Failed {
        service: &'a str,
        reason: &'a str,
    },
    Deferred {
        service: &'a str,
        reason: &'a str,
        not_before: Millis,
        /// How long from now (PostgreSQL counts it from the database's clock).
        wait: std::time::Duration,
        max_deferrals: u32,
        /// Whether it counts toward `max_deferrals` (1) or not (0).
        counted: u32,
        progress: &'a str,
    },
    Released,
}
