//! Whole-pipeline benchmarks against the in-process mocks on 127.0.0.1, with
//! no injected latency, printed with `println!` (`harness = false`):
//!
//! 1. **Throughput**: the same contacts through the real [`Campaign`] (queue,
//!    pipeline, one executor and breaker per service; no health checker, no
//!    logging subscriber) and through the same three clients called directly
//!    in the same order with the same number of workers (no executor, no
//!    breaker). Both sides run several times, alternating which goes first;
//!    the figure is the median over the rounds of the ratio of CPU per
//!    contact (the process's CPU time over its contacts), with the medians
//!    of contacts/s beside it. A third side, the plain calls taken from and
//!    settled in the campaign's queue, tells the queue's share apart.
//! 2. **Deferral cost**: with the TTS breaker OPEN, the time a worker spends on
//!    a contact whose script is already written, from taking it off the queue
//!    to having deferred it; once with the breaker forced open, once with the
//!    breaker opened by a TTS outage (`503` on every request).
//! 3. **Serving health under load**: the campaign of (1) with the gRPC server
//!    ([`callguard_health::serve`]) serving its breaker registry, quiet, under
//!    64 paced `grpc.health.v1.Health/Check` clients over 8 HTTP/2 connections
//!    (one Check every 10 ms each, as periodic health checkers do), and under
//!    the same 64 clients flat out (closed loop, saturation), the order
//!    rotating every round; the medians of contacts/s are compared, and the
//!    Check figures during the loaded runs are printed.
//! 4. **Throughput with production logging**: (1) again, both sides under
//!    the agent's own subscriber (`callguard_telemetry::init`: the JSON log
//!    file, the console, the OpenTelemetry layer exporting over OTLP to a
//!    receiver in the parent process) — in a child process, since a process
//!    installs its subscriber once.
//!
//! `cargo bench -p callguard-agent --bench pipeline` runs all four;
//! `cargo bench -p callguard-agent --bench pipeline -- health` (or
//! `throughput`, `deferral`, `logging`) runs only the sections named.

// A bench measures wall-clock time: std's Instant is what it needs.
#![allow(clippy::disallowed_types)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use callguard_agent::app::App;
use callguard_agent::campaign::call_under_lease;
use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::Contact;
use callguard_agent::pipeline::{CallResult, Pipeline, call_span};
use callguard_agent::queue::{CallQueue, Deferral, Terminal};
use callguard_clients::{CallOutcome, CallRecord, Prompt, RequestContext};
use callguard_core::CircuitState;
use callguard_health::GrpcOptions;
use callguard_mocks::{EndpointKind, Fault, FaultMode, MockConfig, MockServer, Service};
use callguard_store::Renewals;
use callguard_telemetry::{LoggingConfig, Verbosity};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use callguard_testkit::{Load, Pace, check_load, load_average, nearest_rank};

mod support;
use support::{median, mock_config, process_cpu_time, verdict};

