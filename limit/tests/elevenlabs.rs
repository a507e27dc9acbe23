//! The issue's campaign end to end, over real sockets in virtual time: 300
//! contacts, 24 workers, a fake ElevenLabs that allows 4 concurrent requests
//! of 150 ms each (ideal: 300 × 150 ms / 4 = 11.25 s). Every call goes
//! through the retry executor and the breaker; a call that ends without a
//! result is tried again after its `retry_after` (the agent defers it).
//!
//! Before: no limiter, every 429 taken as a rate limit (the seed's 5 s
//! backoff): 41 s here (the issue measured 35.6 s). After: the limiter with
//! its defaults, which follows the headers of the fake's answers, and the body
//! of a 429 read for its kind: 11.25 s, and only the first wave refused. And
//! an adaptive limiter that ignores the headers: 11.25 s, 73 refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{ErrorKind, ServiceError, ServiceName, classify_status, refine_by_body};
use callguard_limit::{LimitConfig, Limiter, Outcome, ProviderHeaders};
use callguard_mocks::{
    ConcurrencyLimit, EndpointKind, Fault, FaultMode, MockConfig, MockLimits, MockServer, Service,
};
use callguard_retry::{Executor, RetryPolicy};
use tokio::time::{Instant, sleep};

const CONTACTS: u32 = 300;
const WORKERS: usize = 24;
const IDEAL: Duration = Duration::from_millis(11_250);

