//! The limit of a client that follows what its provider announces (mode
//! `off`, the default, once an answer carried `maximum-concurrent-requests`).
//!
//! Every answer says how many requests the provider serves at once (`M`,
//! `maximum-concurrent-requests`) and how many it is serving as it answers
//! (`C`, `current-concurrent-requests`, the answer's own included). Less our
//! own requests in flight, `C` is what other clients of the account hold —
//! other agents, other processes. The limit is what they leave, `M − others`,
//! reached one step per window, so that everyone's limits add up to `M` and
//! stay there:
//!
//! * **Growth.** A window is `limit` answers, about one round trip. A window
//!   that used every slot raises the limit by one, up to `M − others`, once
//!   two windows in a row found *room*: the provider serving fewer than `M`
//!   and all of ours (none of ours waiting in its queue) at some answer, and
//!   its limit at none. Alone (nobody else seen) that is `M`, a few round
//!   trips from a limit of 1; a step rather than a jump because clients that
//!   start together see each other only once their first requests are
//!   answered.
//! * **Room that is not there.** Answers to requests of the same length come
//!   in batches, and the last answer of a batch counts the provider nearly
//!   empty: the other slots of the batch were given back an instant before,
//!   and their owners are filling them again. Three guards, since no single
//!   reading tells that room from real room. A window with an answer that
//!   found the provider full found no room: the full count is the
//!   provider's own, where a low one may be a batch's last. The clients
//!   that see one free slot see it together, so each steps into it only with
//!   the chance `ours / (ours + 2 × others)` (others at their most in the
//!   window): of `n` clients with a slot each, fewer than one on average
//!   takes it rather than all `n` — a step two clients take together costs a
//!   `429`, a step nobody takes one more window — and a client alone always
//!   does. The step's slot opens late ([`crate::limiter`]), so when the
//!   room was not there, or two clients stepped into it, the request refused
//!   is a stepper's, and a stepper steps back — not a client that only sent
//!   again with its answers. And a step refused all
//!   the same is tried again only after a gap of windows with room that
//!   doubles with every refusal (to [`MAX_PROBE_GAP`]) and halves when a
//!   step holds, the step above a held one waiting out the halved gap too
//!   ([`crate::probe`]): a client whose answers keep showing such room pays
//!   a `429` ever more rarely, and one whose room is real (the others have
//!   left) is back at it within a few windows.
//! * **Yielding.** A window whose answers say the others hold more lowers the
//!   limit to what they leave at once: their growth meets a free slot, not a
//!   `429`. A `429 too_many_concurrent_requests` (two clients took the same
//!   free slot) lowers it by one, once per generation.
//! * **Fairness.** Taking what is free fills the provider but keeps whatever
//!   split the clients reached. A client of a full provider that holds two
//!   slots more than all the others together hands one back, which one of
//!   them grows into: two clients settle within a slot of each other. With
//!   more, a client keeps what it holds (the others being together at least
//!   its share less one); the provider stays full, and a client that leaves
//!   frees its slots for the rest.
//!
//! Each reading is taken with care: `others` is the smallest of the
//! window's readings — a request of ours answered between the provider's
//! count and our reading of it would make one reading too high — and while
//! callers wait for a slot, ours are counted as the whole limit (a slot
//! given back is already promised to the next caller).
//!
//! Why not the AIMD of [`crate::aimd`] here: it needs a signal of being
//! *over*, and a provider that announces its limit is *at* it when it is
//! used well — `C = M` on every answer. Treated as overload, that kept three
//! clients sharing four slots at three (whole slots step over a share of
//! 1.3), and a probe above it cost a `429`; the headers say exactly how much
//! is left.

use crate::probe::Probing;

/// Windows in a row that must find room before a step up: a free slot seen
/// once may be one another client is about to fill again.
const ROOM_STREAK: u32 = 2;
/// The most windows with room between two probes of a refused limit.
const MAX_PROBE_GAP: u32 = 8;

/// A limit that follows the provider's announced limit, shared with the
/// provider's other clients.
#[derive(Debug, Clone)]
pub(crate) struct Share {
    /// The provider's limit, `M`.
    provider: u32,
    limit: u32,
    window: Window,
    /// When a refused limit may be stepped to again (every refusal widens
    /// the gap, counted in windows with room).
    probing: Probing,
    /// Windows in a row that found room at the provider.
    room_streak: u32,
    /// Draws who of the clients that see the same free slot steps into it.
    rng: fastrand::Rng,
}