/// Contacts per throughput run.
const CONTACTS: usize = 2_000;
/// Throughput rounds measured; each runs both sides, the first side
/// alternating. One more round before them warms up and is not counted.
const ROUNDS: usize = 15;
/// Workers on both sides (the agent's default `queue.workers`).
const WORKERS: usize = 4;
/// Contacts deferred (and timed) per deferral measurement.
const DEFERRED_CONTACTS: usize = 5_000;
/// Rounds of the health-load comparison; each runs quiet and loaded.
const LOAD_ROUNDS: usize = 6;
/// Check clients and their HTTP/2 connections in the loaded runs.
const CHECK_CLIENTS: usize = 64;
const CHECK_CONNECTIONS: usize = 8;
/// Each paced Check client's interval between requests.
const CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Each probing Check client's interval: health checks as an orchestrator
/// sends them, if very eagerly.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Most throughput serving health may cost the campaign.
const MAX_HEALTH_COST: f64 = 0.05;
/// Most CPU per contact the resilience layer may add to plain calls (the
/// design's target, without a logging subscriber).
const MAX_OVERHEAD: f64 = 0.05;
/// Set, to the directory of its log file, in the child process that
/// measures throughput under the production subscriber.
const LOGGED_RUN_DIR: &str = "CALLGUARD_BENCH_LOGGED_RUN_DIR";
/// Longest mean time the design allows to defer a contact on an OPEN breaker.
const MAX_DEFERRAL: Duration = Duration::from_millis(1);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The child process of the `logging` section: throughput alone, under
    // the agent's production subscriber.
    if let Some(dir) = std::env::var_os(LOGGED_RUN_DIR) {
        runtime.block_on(logged_run(std::path::Path::new(&dir)));
        return;
    }
    runtime.block_on(async {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("the mocks start on a free loopback port");
        let config = bench_config(&server);
        println!(
            "callguard-agent pipeline benchmarks: mocks at {}, {} worker threads, load average {}",
            server.url(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average()
        );
        if wanted("throughput") {
            throughput(&config, Logging::Off).await;
        }
        if wanted("deferral") {
            deferral(&server, &config, Opening::Forced).await;
            deferral(&server, &config, Opening::Outage).await;
        }
        if wanted("health") {
            under_check_load(&config).await;
        }
        server.shutdown().await;
        if wanted("logging") {
            with_production_logging().await;
        }
    });
}

/// Whether the command line asks for `section`: it names it, or names no
/// section at all (cargo passes `--bench` and other flags, which are skipped).
fn wanted(section: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    named.is_empty() || named.iter().any(|arg| arg == section)
}

/// The agent's config for the mocks: quick retries (so an outage opens the
/// TTS breaker in milliseconds) and a recovery timeout longer than the bench,
/// so an OPEN breaker stays OPEN while it is measured.
fn bench_config(server: &MockServer) -> AgentConfig {
    mock_config(
        server,
        WORKERS,
        "[circuit_breaker]\nrecovery_timeout = \"10m\"\n",
    )
}

fn parts(config: &AgentConfig) -> App {
    App::build(config.clone()).expect("the bench config builds")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Resilience,
    /// The plain calls, each contact leased from the in-memory queue and
    /// its final state saved there, as the campaign does.
    Queued,
    Plain,
}

/// Which subscriber the throughput rounds run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logging {
    /// None: spans and events are disabled at their call sites.
    Off,
    /// The agent's own (`callguard_telemetry::init`), exporting spans.
    Production,
}

impl Logging {
    fn describe(self) -> &'static str {
        match self {
            Logging::Off => "no logging subscriber",
            Logging::Production => {
                "production logging: JSON file, console, OpenTelemetry layer exporting over OTLP"
            }
        }
    }
}

