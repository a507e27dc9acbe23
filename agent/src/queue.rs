//! The call queue: contacts waiting to be called, contacts deferred until a
//! not-before time (or until their service's breaker closes), and the ledger of
//! how each contact ended.
//!
//! Every contact is in exactly one place at a time — ready, deferred, in flight
//! or finished — and the ledger refuses a second terminal state for the same
//! contact, so "nothing lost, nothing duplicated" is checked where it is made.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use callguard_core::ServiceName;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clients::CallRecord;
use crate::contacts::Contact;

/// Work already done for a contact, kept across deferrals so a contact resumes
/// at the stage that could not run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The LLM's script, once written.
    pub script: Option<String>,
    /// Size of the speech audio, once synthesized.
    pub audio_bytes: Option<u64>,
    /// The CRM record, once built: kept so that a write retried after a
    /// deferral sends the same record under the same idempotency key.
    pub crm_record: Option<CallRecord>,
}

/// A contact in the queue.
#[derive(Debug, Clone)]
pub struct QueuedContact {
    /// Who to call.
    pub contact: Contact,
    /// How often the contact has been deferred.
    pub deferrals: u32,
    /// Stages already done.
    pub progress: Progress,
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
    /// Deferred more than `max_deferrals` times.
    Expired {
        /// The service it last waited for.
        service: String,
    },
}

impl Terminal {
    /// `completed`, `failed` or `expired`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed { .. } => "failed",
            Self::Expired { .. } => "expired",
        }
    }
}

/// What became of a deferral request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Back in the queue until the not-before time (or its breaker closes).
    Requeued,
    /// Deferred too often: the contact expired.
    Expired,
}

struct Deferred {
    not_before: Instant,
    service: ServiceName,
    entry: QueuedContact,
}

#[derive(Default)]
struct State {
    ready: VecDeque<QueuedContact>,
    /// Keyed by (not-before, sequence) so equal times keep arrival order.
    deferred: BTreeMap<(Instant, u64), Deferred>,
    sequence: u64,
    /// Contacts handed to a worker and not yet finished or deferred, by id.
    in_flight: BTreeMap<String, QueuedContact>,
    closed: bool,
    finished: BTreeMap<String, Terminal>,
    duplicates: Vec<String>,
}

/// The queue shared by the workers.
pub struct CallQueue {
    state: Mutex<State>,
    changed: Notify,
    max_deferrals: u32,
}

/// Counts of contacts by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    /// Waiting to be called.
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

