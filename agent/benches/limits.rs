//! Provider limits end to end, in wall-clock time over real sockets: a fake
//! ElevenLabs that serves `LIMIT` requests at once, each taking `LATENCY`
//! (its 50 ms queue, then `429 too_many_concurrent_requests`), and campaigns
//! of `CONTACTS` contacts with `WORKERS` workers per agent — far more than the
//! limit — through the whole agent (`App::build`; a concurrency `429` is
//! retried after `retry.concurrency_delay`, 100 ms, whatever the backoff).
//! The LLM and the CRM answer at once, so the TTS limit is the bottleneck and
//! the ideal rate is `LIMIT / LATENCY` contacts per second.
//!
//! Rows, each with one agent and with three agents sharing the mock's limit
//! (the contacts split between them, each agent with its own queue):
//!
//! * (a) `off`: no limiter at all (`[limits] follow_headers = false`) — every
//!   worker sends, each concurrency `429` retried after 100 ms;
//! * (b) `adaptive, no headers`: the mock keeps its limit to itself and the
//!   TTS limiter is AIMD (`mode = "adaptive"`), finding it from the `429`s;
//! * (c) `header-aware`: the defaults — the limit the mock's headers announce;
//! * a reference, one agent: `static` at exactly the limit, what a perfectly
//!   informed fixed config gets in the same run.
//!
//! For each: contacts/s and its share of the ideal, the `429` share of TTS
//! attempts (from the mock's own counts), the TTS limit at the end, and that
//! every contact completed (none failed, expired, lost or duplicated). The
//! rows run `ROUNDS` times, interleaved; the medians are printed with the
//! targets: (c) ≥ 90 % of the ideal with ≤ 2 % 429s, (b) ≥ 85 % with ≤ 5 %.
//!
//! `cargo bench -p callguard-agent --bench limits` (about 13 minutes);
//! `-- header-aware/3 static` runs only the rows whose name (`label/agents`)
//! contains one of the words.

// A bench measures wall-clock time: std's Instant is what it needs.
#![allow(clippy::disallowed_types)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use callguard_agent::app::App;
use callguard_agent::campaign::Summary;
use callguard_agent::queue::CallQueue;
use callguard_mocks::{
    ConcurrencyLimit, EndpointKind, Fault, FaultMode, MockConfig, MockLimits, MockServer, Service,
};
use callguard_testkit::load_average;

mod support;
use support::{median, mock_config, process_cpu_time, verdict};

/// Concurrent requests the fake ElevenLabs serves.
const LIMIT: u32 = 4;
/// Each TTS request's time.
const LATENCY: Duration = Duration::from_millis(150);
/// Contacts per row, split between the agents.
const CONTACTS: usize = 300;
/// Workers per agent.
const WORKERS: usize = 24;
/// Times every row runs; medians are reported.
const ROUNDS: usize = 5;

/// How the agents limit their TTS calls, and whether the mock announces its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limiting {
    Off,
    AdaptiveWithoutHeaders,
    HeaderAware,
    StaticAtTheLimit,
}

impl Limiting {
    const ALL: [Self; 4] = [
        Self::Off,
        Self::AdaptiveWithoutHeaders,
        Self::HeaderAware,
        Self::StaticAtTheLimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Off => "(a) off",
            Self::AdaptiveWithoutHeaders => "(b) adaptive, no headers",
            Self::HeaderAware => "(c) header-aware",
            Self::StaticAtTheLimit => "reference: static = limit",
        }
    }

    /// Whether the mock's answers carry the concurrency headers.
    fn headers(self) -> bool {
        self != Self::AdaptiveWithoutHeaders
    }

    /// The agents' limiter settings (TOML sections).
    fn settings(self) -> String {
        match self {
            Self::Off => "[limits]\nfollow_headers = false\n".to_owned(),
            Self::AdaptiveWithoutHeaders => {
                "[services.elevenlabs.limits]\nmode = \"adaptive\"\n".to_owned()
            }
            Self::HeaderAware => String::new(),
            Self::StaticAtTheLimit => {
                format!(
                    "[services.elevenlabs.limits]\nmode = \"static\"\nmax_concurrency = {LIMIT}\n"
                )
            }
        }
    }

    /// The numbers of agents it runs with.
    fn agents(self) -> &'static [usize] {
        match self {
            Self::StaticAtTheLimit => &[1],
            _ => &[1, 3],
        }
    }

    /// The target of its row: (share of the ideal, largest 429 share).
    fn target(self) -> Option<(f64, f64)> {
        match self {
            Self::HeaderAware => Some((0.90, 0.02)),
            Self::AdaptiveWithoutHeaders => Some((0.85, 0.05)),
            Self::Off | Self::StaticAtTheLimit => None,
        }
    }
}

