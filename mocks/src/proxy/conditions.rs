//! What a fault proxy is told to do to its traffic — refuse new connections,
//! blackhole, add latency — and the cuts of open connections.
//!
//! Each condition holds from when it is set until healed or until its own end
//! (`for`), compared lazily with the tokio clock, so no timer task runs:
//! whoever waits for a condition to pass sleeps until its end or until the
//! conditions change (a `watch` bumped on every change), then looks again.
//! Cuts are a counter in a `watch` of their own: a connection remembers the
//! count when it was accepted and ends once the count moves.

use std::time::Duration;

use callguard_core::ConfigDuration;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// A condition set until healed, or until `ends`.
#[derive(Debug, Clone, Copy)]
struct Lasting<T> {
    value: T,
    ends: Option<Instant>,
}

impl<T: Copy> Lasting<T> {
    fn new(value: T, duration: Option<Duration>) -> Self {
        Self {
            value,
            ends: duration.map(|d| Instant::now() + d),
        }
    }
}

/// `Some` while `condition` holds at `now`.
fn live<T: Copy>(condition: Option<Lasting<T>>, now: Instant) -> Option<Lasting<T>> {
    condition.filter(|c| c.ends.is_none_or(|end| now < end))
}

#[derive(Debug, Default, Clone, Copy)]
struct Conditions {
    refuse: Option<Lasting<()>>,
    blackhole: Option<Lasting<()>>,
    latency: Option<Lasting<Duration>>,
}

/// The conditions in force on a proxy; `None` for each that is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConditions {
    /// New connections are refused (the listening socket is closed).
    pub refuse: Option<ConditionState>,
    /// Nothing flows: open connections stall, new ones are accepted and stall.
    pub blackhole: Option<ConditionState>,
    /// Data is delayed, each way.
    pub latency: Option<LatencyState>,
}

/// One condition as the control API shows it: how long it still lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionState {
    /// Time until it ends by itself; unset while it lasts until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_in: Option<ConfigDuration>,
}

/// The added latency as the control API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyState {
    /// Delay added to every chunk of data, each way.
    pub latency: ConfigDuration,
    /// Time until it ends by itself; unset while it lasts until healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_in: Option<ConfigDuration>,
}

/// Time left until `ends`, rounded up to whole milliseconds (`"4s 998ms"`).
fn ends_in(ends: Option<Instant>, now: Instant) -> Option<ConfigDuration> {
    ends.map(|end| {
        let millis = end
            .saturating_duration_since(now)
            .as_nanos()
            .div_ceil(1_000_000);
        ConfigDuration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
    })
}

/// The conditions of one proxy and the signals that make connections look again.
#[derive(Debug)]
pub(crate) struct Controls {
    conditions: Mutex<Conditions>,
    changed: watch::Sender<u64>,
    cuts: watch::Sender<u64>,
}

impl Controls {
    pub(crate) fn new() -> Self {
        Self {
            conditions: Mutex::new(Conditions::default()),
            changed: watch::Sender::new(0),
            cuts: watch::Sender::new(0),
        }
    }

    fn change(&self, edit: impl FnOnce(&mut Conditions)) {
        edit(&mut self.conditions.lock());
        self.changed.send_modify(|n| *n += 1);
    }

    /// Ends every open connection.
    pub(crate) fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// A receiver whose `changed()` completes at the next cut.
    pub(crate) fn cuts(&self) -> watch::Receiver<u64> {
        self.cuts.subscribe()
    }

    pub(crate) fn refuse(&self, duration: Option<Duration>) {
        self.change(|c| c.refuse = Some(Lasting::new((), duration)));
    }

    pub(crate) fn blackhole(&self, duration: Option<Duration>) {
        self.change(|c| c.blackhole = Some(Lasting::new((), duration)));
    }

    /// Sets the added latency; zero removes it.
    pub(crate) fn set_latency(&self, latency: Duration, duration: Option<Duration>) {
        self.change(|c| {
            c.latency = (!latency.is_zero()).then(|| Lasting::new(latency, duration));
        });
    }

    pub(crate) fn heal(&self) {
        self.change(|c| *c = Conditions::default());
    }

    pub(crate) fn refusing(&self) -> bool {
        live(self.conditions.lock().refuse, Instant::now()).is_some()
    }

    /// The latency to add to data received now.
    pub(crate) fn latency(&self) -> Duration {
        live(self.conditions.lock().latency, Instant::now()).map_or(Duration::ZERO, |l| l.value)
    }

    /// Returns once new connections are no longer refused.
    pub(crate) async fn until_accepting(&self) {
        self.wait_out(|c| c.refuse).await;
    }

    /// Returns once data flows again (no blackhole).
    pub(crate) async fn until_flowing(&self) {
        self.wait_out(|c| c.blackhole).await;
    }

    async fn wait_out(&self, condition: impl Fn(&Conditions) -> Option<Lasting<()>>) {
        // Subscribed before looking, so a change made after the look wakes us.
        let mut changed = self.changed.subscribe();
        loop {
            let Some(holding) = live(condition(&self.conditions.lock()), Instant::now()) else {
                return;
            };
            match holding.ends {
                Some(end) => tokio::select! {
                    () = sleep_until(end) => {}
                    _ = changed.changed() => {}
                },
                None => {
                    let _ = changed.changed().await;
                }
            }
        }
    }

    /// A receiver whose `changed()` completes at the next change of the conditions.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The conditions in force now.
    pub(crate) fn state(&self) -> ProxyConditions {
        let now = Instant::now();
        let conditions = *self.conditions.lock();
        let plain = |c: Option<Lasting<()>>| {
            live(c, now).map(|c| ConditionState {
                ends_in: ends_in(c.ends, now),
            })
        };
        ProxyConditions {
            refuse: plain(conditions.refuse),
            blackhole: plain(conditions.blackhole),
            latency: live(conditions.latency, now).map(|l| LatencyState {
                latency: l.value.into(),
                ends_in: ends_in(l.ends, now),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_condition_with_an_end_passes_by_itself() {
        let controls = Controls::new();
        controls.blackhole(Some(Duration::from_secs(5)));
        let start = Instant::now();
        controls.until_flowing().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(controls.state().blackhole, None);
    }

    #[tokio::test(start_paused = true)]
    async fn heal_ends_a_condition_without_an_end() {
        let controls = std::sync::Arc::new(Controls::new());
        controls.refuse(None);
        assert!(controls.refusing());
        let waiter = tokio::spawn({
            let controls = std::sync::Arc::clone(&controls);
            async move { controls.until_accepting().await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        controls.heal();
        waiter.await.unwrap();
        assert!(!controls.refusing());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_lasts_its_time_and_zero_removes_it() {
        let controls = Controls::new();
        controls.set_latency(Duration::from_millis(200), Some(Duration::from_secs(1)));
        assert_eq!(controls.latency(), Duration::from_millis(200));
        assert_eq!(
            controls.state().latency,
            Some(LatencyState {
                latency: ConfigDuration::from_millis(200),
                ends_in: Some(ConfigDuration::from_secs(1)),
            })
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(controls.latency(), Duration::ZERO);
        controls.set_latency(Duration::from_millis(200), None);
        controls.set_latency(Duration::ZERO, None);
        assert_eq!(controls.state().latency, None);
    }
}
