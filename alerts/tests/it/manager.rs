//! The manager: dedup and cooldown, one alert per breaker opening, the
//! resolve notice, dead and slow channels, shutdown.

use std::sync::Arc;
use std::time::Duration;

use callguard_alerts::{Alert, AlertKind, AlertManager, AlertsConfig, ChannelKind, Raised};
use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{CircuitState, ErrorKind, ResilienceEvent, ServiceError};
use callguard_mocks::{MockServer, SinkFailure};
use callguard_retry::{Executor, RetryPolicy};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::common::{channel_counts, flushed, mock, service, webhook, with_webhook};

fn payloads(server: &MockServer) -> Vec<Value> {
    server
        .webhook_requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn exhausted(name: &str) -> ResilienceEvent {
    ResilienceEvent::RetriesExhausted {
        service: service(name),
        attempts: 4,
        error: ServiceError::new(ErrorKind::Unavailable, "service unavailable").with_status(503),
    }
}

#[tokio::test(start_paused = true)]
async fn dedup_within_the_cooldown_reports_what_it_suppressed() {
    let server = mock().await;
    let manager = AlertManager::new(&with_webhook(&server)).unwrap();
    let minute = Duration::from_secs(60);

    assert_eq!(
        manager.observe_event(&exhausted("crm")),
        Some(Raised::Accepted)
    );
    // Delivered before the clock jumps, which would time the request out.
    flushed(&manager).await;
    for _ in 0..3 {
        tokio::time::advance(minute).await;
        assert_eq!(
            manager.observe_event(&exhausted("crm")),
            Some(Raised::Suppressed)
        );
    }
    // Another service, or another kind, is not held back.
    assert_eq!(
        manager.observe_event(&exhausted("llm")),
        Some(Raised::Accepted)
    );
    let permanent = Alert::new(AlertKind::PermanentFailure, service("crm"), "x", "y");
    assert_eq!(manager.raise(permanent), Raised::Accepted);
    flushed(&manager).await;
    // 4 minutes in: still within the 5-minute cooldown.
    tokio::time::advance(minute).await;
    assert_eq!(
        manager.observe_event(&exhausted("crm")),
        Some(Raised::Suppressed)
    );
    // 5 minutes after the first: it goes out, with the count.
    tokio::time::advance(minute).await;
    assert_eq!(
        manager.observe_event(&exhausted("crm")),
        Some(Raised::Accepted)
    );
    flushed(&manager).await;

    let sent: Vec<(String, String, u64)> = payloads(&server)
        .iter()
        .map(|p| {
            (
                p["service"].as_str().unwrap().to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
                p["suppressed"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("crm", "retries_exhausted", 0),
        ("llm", "retries_exhausted", 0),
        ("crm", "permanent_failure", 0),
        ("crm", "retries_exhausted", 4),
    ]
    .map(|(s, k, n)| (s.to_owned(), k.to_owned(), n));
    assert_eq!(sent, expected);
    let counts = manager.counts();
    assert_eq!((counts.raised, counts.suppressed), (4, 4));
    assert_eq!(counts.channel(ChannelKind::Webhook).unwrap().delivered, 4);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opening_alerts_once_and_its_closing_resolves() {
    let server = mock().await;
    let manager = AlertManager::new(&with_webhook(&server)).unwrap();
    let breaker = Arc::new(CircuitBreaker::new(
        service("elevenlabs"),
        BreakerConfig::default(),
    ));
    let watcher = manager.watch_transitions(breaker.transitions());
    let policy = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    let executor = Executor::new(Arc::clone(&breaker), policy)
        .unwrap()
        .with_sink(Arc::new(manager.clone()));
    let down = || async {
        Err::<(), _>(ServiceError::new(ErrorKind::Unavailable, "down").with_status(503))
    };

    // Two failures open the breaker; 20 more calls are rejected.
    for _ in 0..22 {
        let _ = executor.call(|_| down()).await;
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(1)).await; // the watcher's turn
    flushed(&manager).await;

    breaker.close_on_recovery();
    tokio::time::sleep(Duration::from_millis(1)).await;
    flushed(&manager).await;

    let kinds: Vec<String> = payloads(&server)
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "breaker_opened").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("breaker_closed"),
        "{kinds:?}"
    );
    let closed = payloads(&server).pop().unwrap();
    assert_eq!(closed["severity"], "info");
    assert_eq!(closed["circuit_state"], "CLOSED");
    // Two exhausted calls: one alert, one suppressed; rejections raise nothing.
    let counts = manager.counts();
    assert_eq!((counts.raised, counts.suppressed), (3, 1), "{counts:?}");
    watcher.abort();
}

#[tokio::test(start_paused = true)]
async fn a_dead_channel_opens_its_breaker_and_counts_its_failures() {
    let server = mock().await;
    server.webhook_fail(SinkFailure::new(500, 1000)).unwrap();
    let mut config = with_webhook(&server);
    if let Some(webhook) = &mut config.webhook {
        webhook.circuit_breaker.failure_threshold = 3;
        webhook.circuit_breaker.recovery_timeout = callguard_core::ConfigDuration::from_secs(3600);
    }
    let manager = AlertManager::new(&config).unwrap();
    for i in 0..10 {
        let alert = Alert::new(
            AlertKind::PermanentFailure,
            service(&format!("svc-{i}")),
            "x",
            "y",
        );
        assert_eq!(manager.raise(alert), Raised::Accepted);
    }
    flushed(&manager).await;

    let webhook = channel_counts(&manager, ChannelKind::Webhook);
    assert_eq!(
        (webhook.delivered, webhook.failed, webhook.dropped),
        (0, 10, 0)
    );
    assert_eq!(
        manager.breaker(ChannelKind::Webhook).unwrap().state(),
        CircuitState::Open
    );
    // Three attempts opened the breaker; after that nothing reached the server.
    assert_eq!(server.webhook_requests().len(), 3);
}

/// A server that accepts connections and never answers.
async fn black_hole() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test(start_paused = true)]
async fn a_hanging_channel_never_holds_up_raise_and_shutdown_keeps_its_deadline() {
    let (listener, url) = black_hole().await;
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let server = mock().await;
    let mut hook = webhook(&server);
    hook.url = url;
    let config = AlertsConfig {
        queue_capacity: 2,
        webhook: Some(hook),
        ..AlertsConfig::default()
    };
    let manager = AlertManager::new(&config).unwrap();
    for i in 0..10 {
        manager.raise(Alert::new(
            AlertKind::PermanentFailure,
            service(&format!("s{i}")),
            "x",
            "y",
        ));
    }
    // `raise` returned ten times without the delivery task running once.
    let webhook_counts = channel_counts(&manager, ChannelKind::Webhook);
    assert_eq!((webhook_counts.pending, webhook_counts.dropped), (2, 8));

    let started = tokio::time::Instant::now();
    let counts = manager.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "the deadline, not the 10 s timeout"
    );
    let webhook_counts = counts.channel(ChannelKind::Webhook).copied().unwrap();
    assert_eq!(
        (
            webhook_counts.delivered,
            webhook_counts.failed,
            webhook_counts.dropped,
            webhook_counts.pending
        ),
        (0, 0, 10, 0)
    );
    // After shutdown, alerts are dropped and counted.
    manager.raise(Alert::new(
        AlertKind::PermanentFailure,
        service("late"),
        "x",
        "y",
    ));
    assert_eq!(channel_counts(&manager, ChannelKind::Webhook).dropped, 11);
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_what_is_queued() {
    let server = mock().await;
    let manager = AlertManager::new(&with_webhook(&server)).unwrap();
    for name in ["a", "b", "c"] {
        manager.observe_event(&exhausted(name));
    }
    let counts = manager.shutdown(Duration::from_secs(30)).await;
    assert_eq!(counts.channel(ChannelKind::Webhook).unwrap().delivered, 3);
    assert_eq!(payloads(&server).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_channels_alerts_are_still_counted() {
    let manager = AlertManager::new(&AlertsConfig::default()).unwrap();
    assert!(manager.channels().is_empty());
    manager.observe_event(&exhausted("crm"));
    manager.observe_event(&exhausted("crm"));
    let counts = manager.counts();
    assert_eq!((counts.raised, counts.suppressed), (1, 1));
    assert!(manager.flush(Duration::from_secs(1)).await);
}
