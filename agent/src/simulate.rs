//! `callguard simulate`: the mocks in-process on a free loopback port, a
//! scenario of injected faults, and a campaign run against them over real HTTP.
//!
//! Every duration of the story — retry delays, recovery timeout, health
//! interval, request timeouts, the mocks' latencies, fault schedule and
//! queue for a concurrency slot — is
//! multiplied by `time_scale`, so `0.1` tells the same story ten times faster.

use std::time::Duration;

use callguard_core::ConfigDuration;
use callguard_mocks::{
    ConcurrencyLimit, Fault, FaultMode, MockConfig, MockLimits, MockServer, SHEETS_STATIC_TOKEN,
    Service, TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID,
};

use crate::contacts::Contact;

/// A story to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The LLM fails the first contact three times (a fault limited to that
    /// contact, so its breaker stays closed while the others' calls succeed):
    /// retries after 5 s, 10 s and 20 s, and the fourth attempt succeeds.
    /// Meanwhile the TTS service falters (half its requests fail from t = 2 s),
    /// then goes down for 24 s: breaker OPEN, contacts deferred while others
    /// proceed, HALF_OPEN probes that fail while it is still down, recovery
    /// seen by the health check, deferred contacts complete.
    Outage,
    /// The LLM rejects our key for 15 s: no retries, the breaker opens, the
    /// contacts wait for the key to work again.
    Auth,
    /// The CRM rejects the records of two contacts: those fail, the breaker
    /// stays CLOSED, everyone else completes.
    BadRequest,
    /// The LLM fails a third of its requests: retries absorb it.
    Flaky,
    /// A mix of 503s, rate limits with Retry-After, resets, hangs, slow answers
    /// and an outage.
    Chaos,
    /// ElevenLabs allows 4 concurrent requests and 16 workers call it: the
    /// TTS limiter sends one request first, whose answer's headers tell the
    /// limit; from then on the calls over it wait their turn in callguard
    /// instead of being refused, and everyone completes at the rate the
    /// provider allows.
    Limits,
}

impl Scenario {
    /// The faults of the story, at time scale 1, on top of the baseline latencies.
    pub fn faults(self, contacts: &[Contact]) -> Vec<Fault> {
        let secs = Duration::from_secs;
        match self {
            Self::Outage => {
                let retried = contacts.first().map(|first| {
                    Fault::new(Service::Llm, FaultMode::Unavailable)
                        .for_contacts([first.id.clone()])
                        .times(3)
                });
                let tts = [
                    Fault::new(Service::Elevenlabs, FaultMode::Flaky)
                        .with_rate(0.5)
                        .starting_after(secs(2))
                        .lasting(secs(2)),
                    Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
                        .starting_after(secs(4))
                        .lasting(secs(24)),
                ];
                retried.into_iter().chain(tts).collect()
            }
            Self::Auth => vec![
                Fault::new(Service::Llm, FaultMode::Unauthorized)
                    .starting_after(secs(2))
                    .lasting(secs(15)),
            ],
            Self::BadRequest => {
                let chosen = contacts.iter().skip(2).step_by(8).take(2);
                vec![
                    Fault::new(Service::Crm, FaultMode::BadRequest)
                        .for_contacts(chosen.map(|c| c.id.clone())),
                ]
            }
            Self::Flaky => vec![Fault::new(Service::Llm, FaultMode::Flaky).with_rate(0.33)],
            Self::Chaos => vec![
                Fault::new(Service::Llm, FaultMode::Flaky).with_rate(0.15),
                Fault::new(Service::Crm, FaultMode::Reset).with_rate(0.1),
                Fault::new(Service::Crm, FaultMode::RateLimited)
                    .with_rate(0.1)
                    .with_retry_after(secs(1)),
                Fault::new(Service::Llm, FaultMode::Timeout).with_rate(0.05),
                Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
                    .starting_after(secs(4))
                    .lasting(secs(12)),
            ],
            Self::Limits => Vec::new(),
        }
    }

    /// The services' own limits in the story, at time scale 1.
    pub fn provider_limits(self) -> MockLimits {
        match self {
            Self::Limits => MockLimits {
                elevenlabs: Some(ConcurrencyLimit::new(LIMITS_TTS_CONCURRENCY)),
                llm: None,
            },
            _ => MockLimits::default(),
        }
    }

    /// Settings the story needs beyond `simulate`'s defaults; a config file
    /// or the environment still overrides them.
    pub fn settings(self) -> toml::Table {
        let queue = |key: &str, value: i64| {
            toml::Table::from_iter([(
                "queue".to_owned(),
                toml::Value::Table(toml::Table::from_iter([(
                    key.to_owned(),
                    toml::Value::Integer(value),
                )])),
            )])
        };
        match self {
            Self::Limits => queue("workers", LIMITS_WORKERS),
            Self::Outage => queue("max_deferrals", OUTAGE_MAX_DEFERRALS),
            _ => toml::Table::new(),
        }
    }
}

/// The deferrals a contact may take in scenario `outage`: its TTS outage
/// lasts several breaker cycles, and a contact is deferred once or more in
/// each (while OPEN, and again while a HALF_OPEN probe is out) — the default
/// of 5 left no room for one more cycle on a loaded machine, and the story is
/// that everyone completes.
const OUTAGE_MAX_DEFERRALS: i64 = 20;

/// The concurrent requests the fake ElevenLabs allows in scenario `limits`.
pub const LIMITS_TTS_CONCURRENCY: u32 = 4;
/// The workers of scenario `limits`: four times the TTS limit.
const LIMITS_WORKERS: i64 = 16;

