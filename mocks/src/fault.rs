//! Fault descriptions (what the control API accepts) and the book of injected
//! faults that decides, request by request, which fault applies.
//!
//! A fault lives from `injected + after` until `injected + after + for` (or
//! forever without `for`). When several live faults cover a request, the most
//! recently injected one that applies wins; a fault applies when its service
//! matches, its `contacts` (if any) include the request's contact, and — for
//! faults with a `rate` — the fault's own seeded random number generator says
//! so. A fault with `times` is over once it has answered that many requests. Each fault has its own generator, seeded from the config seed and the
//! fault's id, so the same injections and the same requests give the same picks.

use std::time::Duration;

use callguard_core::config::{nonzero_duration, within};
use callguard_core::{ConfigDuration, ValidationError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Service;

/// How a faulty service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultMode {
    /// Answers normally; shadows older faults while it is live.
    Ok,
    /// `503 Service Unavailable`, with `Retry-After` when `retry_after` is set.
    Unavailable,
    /// Never answers: the request is held until the client gives up, the fault
    /// ends or is cleared (then it is answered normally), or the config's
    /// `timeout_cap` passes (then `504`).
    Timeout,
    /// Closes the connection with a TCP reset instead of answering.
    Reset,
    /// Waits `latency`, then answers normally.
    Slow,
    /// `401`, as for a wrong API key.
    Unauthorized,
    /// `429 Too Many Requests`, with `Retry-After` when `retry_after` is set.
    RateLimited,
    /// `429` with code `system_busy` — ElevenLabs' answer when it is
    /// overloaded (clients back off) — with `Retry-After` when `retry_after`
    /// is set.
    SystemBusy,
    /// `400 Bad Request`; usually narrowed with `contacts`.
    BadRequest,
    /// `503` for a `rate` share of requests (default 0.5).
    Flaky,
    /// `200` with a `text/html` body that is neither JSON nor audio.
    Garbage,
    /// `200` with a body of the config's `oversized_body_bytes`, streamed.
    Oversized,
}

impl FaultMode {
    /// The `rate` of a flaky fault that does not give one.
    pub const DEFAULT_FLAKY_RATE: f64 = 0.5;

    const fn sends_retry_after(self) -> bool {
        matches!(
            self,
            Self::Unavailable | Self::Flaky | Self::RateLimited | Self::SystemBusy
        )
    }
}

