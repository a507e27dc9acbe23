//! Probing a refused limit again, backing off: when a step up to the limit
//! at which a service last refused may be taken. The adaptive limit
//! ([`crate::aimd`]) and the header-following share ([`crate::share`]) both
//! step by whole slots and both back off this way; they differ in which
//! refusals widen the gap ([`BackOff`]) and in its ceiling.

/// Which refusals double the gap between probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackOff {
    /// Only a refused probe: a refusal below the probed limit is news of
    /// other clients, not of the probe.
    RefusedProbe,
    /// Every refusal.
    EveryRefusal,
}

/// The state of probing a refused limit.
#[derive(Debug, Clone)]
pub(crate) struct Probing {
    back_off: BackOff,
    /// The most windows between two probes.
    max_gap: u32,
    /// The limit, in whole slots, at the last refusal, until a step to it holds.
    refused_at: Option<u32>,
    /// Windows that must ask for a step before a probe of `refused_at`.
    gap: u32,
    /// Windows that asked since the last step up (or refusal).
    waited: u32,
    /// The last step up was to `refused_at` or above, and no window has
    /// closed at it yet.
    probing: bool,
}

impl Probing {
    pub(crate) fn new(back_off: BackOff, max_gap: u32) -> Self {
        Self {
            back_off,
            max_gap,
            refused_at: None,
            gap: 1,
            waited: 0,
            probing: false,
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
        self.probing = probe;
        true
    }

    /// A whole window closed at the limit: a probe in flight holds, so the
    /// refusal is forgotten and the gap halves — halves, not resets: when
    /// clients share a limit, the `429` a probe causes may fall on another
    /// client, and the prober's probe only seems to hold.
    pub(crate) fn window_held(&mut self) {
        if self.probing {
            self.probing = false;
            self.refused_at = None;
            self.gap = (self.gap / 2).max(1);
        }
    }

    /// Refused at `limit` slots.
    pub(crate) fn refused(&mut self, limit: u32) {
        if self.probing || self.back_off == BackOff::EveryRefusal {
            self.gap = (self.gap * 2).min(self.max_gap);
        }
        self.probing = false;
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

    #[test]
    fn a_refused_limit_is_probed_after_a_gap_that_doubles_and_halves() {
        let mut probing = Probing::new(BackOff::RefusedProbe, 4);
        assert!(probing.may_step(5), "nothing refused yet");
        probing.refused(5);
        assert!(probing.may_step(4), "below the refused limit");
        assert!(probing.may_step(5), "a gap of one window");
        probing.refused(5);
        assert!(!probing.may_step(5), "the refused probe doubled the gap");
        assert!(probing.may_step(5));
        probing.refused(5);
        let windows_until_a_probe =
            |probing: &mut Probing| (1..=16).take_while(|_| !probing.may_step(5)).count() + 1;
        assert_eq!(windows_until_a_probe(&mut probing), 4);
        probing.refused(5);
        assert_eq!(
            windows_until_a_probe(&mut probing),
            4,
            "the gap stops at its ceiling"
        );
        probing.window_held();
        assert!(
            probing.may_step(6),
            "the probe held: the refusal is forgotten"
        );
    }

    #[test]
    fn every_refusal_can_widen_the_gap() {
        let mut probing = Probing::new(BackOff::EveryRefusal, 8);
        probing.refused(3);
        assert!(
            !probing.may_step(3),
            "no probe was refused, yet the gap is 2"
        );
        assert!(probing.may_step(3));
        probing.forget();
        assert!(probing.may_step(9), "the provider allows more");
    }
}
