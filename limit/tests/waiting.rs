//! Admission, bounded waiting, the rate, and what single answers teach the
//! limiter, in virtual time.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use callguard_core::{ConfigDuration, ErrorKind, ServiceError, ServiceName};
use callguard_limit::{
    LimitConfig, LimitError, LimitMode, Limiter, Outcome, ProviderHeaders, RateConfig,
};
use http::{HeaderMap, HeaderValue};
use tokio::time::{Instant, sleep, timeout};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn limiter(config: LimitConfig) -> Arc<Limiter> {
    Arc::new(Limiter::new(ServiceName::new("elevenlabs").unwrap(), config).unwrap())
}

fn answer(pairs: &[(&'static str, &str)]) -> ProviderHeaders {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    ProviderHeaders::from_headers(&map)
}

/// Lets spawned tasks run until they wait on something.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once_and_a_long_wait_gives_up_at_the_timeout() {
    let limiter = limiter(LimitConfig {
        queue_length: 2,
        queue_timeout: ConfigDuration::from_secs(1),
        ..LimitConfig::fixed(1)
    });
    let held = limiter.acquire().await.unwrap();
    let start = Instant::now();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let refused = limiter.acquire().await.map(drop).unwrap_err();
                (refused, Instant::now())
            })
        })
        .collect();
    settle().await;
    let snapshot = limiter.snapshot();
    assert_eq!(
        (snapshot.limit, snapshot.in_flight, snapshot.waiting),
        (Some(1), 1, 2)
    );

    let refused = limiter.acquire().await.unwrap_err();
    assert_eq!(Instant::now(), start, "refused without waiting");
    assert_eq!(
        refused,
        LimitError::QueueFull {
            service: ServiceName::new("elevenlabs").unwrap(),
            queue_length: 2,
            // Nothing timed yet: the queue timeout.
            retry_after: Duration::from_secs(1),
        }
    );

    for waiter in waiters {
        let (refused, at) = waiter.await.unwrap();
        assert_eq!(at - start, Duration::from_secs(1));
        assert!(
            matches!(
                &refused,
                LimitError::TimedOut { limit: 1, waited, .. } if *waited == Duration::from_secs(1)
            ),
            "{refused:?}"
        );
        let error = ServiceError::from(refused);
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    }
    assert_eq!(limiter.snapshot().waiting, 0);
    drop(held);
    assert_eq!(limiter.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_get_slots_in_turn_as_they_are_given_back() {
    let limiter = limiter(LimitConfig::fixed(1));
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = limiter.acquire().await.unwrap();
    let start = Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let (limiter, order) = (Arc::clone(&limiter), Arc::clone(&order));
            tokio::spawn(async move {
                let permit = limiter.acquire().await.unwrap();
                order.lock().push((i, Instant::now() - start));
                sleep(ms(100)).await;
                permit.complete(
                    Outcome::Success { latency: ms(100) },
                    &ProviderHeaders::NONE,
                );
            })
        })
        .collect();
    settle().await;
    sleep(ms(300)).await;
    drop(held);
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock(), [(0, ms(300)), (1, ms(400)), (2, ms(500))]);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_stops_waiting_leaves_the_queue() {
    let limiter = limiter(LimitConfig {
        queue_length: 1,
        ..LimitConfig::fixed(1)
    });
    let _held = limiter.acquire().await.unwrap();
    assert!(timeout(ms(100), limiter.acquire()).await.is_err());
    assert_eq!(limiter.snapshot().waiting, 0);
    assert!(
        timeout(ms(100), limiter.acquire()).await.is_err(),
        "its place is free again: waiting, not refused"
    );
}

#[tokio::test(start_paused = true)]
async fn the_wait_suggested_follows_how_long_slots_are_held() {
    let limiter = limiter(LimitConfig {
        queue_length: 1,
        ..LimitConfig::adaptive(2, 2, 2)
    });
    for _ in 0..3 {
        let permit = limiter.acquire().await.unwrap();
        permit.complete(
            Outcome::Success { latency: ms(400) },
            &ProviderHeaders::NONE,
        );
    }
    let _a = limiter.acquire().await.unwrap();
    let _b = limiter.acquire().await.unwrap();
    let waiting = {
        let limiter = Arc::clone(&limiter);
        tokio::spawn(async move { limiter.acquire().await.map(drop) })
    };
    settle().await;
    // One waits already; the next would be behind it: one round of 400 ms.
    assert_eq!(limiter.acquire().await.unwrap_err().retry_after(), ms(400));
    waiting.abort();
}