/// A fault to inject: the JSON body of `POST /_control/faults`, or the
/// argument of [`MockServer::inject`](crate::MockServer::inject).
///
/// ```json
/// {"service": "elevenlabs", "mode": "unavailable", "after": "3s", "for": "20s", "retry_after": "2s"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The service that misbehaves (API and health endpoints alike).
    pub service: Service,
    /// How it misbehaves.
    pub mode: FaultMode,
    /// How long the fault lasts once started (`"for"` in JSON); forever if unset.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<ConfigDuration>,
    /// Delay between injection and the fault's start; at once if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ConfigDuration>,
    /// Share of requests hit, between 0 and 1; all if unset (flaky: 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Added delay of a `slow` fault (required for `slow`, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<ConfigDuration>,
    /// `Retry-After` sent with `unavailable`, `flaky`, `rate_limited` and
    /// `system_busy` answers, rounded up to whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<ConfigDuration>,
    /// Contact ids the fault is limited to (from the `X-Contact-Id` header or
    /// a top-level `contact_id` in the JSON body); every request if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    /// How many requests the fault answers before it is over (one contact's
    /// first attempts, with `contacts`); every request while it lasts if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Fault {
    /// A fault of `mode` on `service`, starting now and lasting forever.
    pub fn new(service: Service, mode: FaultMode) -> Self {
        Self {
            service,
            mode,
            duration: None,
            after: None,
            rate: None,
            latency: None,
            retry_after: None,
            contacts: Vec::new(),
            times: None,
        }
    }

    /// Ends the fault `duration` after it starts.
    #[must_use]
    pub fn lasting(mut self, duration: Duration) -> Self {
        self.duration = Some(duration.into());
        self
    }

    /// Starts the fault `delay` after injection.
    #[must_use]
    pub fn starting_after(mut self, delay: Duration) -> Self {
        self.after = Some(delay.into());
        self
    }

    /// Hits only a `rate` share of requests.
    #[must_use]
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Sets the added delay of a `slow` fault.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency.into());
        self
    }

    /// Sends `Retry-After` with `unavailable`, `flaky`, `rate_limited` and
    /// `system_busy` answers.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after.into());
        self
    }

    /// Ends the fault once it has answered `times` requests.
    #[must_use]
    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    /// Limits the fault to requests for these contact ids.
    #[must_use]
    pub fn for_contacts<I, S>(mut self, contacts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.contacts = contacts.into_iter().map(Into::into).collect();
        self
    }

    /// Checks that the fields fit together, naming the first that does not.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(rate) = self.rate {
            within("rate", rate, 0.0, 1.0)?;
        }
        if let Some(duration) = self.duration {
            nonzero_duration("for", duration.get())?;
        }
        if self.times == Some(0) {
            return Err(ValidationError::new("times", 0, "at least 1 when set"));
        }
        match (self.mode, self.latency) {
            (FaultMode::Slow, None) => {
                return Err(ValidationError::new(
                    "latency",
                    "nothing",
                    "set for mode slow",
                ));
            }
            (FaultMode::Slow, Some(_)) | (_, None) => {}
            (mode, Some(latency)) => {
                return Err(ValidationError::new(
                    "latency",
                    latency,
                    format!("unset for mode {} (only slow takes a latency)", mode.name()),
                ));
            }
        }
        if let (Some(retry_after), false) = (self.retry_after, self.mode.sends_retry_after()) {
            return Err(ValidationError::new(
                "retry_after",
                retry_after,
                format!(
                    "unset for mode {} (only unavailable, flaky, rate_limited and system_busy \
                     send Retry-After)",
                    self.mode.name()
                ),
            ));
        }
        if self.contacts.iter().any(String::is_empty) {
            return Err(ValidationError::new(
                "contacts",
                "\"\"",
                "a list of non-empty contact ids",
            ));
        }
        Ok(())
    }

    fn effective_rate(&self) -> f64 {
        match (self.rate, self.mode) {
            (Some(rate), _) => rate,
            (None, FaultMode::Flaky) => FaultMode::DEFAULT_FLAKY_RATE,
            (None, _) => 1.0,
        }
    }
}

impl FaultMode {
    /// The mode's name as written in JSON (`rate_limited`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Slow => "slow",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::SystemBusy => "system_busy",
            Self::BadRequest => "bad_request",
            Self::Flaky => "flaky",
            Self::Garbage => "garbage",
            Self::Oversized => "oversized",
        }
    }
}

/// Identifies an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

/// Whether a listed fault is already acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FaultState {
    /// Started and not yet over.
    Active,
    /// Waiting for its `after` delay.
    Scheduled,
}

/// A fault that has not ended yet, as listed by `GET /_control/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedFault {
    /// The id given at injection.
    pub id: FaultId,
    /// Active now, or waiting to start.
    pub state: FaultState,
    /// Time until it starts (zero when active).
    pub starts_in: ConfigDuration,
    /// Time until it ends; unset for a fault that lasts forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_in: Option<ConfigDuration>,
    /// The fault as injected.
    #[serde(flatten)]
    pub fault: Fault,
}

/// What the book decided for one request.
#[derive(Debug, Clone)]
pub(crate) struct Pick {
    pub(crate) id: FaultId,
    pub(crate) mode: FaultMode,
    pub(crate) latency: Option<Duration>,
    pub(crate) retry_after: Option<Duration>,
}

struct Entry {
    id: FaultId,
    fault: Fault,
    starts: Instant,
    ends: Option<Instant>,
    /// Requests it may still answer, with `times`.
    left: Option<u32>,
    rng: fastrand::Rng,
}

impl Entry {
    fn live_at(&self, now: Instant) -> bool {
        self.starts <= now && !self.over(now)
    }

    fn over(&self, now: Instant) -> bool {
        self.ends.is_some_and(|end| now >= end) || self.left == Some(0)
    }
}

/// The injected faults that have not ended, oldest first.
pub(crate) struct FaultBook {
    seed: u64,
    next_id: u64,
    entries: Vec<Entry>,
}