impl CallQueue {
    /// A queue holding `contacts`, in order.
    pub fn new(contacts: impl IntoIterator<Item = Contact>, max_deferrals: u32) -> Self {
        let ready = contacts
            .into_iter()
            .map(|contact| QueuedContact {
                contact,
                deferrals: 0,
                progress: Progress::default(),
            })
            .collect();
        Self {
            state: Mutex::new(State {
                ready,
                ..State::default()
            }),
            changed: Notify::new(),
            max_deferrals,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next contact to call, waiting for deferred ones to come due. `None`
    /// when the queue is closed or when nothing is left anywhere.
    pub async fn next(&self) -> Option<QueuedContact> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake_at = {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                promote_due(&mut state, Instant::now());
                if let Some(entry) = state.ready.pop_front() {
                    state
                        .in_flight
                        .insert(entry.contact.id.clone(), entry.clone());
                    return Some(entry);
                }
                if state.deferred.is_empty() && state.in_flight.is_empty() {
                    return None;
                }
                state.deferred.keys().next().map(|(at, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Ends an in-flight contact in a terminal state.
    pub fn finish(&self, entry: QueuedContact, terminal: Terminal) {
        let mut state = self.lock();
        state.in_flight.remove(&entry.contact.id);
        record(&mut state, entry.contact.id, terminal);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Puts an in-flight contact back until `not_before` (or until
    /// [`wake_service`](Self::wake_service) for `service`), unless it has been
    /// deferred `max_deferrals` times already, in which case it expires.
    pub fn defer(
        &self,
        mut entry: QueuedContact,
        service: &ServiceName,
        not_before: Instant,
    ) -> Deferral {
        let mut state = self.lock();
        state.in_flight.remove(&entry.contact.id);
        entry.deferrals += 1;
        let outcome = if entry.deferrals > self.max_deferrals {
            let terminal = Terminal::Expired {
                service: service.to_string(),
            };
            record(&mut state, entry.contact.id, terminal);
            Deferral::Expired
        } else {
            let sequence = state.sequence;
            state.sequence += 1;
            state.deferred.insert(
                (not_before, sequence),
                Deferred {
                    not_before,
                    service: service.clone(),
                    entry,
                },
            );
            Deferral::Requeued
        };
        drop(state);
        self.changed.notify_waiters();
        outcome
    }

    /// Makes every contact deferred on `service` due now (its breaker closed).
    /// Returns how many woke.
    pub fn wake_service(&self, service: &ServiceName) -> usize {
        let mut state = self.lock();
        let waiting: Vec<_> = state
            .deferred
            .iter()
            .filter(|(_, d)| &d.service == service)
            .map(|(key, _)| *key)
            .collect();
        for key in &waiting {
            if let Some(deferred) = state.deferred.remove(key) {
                state.ready.push_back(deferred.entry);
            }
        }
        drop(state);
        if !waiting.is_empty() {
            self.changed.notify_waiters();
        }
        waiting.len()
    }

    /// Stops handing out contacts; what is not finished stays pending.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Where every contact is now.
    pub fn counts(&self) -> QueueCounts {
        let state = self.lock();
        let mut counts = QueueCounts {
            ready: state.ready.len(),
            deferred: state.deferred.len(),
            in_flight: state.in_flight.len(),
            ..QueueCounts::default()
        };
        for terminal in state.finished.values() {
            match terminal {
                Terminal::Completed => counts.completed += 1,
                Terminal::Failed { .. } => counts.failed += 1,
                Terminal::Expired { .. } => counts.expired += 1,
            }
        }
        counts
    }

    /// How each finished contact ended, by id.
    pub fn finished(&self) -> BTreeMap<String, Terminal> {
        self.lock().finished.clone()
    }

    /// Contacts that were given a second terminal state (always empty unless
    /// something is wrong; reported in the summary as a check).
    pub fn duplicates(&self) -> Vec<String> {
        self.lock().duplicates.clone()
    }

    /// Contacts not finished: in flight (as they were handed out), ready and
    /// deferred. After shutdown these are what is kept for the next run.
    pub fn pending(&self) -> Vec<QueuedContact> {
        let state = self.lock();
        state
            .in_flight
            .values()
            .chain(&state.ready)
            .chain(state.deferred.values().map(|d| &d.entry))
            .cloned()
            .collect()
    }

    /// The earliest not-before time among deferred contacts of `service`.
    pub fn deferred_until(&self, service: &ServiceName) -> Option<Instant> {
        self.lock()
            .deferred
            .values()
            .filter(|d| &d.service == service)
            .map(|d| d.not_before)
            .min()
    }
}

fn promote_due(state: &mut State, now: Instant) {
    while let Some(entry) = state.deferred.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let deferred = entry.remove();
        state.ready.push_back(deferred.entry);
    }
}

fn record(state: &mut State, id: String, terminal: Terminal) {
    match state.finished.entry(id) {
        std::collections::btree_map::Entry::Occupied(entry) => {
            state.duplicates.push(entry.key().clone());
        }
        std::collections::btree_map::Entry::Vacant(entry) => {
            entry.insert(terminal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn contact(id: &str) -> Contact {
        Contact {
            id: id.into(),
            name: format!("Name {id}"),
            phone: "+1-555-0100".into(),
            extra: Default::default(),
        }
    }

    fn tts() -> ServiceName {
        ServiceName::new("elevenlabs").unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn hands_out_in_order_and_ends_when_all_finished() {
        let queue = CallQueue::new([contact("a"), contact("b")], 5);
        let a = queue.next().await.unwrap();
        let b = queue.next().await.unwrap();
        assert_eq!((a.contact.id.as_str(), b.contact.id.as_str()), ("a", "b"));
        queue.finish(a, Terminal::Completed);
        queue.finish(b, Terminal::Completed);
        assert!(queue.next().await.is_none());
        assert_eq!(queue.counts().completed, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn deferred_contacts_come_back_at_their_time() {
        let queue = CallQueue::new([contact("a"), contact("b")], 5);
        let start = Instant::now();
        let a = queue.next().await.unwrap();
        queue.defer(a, &tts(), start + Duration::from_secs(10));
        let b = queue.next().await.unwrap();
        assert_eq!(b.contact.id, "b", "the worker moves on to the next contact");
        queue.finish(b, Terminal::Completed);
        let again = queue.next().await.unwrap();
        assert_eq!(again.contact.id, "a");
        assert_eq!(again.deferrals, 1);
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_breaker_wakes_its_deferred_contacts_early() {
        let queue = Arc::new(CallQueue::new([contact("a")], 5));
        let start = Instant::now();
        let a = queue.next().await.unwrap();
        queue.defer(a, &tts(), start + Duration::from_secs(60));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await.map(|e| e.contact.id) }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(queue.wake_service(&ServiceName::new("llm").unwrap()), 0);
        assert_eq!(queue.wake_service(&tts()), 1);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("a"));
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_deferrals_expire() {
        let queue = CallQueue::new([contact("a")], 1);
        let entry = queue.next().await.unwrap();
        assert_eq!(
            queue.defer(entry, &tts(), Instant::now()),
            Deferral::Requeued
        );
        let entry = queue.next().await.unwrap();
        assert_eq!(
            queue.defer(entry, &tts(), Instant::now()),
            Deferral::Expired
        );
        assert!(queue.next().await.is_none());
        assert_eq!(queue.counts().expired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_keeps_the_rest_pending() {
        let queue = CallQueue::new([contact("a"), contact("b"), contact("c"), contact("d")], 5);
        let a = queue.next().await.unwrap();
        queue.defer(a, &tts(), Instant::now() + Duration::from_secs(5));
        let _b_never_finishes = queue.next().await.unwrap();
        queue.close();
        assert!(queue.next().await.is_none());
        let pending: Vec<_> = queue.pending().into_iter().map(|e| e.contact.id).collect();
        assert_eq!(pending, ["b", "c", "d", "a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_terminal_state_is_caught() {
        let queue = CallQueue::new([contact("a")], 5);
        let a = queue.next().await.unwrap();
        let copy = a.clone();
        queue.finish(a, Terminal::Completed);
        // A bug that finished the same contact twice would be caught.
        queue.finish(copy, Terminal::Completed);
        assert_eq!(queue.duplicates(), ["a"]);
    }
}