async fn throughput(config: &AgentConfig, logging: Logging) {
    let described = logging.describe();
    println!(
        "\n## throughput ({described}): {CONTACTS} contacts, {WORKERS} workers, zero-latency mocks, \
         {ROUNDS} rounds (+1 warm-up), medians"
    );
    let profiled = profiled_side();
    let mut resilience = Vec::new();
    let mut queued = Vec::new();
    let mut plain = Vec::new();
    for round in 0..=ROUNDS {
        let order = if round % 2 == 0 {
            [Side::Resilience, Side::Queued, Side::Plain]
        } else {
            [Side::Plain, Side::Queued, Side::Resilience]
        };
        let mut line = format!("round {round:>2}:");
        for side in order
            .into_iter()
            .filter(|side| profiled.is_none_or(|p| p == *side))
        {
            // Ids unique per run (the CRM mock keeps every record) and of
            // one length on both sides: each id travels through JSON
            // bodies, headers and hashes, which cost by the byte.
            let contacts = support::contacts(CONTACTS, &format!("r{round}-{}", side as u8));
            // Built before the CPU is read: setting up the clients (TLS
            // roots, one `reqwest::Client` per service) is the same for
            // both sides, once per process in the agent, not per contact.
            let app = parts(config);
            let cpu_before = process_cpu_time();
            let elapsed = match side {
                Side::Resilience => run_assembled(config, app, contacts).await,
                Side::Queued => run_queued(config, app.pipeline().clone(), contacts).await,
                Side::Plain => run_plain(app.pipeline().clone(), contacts).await,
            };
            let cpu = process_cpu_time()
                .zip(cpu_before)
                .map(|(after, before)| after.saturating_sub(before) / CONTACTS as u32);
            let run = Run {
                rate: CONTACTS as f64 / elapsed.as_secs_f64(),
                cpu_per_contact: cpu,
            };
            line.push_str(&format!("  {side:?} {:>6.0}/s", run.rate));
            if let Some(cpu) = cpu {
                line.push_str(&format!(" ({cpu:.1?} CPU)"));
            }
            if round > 0 {
                match side {
                    Side::Resilience => resilience.push(run),
                    Side::Queued => queued.push(run),
                    Side::Plain => plain.push(run),
                }
            }
        }
        if round == 0 {
            line.push_str("  (warm-up)");
        }
        println!("{line}");
    }
    if profiled.is_some() {
        return;
    }
    let paired = |side: &[Run], ratio: fn(&Run, &Run) -> Option<f64>| -> Option<f64> {
        let each: Option<Vec<f64>> = side.iter().zip(&plain).map(|(r, p)| ratio(r, p)).collect();
        each.map(median)
    };
    let cpu_ratio_of = |r: &Run, p: &Run| Some(r.cpu_micros()? / p.cpu_micros()?);
    let rate_ratio = paired(&resilience, |r, p| Some(r.rate / p.rate)).unwrap_or(f64::NAN);
    let cpu_ratio = paired(&resilience, cpu_ratio_of);
    let queue_ratio = paired(&queued, cpu_ratio_of);
    let cpu = |runs: &[Run]| -> Option<f64> {
        runs.iter()
            .map(Run::cpu_micros)
            .collect::<Option<Vec<_>>>()
            .map(median)
    };
    let (resilience_cpu, plain_cpu) = (cpu(&resilience), cpu(&plain));
    let resilience = median(resilience.iter().map(|run| run.rate).collect());
    let plain = median(plain.iter().map(|run| run.rate).collect());
    println!("plain calls:          {plain:>7.0} contacts/s (median)");
    println!("with resilience:      {resilience:>7.0} contacts/s (median)");
    println!("contacts/s ratio:     {rate_ratio:.3} (median of each round's resilience/plain)");
    if let (Some(ratio), Some(resilience), Some(plain)) = (cpu_ratio, resilience_cpu, plain_cpu) {
        println!(
            "CPU per contact:      plain {plain:.1} µs, with resilience {resilience:.1} µs \
             (medians; whole process, mocks included)"
        );
        // The target is the resilience layer's own cost: without a
        // subscriber. Under one, the figures are reported as they are.
        let target = match logging {
            Logging::Off => format!(
                ", target ≤ {:.0} %: {}",
                MAX_OVERHEAD * 100.0,
                verdict(ratio - 1.0 <= MAX_OVERHEAD)
            ),
            Logging::Production => String::new(),
        };
        println!(
            "CPU per contact ratio: {ratio:.3} (median of each round's resilience/plain: \
             overhead {:+.1} %{target})",
            (ratio - 1.0) * 100.0,
        );
    }
    if let Some(ratio) = queue_ratio {
        println!(
            "of which the queue:   {ratio:.3} (median of each round's plain calls through \
             the queue/plain: {:+.1} %)",
            (ratio - 1.0) * 100.0,
        );
    }
}

