//! The webhook channel: a `POST` of the versioned JSON payload, signed with
//! HMAC-SHA256 over `"{timestamp}.{body}"` (see the crate's README for how a
//! receiver verifies it).
//!
//! Each attempt is signed afresh with the current time, so a receiver that
//! refuses old timestamps still accepts a late retry; the payload's `id` stays
//! the same across retries, for the receiver to drop duplicates.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use callguard_core::{CircuitState, ErrorCategory, ErrorKind, ServiceName};
use reqwest::header::CONTENT_TYPE;

use super::http;
use super::{Channel, ChannelKind, Sending};
use crate::config::WebhookConfig;
use crate::{Alert, AlertKind, AlertsError, Severity};

/// The payload's `version`; a change that breaks receivers gets a new one.
pub const PAYLOAD_VERSION: u32 = 1;
/// The header with the signing time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Callguard-Timestamp";
/// The header with the signature, `sha256=<64 lowercase hex digits>`.
pub const SIGNATURE_HEADER: &str = "X-Callguard-Signature";

/// The JSON body of a webhook delivery, version 1 (field by field in the
/// crate's README). Fields are only ever added within a version.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct WebhookPayload<'a> {
    /// Always [`PAYLOAD_VERSION`].
    pub version: u32,
    /// The alert's id, the same on every retry of its delivery.
    pub id: &'a str,
    /// `permanent_failure`, `retries_exhausted`, `breaker_opened`, `breaker_closed`.
    pub kind: AlertKind,
    /// `info`, `warning`, `critical`.
    pub severity: Severity,
    /// The service the alert is about.
    pub service: &'a ServiceName,
    /// One line for people.
    pub summary: &'a str,
    /// The error or the reason.
    pub detail: &'a str,
    /// `transient`, `permanent` or null.
    pub error_category: Option<ErrorCategory>,
    /// `unavailable`, `unauthorized`, … or null.
    pub error_kind: Option<ErrorKind>,
    /// The contact being called, or null.
    pub contact_id: Option<&'a str>,
    /// `CLOSED`, `OPEN`, `HALF_OPEN`, `FORCED_OPEN` or null.
    pub circuit_state: Option<CircuitState>,
    /// When it happened, RFC 3339 in UTC (`2026-03-01T12:00:00Z`).
    pub time: String,
    /// The W3C trace id.
    pub trace_id: &'a str,
    /// Alerts of the same (service, kind) suppressed since the last one.
    pub suppressed: u32,
}

impl<'a> WebhookPayload<'a> {
    /// The payload of `alert`.
    pub fn new(alert: &'a Alert) -> Self {
        Self {
            version: PAYLOAD_VERSION,
            id: &alert.id,
            kind: alert.kind,
            severity: alert.severity,
            service: &alert.service,
            summary: &alert.summary,
            detail: &alert.detail,
            error_category: alert.error_category,
            error_kind: alert.error_kind,
            contact_id: alert.contact_id.as_deref(),
            circuit_state: alert.circuit_state,
            time: alert.time_rfc3339(),
            trace_id: &alert.trace_id,
            suppressed: alert.suppressed,
        }
    }
}

/// The signature header's value for `body` sent at `timestamp` (Unix
/// seconds): `sha256=` and the lowercase hex HMAC-SHA256, keyed with
/// `secret`, of `"{timestamp}.{body}"`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut signature = String::with_capacity(7 + 64);
    signature.push_str("sha256=");
    for byte in tag.as_ref() {
        // Writing to a String cannot fail.
        let _ = write!(signature, "{byte:02x}");
    }
    signature
}

pub(crate) struct Webhook {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: callguard_core::Secret,
}

impl Webhook {
    pub(crate) fn new(config: &WebhookConfig) -> Result<Self, AlertsError> {
        let url = reqwest::Url::parse(&config.url).map_err(|_| AlertsError::Client {
            channel: ChannelKind::Webhook,
            reason: "alerts.webhook.url is not a URL".into(),
        })?;
        Ok(Self {
            client: http::client(config.timeout.get()).map_err(|reason| AlertsError::Client {
                channel: ChannelKind::Webhook,
                reason,
            })?,
            url,
            secret: config.secret.clone(),
        })
    }

    /// `scheme://host[:port]`: what may be logged of the URL.
    pub(crate) fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

impl Channel for Webhook {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn send<'a>(&'a self, alert: &'a Alert, _part: usize) -> Sending<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&WebhookPayload::new(alert)).map_err(|e| {
                callguard_core::ServiceError::new(
                    ErrorKind::InvalidRequest,
                    format!("the payload could not be encoded: {e}"),
                )
            })?;
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let signature = sign(self.secret.expose().as_bytes(), timestamp, &body);
            let request = self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, timestamp)
                .header(SIGNATURE_HEADER, signature)
                .body(body);
            let answer = http::send(request).await?;
            match answer.error {
                None => Ok(()),
                Some(error) => Err(http::amend(
                    &error,
                    &String::from_utf8_lossy(&answer.body),
                    None,
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'it-is-a-secret-key'
        assert_eq!(
            sign(b"it-is-a-secret-key", 1_700_000_000, br#"{"a":1}"#),
            "sha256=714dcaf7abed5b1aa62c38d6fe97432497fd1d8292a31dba7dbeffeb69cb6aef"
        );
    }

    #[test]
    fn payload_is_versioned_and_complete() {
        let alert = Alert::new(
            AlertKind::BreakerOpened,
            ServiceName::new("llm").unwrap(),
            "llm circuit breaker opened",
            "CLOSED → OPEN: 2 consecutive failures",
        )
        .with_circuit_state(CircuitState::Open);
        let json = serde_json::to_value(WebhookPayload::new(&alert)).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["kind"], "breaker_opened");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["service"], "llm");
        assert_eq!(json["circuit_state"], "OPEN");
        assert_eq!(json["contact_id"], serde_json::Value::Null);
        assert_eq!(json["id"], alert.id.as_str());
        assert_eq!(json["trace_id"], alert.trace_id.as_str());
        assert_eq!(json.as_object().unwrap().len(), 14);
    }
}
