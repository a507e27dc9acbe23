//! The adaptive limit: additive increase, multiplicative decrease (AIMD),
//! driven by what the service answers.
//!
//! **Rules.** Answers are counted in windows of `limit` successes — about one
//! round trip at full use. A window that closes with the limit reached
//! (every slot taken, or callers waiting) raises the limit by one; one that
//! closes with slots to spare leaves it, so an idle service does not earn a
//! limit it never tried. Overload lowers it to 0.9 × itself at once — by at
//! least one whole slot, or a small limit would stay where it was refused —
//! never below `min`: a `429 too_many_concurrent_requests`, a timeout, and — judged
//! when a window closes — a window whose mean latency is more than
//! `latency_tolerance` times the long-run mean (an average of past windows),
//! or one in which the provider said it was full while other clients held
//! some of its slots (`current-concurrent-requests` ≥
//! `maximum-concurrent-requests`, and more than ours). A limit announced by
//! the provider caps it.
//!
//! **Probing backs off.** Below the limit at which it was last refused, the
//! limit climbs back one step per saturated window. A step to that limit or
//! above is a *probe*: it comes only after [`PROBE_GAP`] saturated windows
//! since the refusal, and a probe that holds a window halves the gap; while
//! the gap is wider than one window the step above a held probe is a probe
//! too ([`crate::probe`]). Plain AIMD probes every other window and pays a
//! `429` for each probe — a fifth of all answers at a limit of 4, far more
//! when several clients share the limit. With the gap, a limit that stays
//! put costs one `429` per gap, and one that rises is found again as probes
//! hold and the gap closes (TCP CUBIC's plateau near the last loss, in whole
//! slots). The gap is whole from the first refusal, not doubled up to it:
//! without headers every probe is blind, and with three clients on a limit
//! of 4 gaps doubling from two windows cost each client four refusals before
//! the first long one — nearly half the `429`s of a campaign of 300
//! requests shared by the three. Twenty windows is one
//! refused probe per twenty answers at one slot; a longer gap leaves a slot
//! another client has freed unused for longer (seconds, at one slot and a
//! window of one answer).
//!
//! **The probe pays for itself.** A step's new slot opens late
//! ([`crate::limiter`]): its first call waits an eighth of the time a slot
//! is held. Answers of requests that take the same time come in batches, and
//! every client sends again as its answers come; a probe sent with them
//! races them for the provider's slots, and the `429` falls on whichever
//! request comes last — as often another client's as the prober's, and one
//! at one slot already cannot go lower, while the prober, whose probe seems
//! to hold, stays above its share. Sent late, the probe is the request that
//! waits in the provider's queue: refused if there is no room, and then the
//! prober is the one that steps back.
//!
//! **Why AIMD.** The prior art offers two families. Vegas and Gradient2
//! (Netflix concurrency-limits) and Envoy's adaptive concurrency filter infer
//! overload from latency alone: Vegas from the gap between the no-load and the
//! current round trip, Gradient2 from the ratio of a short to a long average.
//! AIMD — TCP's congestion avoidance, Netflix's `AIMDLimit`, vector's adaptive
//! request concurrency, and what Resilience4j's and Polly's fixed bulkheads
//! lack — acts on explicit overload. Our services say outright when we are
//! over their limit: ElevenLabs answers `429 too_many_concurrent_requests`
//! after a short queue, which the retry layer repeats at once; and their
//! latency varies with the work asked (a two-line script or a long one, a
//! second of speech or thirty), which makes a latency gradient a noisy
//! estimate of queueing. So the explicit signal drives the limit, and
//! latency is a second, coarser signal over whole windows, for services that
//! slow down rather than refuse. AIMD's sawtooth costs one refused request per
//! probe above the limit, and its multiplicative decrease makes clients that
//! share one limit converge to equal shares (Chiu and Jain, 1989) — which
//! matters when several agents use one account. When the provider announces
//! its limit, the sawtooth stops at it: a lone client sits at the limit.

use std::time::Duration;

use crate::probe::Probing;

/// What a limit is multiplied by on overload.
pub(crate) const DECREASE: f64 = 0.9;
/// The weight of a closing window's mean in the long-run latency average.
const LONG_RUN_WEIGHT: f64 = 0.1;
/// Saturated windows between a refusal and the next probe of the refused limit.
const PROBE_GAP: u32 = 20;

/// The adaptive limit of one service.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    /// The limit, fractional: it grows by whole steps and shrinks by a factor.
    limit: f64,
    min: f64,
    /// The configured highest limit.
    max: f64,
    /// `max`, lowered to the provider's announced limit (which may be below
    /// `min`: the provider's word wins).
    ceiling: f64,
    /// `None`: latency is not a signal.
    tolerance: Option<f64>,
    /// The long-run mean latency of a window, in seconds.
    long_run: Option<f64>,
    window: Window,
    /// When the limit at the last overload may be probed again (counted in
    /// saturated windows).
    probing: Probing,
}

