//! The executor around a real `callguard-breaker` breaker, in virtual time.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{
    CircuitState, ConfigDuration, ErrorKind, ResilienceEvent, ServiceError, ServiceName,
    classify_status, refine_by_body,
};
use callguard_retry::{
    AttemptContext, BudgetConfig, CallError, Executor, Jitter, RetryBudget, RetryPolicy, StopReason,
};
use tokio::time::Instant;

fn breaker(failure_threshold: u32) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(
        ServiceName::new("elevenlabs").unwrap(),
        BreakerConfig {
            failure_threshold,
            ..BreakerConfig::default()
        },
    ))
}

fn executor(breaker: &Arc<CircuitBreaker>, policy: RetryPolicy) -> Executor {
    Executor::new(Arc::clone(breaker), policy).unwrap()
}

fn status(code: u16) -> ServiceError {
    classify_status(code, None, SystemTime::UNIX_EPOCH).unwrap()
}

/// `err` ended its call after `attempts` attempts because the retry budget
/// had no token for a retry.
#[track_caller]
fn assert_stopped_by_the_budget(err: &CallError, attempts: u32) {
    assert!(
        matches!(
            err,
            CallError::Exhausted {
                attempts: made,
                reason: StopReason::Budget,
                ..
            } if *made == attempts
        ),
        "{err:?}"
    );
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Records when each attempt started and what it was told, and answers with
/// the scripted results (the last one repeats).
struct Script {
    answers: Vec<Result<u32, ServiceError>>,
    attempts: Mutex<Vec<(Instant, AttemptContext)>>,
}

impl Script {
    fn new(answers: impl Into<Vec<Result<u32, ServiceError>>>) -> Self {
        Self {
            answers: answers.into(),
            attempts: Mutex::new(Vec::new()),
        }
    }

    fn run(&self, ctx: AttemptContext) -> std::future::Ready<Result<u32, ServiceError>> {
        let mut attempts = self.attempts.lock();
        let n = attempts.len();
        attempts.push((Instant::now(), ctx));
        std::future::ready(self.answers[n.min(self.answers.len() - 1)].clone())
    }

    fn offsets(&self, start: Instant) -> Vec<Duration> {
        let attempts = self.attempts.lock();
        attempts.iter().map(|(at, _)| *at - start).collect()
    }

    fn contexts(&self) -> Vec<AttemptContext> {
        self.attempts.lock().iter().map(|(_, c)| *c).collect()
    }
}

/// Collects the events an executor publishes.
fn event_log() -> (
    Arc<Mutex<Vec<ResilienceEvent>>>,
    Arc<dyn callguard_retry::EventSink>,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = Arc::clone(&events);
        move |e: &ResilienceEvent| events.lock().push(e.clone())
    };
    (events, Arc::new(sink))
}