/// How long each faked service takes to answer, at time scale 1: a chat
/// completion is the slowest, a CRM write the quickest.
fn baseline_latencies() -> [(Service, Duration); 3] {
    [
        (Service::Llm, Duration::from_millis(600)),
        (Service::Elevenlabs, Duration::from_millis(400)),
        (Service::Crm, Duration::from_millis(100)),
    ]
}

/// A TOML section of string values.
fn table<const N: usize>(entries: [(&str, String); N]) -> toml::Value {
    toml::Value::Table(
        entries
            .into_iter()
            .map(|(key, value)| (key.to_owned(), toml::Value::String(value)))
            .collect(),
    )
}

/// Multiplies a duration by the time scale.
pub fn scale(duration: Duration, factor: f64) -> Duration {
    duration.mul_f64(factor)
}

fn scale_fault(mut fault: Fault, factor: f64) -> Fault {
    let scaled = |d: Option<ConfigDuration>| d.map(|d| ConfigDuration::new(scale(d.get(), factor)));
    fault.after = scaled(fault.after);
    fault.duration = scaled(fault.duration);
    fault.latency = scaled(fault.latency);
    fault
}

/// The shared secret the simulated webhook receiver is signed with.
pub const SIMULATED_WEBHOOK_SECRET: &str = "simulated-webhook-secret-7f3a9c2e";

/// The mocks serving a scenario.
pub struct SimulatedServices {
    /// The running mocks.
    pub server: MockServer,
    faults: Vec<Fault>,
}

impl SimulatedServices {
    /// Starts the mocks on a free loopback port.
    pub async fn start(
        scenario: Scenario,
        contacts: &[Contact],
        seed: u64,
        time_scale: f64,
    ) -> Result<Self, callguard_mocks::MockError> {
        let mut limits = scenario.provider_limits();
        if let Some(limit) = &mut limits.elevenlabs {
            limit.queue = ConfigDuration::new(scale(limit.queue.get(), time_scale));
        }
        let server = MockServer::start(MockConfig {
            seed,
            limits,
            ..MockConfig::default()
        })
        .await?;
        let mut faults: Vec<Fault> = baseline_latencies()
            .into_iter()
            .map(|(service, latency)| Fault::new(service, FaultMode::Slow).with_latency(latency))
            .collect();
        faults.extend(scenario.faults(contacts));
        let faults = faults
            .into_iter()
            .map(|fault| scale_fault(fault, time_scale))
            .collect();
        Ok(Self { server, faults })
    }

    /// The sections that point the agent at these mocks: the three services
    /// at the mocks' address with their keys (request timeouts scaled), alerts
    /// to the mocks' Telegram and webhook, and log rows to their Sheets fake.
    /// A config file's section of the same name replaces one whole
    /// ([`ConfigLoader::stand_ins`](crate::config::ConfigLoader::stand_ins)).
    pub fn stand_ins(&self, time_scale: f64) -> toml::Table {
        let keys = &self.server.config().keys;
        let timeout = scale(Duration::from_secs(10), time_scale).max(Duration::from_millis(250));
        let timeout = ConfigDuration::new(timeout).to_string();
        let services = [
            ("llm", Service::Llm),
            ("elevenlabs", Service::Elevenlabs),
            ("crm", Service::Crm),
        ]
        .into_iter()
        .map(|(name, service)| {
            let section = table([
                ("base_url", self.server.base_url(service)),
                ("api_key", keys.get(service).to_string()),
                ("request_timeout", timeout.clone()),
            ]);
            (name.to_owned(), section)
        })
        .collect();
        let mut alerts = toml::Table::new();
        alerts.insert(
            "telegram".into(),
            table([
                ("api_base", self.server.telegram_api_base()),
                ("bot_token", TELEGRAM_BOT_TOKEN.to_owned()),
                ("chat_id", TELEGRAM_CHAT_ID.to_owned()),
            ]),
        );
        alerts.insert(
            "webhook".into(),
            table([
                ("url", self.server.webhook_url("/alerts")),
                ("secret", SIMULATED_WEBHOOK_SECRET.to_owned()),
            ]),
        );
        toml::Table::from_iter([
            ("services".to_owned(), toml::Value::Table(services)),
            ("alerts".to_owned(), toml::Value::Table(alerts)),
            (
                "sheets".to_owned(),
                table([
                    ("api_base", self.server.sheets_api_base()),
                    ("spreadsheet_id", "callguard-simulation".to_owned()),
                    ("bearer_token", SHEETS_STATIC_TOKEN.to_owned()),
                ]),
            ),
        ])
    }

    /// Injects the scenario's faults; their schedules start now.
    pub fn start_faults(&self) -> Result<(), callguard_core::ValidationError> {
        self.server.inject_all(self.faults.clone()).map(|_| ())
    }
}

/// `n` made-up contacts, `c-001` onwards.
pub fn generate_contacts(n: usize) -> Vec<Contact> {
    const FIRST: [&str; 10] = [
        "Ada",
        "Grace",
        "Alan",
        "Katherine",
        "Linus",
        "Margaret",
        "Dennis",
        "Barbara",
        "Ken",
        "Frances",
    ];
    const LAST: [&str; 7] = [
        "Lovelace", "Hopper", "Turing", "Johnson", "Hamilton", "Ritchie", "Liskov",
    ];
    (1..=n)
        .map(|i| Contact {
            id: format!("c-{i:03}"),
            name: format!("{} {}", FIRST[i % FIRST.len()], LAST[i % LAST.len()]),
            phone: format!("+1-555-{:04}", 100 + i),
            extra: Default::default(),
        })
        .collect()
}