/// The answers since the window opened.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    successes: u32,
    /// The sum of the successes' latencies, in seconds.
    latency_sum: f64,
    /// The limit was reached at some answer.
    saturated: bool,
    /// Answers that found the provider full while other clients held some
    /// of its slots.
    crowded: u32,
}

impl Aimd {
    /// A limit starting at `initial` within `[min, max]`, with latency a
    /// signal when `tolerance` is set.
    pub(crate) fn new(initial: u32, min: u32, max: u32, tolerance: Option<f64>) -> Self {
        let (min, max) = (f64::from(min.max(1)), f64::from(max.max(min.max(1))));
        Self {
            limit: f64::from(initial).clamp(min, max),
            min,
            max,
            ceiling: max,
            tolerance,
            long_run: None,
            window: Window::default(),
            probing: Probing::fixed(PROBE_GAP),
        }
    }

    /// The limit in whole calls.
    pub(crate) fn limit(&self) -> u32 {
        // Within [1, 100_000]: an exact, small integer.
        self.limit.floor() as u32
    }

    /// A successful answer after `latency`; `saturated`: every slot was
    /// taken (or callers waited) as it came.
    pub(crate) fn on_success(&mut self, latency: Duration, saturated: bool) {
        let window = &mut self.window;
        window.successes += 1;
        window.saturated |= saturated;
        window.latency_sum += latency.as_secs_f64();
        if window.successes >= self.limit() {
            self.close_window();
        }
    }

    /// The service said it is over its limit (a concurrency `429`, a timeout).
    pub(crate) fn on_overload(&mut self) {
        self.decrease();
    }

    /// The provider was full while other clients held some of its slots.
    pub(crate) fn on_crowded(&mut self) {
        self.window.crowded += 1;
    }

    /// The provider announced `limit`: it caps this one (a higher one is
    /// grown into).
    pub(crate) fn set_provider_limit(&mut self, limit: Option<u32>) {
        self.ceiling = limit.map_or(self.max, |l| f64::from(l).min(self.max));
        self.limit = self.limit.min(self.ceiling);
    }

    fn close_window(&mut self) {
        let window = std::mem::take(&mut self.window);
        let mean = window.latency_sum / f64::from(window.successes.max(1));
        let slow = match (self.long_run, self.tolerance) {
            (Some(long_run), Some(tolerance)) => mean > long_run * tolerance,
            _ => false,
        };
        self.long_run = Some(match self.long_run {
            Some(long_run) => long_run + LONG_RUN_WEIGHT * (mean - long_run),
            None => mean,
        });
        // Crowded at most answers: one reading taken between two answers
        // handled out of order is not enough.
        if slow || window.crowded * 2 > window.successes {
            self.decrease();
        } else if window.saturated {
            self.probing.window_held();
            self.increase();
        }
    }

    /// One step up, unless it is a probe whose gap has not passed.
    fn increase(&mut self) {
        let next = (self.limit + 1.0).min(self.ceiling);
        if next <= self.limit {
            return;
        }
        // Whole slots: the limit is within [1, 100_000].
        if self.probing.may_step(next.floor() as u32) {
            self.limit = next;
        }
    }

