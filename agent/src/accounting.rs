//! Whether every contact of a campaign is accounted for, by two checks that
//! are independent of each other.
//!
//! *Lost*: a contact given to the campaign (by id) that ends without a state
//! — neither terminal nor pending. *Duplicated*: a contact that ends in more
//! than one state, or with more than one CRM record (and, counted by the
//! queue, one the store accepted a second terminal state for, or one its
//! holder ended again under the lease it had ended it with). Both compare
//! what the store holds when the campaign starts with what it holds at the
//! end, so a store that drops or doubles a contact is seen whatever the
//! workers believed they did. Where the CRM's records can be read (the mocks
//! of `simulate`), completed contacts and records must match one to one: a completed contact without a record is lost, and a record of
//! a contact that failed or expired is a second end for it. A contact taken
//! over from a slow or cut-off agent after its lease expired is neither: the
//! campaign counts it apart.

use std::collections::BTreeMap;

use callguard_store::{ContactState, StoreError};

use crate::queue::CallQueue;

/// Every contact of a store at one moment, by id, with each state the store
/// lists it in (one, unless the store is broken): a list sorted by id, where a
/// map would allocate a node and a list of states per contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census(Vec<(String, ContactState)>);

impl Census {
    /// Lists every contact of `queue`'s store at one moment (one statement,
    /// so other agents moving contacts meanwhile cannot make one appear in two
    /// states or in none), once the final states being saved have landed.
    pub async fn take(queue: &CallQueue) -> Result<Self, StoreError> {
        queue.settled().await;
        let contacts = queue.store().list_all().await?;
        Ok(contacts
            .into_iter()
            .map(|contact| (contact.id, contact.state))
            .collect())
    }

    /// Each contact with the states it is listed in, in order of id.
    fn contacts(&self) -> impl Iterator<Item = (&str, &[(String, ContactState)])> {
        self.0
            .chunk_by(|(a, _), (b, _)| a == b)
            .map(|listed| (listed[0].0.as_str(), listed))
    }

    /// How many contacts (distinct ids).
    pub fn len(&self) -> usize {
        self.contacts().count()
    }

    /// Whether the store held no contact.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, ContactState)> for Census {
    fn from_iter<I: IntoIterator<Item = (String, ContactState)>>(contacts: I) -> Self {
        let mut listed: Vec<_> = contacts.into_iter().collect();
        // Stable: a contact's states keep the store's order.
        listed.sort_by(|(a, _), (b, _)| a.cmp(b));
        Self(listed)
    }
}

/// Contacts lost and contacts duplicated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Contacts without an end: no state, or completed without their record.
    pub lost: usize,
    /// Contacts with a second end: a second state, or a second record.
    pub duplicated: usize,
}

impl Accounting {
    /// A campaign given the contacts of `start` that ended as `end`: lost,
    /// the contacts of `start` in no state at the end; duplicated, the
    /// contacts in more than one state at the end.
    pub fn of_campaign(start: &Census, end: &Census) -> Self {
        // Both are in order of id: one walk through each.
        let mut ended = end.contacts().map(|(id, _)| id).peekable();
        let mut held_at_end = |id: &str| {
            while ended.next_if(|ended| *ended < id).is_some() {}
            ended.peek() == Some(&id)
        };
        Self {
            lost: start.contacts().filter(|(id, _)| !held_at_end(id)).count(),
            duplicated: end
                .contacts()
                .filter(|(_, states)| states.len() > 1)
                .count(),
        }
    }

    /// The contacts of `end` against the CRM's `records` (the contact id of
    /// each): lost, a completed contact without a record; duplicated, a
    /// contact with more than one record, or with one while it failed or
    /// expired. Records of pending contacts (a write that landed before a
    /// shutdown cut its call short) and of contacts not in `end` are left.
    pub fn of_records<'a>(end: &Census, records: impl IntoIterator<Item = &'a str>) -> Self {
        let mut per_contact: BTreeMap<&str, usize> = BTreeMap::new();
        for id in records {
            *per_contact.entry(id).or_default() += 1;
        }
        let mut accounting = Self::default();
        for (id, states) in end.contacts() {
            let records = per_contact.get(id).copied().unwrap_or(0);
            let completed = states.iter().any(|(_, s)| *s == ContactState::Completed);
            let ended_otherwise = states
                .iter()
                .any(|(_, s)| matches!(s, ContactState::Failed | ContactState::Expired));
            if completed && records == 0 {
                accounting.lost += 1;
            } else if records > 1 || (records == 1 && ended_otherwise) {
                accounting.duplicated += 1;
            }
        }
        accounting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContactState::{Completed, Deferred, Expired, Failed, InFlight, Pending};

    fn census(contacts: &[(&str, ContactState)]) -> Census {
        contacts
            .iter()
            .map(|(id, state)| ((*id).to_owned(), *state))
            .collect()
    }

    #[test]
    fn a_contact_in_no_state_at_the_end_is_lost() {
        let start = census(&[("a", Pending), ("b", Pending), ("c", Deferred)]);
        let end = census(&[("a", Completed), ("c", InFlight)]);
        assert_eq!(
            Accounting::of_campaign(&start, &end),
            Accounting {
                lost: 1,
                duplicated: 0
            }
        );
        // A contact added by someone else meanwhile is not this campaign's.
        let end = census(&[
            ("a", Completed),
            ("b", Failed),
            ("c", Expired),
            ("d", Pending),
        ]);
        assert_eq!(Accounting::of_campaign(&start, &end), Accounting::default());
        // Lost first, last and side by side, among contacts added meanwhile.
        let start = census(&[
            ("b", Pending),
            ("d", Pending),
            ("e", Pending),
            ("g", Pending),
            ("i", Pending),
        ]);
        let end = census(&[
            ("a", Pending),
            ("c", Completed),
            ("d", Completed),
            ("f", Failed),
            ("h", Pending),
        ]);
        assert_eq!(Accounting::of_campaign(&start, &end).lost, 4);
    }

    #[test]
    fn a_contact_in_two_states_at_the_end_is_duplicated() {
        let start = census(&[("a", Pending), ("b", Pending)]);
        let end = census(&[
            ("a", Completed),
            ("a", Completed),
            ("b", Failed),
            ("b", Pending),
        ]);
        assert_eq!(
            Accounting::of_campaign(&start, &end),
            Accounting {
                lost: 0,
                duplicated: 2
            }
        );
    }

    #[test]
    fn completed_contacts_and_records_match_one_to_one() {
        let end = census(&[
            ("done", Completed),
            ("unrecorded", Completed),
            ("twice", Completed),
            ("failed-recorded", Failed),
            ("failed", Failed),
            ("expired-recorded", Expired),
            ("pending-recorded", Pending),
        ]);
        let records = [
            "done",
            "twice",
            "twice",
            "failed-recorded",
            "expired-recorded",
            "pending-recorded",
            "elsewhere",
        ];
        assert_eq!(
            Accounting::of_records(&end, records),
            Accounting {
                lost: 1,
                duplicated: 3
            }
        );
        let end = census(&[("a", Completed), ("b", Failed)]);
        assert_eq!(Accounting::of_records(&end, ["a"]), Accounting::default());
    }
}
