//! Helpers: a mock server, configs pointing at it, a subscriber with the
//! layer and a log capture, and waiting on a paused clock.

use std::path::PathBuf;
use std::time::Duration;

use callguard_core::{ConfigDuration, Secret};
use callguard_mocks::{LogCapture, MockConfig, MockServer, SHEETS_STATIC_TOKEN};
use callguard_retry::Jitter;
use callguard_sheets_logger::{SheetsConfig, SheetsHandle, SheetsLayer};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

pub(crate) async fn start() -> MockServer {
    MockServer::start(MockConfig::default()).await.unwrap()
}

/// A config for `server` with its static token, no jitter, 1 s first backoff.
pub(crate) fn config(server: &MockServer) -> SheetsConfig {
    let mut retry = SheetsConfig::default_retry();
    retry.jitter = Jitter::None;
    SheetsConfig {
        spreadsheet_id: "sheet-1".into(),
        api_base: server.sheets_api_base(),
        bearer_token: Some(Secret::new(SHEETS_STATIC_TOKEN)),
        retry,
        ..SheetsConfig::default()
    }
}

/// The same with `server`'s service-account key, written to a file named
/// after `test`.
pub(crate) fn service_account_config(server: &MockServer, test: &str) -> SheetsConfig {
    let path = key_file(test, &server.service_account_json());
    SheetsConfig {
        bearer_token: None,
        credentials_file: Some(path),
        ..config(server)
    }
}

pub(crate) fn key_file(test: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "callguard-sheets-{}-{test}.json",
        std::process::id()
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

pub(crate) fn secs(s: u64) -> ConfigDuration {
    ConfigDuration::from_secs(s)
}

/// The layer and a capture of every event installed as this thread's
/// subscriber (tests run on a current-thread runtime, so the sending task
/// sees it too).
pub(crate) struct Logging {
    pub(crate) handle: SheetsHandle,
    /// Everything logged, formatted, at every level.
    pub(crate) capture: LogCapture,
    _guard: DefaultGuard,
}

pub(crate) fn install(config: &SheetsConfig) -> Logging {
    let (layer, handle) = SheetsLayer::new(config).unwrap();
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry().with(layer).with(
        tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
    );
    Logging {
        handle,
        capture,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// Waits (on the possibly paused clock) until `done` holds; panics after ten
/// virtual minutes.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(600);
    while !done() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Text cells of a column of every row.
pub(crate) fn column(server: &MockServer, index: usize) -> Vec<String> {
    server
        .sheets_rows()
        .iter()
        .map(|row| match &row[index] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// Index of the message column.
pub(crate) const MESSAGE: usize = 6;
