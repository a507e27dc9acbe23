//! The health checker under virtual time, with a scripted probe.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callguard_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker, FailureRateConfig};
use callguard_core::{
    CircuitState, ConfigDuration, ErrorKind, ServiceError, ServiceName, TransitionReason,
};
use callguard_health::{
    HealthCheckConfig, HealthChecker, OnRecovery, Probe, ProbeFuture, ProbeResult,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// A service whose health the test sets, and that remembers when it was probed.
#[derive(Clone)]
struct FakeService {
    healthy: Arc<AtomicBool>,
    /// A probe never answers (to exercise the timeout).
    hangs: Arc<AtomicBool>,
    probed_at: Arc<Mutex<Vec<Instant>>>,
}

impl FakeService {
    fn new(healthy: bool) -> Self {
        Self {
            healthy: Arc::new(AtomicBool::new(healthy)),
            hangs: Arc::new(AtomicBool::new(false)),
            probed_at: Arc::default(),
        }
    }

    fn probes_since(&self, start: Instant) -> Vec<Duration> {
        let probed_at = self.probed_at.lock();
        probed_at.iter().map(|t| *t - start).collect()
    }
}

impl Probe for FakeService {
    fn check(&self) -> ProbeFuture<'_> {
        self.probed_at.lock().push(Instant::now());
        Box::pin(async move {
            if self.hangs.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.healthy.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(ServiceError::new(ErrorKind::Unavailable, "fake outage").with_status(503))
            }
        })
    }
}

fn breaker() -> Arc<CircuitBreaker> {
    let registry = BreakerRegistry::new(BreakerConfig {
        // Long enough that OPEN never turns HALF_OPEN by itself in these tests.
        recovery_timeout: ConfigDuration::from_secs(3600),
        ..BreakerConfig::default()
    });
    registry.get_or_default(&ServiceName::new("tts").unwrap())
}