/// What one row's run came to.
#[derive(Debug, Clone)]
struct Figures {
    rate: f64,
    refused_share: f64,
    refused: u64,
    /// The TTS limits the agents ended with.
    limits: Vec<Option<u32>>,
    /// Contacts not completed, and lost or duplicated ones.
    not_completed: usize,
    unaccounted: usize,
    /// The process's CPU time per completed contact (mocks included).
    cpu_per_contact: Option<Duration>,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ideal = f64::from(LIMIT) / LATENCY.as_secs_f64();
    println!(
        "callguard-agent limits benchmark: TTS limit {LIMIT}, {} ms per request, \
         {CONTACTS} contacts, {WORKERS} workers per agent, ideal {ideal:.1} contacts/s; \
         {} worker threads, load average {}",
        LATENCY.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    // Arguments (words that are not flags) keep the rows whose name contains
    // one of them, as `(c) header-aware/3`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let rows: Vec<(Limiting, usize)> = Limiting::ALL
        .iter()
        .flat_map(|&limiting| limiting.agents().iter().map(move |&n| (limiting, n)))
        .filter(|(limiting, n)| {
            let name = format!("{}/{n}", limiting.label());
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); rows.len()];
    runtime.block_on(async {
        for round in 1..=ROUNDS {
            println!("\n## round {round} (load average {})", load_average());
            for (i, &(limiting, agents)) in rows.iter().enumerate() {
                let figures = run(limiting, agents, &format!("r{round}")).await;
                println!(
                    "{:<27} {agents} agent(s): {:>5.1} contacts/s ({:>5.1} % of ideal), \
                     429s {:>5.2} % ({}), TTS limits at the end {:?}, not completed {}, \
                     lost/duplicated {}, CPU {:.0?} per contact",
                    limiting.label(),
                    figures.rate,
                    figures.rate / ideal * 100.0,
                    figures.refused_share * 100.0,
                    figures.refused,
                    figures.limits,
                    figures.not_completed,
                    figures.unaccounted,
                    figures.cpu_per_contact.unwrap_or_default(),
                );
                results[i].push(figures);
            }
        }
    });
    println!("\n## medians of {ROUNDS} rounds (ideal {ideal:.1} contacts/s)");
    println!("| row | agents | contacts/s | of ideal | 429 share | not completed, lost | target |");
    println!("|---|---|---|---|---|---|---|");
    for ((limiting, agents), figures) in rows.iter().zip(&results) {
        let rate = median(figures.iter().map(|f| f.rate).collect());
        let share = median(figures.iter().map(|f| f.refused_share).collect());
        let missing: usize = figures
            .iter()
            .map(|f| f.not_completed + f.unaccounted)
            .sum();
        let target = match limiting.target() {
            Some((of_ideal, max_refused)) => {
                let met = rate / ideal >= of_ideal && share <= max_refused && missing == 0;
                format!(
                    "≥ {:.0} %, ≤ {:.0} %, none lost: {}",
                    of_ideal * 100.0,
                    max_refused * 100.0,
                    verdict(met)
                )
            }
            None => String::new(),
        };
        println!(
            "| {} | {agents} | {rate:.1} | {:.1} % | {:.2} % | {missing} | {target} |",
            limiting.label(),
            rate / ideal * 100.0,
            share * 100.0,
        );
    }
}

/// One row: a fresh mock, `agents` agents splitting the contacts, all run at once.
async fn run(limiting: Limiting, agents: usize, round: &str) -> Figures {
    let limit = if limiting.headers() {
        ConcurrencyLimit::new(LIMIT)
    } else {
        ConcurrencyLimit::new(LIMIT).without_headers()
    };
    let server = MockServer::start(MockConfig {
        limits: MockLimits {
            elevenlabs: Some(limit),
            llm: None,
        },
        ..MockConfig::default()
    })
    .await
    .expect("the mocks start on a free loopback port");
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(LATENCY))
        .expect("a valid fault");
    let config = mock_config(&server, WORKERS, &limiting.settings());
    let campaigns: Vec<_> = (0..agents)
        .map(|agent| {
            let contacts = support::contacts(
                CONTACTS / agents,
                &format!("{round}-{limiting:?}-{agents}-{agent}"),
            );
            let app = App::build(config.clone()).expect("the bench config builds");
            let queue = Arc::new(CallQueue::new(contacts, config.queue.max_deferrals));
            let mut campaign = app.campaign(queue);
            campaign.health = None;
            campaign.progress = false;
            campaign
        })
        .collect();
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let runs: Vec<_> = campaigns
        .into_iter()
        .map(|campaign| tokio::spawn(campaign.run(std::future::pending())))
        .collect();
    let mut summaries: Vec<Summary> = Vec::new();
    for run in runs {
        summaries.push(run.await.expect("the campaign runs to its end"));
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let stats = server.stats();
    let ok = stats.count(Service::Elevenlabs, EndpointKind::Api, "200");
    let refused = stats.count(Service::Elevenlabs, EndpointKind::Api, "429");
    server.shutdown().await;
    let completed: usize = summaries.iter().map(|s| s.completed).sum();
    Figures {
        rate: completed as f64 / elapsed.as_secs_f64(),
        refused_share: refused as f64 / (ok + refused).max(1) as f64,
        refused,
        limits: summaries
            .iter()
            .map(|s| s.limits.get("elevenlabs").and_then(|l| l.limit))
            .collect(),
        not_completed: CONTACTS / agents * agents - completed,
        unaccounted: summaries.iter().map(|s| s.lost + s.duplicated).sum(),
        cpu_per_contact: cpu.map(|cpu| cpu / u32::try_from(completed.max(1)).unwrap_or(u32::MAX)),
    }
}
