//! The event hub: every resilience event of a campaign is published here once
//! and handed to each subscriber in turn.
//!
//! Three kinds of publisher feed it: the executors (attempts, retries,
//! rejections, exhausted and permanent failures), the campaign's breaker
//! follower (each transition the breaker registry reports, whatever caused it:
//! a call, a health probe, an operator or a remote health server) and the
//! campaign's workers (deferrals). The subscribers are the metrics (the only
//! counter store: the summary reads its totals from them), the alerts and the
//! summary's transition log. A subscriber runs on the publisher's task, so it
//! must be quick and must not block; work that needs to wait (waking deferred
//! contacts in the store) is the follower's own, after it has published.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

use callguard_core::{CircuitState, ResilienceEvent, Transition};
use callguard_retry::EventSink;
use tokio::time::Instant;

/// Hands each event to every subscriber, in the order they were given.
pub struct EventHub {
    subscribers: Vec<Arc<dyn EventSink>>,
}

impl EventHub {
    /// A hub with these subscribers.
    pub fn new(subscribers: Vec<Arc<dyn EventSink>>) -> Self {
        Self { subscribers }
    }
}

impl EventSink for EventHub {
    fn on_event(&self, event: &ResilienceEvent) {
        for subscriber in &self.subscribers {
            subscriber.on_event(event);
        }
    }
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

/// One breaker transition as the summary shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TransitionRecord {
    /// State before.
    pub from: CircuitState,
    /// State after.
    pub to: CircuitState,
    /// Seconds since the start the log was read against.
    pub at: f64,
    /// Why.
    pub reason: String,
}

/// Every breaker transition published, for the summary.
#[derive(Debug, Default)]
pub struct TransitionLog {
    transitions: Mutex<Vec<Transition>>,
}

impl TransitionLog {
    /// The transitions so far, per service, timed from `started` (the
    /// campaign's start).
    pub fn records(&self, started: Instant) -> BTreeMap<String, Vec<TransitionRecord>> {
        let mut records: BTreeMap<String, Vec<TransitionRecord>> = BTreeMap::new();
        for transition in self.transitions.lock().iter() {
            records
                .entry(transition.service.to_string())
                .or_default()
                .push(TransitionRecord {
                    from: transition.from,
                    to: transition.to,
                    at: transition
                        .at
                        .saturating_duration_since(started)
                        .as_secs_f64(),
                    reason: transition.reason.to_string(),
                });
        }
        records
    }
}

impl EventSink for TransitionLog {
    fn on_event(&self, event: &ResilienceEvent) {
        if let ResilienceEvent::BreakerTransition(transition) = event {
            self.transitions.lock().push(transition.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use callguard_core::{ServiceName, TransitionReason};

    use super::*;

    fn transition(from: CircuitState, to: CircuitState) -> Transition {
        Transition {
            service: ServiceName::new("elevenlabs").unwrap(),
            from,
            to,
            reason: TransitionReason::ConsecutiveFailures { count: 2 },
            generation: 1,
            at: Instant::now(),
            wall_time: SystemTime::now(),
        }
    }

    #[test]
    fn each_subscriber_sees_each_event_once() {
        let seen: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
        let hub = EventHub::new(
            seen.iter()
                .map(|count| {
                    let count = count.clone();
                    Arc::new(move |_: &ResilienceEvent| {
                        count.fetch_add(1, Ordering::Relaxed);
                    }) as Arc<dyn EventSink>
                })
                .collect(),
        );
        let event = ResilienceEvent::BreakerTransition(transition(
            CircuitState::Closed,
            CircuitState::Open,
        ));
        hub.on_event(&event);
        hub.on_event(&event);
        for count in &seen {
            assert_eq!(count.load(Ordering::Relaxed), 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_log_keeps_transitions_with_their_time_since_the_start_given() {
        let log = TransitionLog::default();
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        log.on_event(&ResilienceEvent::BreakerTransition(transition(
            CircuitState::Closed,
            CircuitState::Open,
        )));
        log.on_event(&ResilienceEvent::Deferred {
            service: ServiceName::new("elevenlabs").unwrap(),
            wait: Duration::from_secs(1),
        });
        let records = log.records(started);
        assert_eq!(records.len(), 1);
        let tts = &records["elevenlabs"];
        assert_eq!(tts.len(), 1, "only transitions are logged: {tts:?}");
        assert_eq!(
            (tts[0].from, tts[0].to),
            (CircuitState::Closed, CircuitState::Open)
        );
        assert!((tts[0].at - 1.5).abs() < 1e-9, "{}", tts[0].at);
        assert_eq!(tts[0].reason, "2 consecutive failures");
    }
}