/// The one side `CALLGUARD_BENCH_SIDE` (`resilience`, `queued` or `plain`) asks the
/// throughput rounds to run, to profile it alone (`perf record`, `valgrind`).
fn profiled_side() -> Option<Side> {
    match std::env::var("CALLGUARD_BENCH_SIDE").ok()?.as_str() {
        "resilience" => Some(Side::Resilience),
        "queued" => Some(Side::Queued),
        "plain" => Some(Side::Plain),
        other => panic!("CALLGUARD_BENCH_SIDE={other}: expected resilience, queued or plain"),
    }
}

/// One throughput run.
struct Run {
    rate: f64,
    cpu_per_contact: Option<Duration>,
}

impl Run {
    fn cpu_micros(&self) -> Option<f64> {
        self.cpu_per_contact.map(|cpu| cpu.as_secs_f64() * 1e6)
    }
}

/// The real campaign with `app`'s parts: queue, workers, pipeline with
/// executors and breakers; no health checker, no progress line.
async fn run_assembled(config: &AgentConfig, app: App, contacts: Vec<Contact>) -> Duration {
    let queue = Arc::new(CallQueue::new(contacts, config.queue.max_deferrals));
    // A clone outlives the run, so that dropping the store (as the plain
    // side drops its contacts) is not timed.
    let mut campaign = app.campaign(queue.clone());
    campaign.health = None;
    campaign.progress = false;
    let started = Instant::now();
    let summary = campaign.run(std::future::pending()).await;
    let elapsed = started.elapsed();
    assert_eq!(
        summary.completed, CONTACTS,
        "every contact completes: {summary:?}"
    );
    drop(queue);
    elapsed
}

/// The same requests without the resilience layer: the pipeline's own
/// clients called directly, in the same order, by as many workers.
async fn run_plain(pipeline: Arc<Pipeline>, contacts: Vec<Contact>) -> Duration {
    let contacts = Arc::new(contacts);
    let next = Arc::new(AtomicUsize::new(0));
    run_workers(|| {
        let (pipeline, contacts, next) = (pipeline.clone(), contacts.clone(), next.clone());
        async move {
            let mut completed = 0;
            while let Some(contact) = contacts.get(next.fetch_add(1, Ordering::Relaxed)) {
                plain_call(&pipeline, contact).await;
                completed += 1;
            }
            completed
        }
    })
    .await
}

/// The plain calls of [`run_plain`], each contact leased from an in-memory
/// [`CallQueue`] and its final state saved there, by as many workers: what
/// the queue adds to plain calls.
async fn run_queued(
    config: &AgentConfig,
    pipeline: Arc<Pipeline>,
    contacts: Vec<Contact>,
) -> Duration {
    let queue = Arc::new(CallQueue::new(contacts, config.queue.max_deferrals));
    let elapsed = run_workers(|| {
        let (queue, pipeline) = (queue.clone(), pipeline.clone());
        async move {
            let mut completed = 0;
            while let Some(entry) = queue.next().await {
                plain_call(&pipeline, &entry.contact).await;
                queue.finish(entry, Terminal::Completed).await;
                completed += 1;
            }
            completed
        }
    })
    .await;
    // Dropped after the run, as the campaign's store is.
    drop(queue);
    elapsed
}

/// Runs [`WORKERS`] workers made by `worker`, each returning the contacts
/// it completed; the wall time they took, once every contact completed.
async fn run_workers<F>(worker: impl Fn() -> F) -> Duration
where
    F: Future<Output = usize> + Send + 'static,
{
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        workers.spawn(worker());
    }
    let completed: usize = workers.join_all().await.into_iter().sum();
    let elapsed = started.elapsed();
    assert_eq!(completed, CONTACTS, "every contact completes");
    elapsed
}

