//! Service-account JWT exchange, token caching and renewal, and secrets kept
//! out of logs, errors and `Debug`.

use std::time::Duration;

use callguard_core::Secret;
use callguard_mocks::{SHEETS_STATIC_TOKEN, SinkFailure, TEST_SERVICE_ACCOUNT_EMAIL};
use callguard_sheets_logger::{SetupError, SheetsConfig, SheetsLayer};
use serde_json::Value;
use tokio::time::Instant;

use crate::common::{
    MESSAGE, column, config, install, key_file, secs, service_account_config, start, until,
};

/// Lines of the test key's PEM body (any one of them in a log is a leak).
fn private_key_lines(server: &callguard_mocks::MockServer) -> Vec<String> {
    let account: Value = serde_json::from_str(&server.service_account_json()).unwrap();
    account["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn one_token_serves_many_batches_until_it_nears_expiry() {
    let server = start().await;
    // Used for 60 s (renewed a minute early, or halfway for short lifetimes).
    server.set_token_lifetime(Duration::from_secs(120));
    let logging = install(&SheetsConfig {
        flush_interval: secs(5),
        ..service_account_config(&server, "caching")
    });
    let started = Instant::now();
    for batch in 0..5u64 {
        tracing::warn!(batch, "batch");
        until("the batch", || {
            logging.handle.stats().rows_sent == batch + 1
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let grants = server.token_requests();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(grants[0].granted);
    assert_eq!(
        grants[0].issuer.as_deref(),
        Some(TEST_SERVICE_ACCOUNT_EMAIL)
    );

    // Past the first token's usable minute a second one is fetched, before the
    // fake would refuse the first.
    tokio::time::sleep_until(started + Duration::from_secs(70)).await;
    tracing::warn!("after renewal");
    until("the last batch", || logging.handle.stats().rows_sent == 6).await;
    assert_eq!(server.token_requests().len(), 2);
    assert!(server.token_requests().iter().all(|g| g.granted));
    assert!(server.sheets_statuses().iter().all(|s| *s == 200));
    assert_eq!(server.sheets_rows().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_renewed_once() {
    let server = start().await;
    let logging = install(&service_account_config(&server, "renew"));
    tracing::warn!("first");
    logging.handle.flush().await;
    server.revoke_tokens();
    tracing::warn!("second");
    logging.handle.flush().await;
    assert_eq!(column(&server, MESSAGE), ["first", "second"]);
    assert_eq!(server.sheets_statuses(), [200, 401, 200]);
    assert_eq!(server.token_requests().len(), 2);
    let stats = logging.handle.stats();
    assert_eq!(
        (stats.rows_sent, stats.rows_dropped, stats.requests_failed),
        (2, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_static_token_is_sent_as_is() {
    let server = start().await;
    let logging = install(&config(&server));
    tracing::warn!("hello");
    logging.handle.flush().await;
    assert_eq!(column(&server, MESSAGE), ["hello"]);
    assert!(server.token_requests().is_empty());
    let wrong = install(&SheetsConfig {
        bearer_token: Some(Secret::new("not-the-token")),
        ..config(&server)
    });
    tracing::warn!("refused");
    wrong.handle.flush().await;
    let stats = wrong.handle.stats();
    assert_eq!(
        (stats.rows_dropped, stats.requests_failed),
        (1, 1),
        "401 is final"
    );
    assert!(!wrong.capture.text().contains("not-the-token"));
}

#[tokio::test(start_paused = true)]
async fn secrets_never_reach_logs_errors_or_debug() {
    let server = start().await;
    // One refused append (its error is logged) and a normal one.
    server.sheets_fail(SinkFailure::new(403, 1)).unwrap();
    let config = service_account_config(&server, "secrets");
    let logging = install(&config);
    tracing::warn!("one");
    logging.handle.flush().await;
    tracing::warn!("two");
    logging.handle.flush().await;
    assert_eq!(column(&server, MESSAGE), ["two"]);
    assert_eq!(server.token_requests().len(), 1);

    let mut shown = logging.capture.text();
    assert!(shown.contains("sheets logger: rows dropped"), "{shown}");
    shown.push_str(&format!(
        "{config:?} {:?} {:?}",
        logging.handle,
        logging.handle.stats()
    ));
    let key_text = std::fs::read_to_string(config.credentials_file.as_ref().unwrap()).unwrap();
    let key = callguard_sheets_logger::ServiceAccountKey::from_json(&key_text).unwrap();
    shown.push_str(&format!("{key:?}"));
    for line in private_key_lines(&server) {
        assert!(!shown.contains(&line), "private key line in {shown}");
    }
    assert!(!shown.contains("ya29."), "access token in {shown}");
    assert!(!shown.contains("eyJ"), "JWT in {shown}");
    assert!(!shown.contains(SHEETS_STATIC_TOKEN), "{shown}");
}

#[tokio::test]
async fn a_broken_key_file_is_reported_without_its_contents() {
    let server = start().await;
    let account = server.service_account_json();
    let broken = account.replace("MII", "XXII");
    let path = key_file("broken", &broken);
    let err = SheetsLayer::new(&SheetsConfig {
        bearer_token: None,
        credentials_file: Some(path),
        ..config(&server)
    })
    .unwrap_err();
    assert!(matches!(err, SetupError::Credentials(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("private_key"), "{shown}");
    for line in private_key_lines(&server) {
        assert!(!shown.contains(&line), "{shown}");
    }
    let missing = SheetsLayer::new(&SheetsConfig {
        bearer_token: None,
        credentials_file: Some("/nonexistent/sa.json".into()),
        ..config(&server)
    })
    .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/sa.json"),
        "{missing}"
    );
}

#[test]
fn setting_up_outside_a_runtime_is_an_error() {
    let config = SheetsConfig {
        spreadsheet_id: "s".into(),
        bearer_token: Some(Secret::new("t")),
        ..SheetsConfig::default()
    };
    assert!(matches!(
        SheetsLayer::new(&config).unwrap_err(),
        SetupError::NoRuntime
    ));
}