/// The answers since the window opened.
#[derive(Debug, Clone, Copy)]
struct Window {
    answers: u32,
    /// The fewest requests others held at an answer; `u32::MAX`: none seen.
    others: u32,
    /// The most requests others held at an answer.
    others_most: u32,
    /// Every slot was taken (or callers waited) at some answer.
    saturated: bool,
    /// The provider was serving its limit at some answer.
    full: bool,
    /// The provider was serving less than its limit, and all of ours, at
    /// some answer.
    room: bool,
}

impl Window {
    const OPEN: Self = Self {
        answers: 0,
        others: u32::MAX,
        others_most: 0,
        saturated: false,
        full: false,
        room: false,
    };
}

/// What one answer said, and our side of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// `current-concurrent-requests`, if the answer said.
    pub(crate) current: Option<u32>,
    /// Our requests in flight as the answer came, itself included.
    pub(crate) ours: u32,
    /// Every slot was taken (or callers waited).
    pub(crate) saturated: bool,
}

impl Share {
    /// Following `provider`, starting from `limit` (clamped to it).
    pub(crate) fn new(provider: u32, limit: u32) -> Self {
        Self::with_rng(provider, limit, fastrand::Rng::new())
    }

    /// The same, drawing from `rng` (a seeded one in tests).
    fn with_rng(provider: u32, limit: u32, rng: fastrand::Rng) -> Self {
        Self {
            provider,
            limit: limit.clamp(1, provider),
            window: Window::OPEN,
            probing: Probing::doubling(MAX_PROBE_GAP),
            room_streak: 0,
            rng,
        }
    }

    /// The limit in whole calls.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// The provider announced a new limit: a lower one holds at once, a
    /// higher one is grown into.
    pub(crate) fn set_provider_limit(&mut self, provider: u32) {
        if provider > self.provider {
            // Said outright: no refusal below it counts any more.
            self.probing.forget();
        }
        self.provider = provider;
        self.limit = self.limit.min(provider);
    }

    /// An answer (not a refusal) read.
    pub(crate) fn on_answer(&mut self, reading: Reading) {
        let window = &mut self.window;
        window.answers += 1;
        window.saturated |= reading.saturated;
        if let Some(current) = reading.current {
            let others = current.saturating_sub(reading.ours);
            window.others = window.others.min(others);
            window.others_most = window.others_most.max(others);
            window.full |= current >= self.provider;
            // Fewer than ours in flight: some of ours wait in its queue.
            window.room |= current < self.provider && current >= reading.ours;
        }
        if window.answers >= self.limit {
            self.close_window();
        }
    }

    /// A `429 too_many_concurrent_requests` for a request sent at the
    /// current limit.
    pub(crate) fn on_refused(&mut self) {
        self.probing.refused(self.limit);
        self.limit = self.limit.saturating_sub(1).max(1);
        self.window = Window::OPEN;
    }

    fn close_window(&mut self) {
        let window = std::mem::replace(&mut self.window, Window::OPEN);
        // No count in the answers: nobody else is seen, nor a full provider.
        let (others, room) = if window.others == u32::MAX {
            (0, true)
        } else {
            // One answer that found it full outweighs any that found room:
            // the full count is the provider's own, and room is what the
            // last answer of a batch sees whether or not it is there.
            (window.others, window.room && !window.full)
        };
        let left = self.provider.saturating_sub(others).max(1);
        self.room_streak = if room { self.room_streak + 1 } else { 0 };
        if window.saturated {
            self.probing.window_held();
        }
        if self.limit > left {
            self.limit = left;
        } else if window.full && others > 0 && self.limit >= others + 2 {
            self.limit -= 1;
        } else if window.saturated
            && self.room_streak >= ROOM_STREAK
            && self.limit < left
            && self.takes_the_free_slot(window.others_most)
        {
            self.step_up();
        }
    }

    /// Whether to step into a free slot that every client of the provider
    /// may be seeing at once: with the chance `ours / (ours + 2 × others)`,
    /// seldom two of them (of `n` clients with a slot each, `n / (2n − 1)`
    /// on average), and a client alone always does.
    fn takes_the_free_slot(&mut self, others: u32) -> bool {
        self.rng.u32(..self.limit + 2 * others) < self.limit
    }