#[tokio::test(start_paused = true)]
async fn a_used_up_rate_pauses_admission_until_the_reset_the_answer_gives() {
    let limiter = limiter(LimitConfig::default());
    let permit = limiter.acquire().await.unwrap();
    permit.complete(
        Outcome::Success { latency: ms(100) },
        &answer(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
        ]),
    );
    assert_eq!(limiter.snapshot().paused_for, Some(Duration::from_secs(2)));
    assert!(limiter.try_acquire().is_none());
    let start = Instant::now();
    let permit = limiter.acquire().await.unwrap();
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    assert_eq!(limiter.snapshot().paused_for, None);
    drop(permit);

    // A pause longer than the wait allowed is refused at once, with its end.
    let impatient = self::limiter(LimitConfig {
        queue_timeout: ConfigDuration::from_secs(1),
        ..LimitConfig::default()
    });
    impatient.acquire().await.unwrap().complete(
        Outcome::RateLimited,
        &answer(&[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]),
    );
    let start = Instant::now();
    let refused = impatient.acquire().await.unwrap_err();
    assert_eq!(Instant::now(), start);
    assert!(
        matches!(refused, LimitError::RateExhausted { retry_after, .. } if retry_after == Duration::from_secs(360)),
        "{refused:?}"
    );

    // Not followed when follow_headers is off.
    let deaf = self::limiter(LimitConfig {
        follow_headers: false,
        ..LimitConfig::default()
    });
    deaf.acquire().await.unwrap().complete(
        Outcome::Success { latency: ms(100) },
        &answer(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("maximum-concurrent-requests", "1"),
        ]),
    );
    assert_eq!(deaf.snapshot().paused_for, None);
    assert_eq!(deaf.snapshot().limit, None);
}

#[tokio::test(start_paused = true)]
async fn a_configured_rate_spaces_calls_after_its_burst() {
    let limiter = limiter(LimitConfig {
        rate: Some(RateConfig {
            requests: 2,
            per: ConfigDuration::from_secs(1),
        }),
        ..LimitConfig::default()
    });
    let start = Instant::now();
    let mut started = Vec::new();
    for _ in 0..4 {
        drop(limiter.acquire().await.unwrap());
        started.push(Instant::now() - start);
    }
    assert_eq!(started, [ms(0), ms(0), ms(500), ms(1000)]);
    assert!(
        limiter.try_acquire().is_none(),
        "no cell left: no slot taken"
    );
    assert_eq!(limiter.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_static_limit_is_lowered_to_the_providers_and_never_raised_past_its_own() {
    let limiter = limiter(LimitConfig::fixed(10));
    let permit = limiter.acquire().await.unwrap();
    permit.complete(
        Outcome::Success { latency: ms(100) },
        &answer(&[("maximum-concurrent-requests", "4")]),
    );
    assert_eq!(limiter.snapshot().limit, Some(4));
    assert_eq!(limiter.snapshot().provider_limit, Some(4));
    let permit = limiter.acquire().await.unwrap();
    permit.complete(
        Outcome::ConcurrencyLimited,
        &answer(&[("maximum-concurrent-requests", "20")]),
    );
    assert_eq!(limiter.snapshot().limit, Some(10), "static does not adapt");
    assert_eq!(limiter.snapshot().mode, LimitMode::Static);
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_shrinks_on_a_timeout_once_per_generation() {
    let limiter = limiter(LimitConfig::adaptive(20, 1, 100));
    let permits: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    for permit in permits {
        permit.complete(Outcome::Timeout, &ProviderHeaders::NONE);
    }
    // All three were sent at 20: the first shrinks it to 18, the others
    // tell nothing new.
    assert_eq!(limiter.snapshot().limit, Some(18));
    limiter
        .try_acquire()
        .unwrap()
        .complete(Outcome::Timeout, &ProviderHeaders::NONE);
    assert_eq!(limiter.snapshot().limit, Some(16), "sent at 18: 18 × 0.9");
    for outcome in [Outcome::RateLimited, Outcome::Failed] {
        limiter
            .try_acquire()
            .unwrap()
            .complete(outcome, &ProviderHeaders::NONE);
    }
    assert_eq!(
        limiter.snapshot().limit,
        Some(16),
        "no signal for the limit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_gives_its_slot_back_and_teaches_nothing() {
    let limiter = limiter(LimitConfig::fixed(1));
    let permit = limiter.try_acquire().unwrap();
    assert!(limiter.try_acquire().is_none());
    drop(permit);
    let permit = limiter.try_acquire().unwrap();
    assert_eq!(limiter.snapshot().in_flight, 1);
    drop(permit);
    assert_eq!(limiter.snapshot().in_flight, 0);
}

/// Counts the WARN events of this crate.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("callguard_limit") {
            let mut message = String::new();
            event.record(&mut Message(&mut message));
            self.0.lock().push(message);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn a_garbage_header_keeps_the_last_good_limit_and_is_logged_once() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let limiter = limiter(LimitConfig::default());
    limiter.acquire().await.unwrap().complete(
        Outcome::Success { latency: ms(100) },
        &answer(&[("maximum-concurrent-requests", "5")]),
    );
    assert_eq!(limiter.snapshot().provider_limit, Some(5));
    for garbage in ["five", "0", "-3", "5.5", "99999999999"] {
        let before = limiter.snapshot().limit;
        limiter.acquire().await.unwrap().complete(
            Outcome::Success { latency: ms(100) },
            &answer(&[
                ("maximum-concurrent-requests", garbage),
                ("current-concurrent-requests", "1"),
            ]),
        );
        let after = limiter.snapshot();
        assert_eq!(after.provider_limit, Some(5), "after {garbage:?}");
        assert!(after.limit >= before, "after {garbage:?}: {after:?}");
    }
    let warnings = warnings.0.lock();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("maximum-concurrent-requests")
            && warnings[0].contains("keeps its last good limit"),
        "{}",
        warnings[0]
    );
}
