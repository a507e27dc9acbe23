//! The webhook channel against the mocks crate's webhook sink; signatures are
//! checked with independent code (the `hmac` and `sha2` crates).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callguard_alerts::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use callguard_alerts::{Alert, AlertManager, ChannelKind};
use callguard_core::CircuitState;
use callguard_mocks::{SinkFailure, WebhookRequest};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::common::{WEBHOOK_SECRET, channel_counts, flushed, mock, transition, with_webhook};

/// Checks a delivery the way a receiver would: the timestamp is recent and
/// the signature is the HMAC-SHA256 of "{timestamp}.{body}".
fn verify(secret: &str, timestamp: &str, signature: &str, body: &[u8]) -> Result<(), String> {
    let sent: u64 = timestamp.parse().map_err(|_| "bad timestamp".to_owned())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(sent) > 300 {
        return Err(format!("timestamp {sent} too far from {now}"));
    }
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or("no sha256= prefix")?;
    let expected: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "signature is not hex".to_owned())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| "signature mismatch".to_owned())
}

fn verify_request(request: &WebhookRequest) -> Result<(), String> {
    verify(
        WEBHOOK_SECRET,
        request.header(TIMESTAMP_HEADER).ok_or("no timestamp")?,
        request.header(SIGNATURE_HEADER).ok_or("no signature")?,
        &request.body,
    )
}

#[tokio::test(start_paused = true)]
async fn deliveries_are_signed_and_versioned() {
    let server = mock().await;
    let manager = AlertManager::new(&with_webhook(&server)).unwrap();
    let opened = transition("elevenlabs", CircuitState::Closed, CircuitState::Open, 1);
    manager.observe_transition(&opened);
    flushed(&manager).await;

    let requests = server.webhook_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/alerts");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let signature = request.header(SIGNATURE_HEADER).unwrap();
    assert_eq!(signature.len(), "sha256=".len() + 64);
    assert!(
        signature[7..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    verify_request(request).unwrap();

    // The same check refuses a changed body, a changed timestamp, another secret.
    let timestamp = request.header(TIMESTAMP_HEADER).unwrap();
    let mut tampered = request.body.clone();
    tampered.push(b' ');
    assert!(verify(WEBHOOK_SECRET, timestamp, signature, &tampered).is_err());
    let later = (timestamp.parse::<u64>().unwrap() + 1).to_string();
    assert!(verify(WEBHOOK_SECRET, &later, signature, &request.body).is_err());
    assert!(
        verify(
            "another-secret-0123456789",
            timestamp,
            signature,
            &request.body
        )
        .is_err()
    );

    let payload: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["kind"], "breaker_opened");
    assert_eq!(payload["severity"], "critical");
    assert_eq!(payload["service"], "elevenlabs");
    assert_eq!(payload["circuit_state"], "OPEN");
    assert_eq!(payload["detail"], "CLOSED → OPEN: 2 consecutive failures");
    assert_eq!(payload["suppressed"], 0);
    assert_eq!(payload["trace_id"].as_str().unwrap().len(), 32);
}

#[tokio::test(start_paused = true)]
async fn a_500_is_retried_then_delivered() {
    let server = mock().await;
    server.webhook_fail(SinkFailure::new(500, 2)).unwrap();
    let manager = AlertManager::new(&with_webhook(&server)).unwrap();
    let alert = Alert::new(
        callguard_alerts::AlertKind::RetriesExhausted,
        crate::common::service("crm"),
        "crm call failed after 4 attempt(s)",
        "transient error (unavailable), HTTP 503",
    );
    let id = alert.id.clone();
    manager.raise(alert);
    flushed(&manager).await;

    let requests = server.webhook_requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    // The channel's policy: 1 s, then 2 s.
    assert_eq!(requests[1].at - requests[0].at, Duration::from_secs(1));
    assert_eq!(requests[2].at - requests[1].at, Duration::from_secs(2));
    for request in &requests {
        verify_request(request).unwrap();
        let payload: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(payload["id"], id.as_str(), "one id across retries");
    }
    let webhook = channel_counts(&manager, ChannelKind::Webhook);
    assert_eq!(
        (webhook.delivered, webhook.failed, webhook.dropped),
        (1, 0, 0)
    );
}
