//! The durable call store's cost to the pipeline: the same contacts through
//! the real [`Campaign`](callguard_agent::campaign::Campaign) against zero-latency mocks on 127.0.0.1, once with
//! the in-memory queue and once with the SQLite store (a temporary file) — and
//! PostgreSQL when `CALLGUARD_TEST_POSTGRES_URL` is set — in the same run.
//! Each round runs both back to back (alternating which goes first), and the
//! cost is read from the median of the rounds' ratios: this machine's speed
//! can change between two rounds, which a ratio of two medians would mix in.
//! CPU per contact is printed beside it: this process's (agent and mocks)
//! and that of the `postgres` processes. A server on the same cores takes
//! its share of them, which a database machine of its own would not; so
//! PostgreSQL is measured twice: on the shared cores, and with its server
//! on a core of its own while both queues' pipelines run on the others
//! (pinned with `taskset`; skipped where that cannot be done).
//!
//! `cargo bench -p callguard-agent --bench store`

// A bench measures wall-clock time: std's Instant is what it needs.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callguard_agent::app::App;
use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::Contact;
use callguard_agent::queue::CallQueue;
use callguard_mocks::{MockConfig, MockServer};
use callguard_store::{CallStore, StoreLocation, StoreSettings};

mod support;
use support::{median, mock_config, process_cpu_time, schedstat_cpu_time, verdict};

/// Contacts per run.
const CONTACTS: usize = 5000;
/// Rounds measured (one more warms up).
const ROUNDS: usize = 7;
/// Workers (the agent's default).
const WORKERS: usize = 4;
/// Most contacts/s the durable store may cost.
const MAX_COST: f64 = 0.20;

/// Campaigns run so far.
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone)]
enum Backend {
    Memory,
    Durable(StoreLocation),
}

impl Backend {
    /// Whether its queue is a PostgreSQL server's (whose CPU is read too).
    fn is_postgres(&self) -> bool {
        matches!(self, Self::Durable(StoreLocation::Postgres(_)))
    }
}

/// Where the processes of a measurement ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Every process on all cores.
    SharedCores,
    /// The PostgreSQL server on a core of its own ([`ServerApart`]).
    ServerApart,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Self::SharedCores => "shared cores",
            Self::ServerApart => "server on a core of its own",
        }
    }
}

async fn queue(
    config: &AgentConfig,
    backend: &Backend,
    contacts: Vec<Contact>,
    run: usize,
) -> CallQueue {
    match backend {
        Backend::Memory => CallQueue::new(contacts, 5),
        Backend::Durable(location) => {
            // The agent's own settings (its lease batch), on a table per run.
            let settings = StoreSettings {
                table: format!("bench_pipeline_{}_{run}", std::process::id()),
                ..config.queue.store_settings()
            };
            let store = CallStore::open(location.clone(), settings)
                .await
                .expect("the store opens");
            let queue = CallQueue::with_store(Arc::new(store));
            queue.import(&contacts).await.expect("import");
            queue
        }
    }
}

/// What one campaign measured.
struct Round {
    /// Contacts/s.
    rate: f64,
    /// This process's CPU time (the agent and the mocks), if readable.
    cpu: Option<Duration>,
    /// The `postgres` processes' CPU time, for a PostgreSQL queue.
    server_cpu: Option<Duration>,
}

/// One campaign through `backend`.
async fn run(config: &AgentConfig, backend: &Backend) -> Round {
    let name = match backend {
        Backend::Memory => "memory".to_owned(),
        Backend::Durable(_) => "durable".to_owned(),
    };
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let contacts = support::contacts(CONTACTS, &format!("{name}-{run}"));
    let queue = Arc::new(queue(config, backend, contacts, run).await);
    let mut campaign = App::build(config.clone())
        .expect("the bench config builds")
        .campaign(queue.clone());
    campaign.health = None;
    campaign.progress = false;
    let server_cpu_now = || backend.is_postgres().then(|| cpu_time_of("postgres"));
    let (cpu_before, server_before) = (process_cpu_time(), server_cpu_now());
    let started = Instant::now();
    let summary = campaign.run(std::future::pending()).await;
    let elapsed = started.elapsed();
    // Read while this round's connection (its backend process) is open.
    let (cpu_after, server_after) = (process_cpu_time(), server_cpu_now());
    // Closing the store (SQLite checkpoints its WAL into the file) is a
    // once-per-campaign cost, not a per-contact one: it happens after timing.
    drop(queue);
    assert_eq!(summary.completed, CONTACTS, "{summary:?}");
    Round {
        rate: CONTACTS as f64 / elapsed.as_secs_f64(),
        cpu: cpu_after
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        server_cpu: server_before
            .zip(server_after)
            .map(|(before, after)| cpu_used(&before, &after)),
    }
}

/// The live processes named `name` (their `/proc/PID/comm`), by pid; none
/// where `/proc` is not readable.
fn processes_named(name: &str) -> Vec<(u32, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let pid = path.file_name()?.to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            (comm.trim_end() == name).then_some((pid, path))
        })
        .collect()
}

/// CPU time used so far by each live process named `name` (single-threaded
/// processes, as PostgreSQL's server and backends are), by pid.
fn cpu_time_of(name: &str) -> HashMap<u32, Duration> {
    processes_named(name)
        .into_iter()
        .filter_map(|(pid, path)| Some((pid, schedstat_cpu_time(&path)?)))
        .collect()
}

/// The CPU time the processes of `after` used since `before` (one started
/// since counts from zero; one that ended is not counted).
fn cpu_used(before: &HashMap<u32, Duration>, after: &HashMap<u32, Duration>) -> Duration {
    after
        .iter()
        .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}