impl FaultBook {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            next_id: 1,
            entries: Vec::new(),
        }
    }

    /// Adds already validated faults, all timed from `now`.
    pub(crate) fn insert(&mut self, faults: Vec<Fault>, now: Instant) -> Vec<FaultId> {
        self.prune(now);
        faults
            .into_iter()
            .map(|fault| {
                let id = FaultId(self.next_id);
                self.next_id += 1;
                let starts = now + fault.after.map_or(Duration::ZERO, ConfigDuration::get);
                let ends = fault.duration.map(|d| starts + d.get());
                // Spread the ids over the seed's bits so neighbouring faults
                // get unrelated sequences.
                let rng =
                    fastrand::Rng::with_seed(self.seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                self.entries.push(Entry {
                    id,
                    left: fault.times,
                    fault,
                    starts,
                    ends,
                    rng,
                });
                id
            })
            .collect()
    }

    /// Removes every fault, or those of one service; returns how many.
    pub(crate) fn clear(&mut self, service: Option<Service>) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|e| service.is_some_and(|s| s != e.fault.service));
        before - self.entries.len()
    }

    pub(crate) fn list(&mut self, now: Instant) -> Vec<ListedFault> {
        self.prune(now);
        self.entries
            .iter()
            .map(|e| ListedFault {
                id: e.id,
                state: if e.starts <= now {
                    FaultState::Active
                } else {
                    FaultState::Scheduled
                },
                starts_in: e.starts.saturating_duration_since(now).into(),
                ends_in: e.ends.map(|end| end.saturating_duration_since(now).into()),
                fault: e.fault.clone(),
            })
            .collect()
    }

    /// Whether a live fault of `service` is narrowed to contacts, so the
    /// request's contact id is worth looking for.
    pub(crate) fn wants_contact(&self, service: Service, now: Instant) -> bool {
        self.entries
            .iter()
            .any(|e| e.fault.service == service && !e.fault.contacts.is_empty() && e.live_at(now))
    }

    /// The fault that applies to a request, if any (see the module docs).
    pub(crate) fn pick(
        &mut self,
        service: Service,
        contact: Option<&str>,
        now: Instant,
    ) -> Option<Pick> {
        self.prune(now);
        self.entries.iter_mut().rev().find_map(|e| {
            let fault = &e.fault;
            let covers = fault.service == service
                && e.live_at(now)
                && (fault.contacts.is_empty()
                    || contact.is_some_and(|c| fault.contacts.iter().any(|f| f == c)));
            if !covers {
                return None;
            }
            let rate = fault.effective_rate();
            if rate < 1.0 && e.rng.f64() >= rate {
                return None;
            }
            if let Some(left) = &mut e.left {
                *left -= 1;
            }
            Some(Pick {
                id: e.id,
                mode: fault.mode,
                latency: fault.latency.map(ConfigDuration::get),
                retry_after: fault.retry_after.map(ConfigDuration::get),
            })
        })
    }

    /// When fault `id` ends: `None` if it is gone or over, `Some(None)` if it
    /// lasts forever.
    pub(crate) fn end_of(&self, id: FaultId, now: Instant) -> Option<Option<Instant>> {
        self.entries
            .iter()
            .find(|e| e.id == id && e.live_at(now))
            .map(|e| e.ends)
    }

    fn prune(&mut self, now: Instant) {
        self.entries.retain(|e| !e.over(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Fault, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn parses_the_control_api_shape() {
        let fault = parse(
            r#"{"service":"elevenlabs","mode":"unavailable","for":"20s","after":"3s","retry_after":"2s"}"#,
        )
        .unwrap();
        assert_eq!(
            fault,
            Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
                .lasting(Duration::from_secs(20))
                .starting_after(Duration::from_secs(3))
                .with_retry_after(Duration::from_secs(2))
        );
        fault.validate().unwrap();
        let back: Fault = serde_json::from_value(serde_json::to_value(&fault).unwrap()).unwrap();
        assert_eq!(back, fault);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let err = parse(r#"{"service":"crm"}"#).unwrap_err().to_string();
        assert!(err.contains("mode"), "{err}");
        let err = parse(r#"{"service":"crm","mode":"ok","fro":"2s"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fro"), "{err}");
        let err = parse(r#"{"service":"crm","mode":"explode"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("explode"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                Fault::new(Service::Llm, FaultMode::Flaky).with_rate(1.5),
                "rate",
            ),
            (Fault::new(Service::Llm, FaultMode::Slow), "latency"),
            (
                Fault::new(Service::Llm, FaultMode::Reset).with_latency(Duration::from_secs(1)),
                "latency",
            ),
            (
                Fault::new(Service::Llm, FaultMode::Timeout)
                    .with_retry_after(Duration::from_secs(1)),
                "retry_after",
            ),
            (
                Fault::new(Service::Llm, FaultMode::Ok).lasting(Duration::ZERO),
                "for",
            ),
            (
                Fault::new(Service::Llm, FaultMode::BadRequest).for_contacts([""]),
                "contacts",
            ),
            (
                Fault::new(Service::Llm, FaultMode::Unavailable).times(0),
                "times",
            ),
        ];
        for (fault, key) in cases {
            assert_eq!(fault.validate().unwrap_err().key, key, "{fault:?}");
        }
    }

    #[test]
    fn a_scheduled_fault_acts_only_in_its_window() {
        let t0 = Instant::now();
        let mut book = FaultBook::new(1);
        let fault = Fault::new(Service::Crm, FaultMode::Unavailable)
            .starting_after(Duration::from_secs(3))
            .lasting(Duration::from_secs(20));
        book.insert(vec![fault], t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(book.pick(Service::Crm, None, at(2)).is_none());
        assert_eq!(book.list(at(2))[0].state, FaultState::Scheduled);
        assert!(book.pick(Service::Crm, None, at(3)).is_some());
        assert!(book.pick(Service::Llm, None, at(3)).is_none());
        assert!(book.pick(Service::Crm, None, at(22)).is_some());
        assert!(book.pick(Service::Crm, None, at(23)).is_none());
        assert!(book.list(at(23)).is_empty(), "ended faults are dropped");
    }

    #[test]
    fn the_newest_applicable_fault_wins() {
        let now = Instant::now();
        let mut book = FaultBook::new(1);
        book.insert(
            vec![
                Fault::new(Service::Llm, FaultMode::Unavailable),
                Fault::new(Service::Llm, FaultMode::BadRequest).for_contacts(["c-7"]),
            ],
            now,
        );
        let mode =
            |book: &mut FaultBook, contact| book.pick(Service::Llm, contact, now).map(|p| p.mode);
        assert_eq!(mode(&mut book, Some("c-7")), Some(FaultMode::BadRequest));
        assert_eq!(mode(&mut book, Some("c-8")), Some(FaultMode::Unavailable));
        assert_eq!(mode(&mut book, None), Some(FaultMode::Unavailable));
        assert!(book.wants_contact(Service::Llm, now));
        assert!(!book.wants_contact(Service::Crm, now));
        assert_eq!(book.clear(Some(Service::Crm)), 0);
        assert_eq!(book.clear(None), 2);
        assert_eq!(mode(&mut book, None), None);
    }

    #[test]
    fn a_counted_fault_answers_its_contact_that_many_times() {
        let now = Instant::now();
        let mut book = FaultBook::new(1);
        let fault = parse(r#"{"service":"llm","mode":"unavailable","contacts":["c-1"],"times":3}"#)
            .unwrap();
        assert_eq!(
            fault,
            Fault::new(Service::Llm, FaultMode::Unavailable)
                .for_contacts(["c-1"])
                .times(3)
        );
        book.insert(vec![fault], now);
        let hit = |book: &mut FaultBook, contact| book.pick(Service::Llm, contact, now).is_some();
        assert!(
            !hit(&mut book, Some("c-2")),
            "another contact is not counted"
        );
        assert!(!hit(&mut book, None), "nor a health probe");
        for _ in 0..3 {
            assert!(hit(&mut book, Some("c-1")));
        }
        assert!(
            !hit(&mut book, Some("c-1")),
            "the fourth request is answered"
        );
        assert!(book.list(now).is_empty(), "a used-up fault is dropped");
    }

    #[test]
    fn rates_follow_the_seed() {
        let now = Instant::now();
        let hits = |seed| {
            let mut book = FaultBook::new(seed);
            book.insert(
                vec![Fault::new(Service::Crm, FaultMode::Flaky).with_rate(0.3)],
                now,
            );
            (0..1000)
                .map(|_| book.pick(Service::Crm, None, now).is_some())
                .collect::<Vec<_>>()
        };
        let first = hits(9);
        assert_eq!(first, hits(9));
        assert_ne!(first, hits(10));
        let share = first.iter().filter(|h| **h).count();
        assert!((250..350).contains(&share), "{share} of 1000 hit");
    }
}