#[tokio::test(start_paused = true)]
async fn seed_delays_are_5_10_20_seconds_over_4_attempts() {
    let breaker = breaker(100);
    let exec = executor(&breaker, RetryPolicy::default());
    let script = Script::new([Err(status(503))]);
    let start = Instant::now();

    let result = exec.call(|ctx| script.run(ctx)).await;

    assert_eq!(
        script.offsets(start),
        [secs(0), secs(5), secs(15), secs(35)]
    );
    let retry_counts: Vec<u32> = script.contexts().iter().map(|c| c.retry_count).collect();
    assert_eq!(retry_counts, [0, 1, 2, 3]);
    let err = result.unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::Exhausted { attempts: 4, reason: StopReason::MaxRetries, error, .. }
                if error.status() == Some(503) && error.kind() == ErrorKind::Unavailable
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_count(), 3);
    assert_eq!(
        Instant::now() - start,
        secs(35),
        "no sleep after the last attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn seed_story_breaker_opens_after_two_failures_and_the_third_attempt_is_rejected_at_once() {
    let breaker = breaker(2); // the seed's threshold, recovery_timeout 10s
    let (events, sink) = event_log();
    let exec = executor(&breaker, RetryPolicy::default()).with_sink(sink);
    let script = Script::new([Err(status(503))]);
    let start = Instant::now();

    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();

    // Attempt 1 at 0 s, attempt 2 at 5 s; that failure opens the breaker, so
    // attempt 3 would be rejected: the call ends at 5 s without sleeping 10 s.
    assert_eq!(script.offsets(start), [secs(0), secs(5)]);
    assert_eq!(Instant::now() - start, secs(5));
    assert_eq!(breaker.state(), CircuitState::Open);
    match &err {
        CallError::Rejected {
            rejection,
            retry_count,
            last_error,
        } => {
            assert_eq!(*retry_count, 2, "the third attempt (retry 2) was rejected");
            assert_eq!(rejection.state, CircuitState::Open);
            assert_eq!(rejection.retry_after, Some(secs(10)));
            assert_eq!(
                last_error.as_ref().and_then(ServiceError::status),
                Some(503)
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(err.retry_after(), Some(secs(10)));

    let kinds: Vec<String> = events
        .lock()
        .iter()
        .map(|e| match e {
            ResilienceEvent::AttemptFailed { attempt, .. } => {
                format!("failed {} {}", attempt.retry_count, attempt.circuit_state)
            }
            ResilienceEvent::RetryScheduled {
                retry_count, delay, ..
            } => {
                format!("scheduled {retry_count} {}s", delay.as_secs())
            }
            ResilienceEvent::CallRejected {
                retry_count,
                circuit_state,
                ..
            } => {
                format!("rejected {retry_count} {circuit_state}")
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "failed 0 CLOSED",
            "scheduled 1 5s",
            "failed 1 CLOSED",
            "rejected 2 OPEN"
        ]
    );

    // While OPEN, a new call is rejected before its first attempt.
    let calls_before = script.contexts().len();
    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Rejected {
                retry_count: 0,
                last_error: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        script.contexts().len(),
        calls_before,
        "the operation was not called"
    );

    // After recovery_timeout the probe goes through in HALF_OPEN and closes it.
    tokio::time::advance(secs(10)).await;
    let probe = Script::new([Ok(7)]);
    assert_eq!(exec.call(|ctx| probe.run(ctx)).await, Ok(7));
    assert_eq!(probe.contexts()[0].circuit_state, CircuitState::HalfOpen);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_ends_the_call_with_its_value() {
    let breaker = breaker(100);
    let exec = executor(&breaker, RetryPolicy::default());
    let script = Script::new([Err(status(502)), Err(status(504)), Ok(42)]);
    let start = Instant::now();
    let result = exec.call(|ctx| script.run(ctx)).await;
    assert_eq!(result, Ok(42));
    assert_eq!(script.offsets(start), [secs(0), secs(5), secs(15)]);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_ends_the_call_after_one_attempt_without_sleeping() {
    let breaker = breaker(2);
    let exec = executor(&breaker, RetryPolicy::default());
    let start = Instant::now();
    for call in 1..=2 {
        let script = Script::new([Err(status(401))]);
        let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
        assert_eq!(script.contexts().len(), 1, "call {call}");
        assert!(err.is_permanent(), "{err:?}");
        assert_eq!(err.last_error().unwrap().kind(), ErrorKind::Unauthorized);
        assert_eq!(Instant::now(), start, "no sleep");
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "401 counts toward the breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_requests_do_not_open_the_breaker() {
    let breaker = breaker(2);
    let exec = executor(&breaker, RetryPolicy::default());
    for _ in 0..10 {
        let err = exec
            .call(|_| async { Err::<(), _>(status(400)) })
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::Permanent { retry_count: 0, .. }),
            "{err:?}"
        );
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_replaces_the_delay() {
    let breaker = breaker(100);
    let exec = executor(&breaker, RetryPolicy::default());
    let unavailable = classify_status(503, Some("7"), SystemTime::UNIX_EPOCH).unwrap();
    let script = Script::new([Err(unavailable), Err(status(503)), Ok(1)]);
    let start = Instant::now();
    let result = exec.call(|ctx| script.run(ctx)).await;
    assert_eq!(result, Ok(1));
    // 7 s asked by the server instead of 5 s, then the computed 10 s.
    assert_eq!(script.offsets(start), [secs(0), secs(7), secs(17)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_replaces_the_delay_capped_by_max_delay() {
    let breaker = breaker(100);
    let policy = RetryPolicy {
        max_delay: ConfigDuration::from_secs(40),
        ..RetryPolicy::default()
    };
    let exec = executor(&breaker, policy);
    let now = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
    let date = |wait: u64| httpdate::fmt_http_date(now + secs(wait));
    let in_30s = classify_status(429, Some(&date(30)), now).unwrap();
    let in_2h = classify_status(503, Some(&date(7200)), now).unwrap();
    assert_eq!(in_30s.retry_after(), Some(secs(30)));
    let script = Script::new([Err(in_30s), Err(in_2h), Ok(1)]);
    let start = Instant::now();
    let result = exec.call(|ctx| script.run(ctx)).await;
    assert_eq!(result, Ok(1));
    assert_eq!(script.offsets(start), [secs(0), secs(30), secs(70)]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries_and_successes_refill_it() {
    let budget = Arc::new(
        RetryBudget::new(BudgetConfig {
            max_tokens: 10,
            token_ratio: 0.1,
        })
        .unwrap(),
    );
    let breaker = breaker(1000);
    let a = executor(&breaker, RetryPolicy::default()).with_budget(Arc::clone(&budget));
    let b = executor(&breaker, RetryPolicy::default()).with_budget(Arc::clone(&budget));

    // 4 failed attempts: 10 → 6 tokens, all retries used.
    let script = Script::new([Err(status(503))]);
    let err = a.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert!(matches!(
        err,
        CallError::Exhausted {
            attempts: 4,
            reason: StopReason::MaxRetries,
            ..
        }
    ));
    assert_eq!(budget.tokens(), 6.0);

    // The other executor shares the bucket: 6 → 5 is not more than half.
    let script = Script::new([Err(status(503))]);
    let start = Instant::now();
    let err = b.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert_stopped_by_the_budget(&err, 1);
    assert_eq!(Instant::now(), start, "no sleep");

    // 11 successes earn 1.1 tokens: 6.1, so one failure (→ 5.1) still leaves a retry.
    for _ in 0..11 {
        assert_eq!(
            a.call(|_| async { Ok::<_, ServiceError>(()) }).await,
            Ok(())
        );
    }
    let script = Script::new([Err(status(503))]);
    let err = a.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert_stopped_by_the_budget(&err, 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_turned_on_by_config() {
    let policy: RetryPolicy = toml::from_str("budget = { max_tokens = 2 }").unwrap();
    let exec = executor(&breaker(100), policy);
    let budget = exec.budget().expect("a budget from config");
    assert_eq!(budget.config().max_tokens, 2);
    let err = exec
        .call(|_| async { Err::<(), _>(status(503)) })
        .await
        .unwrap_err();
    // 2 → 1 token: not more than half, no retry.
    assert_stopped_by_the_budget(&err, 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_pass_the_deadline_is_not_waited_for() {
    let exec = executor(&breaker(100), RetryPolicy::default());
    let script = Script::new([Err(status(503))]);
    let start = Instant::now();
    let err = exec
        .call_with_deadline(start + secs(12), |ctx| script.run(ctx))
        .await
        .unwrap_err();
    // 0 s, 5 s; the next retry would start at 15 s, past 12 s.
    assert_eq!(script.offsets(start), [secs(0), secs(5)]);
    assert_eq!(
        Instant::now() - start,
        secs(5),
        "no sleep towards the deadline"
    );
    assert!(matches!(
        err,
        CallError::Exhausted {
            attempts: 2,
            reason: StopReason::Deadline,
            ..
        }
    ));
    assert_eq!(script.contexts()[0].deadline, Some(start + secs(12)));
}

/// The deadline is exclusive: a retry that would start exactly at it is not
/// made, since its request would have no time left at all.
#[tokio::test(start_paused = true)]
async fn a_retry_that_would_start_at_the_deadline_is_not_made() {
    let exec = executor(&breaker(100), RetryPolicy::default());
    let script = Script::new([Err(status(503))]);
    let start = Instant::now();
    let err = exec
        .call_with_deadline(start + secs(5), |ctx| script.run(ctx))
        .await
        .unwrap_err();
    // The first retry would start at 5 s: the deadline itself.
    assert_eq!(script.offsets(start), [secs(0)]);
    assert_eq!(Instant::now(), start, "no sleep towards the deadline");
    assert!(matches!(
        err,
        CallError::Exhausted {
            attempts: 1,
            reason: StopReason::Deadline,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn the_policy_deadline_counts_from_the_start_of_the_call() {
    let policy: RetryPolicy = toml::from_str("deadline = \"3s\"").unwrap();
    let exec = executor(&breaker(100), policy);
    let start = Instant::now();
    let err = exec
        .call(|_| async { Err::<(), _>(status(503)) })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CallError::Exhausted {
            attempts: 1,
            reason: StopReason::Deadline,
            ..
        }
    ));
    assert_eq!(Instant::now(), start, "virtual time did not advance");
}

#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_rejects_before_any_attempt() {
    let breaker = breaker(2);
    breaker.force_open("maintenance");
    let exec = executor(&breaker, RetryPolicy::default());
    let err = exec
        .call(|_| async { Ok::<_, ServiceError>(1) })
        .await
        .unwrap_err();
    assert!(err.is_rejected());
    assert_eq!(err.retry_after(), None);
    assert_eq!(err.retry_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn seeded_jitter_is_reproducible_and_within_bounds() {
    let policy = RetryPolicy {
        jitter: Jitter::Full,
        ..RetryPolicy::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let exec = executor(&breaker(100), policy.clone()).with_jitter_seed(7);
        let script = Script::new([Err(status(503))]);
        let start = Instant::now();
        let _ = exec.call(|ctx| script.run(ctx)).await;
        let offsets = script.offsets(start);
        let gaps: Vec<Duration> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        for (n, gap) in gaps.iter().enumerate() {
            assert!(
                *gap <= policy.base_delay(n as u32 + 1),
                "retry {}: {gap:?}",
                n + 1
            );
        }
        runs.push(gaps);
    }
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0], [secs(5), secs(10), secs(20)], "jitter was applied");
}

#[tokio::test(start_paused = true)]
async fn a_success_event_carries_the_attempt() {
    let (events, sink) = event_log();
    let exec = executor(&breaker(2), RetryPolicy::default()).with_sink(sink);
    let value = exec
        .call(|_| async {
            tokio::time::sleep(secs(2)).await;
            Ok::<_, ServiceError>("spoken")
        })
        .await;
    assert_eq!(value, Ok("spoken"));
    let events = events.lock();
    match events.as_slice() {
        [ResilienceEvent::AttemptSucceeded(info)] => {
            assert_eq!(info.service.as_str(), "elevenlabs");
            assert_eq!(info.retry_count, 0);
            assert_eq!(info.circuit_state, CircuitState::Closed);
            assert_eq!(info.elapsed, secs(2));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn exhaustion_and_permanent_failure_are_published() {
    let (events, sink) = event_log();
    let policy = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::default()
    };
    let exec = executor(&breaker(100), policy).with_sink(sink);
    let _ = exec.call(|_| async { Err::<(), _>(status(503)) }).await;
    let _ = exec.call(|_| async { Err::<(), _>(status(404)) }).await;
    let events = events.lock();
    let last_of_first_call = &events[3];
    assert!(
        matches!(last_of_first_call, ResilienceEvent::RetriesExhausted { attempts: 2, error, .. } if error.status() == Some(503)),
        "{last_of_first_call:?}"
    );
    assert!(
        matches!(events.last(), Some(ResilienceEvent::PermanentFailure { retry_count: 0, error, .. }) if error.status() == Some(404)),
        "{events:?}"
    );
    assert_eq!(events.len(), 6, "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn calls_can_run_on_spawned_tasks() {
    let exec = Arc::new(executor(&breaker(100), RetryPolicy::default()));
    let task = {
        let exec = Arc::clone(&exec);
        // `tokio::spawn` requires the call's future to be Send + 'static.
        tokio::spawn(async move {
            exec.call(|ctx| async move { Ok::<_, ServiceError>(ctx.retry_count) })
                .await
        })
    };
    assert_eq!(task.await.unwrap(), Ok(0));
}

/// A `429` whose body says the service is at its concurrency limit, as a
/// client classifies it.
fn too_many_concurrent(retry_after: Option<&str>) -> ServiceError {
    let error = classify_status(429, retry_after, SystemTime::UNIX_EPOCH).unwrap();
    refine_by_body(
        error,
        br#"{"detail":{"status":"too_many_concurrent_requests","message":"Too many"}}"#,
    )
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_429_is_retried_soon_without_growing_the_backoff_or_using_a_retry() {
    let breaker = breaker(100);
    let exec = executor(&breaker, RetryPolicy::default());
    let busy = too_many_concurrent(None);
    assert_eq!(busy.kind(), ErrorKind::ConcurrencyLimited);
    let script = Script::new([Err(busy.clone()), Err(busy), Err(status(503))]);
    let start = Instant::now();

    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();

    // Two retries after 100 ms each; the first 503 then waits the first
    // step of the backoff (5 s), and max_retries still allows 3 retries
    // after failures: 6 attempts in all.
    assert_eq!(
        script.offsets(start),
        [
            secs(0),
            millis(100),
            millis(200),
            millis(5_200),
            millis(15_200),
            millis(35_200)
        ]
    );
    let retry_counts: Vec<u32> = script.contexts().iter().map(|c| c.retry_count).collect();
    assert_eq!(
        retry_counts,
        [0, 1, 2, 3, 4, 5],
        "every attempt is numbered"
    );
    assert!(
        matches!(
            &err,
            CallError::Exhausted { attempts: 6, reason: StopReason::MaxRetries, error, .. }
                if error.status() == Some(503)
        ),
        "{err:?}"
    );
    assert_eq!(breaker.snapshot().consecutive_failures, 4, "only the 503s");
}

/// A `max_delay` shorter than the default `concurrency_delay` (100 ms) is a
/// valid policy, and caps the wait before a concurrency retry.
#[tokio::test(start_paused = true)]
async fn a_short_max_delay_caps_the_concurrency_delay() {
    let policy: RetryPolicy =
        toml::from_str("initial_delay = \"1ms\"\nmax_delay = \"50ms\"").unwrap();
    let exec = executor(&breaker(100), policy);
    let script = Script::new([Err(too_many_concurrent(None)), Ok(1)]);
    let start = Instant::now();
    assert_eq!(exec.call(|ctx| script.run(ctx)).await, Ok(1));
    assert_eq!(script.offsets(start), [secs(0), millis(50)]);
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_429_keeps_its_retry_after_and_the_backoff_where_it_was() {
    let breaker = breaker(100);
    let exec = executor(&breaker, RetryPolicy::default());
    let script = Script::new([
        Err(status(503)),
        Err(too_many_concurrent(Some("2"))),
        Err(status(503)),
        Ok(7),
    ]);
    let start = Instant::now();
    assert_eq!(exec.call(|ctx| script.run(ctx)).await, Ok(7));
    // 5 s after the first 503, 2 s as the 429 asked, then 10 s: the second
    // step of the backoff, not the third.
    assert_eq!(script.offsets(start), [secs(0), secs(5), secs(7), secs(17)]);
}

#[tokio::test(start_paused = true)]
async fn concurrency_retries_are_bounded_per_call_and_by_the_deadline() {
    let breaker = breaker(100);
    let policy = RetryPolicy {
        max_concurrency_retries: 2,
        ..RetryPolicy::default()
    };
    let exec = executor(&breaker, policy);
    let script = Script::new([Err(too_many_concurrent(None))]);
    let start = Instant::now();
    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert_eq!(script.offsets(start), [secs(0), millis(100), millis(200)]);
    assert!(
        matches!(
            &err,
            CallError::Exhausted { attempts: 3, reason: StopReason::ConcurrencyRetries, error, .. }
                if error.kind() == ErrorKind::ConcurrencyLimited
        ),
        "{err:?}"
    );
    assert!(!err.is_permanent(), "the caller defers it");

    let script = Script::new([Err(too_many_concurrent(None))]);
    let start = Instant::now();
    let err = exec
        .call_with_deadline(start + millis(150), |ctx| script.run(ctx))
        .await
        .unwrap_err();
    assert_eq!(script.offsets(start), [secs(0), millis(100)]);
    assert!(
        matches!(
            err,
            CallError::Exhausted {
                reason: StopReason::Deadline,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_429s_neither_spend_nor_refill_the_budget() {
    let budget = Arc::new(
        RetryBudget::new(BudgetConfig {
            max_tokens: 2,
            token_ratio: 0.5,
        })
        .unwrap(),
    );
    let exec = executor(&breaker(100), RetryPolicy::default()).with_budget(Arc::clone(&budget));
    let script = Script::new([
        Err(too_many_concurrent(None)),
        Err(too_many_concurrent(None)),
        Err(too_many_concurrent(None)),
        Ok(1),
    ]);
    assert_eq!(exec.call(|ctx| script.run(ctx)).await, Ok(1));
    assert_eq!(script.contexts().len(), 4);
    assert_eq!(budget.tokens(), 2.0, "the 429s took nothing");

    // A budget emptied by real failures still lets concurrency retries through.
    budget.record_failure();
    budget.record_failure();
    assert!(!budget.can_retry());
    let script = Script::new([Err(too_many_concurrent(None)), Ok(2)]);
    assert_eq!(exec.call(|ctx| script.run(ctx)).await, Ok(2));
    assert_eq!(
        budget.tokens(),
        0.5,
        "the success refilled, the 429 did not spend"
    );

    // Other 429s spend from it as before.
    let script = Script::new([Err(status(429))]);
    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert_stopped_by_the_budget(&err, 1);
}

#[tokio::test(start_paused = true)]
async fn other_429s_back_off_and_never_open_the_breaker() {
    let breaker = breaker(1);
    let exec = executor(&breaker, RetryPolicy::default());
    let busy = |retry_after| {
        let error = classify_status(429, retry_after, SystemTime::UNIX_EPOCH).unwrap();
        refine_by_body(
            error,
            br#"{"detail":{"status":"system_busy","message":"Busy"}}"#,
        )
    };
    assert_eq!(busy(None).kind(), ErrorKind::RateLimited);
    let script = Script::new([Err(busy(None)), Err(busy(Some("3"))), Err(busy(None))]);
    let start = Instant::now();
    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
    // 5 s, the server's 3 s, then 20 s: the backoff grew under them.
    assert_eq!(script.offsets(start), [secs(0), secs(5), secs(8), secs(28)]);
    assert!(
        matches!(
            err,
            CallError::Exhausted {
                attempts: 4,
                reason: StopReason::MaxRetries,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);

    let script = Script::new([Err(too_many_concurrent(None)), Ok(1)]);
    assert_eq!(exec.call(|ctx| script.run(ctx)).await, Ok(1));
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_limiter_did_not_send_ends_the_call_at_once_for_a_deferral() {
    let breaker = breaker(2);
    let budget = Arc::new(RetryBudget::new(BudgetConfig::default()).unwrap());
    let (events, sink) = event_log();
    let exec = executor(&breaker, RetryPolicy::default())
        .with_budget(Arc::clone(&budget))
        .with_sink(sink);
    let not_sent =
        ServiceError::new(ErrorKind::Throttled, "no slot within 10s").with_retry_after(secs(2));
    let script = Script::new([Err(status(503)), Err(not_sent.clone())]);
    let start = Instant::now();

    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();

    assert_eq!(script.offsets(start), [secs(0), secs(5)]);
    assert_eq!(Instant::now() - start, secs(5), "no sleep after it");
    match &err {
        CallError::Throttled {
            retry_count,
            error,
            last_error,
            ..
        } => {
            assert_eq!(*retry_count, 1);
            assert_eq!(error, &not_sent);
            assert_eq!(
                last_error.as_ref().and_then(ServiceError::status),
                Some(503)
            );
        }
        other => panic!("expected a throttled call, got {other:?}"),
    }
    assert!(err.is_throttled() && !err.is_permanent() && !err.is_rejected());
    assert_eq!(err.retry_after(), Some(secs(2)));
    assert_eq!(
        breaker.snapshot().consecutive_failures,
        1,
        "only the 503 counts"
    );
    assert_eq!(budget.tokens(), 9.0, "only the 503 spends");
    assert!(
        !events
            .lock()
            .iter()
            .any(|e| matches!(e, ResilienceEvent::RetriesExhausted { .. })),
        "no alert-raising event"
    );

    let script = Script::new([Err(not_sent)]);
    let err = exec.call(|ctx| script.run(ctx)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::Throttled {
                retry_count: 0,
                last_error: None,
                ..
            }
        ),
        "{err:?}"
    );
}
