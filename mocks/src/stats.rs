//! Request counts per service, endpoint kind and outcome, as served by
//! `GET /_control/stats`.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{EndpointKind, Service};

/// Outcome label of a request whose connection was reset by a `reset` fault.
pub const OUTCOME_RESET: &str = "reset";
/// Outcome label of a request held by a `timeout` fault (counted when the hold
/// starts, whatever happens after).
pub const OUTCOME_TIMEOUT: &str = "timeout";

/// Request counts of every service:
/// `{"elevenlabs": {"api": {"200": 3, "503": 1}, "health": {"200": 2}}, …}`.
///
/// An outcome is the answer's status code (`"200"`), [`OUTCOME_RESET`] or
/// [`OUTCOME_TIMEOUT`]. Control API requests are not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stats {
    /// Counts of each service; every faked service is present.
    pub services: BTreeMap<Service, ServiceStats>,
}

/// Request counts of one service, by endpoint kind and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStats {
    /// Requests to the service's API, by outcome.
    pub api: BTreeMap<String, u64>,
    /// Requests to its `/health` endpoint, by outcome.
    pub health: BTreeMap<String, u64>,
}

impl ServiceStats {
    /// Requests of `kind` that ended in `outcome` (`"503"`, `"reset"`).
    pub fn count(&self, kind: EndpointKind, outcome: &str) -> u64 {
        self.by_kind(kind).get(outcome).copied().unwrap_or(0)
    }

    /// All requests of `kind`.
    pub fn total(&self, kind: EndpointKind) -> u64 {
        self.by_kind(kind).values().sum()
    }

    fn by_kind(&self, kind: EndpointKind) -> &BTreeMap<String, u64> {
        match kind {
            EndpointKind::Api => &self.api,
            EndpointKind::Health => &self.health,
        }
    }
}

impl Stats {
    /// Requests to `service`'s endpoints of `kind` that ended in `outcome`.
    pub fn count(&self, service: Service, kind: EndpointKind, outcome: &str) -> u64 {
        self.services
            .get(&service)
            .map_or(0, |s| s.count(kind, outcome))
    }

    /// All requests to `service`'s endpoints of `kind`.
    pub fn total(&self, service: Service, kind: EndpointKind) -> u64 {
        self.services.get(&service).map_or(0, |s| s.total(kind))
    }

    pub(crate) fn record(&mut self, service: Service, kind: EndpointKind, outcome: &str) {
        let stats = self.services.entry(service).or_default();
        let map = match kind {
            EndpointKind::Api => &mut stats.api,
            EndpointKind::Health => &mut stats.health,
        };
        *map.entry(outcome.to_owned()).or_default() += 1;
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            services: Service::ALL
                .into_iter()
                .map(|s| (s, ServiceStats::default()))
                .collect(),
        }
    }
}

/// The counts of a running server, kept by the middleware that answers.
#[derive(Default)]
pub(crate) struct StatsBook(Mutex<Stats>);

impl StatsBook {
    pub(crate) fn record(&self, service: Service, kind: EndpointKind, outcome: &str) {
        self.0.lock().record(service, kind, outcome);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.0.lock().clone()
    }

    pub(crate) fn reset(&self) {
        *self.0.lock() = Stats::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_service_kind_and_outcome() {
        let mut stats = Stats::default();
        stats.record(Service::Crm, EndpointKind::Api, "201");
        stats.record(Service::Crm, EndpointKind::Api, "201");
        stats.record(Service::Crm, EndpointKind::Health, OUTCOME_RESET);
        assert_eq!(stats.count(Service::Crm, EndpointKind::Api, "201"), 2);
        assert_eq!(stats.count(Service::Crm, EndpointKind::Health, "reset"), 1);
        assert_eq!(stats.total(Service::Crm, EndpointKind::Api), 2);
        assert_eq!(stats.total(Service::Llm, EndpointKind::Api), 0);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["crm"]["api"]["201"], 2);
        assert_eq!(json["elevenlabs"]["health"], serde_json::json!({}));
        assert_eq!(serde_json::from_value::<Stats>(json).unwrap(), stats);
    }
}
