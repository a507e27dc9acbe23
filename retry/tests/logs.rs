//! The executor's tracing events: one per attempt, with the seed's fields and
//! messages that read like the seed's log lines.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{ErrorKind, ServiceError, ServiceName, classify_status, refine_by_body};
use callguard_retry::{Executor, RetryPolicy};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event of the executor's crate.
#[derive(Debug, Clone)]
struct Line {
    level: Level,
    fields: BTreeMap<&'static str, String>,
}

impl Line {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if !event.metadata().target().starts_with("callguard_retry") {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().push(Line {
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn take(&self) -> Vec<Line> {
        std::mem::take(&mut *self.0.lock())
    }
}

fn status(code: u16) -> ServiceError {
    classify_status(code, None, SystemTime::UNIX_EPOCH).unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_event_per_attempt_with_the_seed_fields() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("elevenlabs").unwrap(),
        BreakerConfig::default(),
    ));
    let exec = Executor::new(Arc::clone(&breaker), RetryPolicy::default()).unwrap();

    // The seed story: 503, 503 (the breaker opens), the third attempt is not made.
    let _ = exec.call(|_| async { Err::<(), _>(status(503)) }).await;
    let lines = capture.take();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first.level, Level::WARN);
    assert_eq!(
        first.get("message"),
        Some(
            "elevenlabs call failed (attempt 1/4): transient error (unavailable), \
             HTTP 503: service unavailable; retrying in 5s"
        )
    );
    for (field, value) in [
        ("service", "elevenlabs"),
        ("retry_count", "0"),
        ("circuit_state", "CLOSED"),
        ("error_category", "transient"),
        ("error_kind", "unavailable"),
        ("http_status", "503"),
        ("delay_ms", "5000"),
    ] {
        assert_eq!(first.get(field), Some(value), "{field}: {first:#?}");
    }
    let second = &lines[1];
    assert_eq!(second.level, Level::WARN);
    assert_eq!(second.get("retry_count"), Some("1"));
    assert_eq!(
        second.get("message"),
        Some(
            "elevenlabs call failed (attempt 2/4): transient error (unavailable), \
             HTTP 503: service unavailable; not retrying: circuit breaker for elevenlabs \
             is OPEN; retry after 10.0s"
        )
    );
    assert_eq!(second.get("delay_ms"), None, "no delay was scheduled");

    // While OPEN: a rejection at INFO.
    let _ = exec.call(|_| async { Ok::<_, ServiceError>(()) }).await;
    let lines = capture.take();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0].level, Level::INFO);
    assert_eq!(lines[0].get("circuit_state"), Some("OPEN"));
    assert_eq!(
        lines[0].get("message"),
        Some(
            "elevenlabs call rejected (attempt 1/4): circuit breaker for elevenlabs is OPEN; \
             retry after 10.0s"
        )
    );

    // Recovered: a success at DEBUG with the probe's state.
    tokio::time::advance(Duration::from_secs(10)).await;
    let _ = exec.call(|_| async { Ok::<_, ServiceError>(()) }).await;
    let lines = capture.take();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0].level, Level::DEBUG);
    assert_eq!(lines[0].get("circuit_state"), Some("HALF_OPEN"));
    assert_eq!(
        lines[0].get("message"),
        Some("elevenlabs call succeeded (attempt 1/4)")
    );

    // A permanent error at ERROR.
    let _ = exec.call(|_| async { Err::<(), _>(status(422)) }).await;
    let lines = capture.take();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0].level, Level::ERROR);
    assert_eq!(lines[0].get("error_category"), Some("permanent"));
    assert_eq!(lines[0].get("http_status"), Some("422"));
}

#[tokio::test(start_paused = true)]
async fn giving_up_is_an_error_naming_the_reason() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("llm").unwrap(),
        BreakerConfig {
            failure_threshold: 100,
            ..BreakerConfig::default()
        },
    ));
    let policy = RetryPolicy {
        max_retries: 1,
        ..RetryPolicy::default()
    };
    let exec = Executor::new(breaker, policy).unwrap();
    let _ = exec.call(|_| async { Err::<(), _>(status(504)) }).await;
    let lines = capture.take();
    let levels: Vec<Level> = lines.iter().map(|l| l.level).collect();
    assert_eq!(levels, [Level::WARN, Level::ERROR]);
    assert_eq!(
        lines[1].get("message"),
        Some(
            "llm call failed (attempt 2/2): transient error (unavailable), HTTP 504: \
             gateway timeout; giving up: no retries left"
        )
    );
    assert_eq!(lines[1].get("stop_reason"), Some("max_retries"));
}

#[tokio::test(start_paused = true)]
async fn concurrency_retries_and_calls_not_sent_are_told_at_info() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("elevenlabs").unwrap(),
        BreakerConfig::default(),
    ));
    let exec = Executor::new(breaker, RetryPolicy::default()).unwrap();
    let busy = refine_by_body(
        status(429),
        br#"{"detail":{"status":"too_many_concurrent_requests"}}"#,
    );
    let not_sent = ServiceError::new(ErrorKind::Throttled, "no slot within 10s")
        .with_retry_after(Duration::from_secs(2));
    let answers: [Result<(), _>; 3] = [Err(busy), Err(status(503)), Err(not_sent)];
    let mut next = answers.into_iter();
    let _ = exec
        .call(|_| std::future::ready(next.next().unwrap()))
        .await;
    let lines = capture.take();
    let levels: Vec<Level> = lines.iter().map(|l| l.level).collect();
    assert_eq!(
        levels,
        [Level::INFO, Level::WARN, Level::INFO],
        "{lines:#?}"
    );
    assert_eq!(
        lines[0].get("message"),
        Some(
            "elevenlabs call failed (attempt 1/4): transient error (concurrency_limited), \
             HTTP 429: too many requests; retrying in 100ms (not counted toward max_retries)"
        )
    );
    assert_eq!(lines[0].get("delay_ms"), Some("100"));
    // The concurrency retry did not use up an attempt: 5 may now be made.
    assert_eq!(
        lines[1].get("message"),
        Some(
            "elevenlabs call failed (attempt 2/5): transient error (unavailable), \
             HTTP 503: service unavailable; retrying in 5s"
        )
    );
    assert_eq!(
        lines[2].get("message"),
        Some(
            "elevenlabs call failed (attempt 3/5): transient error (throttled), \
             retry after 2s: no slot within 10s; not sent; the call ends to be deferred"
        )
    );
    assert_eq!(lines[2].get("retry_after_ms"), Some("2000"));
}