    /// One step up, unless it is a probe of a refused limit whose gap has
    /// not passed.
    fn step_up(&mut self) {
        if self.probing.may_step(self.limit + 1) {
            self.limit += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closes a window of saturated answers, each saying the provider serves
    /// `current` with `ours` of them ours.
    fn window(share: &mut Share, current: u32, ours: u32) {
        for _ in 0..share.limit() {
            share.on_answer(Reading {
                current: Some(current),
                ours,
                saturated: true,
            });
        }
    }

    #[test]
    fn alone_it_grows_a_step_per_window_to_the_providers_limit() {
        let mut share = Share::new(4, 1);
        // The first window with room is not enough; then a step per window.
        for expected in [1, 2, 3, 4, 4] {
            let ours = share.limit();
            window(&mut share, ours, ours);
            assert_eq!(share.limit(), expected);
        }
        share.set_provider_limit(2);
        assert_eq!(share.limit(), 2, "a lower limit holds at once");
    }

    fn seeded(provider: u32, limit: u32, seed: u64) -> Share {
        Share::with_rng(provider, limit, fastrand::Rng::with_seed(seed))
    }

    #[test]
    fn it_takes_what_the_others_leave_and_yields_when_they_take_more() {
        let mut share = seeded(4, 1, 7);
        // Two others hold two slots: one step to 2 (a chance in five per
        // window), and no further.
        for _ in 0..50 {
            window(&mut share, 3, 1);
        }
        assert_eq!(share.limit(), 2);
        window(&mut share, 4, 2);
        assert_eq!(share.limit(), 2);
        // They now hold three: down to one at once.
        window(&mut share, 4, 1);
        assert_eq!(share.limit(), 1);
    }

    #[test]
    fn of_three_clients_seeing_the_same_free_slot_seldom_two_step_into_it() {
        // Each holds one of four slots: each sees the other two and a free
        // slot, and steps into it with a chance of one in five (three
        // clients: 0.6 steps on average, two or more in one window of 10).
        let stepped = (0..300)
            .filter(|&seed| {
                let mut share = seeded(4, 1, seed);
                window(&mut share, 3, 1);
                window(&mut share, 3, 1);
                share.limit() == 2
            })
            .count();
        assert!((40..=80).contains(&stepped), "{stepped} of 300 stepped");
    }

    #[test]
    fn a_window_that_found_the_provider_full_found_no_room() {
        let mut share = Share::new(4, 2);
        for _ in 0..6 {
            // The last answer of a batch finds it nearly empty, the others full.
            for current in [2, 4] {
                share.on_answer(Reading {
                    current: Some(current),
                    ours: 2,
                    saturated: true,
                });
            }
        }
        assert_eq!(share.limit(), 2);
    }

    #[test]
    fn one_reading_too_high_does_not_shrink_the_limit() {
        let mut share = Share::new(4, 4);
        for ours in [4, 3, 4, 4] {
            share.on_answer(Reading {
                current: Some(4),
                ours,
                saturated: true,
            });
        }
        assert_eq!(share.limit(), 4);
    }

    #[test]
    fn of_two_clients_the_larger_hands_a_slot_back_until_they_are_within_one() {
        let mut share = Share::new(12, 8);
        window(&mut share, 12, 8);
        assert_eq!(share.limit(), 7, "8 against 4");
        window(&mut share, 12, 7);
        assert_eq!(share.limit(), 6, "7 against 5");
        window(&mut share, 12, 6);
        assert_eq!(share.limit(), 6, "6 against 6");
    }

    #[test]
    fn a_refusal_takes_a_slot_off_and_the_refused_limit_is_probed_ever_more_rarely() {
        let mut share = Share::new(4, 2);
        share.on_refused();
        assert_eq!(share.limit(), 1);
        share.on_refused();
        assert_eq!(share.limit(), 1, "never below one");
        // Refused twice: a gap of 4 windows with room before 2 (after the
        // first, which only starts the streak).
        let mut windows = 0;
        while share.limit() == 1 {
            window(&mut share, 1, 1);
            windows += 1;
        }
        assert_eq!(windows, 5);
        // The probe holds a window: the gap halves to 2, and 3 is a probe
        // after it; then the gap is one window and the refusal forgotten.
        window(&mut share, 2, 2);
        assert_eq!(share.limit(), 2);
        window(&mut share, 2, 2);
        assert_eq!(share.limit(), 3);
    }

    #[test]
    fn answers_without_a_count_are_taken_as_alone() {
        let mut share = Share::new(3, 1);
        for _ in 0..5 {
            share.on_answer(Reading {
                current: None,
                ours: 1,
                saturated: true,
            });
        }
        assert_eq!(share.limit(), 3);
    }
}
