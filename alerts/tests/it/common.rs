//! Helpers shared by the tests: configs pointing at the mock server, and
//! breaker transitions.

use std::time::{Duration, SystemTime};

use callguard_alerts::{
    AlertManager, AlertsConfig, ChannelCounts, ChannelKind, TelegramConfig, WebhookConfig,
};
use callguard_core::{
    CircuitState, ConfigDuration, Secret, ServiceName, Transition, TransitionReason,
};
use callguard_mocks::{MockConfig, MockServer, TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID};
use callguard_retry::RetryPolicy;

/// The webhook secret of the tests.
pub(crate) const WEBHOOK_SECRET: &str = "whsec-test-0123456789abcdef";

pub(crate) async fn mock() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

/// Retries after 1 s, 2 s, 4 s: quick under a paused clock, and distinct.
pub(crate) fn retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: ConfigDuration::from_secs(1),
        ..RetryPolicy::default()
    }
}

pub(crate) fn telegram(server: &MockServer) -> TelegramConfig {
    let mut config = TelegramConfig::new(Secret::new(TELEGRAM_BOT_TOKEN), TELEGRAM_CHAT_ID);
    config.api_base = server.telegram_api_base();
    config.retry = retry();
    config
}

pub(crate) fn webhook(server: &MockServer) -> WebhookConfig {
    let mut config = WebhookConfig::new(server.webhook_url("/alerts"), Secret::new(WEBHOOK_SECRET));
    config.retry = retry();
    config
}

pub(crate) fn with_telegram(server: &MockServer) -> AlertsConfig {
    AlertsConfig {
        telegram: Some(telegram(server)),
        ..AlertsConfig::default()
    }
}

pub(crate) fn with_webhook(server: &MockServer) -> AlertsConfig {
    AlertsConfig {
        webhook: Some(webhook(server)),
        ..AlertsConfig::default()
    }
}

pub(crate) fn service(name: &str) -> ServiceName {
    ServiceName::new(name).unwrap()
}

pub(crate) fn transition(
    service_name: &str,
    from: CircuitState,
    to: CircuitState,
    generation: u64,
) -> Transition {
    let reason = match to {
        CircuitState::Open => TransitionReason::ConsecutiveFailures { count: 2 },
        CircuitState::Closed => TransitionReason::ProbesSucceeded { count: 1 },
        _ => TransitionReason::RecoveryTimeoutElapsed,
    };
    Transition {
        service: service(service_name),
        from,
        to,
        reason,
        at: tokio::time::Instant::now(),
        wall_time: SystemTime::now(),
        generation,
    }
}

/// Waits (on the runtime clock) until the manager has nothing left to do.
pub(crate) async fn flushed(manager: &AlertManager) {
    flushed_within(manager, Duration::from_secs(600)).await;
}

/// Waits until the manager has nothing left to do, failing after `timeout`.
pub(crate) async fn flushed_within(manager: &AlertManager, timeout: Duration) {
    assert!(
        manager.flush(timeout).await,
        "alerts still pending: {:?}",
        manager.counts()
    );
}

/// The counts of `channel` so far.
pub(crate) fn channel_counts(manager: &AlertManager, channel: ChannelKind) -> ChannelCounts {
    manager
        .counts()
        .channel(channel)
        .copied()
        .unwrap_or_else(|| panic!("no {channel} channel"))
}