fn open(breaker: &CircuitBreaker) {
    for _ in 0..breaker.config().failure_threshold {
        breaker.record_failure();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
}

/// Runs the checker in the background until the returned sender is dropped.
fn start(
    config: HealthCheckConfig,
    breaker: &Arc<CircuitBreaker>,
    service: &FakeService,
) -> watch::Sender<()> {
    let checker = HealthChecker::new(config)
        .unwrap()
        .with_probe(Arc::clone(breaker), service.clone());
    let (stop, mut stopped) = watch::channel(());
    tokio::spawn(checker.run(async move {
        let _ = stopped.changed().await;
    }));
    stop
}

#[tokio::test(start_paused = true)]
async fn failed_probes_open_the_breaker_without_any_call() {
    let breaker = breaker();
    let service = FakeService::new(false);
    let start_time = Instant::now();
    let _stop = start(HealthCheckConfig::default(), &breaker, &service);

    let mut state = breaker.subscribe();
    state.wait_for(|s| *s == CircuitState::Open).await.unwrap();
    // Threshold 2: the probe at 0 s and the one at 5 s.
    assert_eq!(start_time.elapsed(), Duration::from_secs(5));
    assert_eq!(
        service.probes_since(start_time),
        [Duration::ZERO, Duration::from_secs(5)]
    );
    let last = breaker.snapshot().last_transition.unwrap();
    assert_eq!(
        last.reason,
        TransitionReason::ConsecutiveFailures { count: 2 }
    );
}

#[tokio::test(start_paused = true)]
async fn a_healthy_probe_closes_an_open_breaker() {
    let breaker = breaker();
    open(&breaker);
    let service = FakeService::new(false);
    let start_time = Instant::now();
    let _stop = start(HealthCheckConfig::default(), &breaker, &service);

    // Still down at the first probes: stays OPEN.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(breaker.state(), CircuitState::Open);

    service.healthy.store(true, Ordering::SeqCst);
    let mut transitions = breaker.transitions();
    breaker
        .subscribe()
        .wait_for(|s| *s == CircuitState::Closed)
        .await
        .unwrap();
    assert_eq!(
        start_time.elapsed(),
        Duration::from_secs(10),
        "the next probe, at 10 s"
    );
    let closed = transitions.recv().await.unwrap();
    assert_eq!(
        (closed.from, closed.to),
        (CircuitState::Open, CircuitState::Closed)
    );
    assert_eq!(closed.reason, TransitionReason::HealthCheckRecovered);
}

#[tokio::test(start_paused = true)]
async fn half_open_on_recovery_leaves_closing_to_real_calls() {
    let breaker = breaker();
    open(&breaker);
    let service = FakeService::new(true);
    let config = HealthCheckConfig {
        on_recovery: OnRecovery::HalfOpen,
        ..HealthCheckConfig::default()
    };
    let _stop = start(config, &breaker, &service);

    breaker
        .subscribe()
        .wait_for(|s| *s == CircuitState::HalfOpen)
        .await
        .unwrap();
    // Later healthy probes do not close it: a real call has to.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(service.probed_at.lock().len() >= 6);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    breaker.try_acquire().unwrap().success();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probes_run_every_interval_until_shutdown() {
    let breaker = breaker();
    let service = FakeService::new(true);
    let config = HealthCheckConfig {
        interval: ConfigDuration::from_secs(5),
        ..HealthCheckConfig::default()
    };
    let checker = HealthChecker::new(config)
        .unwrap()
        .with_probe(Arc::clone(&breaker), service.clone());
    let start_time = Instant::now();
    checker
        .run(tokio::time::sleep(Duration::from_secs(17)))
        .await;
    assert_eq!(start_time.elapsed(), Duration::from_secs(17));
    assert_eq!(
        service.probes_since(start_time),
        [0, 5, 10, 15].map(Duration::from_secs)
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_hangs_fails_after_the_timeout() {
    let breaker = breaker();
    let service = FakeService::new(true);
    service.hangs.store(true, Ordering::SeqCst);
    let start_time = Instant::now();
    let _stop = start(HealthCheckConfig::default(), &breaker, &service);

    breaker
        .subscribe()
        .wait_for(|s| *s == CircuitState::Open)
        .await
        .unwrap();
    // Probes at 0 s and 5 s, each given up after the 2 s timeout.
    assert_eq!(start_time.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_stays_open_when_healthy() {
    let breaker = breaker();
    breaker.force_open("maintenance");
    let service = FakeService::new(true);
    let _stop = start(HealthCheckConfig::default(), &breaker, &service);
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(service.probed_at.lock().len(), 5);
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);
}

#[tokio::test(start_paused = true)]
async fn failed_probes_count_in_the_streak_but_not_in_the_failure_rate_window() {
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("tts").unwrap(),
        BreakerConfig {
            failure_threshold: 3,
            failure_rate: Some(FailureRateConfig {
                threshold: 0.5,
                window_size: 4,
                minimum_calls: 4,
            }),
            ..BreakerConfig::default()
        },
    ));
    for _ in 0..4 {
        breaker.try_acquire().unwrap().success();
    }
    let service = FakeService::new(false);
    // Probes at 0 s and 5 s both fail: two of the three the streak needs.
    HealthChecker::new(HealthCheckConfig::default())
        .unwrap()
        .with_probe(Arc::clone(&breaker), service.clone())
        .run(tokio::time::sleep(Duration::from_secs(6)))
        .await;
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.consecutive_failures, 2);
    assert_eq!(snapshot.failure_rate, Some(0.0), "four calls, all healthy");
}

#[test]
fn a_bad_config_is_rejected_with_its_key() {
    let config = HealthCheckConfig {
        timeout: ConfigDuration::from_secs(0),
        ..HealthCheckConfig::default()
    };
    let err = HealthChecker::new(config).unwrap_err();
    assert_eq!(err.key, "health_check.timeout");
}

/// A health URL that does not exist: every probe answers 404.
struct MissingEndpoint;

impl Probe for MissingEndpoint {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async {
            Err(ServiceError::new(ErrorKind::NotFound, "no such endpoint").with_status(404))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_health_endpoint_neither_opens_nor_closes_the_breaker() {
    let closed = breaker();
    let opened = BreakerRegistry::new(BreakerConfig {
        recovery_timeout: ConfigDuration::from_secs(3600),
        ..BreakerConfig::default()
    })
    .get_or_default(&ServiceName::new("llm").unwrap());
    open(&opened);
    let checker = HealthChecker::new(HealthCheckConfig::default())
        .unwrap()
        .with_probe(Arc::clone(&closed), MissingEndpoint)
        .with_probe(Arc::clone(&opened), MissingEndpoint);
    // Six probes of each, 5 s apart.
    checker
        .run(tokio::time::sleep(Duration::from_secs(26)))
        .await;
    assert_eq!(closed.state(), CircuitState::Closed);
    assert_eq!(closed.snapshot().consecutive_failures, 0);
    assert_eq!(opened.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn the_listener_hears_every_probes_result() {
    let heard: Arc<Mutex<Vec<(String, ProbeResult)>>> = Arc::default();
    let record = Arc::clone(&heard);
    let service = FakeService::new(true);
    let missing = BreakerRegistry::new(BreakerConfig::default())
        .get_or_default(&ServiceName::new("llm").unwrap());
    let checker = HealthChecker::new(HealthCheckConfig::default())
        .unwrap()
        .with_listener(Arc::new(move |service: &ServiceName, result| {
            record.lock().push((service.to_string(), result));
        }))
        .with_probe(breaker(), service.clone())
        .with_probe(missing, MissingEndpoint);
    let outage = service.clone();
    // Probes at 0 s (healthy), then 5 s and 10 s (failing).
    checker
        .run(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            outage.healthy.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
    let heard = heard.lock();
    let of = |name: &str| -> Vec<ProbeResult> {
        heard
            .iter()
            .filter(|(service, _)| service == name)
            .map(|(_, result)| *result)
            .collect()
    };
    assert_eq!(
        of("tts"),
        [
            ProbeResult::Healthy,
            ProbeResult::Unhealthy,
            ProbeResult::Unhealthy
        ]
    );
    assert_eq!(of("llm"), [ProbeResult::NotCounted; 3]);
}
