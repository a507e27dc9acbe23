//! Deduplication per (service, kind) within a cooldown, counting what it
//! suppresses so the next alert can say so.
//!
//! The first alert of a (service, kind) passes and starts its cooldown; the
//! ones that follow within the cooldown are suppressed and counted; the first
//! one after it passes with that count and starts a new cooldown. The cooldown
//! runs from the last alert *sent*, so a steady stream of failures yields one
//! alert per cooldown, each with the number it stands for.

use std::collections::HashMap;
use std::time::Duration;

use callguard_core::ServiceName;
use tokio::time::Instant;

use crate::AlertKind;

/// The dedup state: the last alert sent per (service, kind).
#[derive(Debug)]
pub(crate) struct Dedup {
    cooldown: Duration,
    last: HashMap<(ServiceName, AlertKind), Slot>,
}

#[derive(Debug)]
struct Slot {
    sent_at: Instant,
    suppressed: u32,
}

impl Dedup {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            last: HashMap::new(),
        }
    }

    /// `Some(n)` when an alert of (service, kind) may go out now, `n` being how
    /// many were suppressed since the last one; `None` when it is suppressed.
    pub(crate) fn admit(
        &mut self,
        service: &ServiceName,
        kind: AlertKind,
        now: Instant,
    ) -> Option<u32> {
        match self.last.get_mut(&(service.clone(), kind)) {
            Some(slot) if now.duration_since(slot.sent_at) < self.cooldown => {
                slot.suppressed = slot.suppressed.saturating_add(1);
                None
            }
            Some(slot) => {
                slot.sent_at = now;
                Some(std::mem::take(&mut slot.suppressed))
            }
            None => {
                self.last.insert(
                    (service.clone(), kind),
                    Slot {
                        sent_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_cooldown_with_the_suppressed_count() {
        let crm = ServiceName::new("crm").unwrap();
        let llm = ServiceName::new("llm").unwrap();
        let mut dedup = Dedup::new(Duration::from_secs(300));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);

        assert_eq!(dedup.admit(&crm, AlertKind::BreakerOpened, at(0)), Some(0));
        assert_eq!(dedup.admit(&crm, AlertKind::BreakerOpened, at(10)), None);
        assert_eq!(dedup.admit(&crm, AlertKind::BreakerOpened, at(299)), None);
        // Other kinds and services have cooldowns of their own.
        assert_eq!(dedup.admit(&crm, AlertKind::BreakerClosed, at(20)), Some(0));
        assert_eq!(dedup.admit(&llm, AlertKind::BreakerOpened, at(20)), Some(0));
        // The cooldown is over: two were suppressed.
        assert_eq!(
            dedup.admit(&crm, AlertKind::BreakerOpened, at(300)),
            Some(2)
        );
        // A new cooldown from the alert just sent, and a fresh count.
        assert_eq!(dedup.admit(&crm, AlertKind::BreakerOpened, at(599)), None);
        assert_eq!(
            dedup.admit(&crm, AlertKind::BreakerOpened, at(600)),
            Some(1)
        );
        assert_eq!(
            dedup.admit(&crm, AlertKind::BreakerOpened, at(901)),
            Some(0)
        );
    }
}