/// The three requests for `contact`, made with the pipeline's own clients.
async fn plain_call(pipeline: &Pipeline, contact: &Contact) {
    let llm = &pipeline.llm.primary.client;
    let tts = &pipeline.tts.primary.client;
    let crm = &pipeline.crm.primary.client;
    let context = RequestContext::new(&contact.id);
    let started_at = SystemTime::now();
    let script = llm
        .generate_script(context, &Prompt::for_contact(contact))
        .await
        .result
        .expect("the LLM mock answers");
    let audio = tts
        .synthesize(context, &script)
        .await
        .result
        .expect("the TTS mock answers");
    let record = CallRecord::new(
        contact,
        CallOutcome::Completed,
        started_at,
        SystemTime::now(),
    )
    .with_script(&script)
    .with_audio_bytes(audio.bytes.len() as u64);
    crm.record_call(context, &record)
        .await
        .result
        .expect("the CRM mock answers");
}

/// The throughput comparison under the agent's production subscriber (the
/// JSON log file, the console, the OpenTelemetry layer exporting over OTLP),
/// in a child process, as a subscriber is installed once per process: the
/// spans go to an OTLP receiver in this process, which counts them, as a
/// collector on another host would.
async fn with_production_logging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().expect("a bound address"));
    let received = SpanCounter::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dir = std::env::temp_dir().join(format!("callguard-bench-logging-{}", std::process::id()));
    let child = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(std::env::current_exe().expect("the bench's own path"))
                .env(LOGGED_RUN_DIR, &dir)
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
                .status()
        })
    };
    let status = child
        .await
        .expect("the child runs")
        .expect("the bench starts itself");
    assert!(status.success(), "the logged run failed: {status}");
    let log_bytes: u64 = std::fs::read_dir(&dir)
        .map(|files| {
            files
                .filter_map(|file| file.ok()?.metadata().ok())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "exported: {} spans (the mocks' server spans among them) in {} OTLP requests; \
         JSON log: {:.1} MiB",
        received.spans.load(Ordering::Relaxed),
        received.requests.load(Ordering::Relaxed),
        log_bytes as f64 / (1024.0 * 1024.0)
    );
}

/// The child process of [`with_production_logging`]: installs the agent's
/// subscriber (`callguard_telemetry::init`, the production defaults with the
/// log file in `dir`), runs the throughput comparison under it, and flushes
/// the spans.
async fn logged_run(dir: &std::path::Path) {
    let logging = LoggingConfig {
        path: dir.join("callguard.jsonl"),
        ..LoggingConfig::default()
    };
    let telemetry = callguard_telemetry::init(&logging, None, Verbosity::default())
        .expect("the production subscriber installs");
    assert!(telemetry.is_exporting(), "spans are exported over OTLP");
    let server = MockServer::start(MockConfig::default())
        .await
        .expect("the mocks start on a free loopback port");
    let config = bench_config(&server);
    throughput(&config, Logging::Production).await;
    server.shutdown().await;
    drop(telemetry);
}

/// An OTLP/gRPC trace receiver that counts what it is sent and keeps nothing.
#[derive(Clone, Default)]
struct SpanCounter {
    requests: Arc<AtomicU64>,
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for SpanCounter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// How the TTS breaker comes to be OPEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// `force_open` by an operator.
    Forced,
    /// Every TTS request answers `503` until the breaker trips.
    Outage,
}