    fn decrease(&mut self) {
        self.probing.refused(self.limit());
        // At least one whole slot: at small limits a tenth is less than one,
        // and the limit would stay where it was refused.
        let lower = (self.limit * DECREASE).min(self.limit.floor() - 1.0);
        self.limit = lower.max(self.min.min(self.ceiling));
        // The answers so far came at the old limit: a new window starts.
        self.window = Window::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Closes one saturated window of successes at `latency`.
    fn full_window(aimd: &mut Aimd, latency: Duration) {
        for _ in 0..aimd.limit() {
            aimd.on_success(latency, true);
        }
    }

    #[test]
    fn grows_by_one_per_saturated_window_up_to_the_ceiling() {
        let mut aimd = Aimd::new(4, 1, 6, Some(2.0));
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 5);
        full_window(&mut aimd, 100 * MS);
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 6, "never above max");
    }

    #[test]
    fn does_not_grow_while_slots_are_left_over() {
        let mut aimd = Aimd::new(4, 1, 10, None);
        for _ in 0..100 {
            aimd.on_success(MS, false);
        }
        assert_eq!(aimd.limit(), 4);
    }

    #[test]
    fn overload_shrinks_by_a_tenth_down_to_min() {
        let mut aimd = Aimd::new(20, 2, 100, None);
        aimd.on_overload();
        assert_eq!(aimd.limit(), 18);
        for _ in 0..100 {
            aimd.on_overload();
        }
        assert_eq!(aimd.limit(), 2);
    }

    #[test]
    fn a_small_limit_drops_by_a_whole_slot() {
        let mut aimd = Aimd::new(5, 1, 100, None);
        aimd.on_overload();
        assert_eq!(aimd.limit(), 4, "not 4.5, which is still 4 + a probe");
        for _ in 1..PROBE_GAP {
            full_window(&mut aimd, MS);
        }
        assert_eq!(aimd.limit(), 4, "5 was refused: a probe waits out the gap");
        full_window(&mut aimd, MS);
        assert_eq!(aimd.limit(), 5, "probed again after the gap");
        aimd.on_overload();
        assert_eq!(aimd.limit(), 4);
    }

    #[test]
    fn a_slow_window_is_overload_once_the_long_run_is_known() {
        let mut aimd = Aimd::new(10, 1, 100, Some(2.0));
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 11);
        full_window(&mut aimd, 150 * MS);
        assert_eq!(aimd.limit(), 12, "1.5× the usual is within the tolerance");
        full_window(&mut aimd, 400 * MS);
        assert_eq!(aimd.limit(), 10, "more than 2× the usual: 12 × 0.9");

        let mut blind = Aimd::new(10, 1, 100, None);
        full_window(&mut blind, 100 * MS);
        full_window(&mut blind, 400 * MS);
        assert_eq!(
            blind.limit(),
            12,
            "latency is no signal without a tolerance"
        );
    }

    #[test]
    fn a_crowded_window_shrinks_instead_of_growing() {
        let mut aimd = Aimd::new(10, 1, 100, None);
        aimd.on_crowded();
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 11, "one crowded answer of ten is noise");
        for _ in 0..6 {
            aimd.on_crowded();
        }
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 9, "six of eleven: 11 × 0.9");
        full_window(&mut aimd, 100 * MS);
        assert_eq!(aimd.limit(), 10, "the next window is judged afresh");
    }

    /// Windows against a provider that refuses any limit above `allowed`:
    /// how many were refused.
    fn against(aimd: &mut Aimd, allowed: u32, windows: usize) -> usize {
        let mut refused = 0;
        for _ in 0..windows {
            if aimd.limit() > allowed {
                aimd.on_overload();
                refused += 1;
            } else {
                full_window(aimd, MS);
            }
        }
        refused
    }

    #[test]
    fn a_refused_limit_is_probed_once_per_gap_and_a_higher_one_is_found() {
        let mut aimd = Aimd::new(4, 1, 100, None);
        let refused = against(&mut aimd, 4, 1_000);
        // One probe per gap of 20 windows and the window it is refused in:
        // 48; a probe every other window would be refused 500 times.
        assert!(refused <= 48, "{refused} refusals in 1000 windows");
        assert_eq!(aimd.limit(), 4);

        // The provider now allows 8: the next probe holds, and each step
        // above it is a probe after a gap that halves as each holds (20, 10,
        // 5, 2 windows); a probe above 8 waits out the whole gap again.
        let refused = against(&mut aimd, 8, 50);
        assert!(
            aimd.limit() >= 8,
            "found within 50 windows of halving gaps: {}",
            aimd.limit()
        );
        assert!((1..=6).contains(&refused), "{refused} refusals above 8");
    }

    #[test]
    fn below_the_refused_limit_the_climb_is_not_delayed() {
        let mut aimd = Aimd::new(20, 1, 100, None);
        against(&mut aimd, 20, 200);
        assert_eq!(aimd.limit(), 20);
        // Overload from elsewhere (a crowded provider) takes it down to 18;
        // it climbs back to 19 at once, and probes 20 only after the gap.
        aimd.on_overload();
        assert_eq!(aimd.limit(), 18);
        full_window(&mut aimd, MS);
        assert_eq!(aimd.limit(), 19);
        full_window(&mut aimd, MS);
        assert_eq!(aimd.limit(), 19, "20 was refused last: a probe waits");
    }

    #[test]
    fn the_provider_limit_caps_and_may_be_followed() {
        let mut aimd = Aimd::new(10, 1, 100, None);
        aimd.set_provider_limit(Some(4));
        assert_eq!(aimd.limit(), 4);
        aimd.set_provider_limit(Some(8));
        assert_eq!(aimd.limit(), 4, "a higher cap is grown into");
        for limit in [5, 6, 7, 8, 8] {
            full_window(&mut aimd, MS);
            assert_eq!(aimd.limit(), limit);
        }
        aimd.set_provider_limit(None);
        full_window(&mut aimd, MS);
        assert_eq!(aimd.limit(), 9, "no cap but max");

        let mut floored = Aimd::new(10, 5, 100, None);
        floored.set_provider_limit(Some(2));
        assert_eq!(floored.limit(), 2, "the provider's word wins over min");
        floored.on_overload();
        assert_eq!(floored.limit(), 2);
    }
}
