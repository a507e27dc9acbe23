//! Where an executor publishes its [`ResilienceEvent`]s: a closure, or a tokio
//! broadcast or mpsc sender.

use callguard_core::ResilienceEvent;
use tokio::sync::{broadcast, mpsc};

/// Receives the events of an executor. Called on the call path, so it must be
/// quick and must not block: hand the event to a channel, a counter or a log.
pub trait EventSink: Send + Sync {
    /// One event.
    fn on_event(&self, event: &ResilienceEvent);
}

impl<F> EventSink for F
where
    F: Fn(&ResilienceEvent) + Send + Sync,
{
    fn on_event(&self, event: &ResilienceEvent) {
        self(event);
    }
}

/// Sends a copy to every current receiver; with none, the event is dropped.
impl EventSink for broadcast::Sender<ResilienceEvent> {
    fn on_event(&self, event: &ResilienceEvent) {
        let _ = self.send(event.clone());
    }
}

/// Queues a copy; dropped when the receiver is gone.
impl EventSink for mpsc::UnboundedSender<ResilienceEvent> {
    fn on_event(&self, event: &ResilienceEvent) {
        let _ = self.send(event.clone());
    }
}

/// Queues a copy without waiting; dropped when the channel is full or closed,
/// so a slow consumer never holds up a call.
impl EventSink for mpsc::Sender<ResilienceEvent> {
    fn on_event(&self, event: &ResilienceEvent) {
        let _ = self.try_send(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::ServiceName;
    use std::time::Duration;

    fn event() -> ResilienceEvent {
        ResilienceEvent::RetryScheduled {
            service: ServiceName::new("crm").unwrap(),
            retry_count: 1,
            delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn closures_are_sinks() {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let sink = |e: &ResilienceEvent| {
            assert_eq!(*e, event());
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        sink.on_event(&event());
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn channels_are_sinks() {
        let (tx, mut rx) = broadcast::channel(4);
        tx.on_event(&event());
        assert_eq!(rx.try_recv().unwrap(), event());

        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.on_event(&event());
        assert_eq!(rx.try_recv().unwrap(), event());

        let (tx, mut rx) = mpsc::channel(1);
        tx.on_event(&event());
        tx.on_event(&event()); // full: dropped, not blocked
        assert_eq!(rx.try_recv().unwrap(), event());
        assert!(rx.try_recv().is_err());
    }
}