/// One call to the fake's text-to-speech, classified as the agent's client
/// does; through `limiter` when there is one, and with the 429's body read
/// when `refine`.
async fn speak(
    client: &reqwest::Client,
    url: &str,
    limiter: Option<&Limiter>,
    refine: bool,
) -> Result<(), ServiceError> {
    let permit = match limiter {
        Some(limiter) => Some(limiter.acquire().await?),
        None => None,
    };
    let sent = Instant::now();
    let response = client
        .post(url)
        .header("xi-api-key", "mock-elevenlabs-key")
        .header("content-type", "application/json")
        .body(r#"{"text":"Hello there","model_id":"eleven_multilingual_v2"}"#)
        .send()
        .await
        .map_err(|e| ServiceError::new(ErrorKind::Connect, e.to_string()))?;
    let seen = ProviderHeaders::from_headers(response.headers());
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .bytes()
        .await
        .map_err(|e| ServiceError::new(ErrorKind::ConnectionReset, e.to_string()))?;
    let result = match classify_status(status, retry_after.as_deref(), SystemTime::now()) {
        None => Ok(()),
        Some(error) if refine => Err(refine_by_body(error, &body)),
        Some(error) => Err(error),
    };
    if let Some(permit) = permit {
        permit.complete(Outcome::of(&result, sent.elapsed()), &seen);
    }
    result
}

/// How a campaign's agents limit their calls.
#[derive(Clone)]
struct Agents {
    /// Agents sharing the fake, each with its own limiter (`None`: no
    /// limiter), breaker and `WORKERS` workers; the contacts split between them.
    count: usize,
    limiter: Option<LimitConfig>,
    /// Whether the 429's body is read for its kind.
    refine: bool,
    /// Whether the fake announces its limit.
    headers: bool,
}

impl Agents {
    fn one(limiter: Option<LimitConfig>, refine: bool) -> Self {
        Self {
            count: 1,
            limiter,
            refine,
            headers: true,
        }
    }
}

/// Runs the campaign; its time and the 429s the fake answered.
async fn campaign(agents: Agents) -> (Duration, u64) {
    let limit = ConcurrencyLimit::new(4);
    let server = MockServer::start(MockConfig {
        limits: MockLimits {
            elevenlabs: Some(if agents.headers {
                limit
            } else {
                limit.without_headers()
            }),
            llm: None,
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    server
        .inject(
            Fault::new(Service::Elevenlabs, FaultMode::Slow)
                .with_latency(Duration::from_millis(150)),
        )
        .unwrap();
    let service = ServiceName::new("elevenlabs").unwrap();
    // No idle pool: its timers would let the paused clock jump ahead.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!(
        "{}/v1/text-to-speech/voice-1",
        server.base_url(Service::Elevenlabs)
    );
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..agents.count {
        let breaker = Arc::new(CircuitBreaker::new(
            service.clone(),
            BreakerConfig::default(),
        ));
        let executor = Arc::new(Executor::new(breaker, RetryPolicy::default()).unwrap());
        let limiter = agents
            .limiter
            .clone()
            .map(|config| Arc::new(Limiter::new(service.clone(), config).unwrap()));
        let contacts = CONTACTS / agents.count as u32;
        let next = Arc::new(AtomicU32::new(0));
        for _ in 0..WORKERS {
            let (executor, limiter, client, url, next) = (
                Arc::clone(&executor),
                limiter.clone(),
                client.clone(),
                url.clone(),
                Arc::clone(&next),
            );
            let refine = agents.refine;
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < contacts {
                    loop {
                        let call = executor
                            .call(|_| speak(&client, &url, limiter.as_deref(), refine))
                            .await;
                        match call {
                            Ok(()) => break,
                            Err(error) => {
                                assert!(!error.is_permanent(), "{error}");
                                sleep(error.retry_after().unwrap_or(Duration::from_secs(1))).await;
                            }
                        }
                    }
                }
            }));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = start.elapsed();
    let stats = server.stats();
    assert_eq!(
        stats.count(Service::Elevenlabs, EndpointKind::Api, "200"),
        u64::from(CONTACTS)
    );
    let refused = stats.count(Service::Elevenlabs, EndpointKind::Api, "429");
    server.shutdown().await;
    (elapsed, refused)
}

fn adaptive_without_headers() -> LimitConfig {
    LimitConfig {
        follow_headers: false,
        ..LimitConfig::adaptive(4, 1, 100)
    }
}

#[tokio::test(start_paused = true)]
async fn the_limiter_brings_the_campaign_close_to_the_ideal_time() {
    let (before, refused_before) = campaign(Agents::one(None, false)).await;
    let (after, refused_after) = campaign(Agents::one(Some(LimitConfig::default()), true)).await;
    let (adaptive, refused_adaptive) =
        campaign(Agents::one(Some(adaptive_without_headers()), true)).await;
    assert!(
        after <= IDEAL.mul_f64(1.1),
        "{after:?} against an ideal of {IDEAL:?}"
    );
    // One request goes first, and its answer tells the limit.
    assert_eq!(refused_after, 0, "none refused");
    assert!(
        before >= after * 2,
        "before: {before:?}, {refused_before} refused; after: {after:?}, {refused_after} refused"
    );
    // Without the headers, the adaptive limit finds the limit by itself,
    // probing one slot above it now and then.
    assert!(
        adaptive <= IDEAL.mul_f64(1.1),
        "{adaptive:?}, {refused_adaptive} refused"
    );
    assert!(refused_adaptive < 100, "{refused_adaptive} refused");
}

/// The contacts split between three agents sharing the fake's limit of 4.
/// In virtual time every request takes exactly 150 ms, so answers come in
/// batches at one instant: the last answer of a batch counts the provider
/// nearly empty, its slots about to be filled again by the other agents — the
/// hardest case for a limit read from the headers. It still fills the limit;
/// steps into the room that is not there are refused and probed ever more
/// rarely (on the real clock, BENCHMARKS.md has the bench with fewer).
#[tokio::test(start_paused = true)]
async fn three_agents_share_the_limit() {
    // Which agent steps into a free slot is drawn (from this thread's
    // generator, the runtime's): seeded, the run is the same every time.
    fastrand::seed(3);
    let three = |limiter, headers| Agents {
        count: 3,
        limiter: Some(limiter),
        refine: true,
        headers,
    };
    let (following, refused_following) = campaign(three(LimitConfig::default(), true)).await;
    let (adaptive, refused_adaptive) = campaign(three(adaptive_without_headers(), false)).await;
    let (unlimited, refused_unlimited) = campaign(Agents {
        count: 3,
        limiter: None,
        refine: true,
        headers: true,
    })
    .await;
    let share = |refused: u64| refused as f64 / (f64::from(CONTACTS) + refused as f64);
    assert!(
        following <= IDEAL.mul_f64(1.1) && share(refused_following) <= 0.2,
        "following the headers: {following:?}, {refused_following} refused"
    );
    // Without the headers, every refusal widens every agent's probe gap:
    // fewer refusals for a little time (here 54 refused and 12.45 s, where
    // probing after a refused probe alone had 268 refused and 11.3 s).
    assert!(
        adaptive <= IDEAL.mul_f64(1.15) && share(refused_adaptive) <= 0.2,
        "adaptive: {adaptive:?}, {refused_adaptive} refused"
    );
    assert!(
        refused_unlimited >= 10 * refused_following.max(refused_adaptive),
        "without a limiter: {unlimited:?}, {refused_unlimited} refused"
    );
}
