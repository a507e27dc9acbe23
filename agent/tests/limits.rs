//! The agent's limiter end to end, over real sockets in virtual time: 300
//! contacts, 32 workers, the fake ElevenLabs allowing 5 concurrent requests
//! of 200 ms each (and queueing one over the limit 50 ms before its concurrency
//! `429`), the whole pipeline built by `App::build` from its config.
//!
//! With the defaults (`[limits]` unset: no limit of callguard's own, the
//! provider's headers followed) the TTS limiter sends one request first and
//! learns the limit from its answer: every contact completes within 4 % of
//! the ideal 12 s, and none is refused. With the headers ignored (`follow_headers = false`: no limiter
//! at all) every worker keeps sending, each concurrency `429` retried after
//! 100 ms: 1873 refusals.
//!
//! A contact deferred because its service is busy (no slot of the limiter in
//! time) waits its turn: however often, it does not expire.

use std::sync::Arc;
use std::time::Duration;

use callguard_agent::app::App;
use callguard_agent::campaign::Summary;
use callguard_agent::config::AgentConfig;
use callguard_agent::queue::CallQueue;
use callguard_agent::simulate::generate_contacts;
use callguard_mocks::{
    ConcurrencyLimit, EndpointKind, Fault, FaultMode, MockConfig, MockLimits, MockServer, Service,
};
use tokio::time::Instant;

const CONTACTS: usize = 300;
const WORKERS: u32 = 32;
const LIMIT: u32 = 5;
const LATENCY: Duration = Duration::from_millis(200);

/// What one campaign came to: its summary, its (virtual) time, and the TTS
/// answers that were audio and that were `429`s.
struct Run {
    summary: Summary,
    elapsed: Duration,
    ok: u64,
    refused: u64,
}

/// A campaign of `CONTACTS` contacts with `WORKERS` workers and `settings`
/// (TOML that follows the `[queue]` table: its keys, then other sections).
async fn campaign(settings: &str) -> Run {
    let mocks = MockServer::start(MockConfig {
        limits: MockLimits {
            elevenlabs: Some(ConcurrencyLimit::new(LIMIT)),
            llm: None,
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(LATENCY))
        .unwrap();
    let mut text = format!("[queue]\nworkers = {WORKERS}\n{settings}\n");
    for (name, service) in [
        ("llm", Service::Llm),
        ("elevenlabs", Service::Elevenlabs),
        ("crm", Service::Crm),
    ] {
        text.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key = \"{}\"\nhealth_probe = false\n",
            mocks.base_url(service),
            mocks.config().keys.get(service),
        ));
    }
    let config = AgentConfig::load(&text, None, []).unwrap();
    let app = App::build(config).unwrap();
    let queue = Arc::new(CallQueue::new(
        generate_contacts(CONTACTS),
        app.config().queue.max_deferrals,
    ));
    let mut campaign = app.campaign(queue);
    campaign.health = None;
    campaign.progress = false;
    let started = Instant::now();
    let summary = campaign.run(std::future::pending()).await;
    let elapsed = started.elapsed();
    let stats = mocks.stats();
    let run = Run {
        summary,
        elapsed,
        ok: stats.count(Service::Elevenlabs, EndpointKind::Api, "200"),
        refused: stats.count(Service::Elevenlabs, EndpointKind::Api, "429"),
    };
    mocks.shutdown().await;
    run
}

#[tokio::test(start_paused = true)]
async fn the_default_limiter_follows_elevenlabs_headers_to_few_429s() {
    let limited = campaign("").await;
    let unlimited = campaign("[limits]\nfollow_headers = false\n").await;

    let summary = &limited.summary;
    assert_eq!(summary.completed, CONTACTS, "{summary:?}");
    assert_eq!((summary.failed, summary.expired), (0, 0), "{summary:?}");
    assert_eq!(limited.ok, CONTACTS as u64);
    // One request goes first; the limit its answer carries keeps every
    // later one in.
    assert_eq!(limited.refused, 0, "TTS 429s with the limiter");
    assert!(
        unlimited.refused >= 1_000,
        "without the limiter: {} 429s, with it: {}",
        unlimited.refused,
        limited.refused
    );
    // The ideal: 300 × 200 ms / 5 = 12 s of TTS; the limiter stays close.
    let ideal = LATENCY.as_secs_f64() * CONTACTS as f64 / f64::from(LIMIT);
    assert!(
        limited.elapsed.as_secs_f64() <= ideal * 1.1,
        "{:?} against an ideal of {ideal:.1} s",
        limited.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_busy_service_never_expires_a_contact() {
    // One slot of callguard's own and nobody waits for it: every call that
    // finds it taken is deferred, over and over, with one deferral allowed.
    let run = campaign(
        "max_deferrals = 1\n\
         [limits]\nmode = \"static\"\nmax_concurrency = 1\nqueue_length = 0\n",
    )
    .await;
    let summary = &run.summary;
    assert_eq!(summary.completed, CONTACTS, "{summary:?}");
    assert_eq!((summary.failed, summary.expired), (0, 0), "{summary:?}");
    assert!(
        summary.deferrals > CONTACTS as u64,
        "more deferrals than contacts, so some contact was deferred past \
         max_deferrals without expiring: {summary:?}"
    );
    assert_eq!(run.refused, 0, "the provider's limit was never reached");
}
