//! One circuit breaker per service name, and one stream of all their transitions.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;

use callguard_core::{ServiceName, Transition};
use tokio::sync::broadcast;

use crate::breaker::CircuitBreaker;
use crate::config::BreakerConfig;

const SHARED_CHANNEL_CAPACITY: usize = 1024;

/// The breakers of a process, keyed by service name.
pub struct BreakerRegistry {
    default_config: BreakerConfig,
    breakers: RwLock<BTreeMap<ServiceName, Arc<CircuitBreaker>>>,
    transitions_tx: broadcast::Sender<Transition>,
}

impl std::fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("breakers", &self.all())
            .finish_non_exhaustive()
    }
}

impl Default for BreakerRegistry {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl BreakerRegistry {
    /// An empty registry; services registered without their own settings get
    /// `default_config`.
    pub fn new(default_config: BreakerConfig) -> Self {
        let (transitions_tx, _) = broadcast::channel(SHARED_CHANNEL_CAPACITY);
        Self {
            default_config,
            breakers: RwLock::new(BTreeMap::new()),
            transitions_tx,
        }
    }

    /// The breaker for `service`, created with `config` if it does not exist yet
    /// (an existing breaker keeps its settings).
    pub fn register(&self, service: ServiceName, config: BreakerConfig) -> Arc<CircuitBreaker> {
        if let Some(existing) = self.get(service.as_str()) {
            return existing;
        }
        let mut breakers = self.breakers.write();
        breakers
            .entry(service.clone())
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::with_shared_channel(
                    service,
                    config,
                    Some(self.transitions_tx.clone()),
                ))
            })
            .clone()
    }

    /// The breaker for `service`, created with the default settings if needed.
    pub fn get_or_default(&self, service: &ServiceName) -> Arc<CircuitBreaker> {
        self.register(service.clone(), self.default_config.clone())
    }

    /// The breaker for `service`, if registered.
    pub fn get(&self, service: &str) -> Option<Arc<CircuitBreaker>> {
        self.breakers.read().get(service).cloned()
    }

    /// Every breaker, sorted by service name.
    pub fn all(&self) -> Vec<Arc<CircuitBreaker>> {
        self.breakers.read().values().cloned().collect()
    }

    /// Transitions of every breaker in the registry, including breakers
    /// registered after subscribing.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::CircuitState;

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_breaker_per_service() {
        let registry = BreakerRegistry::default();
        let a = registry.get_or_default(&name("llm"));
        let b = registry.register(
            name("llm"),
            BreakerConfig {
                failure_threshold: 9,
                ..BreakerConfig::default()
            },
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.config().failure_threshold, 2, "first registration wins");
        registry.get_or_default(&name("crm"));
        let names: Vec<_> = registry
            .all()
            .iter()
            .map(|b| b.service().to_string())
            .collect();
        assert_eq!(names, ["crm", "llm"]);
        assert!(registry.get("tts").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn shared_stream_carries_every_breakers_transitions() {
        let registry = BreakerRegistry::default();
        let mut all = registry.transitions();
        registry.get_or_default(&name("llm")).force_open("test");
        registry.get_or_default(&name("crm")).force_open("test");
        let first = all.try_recv().unwrap();
        let second = all.try_recv().unwrap();
        assert_eq!(
            (first.service.as_str(), first.to),
            ("llm", CircuitState::ForcedOpen)
        );
        assert_eq!(second.service.as_str(), "crm");
    }
}
