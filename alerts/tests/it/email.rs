//! The email channel against a real SMTP server: aiosmtpd, started by
//! callguard-mocks' `SmtpSink` on a free port, saving what it receives.
//!
//! Needs Python 3 with aiosmtpd (`python3 -m pip install aiosmtpd`); without
//! it the test fails and says so.

use std::time::Duration;

use callguard_alerts::{Alert, AlertManager, AlertsConfig, ChannelKind, EmailConfig, SmtpTls};
use callguard_core::{ErrorKind, ResilienceEvent, Secret, ServiceError};
use callguard_mocks::SmtpSink;

use crate::common::{channel_counts, flushed_within, retry, service};

const USER: &str = "alerts";
const PASSWORD: &str = "smtp-password-42";

fn config(server: &SmtpSink, password: &str) -> AlertsConfig {
    let mut email = EmailConfig::new(
        "127.0.0.1",
        "callguard <alerts@example.com>",
        vec![
            "oncall@example.com".into(),
            "Ops Team <ops@example.com>".into(),
        ],
    );
    email.tls = SmtpTls::None;
    email.smtp_port = Some(server.port());
    email.username = Some(USER.into());
    email.password = Some(Secret::new(password));
    email.retry = retry();
    AlertsConfig {
        email: Some(email),
        ..AlertsConfig::default()
    }
}

/// Decodes a quoted-printable body (RFC 2045): `=` at a line end joins lines,
/// `=XX` is a byte.
fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Headers unfolded (a long header continues on lines starting with a space).
fn unfolded_headers(data: &str) -> String {
    let head = data.split("\r\n\r\n").next().unwrap_or_default();
    head.replace("\r\n ", " ").replace("\r\n\t", " ")
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server() {
    let server = SmtpSink::start(USER, PASSWORD).await.unwrap();
    let manager = AlertManager::new(&config(&server, PASSWORD)).unwrap();
    let event = ResilienceEvent::RetriesExhausted {
        service: service("elevenlabs"),
        attempts: 4,
        error: ServiceError::new(ErrorKind::Unavailable, "service unavailable").with_status(503),
    };
    let alert = Alert::from_event(&event).unwrap().with_contact("c-42");
    let trace_id = alert.trace_id.clone();
    manager.raise(alert);
    flushed_within(&manager, Duration::from_secs(30)).await;
    let email = channel_counts(&manager, ChannelKind::Email);
    assert_eq!((email.delivered, email.failed), (1, 0), "{email:?}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["login"], USER);
    assert_eq!(message["mail_from"], "alerts@example.com");
    assert_eq!(
        message["rcpt_tos"],
        serde_json::json!(["oncall@example.com", "ops@example.com"])
    );
    let data = message["data"].as_str().unwrap();
    let headers = unfolded_headers(data);
    assert!(
        headers.contains(
            "Subject: [callguard] WARNING elevenlabs: elevenlabs call failed after 4 attempt(s)"
        ),
        "{headers}"
    );
    assert!(
        headers.contains("Content-Type: text/plain; charset=utf-8"),
        "{headers}"
    );
    let raw_body = data.split_once("\r\n\r\n").unwrap().1;
    let body = if headers.contains("Content-Transfer-Encoding: quoted-printable") {
        quoted_printable(raw_body)
    } else {
        assert!(
            headers.contains("Content-Transfer-Encoding: 7bit"),
            "{headers}"
        );
        raw_body.to_owned()
    }
    .replace("\r\n", "\n");
    for line in [
        "Severity:       WARNING\n",
        "Service:        elevenlabs\n",
        "Alert:          retries_exhausted\n",
        "Details:        transient error (unavailable), HTTP 503: service unavailable\n",
        "Error category: transient\n",
        "Contact:        c-42\n",
        &format!("Trace id:       {trace_id}\n"),
    ] {
        assert!(body.contains(line), "{line:?} missing from\n{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_login_is_not_retried() {
    let server = SmtpSink::start(USER, PASSWORD).await.unwrap();
    let manager = AlertManager::new(&config(&server, "wrong-password")).unwrap();
    manager.raise(Alert::new(
        callguard_alerts::AlertKind::PermanentFailure,
        service("crm"),
        "crm call failed permanently",
        "permanent error (invalid_request), HTTP 422",
    ));
    // One attempt, no retry after 1 s: done well before the policy's first delay.
    flushed_within(&manager, Duration::from_millis(900)).await;
    let email = channel_counts(&manager, ChannelKind::Email);
    assert_eq!((email.delivered, email.failed), (0, 1), "{email:?}");
    assert!(server.messages().is_empty());
    server.stop().await;
}
