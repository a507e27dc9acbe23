//! Completions sent in batches: the most frequent change, so both SQL
//! backends complete every contact waiting in one statement and answer each
//! caller from the ids it returns.

use std::collections::HashSet;

use tokio::sync::oneshot;

use crate::model::{ContactState, Lease, Millis, StoreError};

/// A completion waiting for its batch, and where its answer goes.
pub(crate) struct Completion {
    pub(crate) contact_id: String,
    pub(crate) owner: String,
    pub(crate) attempt: u32,
    pub(crate) at: Millis,
    answer: oneshot::Sender<Result<ContactState, StoreError>>,
}

/// The answer of a completion, once its batch has run.
pub(crate) type Answered = oneshot::Receiver<Result<ContactState, StoreError>>;

impl Completion {
    /// A completion of the contact `lease` holds for `owner`, at `at`.
    pub(crate) fn new(owner: &str, lease: &Lease, at: Millis) -> (Self, Answered) {
        let (answer, answered) = oneshot::channel();
        let completion = Self {
            contact_id: lease.contact_id.clone(),
            owner: owner.to_owned(),
            attempt: lease.attempt,
            at,
            answer,
        };
        (completion, answered)
    }

    /// The lease it completes under.
    pub(crate) fn lease(&self) -> Lease {
        Lease {
            contact_id: self.contact_id.clone(),
            attempt: self.attempt,
        }
    }
}

/// Answers each completion of `batch` from `done`, the ids the batch's
/// statement completed (or its error): completed, or — its lease no longer
/// held — `LeaseLost`. A row is returned once, so a second completion of the
/// same lease in one batch finds it settled already.
pub(crate) fn answer(batch: Vec<Completion>, done: Result<HashSet<String>, StoreError>) {
    let mut done = done;
    for completion in batch {
        let result = match &mut done {
            Ok(done) => {
                if done.remove(&completion.contact_id) {
                    Ok(ContactState::Completed)
                } else {
                    Err(StoreError::LeaseLost {
                        contact_id: completion.contact_id,
                    })
                }
            }
            Err(error) => Err(error.clone()),
        };
        let _ = completion.answer.send(result);
    }
}