/// Times deferrals on an OPEN TTS breaker. A first pass (not timed) has the
/// LLM write every contact's script and defers each on TTS; the contacts are
/// then woken and the timed pass defers them again, each pass touching only
/// the OPEN breaker. The mocks must see no TTS request during it.
async fn deferral(server: &MockServer, config: &AgentConfig, opening: Opening) {
    let parts = parts(config);
    let tts = config.pipeline.tts.clone();
    let breaker = parts
        .registry()
        .get(tts.as_str())
        .expect("the TTS service has a breaker");
    match opening {
        Opening::Forced => breaker.force_open("deferral benchmark"),
        Opening::Outage => {
            server
                .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
                .expect("a valid fault");
        }
    }
    let pipeline = parts.pipeline().clone();
    let contacts = support::contacts(DEFERRED_CONTACTS, &format!("defer-{opening:?}"));
    let queue = CallQueue::new(contacts, config.queue.max_deferrals);
    let default_wait = config.circuit_breaker.recovery_timeout.get();
    let mut renewals = queue.renewals();

    for _ in 0..DEFERRED_CONTACTS {
        defer_next(&queue, &pipeline, &mut renewals, default_wait).await;
    }
    let expected = match opening {
        Opening::Forced => CircuitState::ForcedOpen,
        Opening::Outage => CircuitState::Open,
    };
    assert_eq!(breaker.state(), expected, "the TTS breaker is open");
    assert_eq!(queue.wake_service(&tts).await, DEFERRED_CONTACTS);
    let tts_requests = server.stats().total(Service::Elevenlabs, EndpointKind::Api);

    let mut samples = Vec::with_capacity(DEFERRED_CONTACTS);
    for _ in 0..DEFERRED_CONTACTS {
        let started = Instant::now();
        defer_next(&queue, &pipeline, &mut renewals, default_wait).await;
        samples.push(started.elapsed());
    }

    assert_eq!(breaker.state(), expected, "the TTS breaker stayed open");
    assert_eq!(
        server.stats().total(Service::Elevenlabs, EndpointKind::Api),
        tts_requests,
        "no TTS request was made while its breaker was open"
    );
    server.clear_faults();

    samples.sort_unstable();
    let mean = samples.iter().sum::<Duration>() / DEFERRED_CONTACTS as u32;
    let p50 = nearest_rank(&samples, 0.50);
    let p99 = nearest_rank(&samples, 0.99);
    let max = samples.last().copied().unwrap_or_default();
    println!(
        "\n## deferral on an OPEN TTS breaker ({opening:?}): {DEFERRED_CONTACTS} contacts, \
         script already written, queue → deferred"
    );
    println!(
        "mean {mean:.1?}  p50 {p50:.1?}  p99 {p99:.1?}  max {max:.1?}  (target mean < {MAX_DEFERRAL:?}: {}, p99: {})",
        verdict(mean < MAX_DEFERRAL),
        verdict(p99 < MAX_DEFERRAL)
    );
}