/// Microseconds per contact of `cpu`.
fn per_contact(cpu: Duration) -> f64 {
    cpu.as_secs_f64() * 1e6 / CONTACTS as f64
}

/// Restricts every thread of process `pid` to the CPUs of `list` (as
/// `taskset -c` reads it); whether that worked.
fn pin(pid: u32, list: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", list, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of
/// `/proc/self/status`, e.g. `0-3,6`), in order; none where unreadable.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let range = |part: &str| -> Option<std::ops::RangeInclusive<usize>> {
        match part.split_once('-') {
            Some((first, last)) => Some(first.parse().ok()?..=last.parse().ok()?),
            None => part.parse().ok().map(|cpu| cpu..=cpu),
        }
    };
    list.trim().split(',').filter_map(range).flatten().collect()
}

/// The PostgreSQL server on the last of this process's CPUs and this
/// process on the others, until dropped (new backends inherit the server's
/// CPU); then every one of them is given all of this process's CPUs.
struct ServerApart {
    all: String,
}

impl ServerApart {
    /// `Err` says why it cannot be done here.
    fn pin() -> Result<Self, String> {
        let cpus = allowed_cpus();
        let Some((server_cpu, others)) = cpus.split_last().filter(|(_, others)| !others.is_empty())
        else {
            return Err(format!("{} CPU available", cpus.len()));
        };
        let server = processes_named("postgres");
        if server.is_empty() {
            return Err("no postgres process is visible in /proc".to_owned());
        }
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let apart = Self { all: list(&cpus) };
        let server_cpu = server_cpu.to_string();
        if server.iter().all(|(pid, _)| pin(*pid, &server_cpu))
            && pin(std::process::id(), &list(others))
        {
            Ok(apart)
        } else {
            Err("`taskset` could not pin them (missing, or not allowed)".to_owned())
        }
    }
}

impl Drop for ServerApart {
    fn drop(&mut self) {
        for (pid, _) in processes_named("postgres") {
            pin(pid, &self.all);
        }
        pin(std::process::id(), &self.all);
    }
}

/// Runs the paired rounds of the in-memory queue and `backend` (`name`),
/// placed as `placement` says, and prints the ratio and CPU per contact.
async fn measure(config: &AgentConfig, name: &str, backend: &Backend, placement: Placement) {
    let (mut memory, mut stored, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let pair = if round % 2 == 0 {
            let m = run(config, &Backend::Memory).await;
            (m, run(config, backend).await)
        } else {
            let s = run(config, backend).await;
            (run(config, &Backend::Memory).await, s)
        };
        if round > 0 {
            ratios.push(pair.1.rate / pair.0.rate);
            memory.push(pair.0);
            stored.push(pair.1);
        }
    }
    let rate = |rounds: &[Round]| median(rounds.iter().map(|r| r.rate).collect());
    // The median of a CPU time per contact, if every round has it.
    let cpu = |rounds: &[Round], of: fn(&Round) -> Option<Duration>| -> Option<f64> {
        let cpu: Option<Vec<f64>> = rounds.iter().map(|r| of(r).map(per_contact)).collect();
        cpu.map(median)
    };
    let ratio = median(ratios);
    println!(
        "{}: memory {:>8.0} contacts/s   {name} {:>8.0} contacts/s   \
         ratio (median of rounds) {ratio:.3}   cost {:.1}% (target < {:.0}%: {})",
        placement.label(),
        rate(&memory),
        rate(&stored),
        (1.0 - ratio) * 100.0,
        MAX_COST * 100.0,
        verdict(1.0 - ratio < MAX_COST)
    );
    let this_process = |r: &Round| r.cpu;
    if let (Some(memory_cpu), Some(stored_cpu)) =
        (cpu(&memory, this_process), cpu(&stored, this_process))
    {
        let mut line = format!(
            "  CPU per contact (median): this process {memory_cpu:.1} µs with memory, \
             {stored_cpu:.1} µs with {name}"
        );
        if let Some(server) = cpu(&stored, |r| r.server_cpu) {
            line.push_str(&format!("; postgres processes {server:.1} µs"));
            if placement == Placement::SharedCores {
                // On cores the pipeline keeps busy, the server's CPU
                // alone bounds the ratio.
                let cap = memory_cpu / (memory_cpu + server);
                line.push_str(&format!(" (on these cores, a ratio of at most {cap:.2})"));
            }
        }
        println!("{line}");
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = std::env::temp_dir().join(format!("callguard-bench-store-{}", std::process::id()));
    runtime.block_on(async {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("the mocks start");
        let config = mock_config(&server, WORKERS, "");
        let mut durable = vec![("sqlite", StoreLocation::Sqlite(dir.join("calls.db")))];
        match std::env::var("CALLGUARD_TEST_POSTGRES_URL") {
            Ok(url) => durable.push(("postgres", StoreLocation::parse(&url).expect("url"))),
            Err(_) => println!("postgres: skipped (CALLGUARD_TEST_POSTGRES_URL is not set)"),
        }
        println!(
            "## pipeline with the call store: {CONTACTS} contacts, {WORKERS} workers, \
             lease batch {}, zero-latency mocks, median of {ROUNDS} rounds",
            config.queue.lease_batch()
        );
        for (name, location) in durable {
            let backend = Backend::Durable(location);
            measure(&config, name, &backend, Placement::SharedCores).await;
            if backend.is_postgres() {
                match ServerApart::pin() {
                    Ok(_apart) => measure(&config, name, &backend, Placement::ServerApart).await,
                    Err(why) => println!("{}: skipped ({why})", Placement::ServerApart.label()),
                }
            }
        }
        server.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(dir);
}
