//! Probing a refused limit again, backing off: when a step up to the limit
//! at which a service last refused may be taken. The adaptive limit
//! ([`crate::aimd`]) and the header-following share ([`crate::share`]) both
//! step by whole slots and both back off this way, with gaps of their own.
//!
//! Every refusal widens the gap, not only a refused probe: when clients
//! share a limit, a `429` may be news of another client's step as much as of
//! one's own, and every client must probe more rarely for the refusals to
//! become rare. A probe that holds halves the gap. The share's gap doubles
//! with each refusal, to its ceiling ([`Probing::doubling`]): its steps
//! follow room the headers showed, and a refused one is most often a slot
//! two clients took together, soon free again. The adaptive limit's gap is
//! the whole ceiling at the first refusal ([`Probing::fixed`]): it has no
//! headers, so its probes are all blind, and a run of doubling gaps would
//! spend several refusals on finding that a full provider is still full.
//!
//! A step's new slot opens late ([`crate::limiter`]), so the `429` of a
//! probe over the limit mostly falls on the prober itself.

/// The state of probing a refused limit.
#[derive(Debug, Clone)]
pub(crate) struct Probing {
    /// The most windows between two probes.
    max_gap: u32,
    /// A refusal widens the gap to `max_gap` at once, rather than doubling it.
    fixed: bool,
    /// The limit, in whole slots, at the last refusal, until a step to it holds.
    refused_at: Option<u32>,
    /// Windows that must ask for a step before a probe of `refused_at`.
    gap: u32,
    /// Windows that asked since the last step up (or refusal).
    waited: u32,
    /// The limit of the last step up, when it was to `refused_at` or
    /// above and no window has closed at it yet.
    probed: Option<u32>,
}

impl Probing {
    /// A gap that doubles with every refusal, up to `max_gap` windows.
    pub(crate) fn doubling(max_gap: u32) -> Self {
        Self::new(max_gap, false)
    }

    /// A gap of `gap` windows after every refusal.
    pub(crate) fn fixed(gap: u32) -> Self {
        Self::new(gap, true)
    }

    fn new(max_gap: u32, fixed: bool) -> Self {
        Self {
            max_gap,
            fixed,
            refused_at: None,
            gap: 1,
            waited: 0,
            probed: None,
        }
    }

    /// Whether a step up to `next` slots may be taken now: at once below
    /// the refused limit; a probe of it once `gap` windows have asked.
    pub(crate) fn may_step(&mut self, next: u32) -> bool {
        let probe = self.refused_at.is_some_and(|refused| next >= refused);
        if probe {
            self.waited += 1;
            if self.waited < self.gap {
                return false;
            }
        }
        self.waited = 0;
        self.probed = probe.then_some(next);
        true
    }

    /// A whole window closed at the limit: a probe in flight holds, and the
    /// gap halves. Halves, not resets, and the step above is a probe too
    /// until the gap is down to one window: when clients share a limit, the
    /// `429` a probe causes may fall on another client, so the prober's
    /// probe only seems to hold — forgetting the refusal at once would let
    /// it climb a step per window, each step refusing somebody else.
    pub(crate) fn window_held(&mut self) {
        if let Some(probed) = self.probed.take() {
            self.gap = (self.gap / 2).max(1);
            self.refused_at = (self.gap > 1).then_some(probed + 1);
        }
    }

    /// Refused at `limit` slots.
    pub(crate) fn refused(&mut self, limit: u32) {
        self.gap = if self.fixed {
            self.max_gap
        } else {
            (self.gap * 2).min(self.max_gap)
        };
        self.probed = None;
        self.waited = 0;
        self.refused_at = Some(limit);
    }

    /// The provider said outright that it allows more: no refusal below
    /// counts any more.
    pub(crate) fn forget(&mut self) {
        self.refused_at = None;
        self.gap = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows that ask for a step to `next` until one is allowed.
    fn windows_until_a_step(probing: &mut Probing, next: u32) -> usize {
        (1..=64).take_while(|_| !probing.may_step(next)).count() + 1
    }

    #[test]
    fn a_refused_limit_is_probed_after_a_gap_that_doubles_and_halves() {
        let mut probing = Probing::doubling(4);
        assert!(probing.may_step(5), "nothing refused yet");
        probing.refused(5);
        assert!(probing.may_step(4), "below the refused limit");
        assert_eq!(windows_until_a_step(&mut probing, 5), 2, "refused once");
        probing.refused(5);
        assert_eq!(windows_until_a_step(&mut probing, 5), 4, "refused twice");
        probing.refused(5);
        assert_eq!(
            windows_until_a_step(&mut probing, 5),
            4,
            "the gap stops at its ceiling"
        );
        probing.window_held();
        assert_eq!(
            windows_until_a_step(&mut probing, 6),
            2,
            "the probe held, but with a gap of 2 the step above is a probe too"
        );
        probing.window_held();
        assert!(
            probing.may_step(7),
            "held with a gap of one window: the refusal is forgotten"
        );
        assert!(probing.may_step(8));
    }

    #[test]
    fn a_refusal_below_a_probe_widens_the_gap_too() {
        let mut probing = Probing::doubling(8);
        probing.refused(3);
        assert!(probing.may_step(2), "below the refused limit");
        probing.refused(2);
        assert_eq!(
            windows_until_a_step(&mut probing, 2),
            4,
            "no probe was refused, yet the gap is 4"
        );
        probing.forget();
        assert!(probing.may_step(9), "the provider allows more");
    }

    #[test]
    fn a_fixed_gap_is_whole_from_the_first_refusal_and_halves_as_probes_hold() {
        let mut probing = Probing::fixed(8);
        probing.refused(3);
        assert!(probing.may_step(2), "below the refused limit");
        assert_eq!(windows_until_a_step(&mut probing, 3), 8, "refused once");
        probing.refused(3);
        assert_eq!(windows_until_a_step(&mut probing, 3), 8, "refused twice");
        probing.window_held();
        assert_eq!(
            windows_until_a_step(&mut probing, 4),
            4,
            "the probe held: the step above waits out half the gap"
        );
        probing.refused(4);
        assert_eq!(windows_until_a_step(&mut probing, 4), 8, "whole again");
    }
}