/// One worker step as the campaign's workers take it: the next contact, its
/// call span, the pipeline while the lease is held (renewed on the worker's
/// `renewals`), and the deferral, which must be what happens.
async fn defer_next(
    queue: &CallQueue,
    pipeline: &Pipeline,
    renewals: &mut Renewals,
    default_wait: Duration,
) {
    let mut entry = queue.next().await.expect("a contact is ready");
    let span = call_span(&entry.contact.id);
    let result = call_under_lease(queue, pipeline, &mut entry, renewals, &span)
        .await
        .unwrap_or_else(|lost| panic!("the lease was lost: {lost}"));
    match result {
        CallResult::Unavailable {
            service,
            retry_after,
        } => {
            let not_before = tokio::time::Instant::now() + retry_after.unwrap_or(default_wait);
            let deferral = queue
                .defer(entry, &service, not_before)
                .instrument(span)
                .await;
            assert_eq!(deferral, Deferral::Requeued);
        }
        other => panic!("expected a deferral on the OPEN TTS breaker, got {other:?}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// The gRPC server serves the registry; nobody asks it anything.
    Quiet,
    /// The gRPC server answers `CHECK_CLIENTS` clients each sending one
    /// Check every `PROBE_INTERVAL`.
    Probing,
    /// The gRPC server answers `CHECK_CLIENTS` clients each sending one
    /// Check every `CHECK_INTERVAL`.
    Paced,
    /// The gRPC server answers `CHECK_CLIENTS` clients flat out.
    Flat,
}

impl Health {
    /// The Check load of this side, if any.
    fn pace(self) -> Option<Pace> {
        match self {
            Health::Quiet => None,
            Health::Probing => Some(Pace::Every(PROBE_INTERVAL)),
            Health::Paced => Some(Pace::Every(CHECK_INTERVAL)),
            Health::Flat => Some(Pace::Flat),
        }
    }
}

/// The campaign's contacts/s with the gRPC server serving its registry,
/// quiet, under probing and paced Check loads and under a flat-out one,
/// rotating which goes first.
async fn under_check_load(config: &AgentConfig) {
    let attempted = CHECK_CLIENTS as f64 / CHECK_INTERVAL.as_secs_f64();
    println!(
        "\n## serving health: {CONTACTS} contacts, {WORKERS} workers, gRPC server on the \
         campaign's registry; quiet vs {CHECK_CLIENTS} Check clients over {CHECK_CONNECTIONS} \
         connections probing (one every {PROBE_INTERVAL:?} each) and paced (one every \
         {CHECK_INTERVAL:?} each, {attempted:.0}/s) vs the same clients flat out; \
         {LOAD_ROUNDS} rounds (+1 warm-up), medians"
    );
    let sides = [Health::Quiet, Health::Probing, Health::Paced, Health::Flat];
    let mut rates = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut loads = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for round in 0..=LOAD_ROUNDS {
        let mut line = format!("round {round}:");
        for k in 0..sides.len() {
            let index = (round + k) % sides.len();
            let side = sides[index];
            let contacts = support::contacts(CONTACTS, &format!("h{round}-{index}"));
            let (elapsed, load) = run_served(config, contacts, side).await;
            let rate = CONTACTS as f64 / elapsed.as_secs_f64();
            line.push_str(&format!("  {side:?} {rate:>6.0}/s"));
            if let Some(load) = &load {
                line.push_str(&format!(" ({:.0} Check/s)", load.rate()));
            }
            if round > 0 {
                rates[index].push(rate);
                loads[index].extend(load);
            }
        }
        if round == 0 {
            line.push_str("  (warm-up)");
        }
        println!("{line}");
    }
    let [quiet, probing, paced, flat] = rates.map(median);
    println!("quiet gRPC server:        {quiet:>7.0} contacts/s (median)");
    println!("under probing Check load: {probing:>7.0} contacts/s (median)");
    println!("under paced Check load:   {paced:>7.0} contacts/s (median)");
    println!("under flat-out Check load:{flat:>7.0} contacts/s (median)");
    for (name, loaded) in [("probing", probing), ("paced", paced), ("flat-out", flat)] {
        let ratio = loaded / quiet;
        println!(
            "{name} / quiet: {ratio:.3} (cost {:+.1} %, target ≤ {:.0} %: {})",
            (1.0 - ratio) * 100.0,
            MAX_HEALTH_COST * 100.0,
            verdict(1.0 - ratio <= MAX_HEALTH_COST)
        );
    }
    for (side, loads) in sides.iter().zip(&loads) {
        for load in loads {
            println!("Check during a campaign, {side:?}: {}", load.summary());
        }
    }
}

/// One campaign with the gRPC server serving its registry, and the Check
/// load it was under, if any.
async fn run_served(
    config: &AgentConfig,
    contacts: Vec<Contact>,
    health: Health,
) -> (Duration, Option<Load>) {
    let parts = parts(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callguard_health::serve(
        listener,
        parts.registry().clone(),
        GrpcOptions::default(),
        async move {
            let _ = server_stopped.await;
        },
    ));
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = health.pace().map(|pace| {
        tokio::spawn(check_load(
            addr,
            "elevenlabs",
            CHECK_CLIENTS,
            CHECK_CONNECTIONS,
            pace,
            stop_load.clone(),
        ))
    });
    let elapsed = run_assembled(config, parts, contacts).await;
    stop_load.store(true, Ordering::Relaxed);
    let load = match load {
        Some(load) => Some(load.await.expect("the Check load completes")),
        None => None,
    };
    let _ = stop_server.send(());
    server
        .await
        .expect("the gRPC server task completes")
        .expect("the gRPC server ran");
    (elapsed, load)
}
