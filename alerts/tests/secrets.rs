//! The bot token and the webhook secret never appear in logs (captured from
//! a tracing subscriber at TRACE level), in error strings or in `Debug`.
//!
//! A test binary of its own with one test: the capturing subscriber is the
//! global one, so no other test's thread can race its callsite registration.

use callguard_alerts::{AlertManager, AlertsConfig, AlertsError, ChannelKind};
use callguard_core::{ErrorKind, ResilienceEvent, Secret, ServiceError};
use callguard_mocks::{LogCapture, SinkFailure};
use tokio::net::TcpListener;

#[path = "it/common.rs"]
#[allow(dead_code)] // shared with the `it` tests, which use the rest
mod common;

use common::{WEBHOOK_SECRET, flushed, mock, service, telegram, webhook};

const TOKEN: &str = "777000:very-secret-bot-token";

fn event() -> ResilienceEvent {
    ResilienceEvent::PermanentFailure {
        service: service("crm"),
        retry_count: 0,
        error: ServiceError::new(ErrorKind::Forbidden, "forbidden").with_status(403),
    }
}

/// A URL on which nothing listens: connections are refused.
async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(start_paused = true)]
async fn the_bot_token_and_webhook_secret_stay_out_of_logs_and_errors() {
    let logs = LogCapture::default();
    capture_globally(&logs);
    logs_and_errors(&logs).await;
    config_errors_do_not_show_secrets().await;
}

async fn logs_and_errors(logs: &LogCapture) {
    let server = mock().await;
    server.webhook_fail(SinkFailure::new(500, 100)).unwrap();

    // A token the fake refuses (401), and the same token against a dead port.
    let mut refused = telegram(&server);
    refused.bot_token = Secret::new(TOKEN);
    let mut unreachable = telegram(&server);
    unreachable.bot_token = Secret::new(TOKEN);
    unreachable.api_base = refused_url().await;
    for telegram_config in [refused, unreachable] {
        let config = AlertsConfig {
            telegram: Some(telegram_config),
            webhook: Some(webhook(&server)),
            ..AlertsConfig::default()
        };
        let manager = AlertManager::new(&config).unwrap();
        manager.observe_event(&event());
        flushed(&manager).await;
        let counts = manager.counts();
        assert_eq!(counts.channel(ChannelKind::Telegram).unwrap().failed, 1);
        assert_eq!(counts.channel(ChannelKind::Webhook).unwrap().failed, 1);
        let shown = format!("{manager:?} {config:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains(WEBHOOK_SECRET),
            "{shown}"
        );
    }

    let text = logs.text();
    assert!(text.contains("alert could not be delivered"), "{text}");
    assert!(text.contains("HTTP 401"), "the refusal is logged: {text}");
    assert!(
        text.contains("connect"),
        "the connection failure is logged: {text}"
    );
    assert!(!text.contains(TOKEN), "token in logs:\n{text}");
    assert!(
        !text.contains("very-secret"),
        "part of the token in logs:\n{text}"
    );
    assert!(
        !text.contains(WEBHOOK_SECRET),
        "webhook secret in logs:\n{text}"
    );
}

async fn config_errors_do_not_show_secrets() {
    let server = mock().await;
    let mut bad_token = telegram(&server);
    bad_token.bot_token = Secret::new("hidden/token-value");
    let config = AlertsConfig {
        telegram: Some(bad_token),
        ..AlertsConfig::default()
    };
    let err = AlertManager::new(&config).unwrap_err();
    assert!(matches!(err, AlertsError::Config(_)));
    assert!(!err.to_string().contains("token-value"), "{err}");

    let mut short = webhook(&server);
    short.secret = Secret::new("tiny-secret");
    short.url = format!("{}?token=url-secret", server.webhook_url("/x"));
    let err = AlertManager::new(&AlertsConfig {
        webhook: Some(short),
        ..AlertsConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        !err.contains("tiny-secret") && !err.contains("url-secret"),
        "{err}"
    );
    assert!(err.contains("alerts.webhook.secret"), "{err}");
}

/// Captures every event, TRACE and up, from every thread, into `logs` for the
/// rest of the process.
fn capture_globally(logs: &LogCapture) {
    let logs = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || logs.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
}
