//! The Telegram channel against the mocks crate's Bot API fake.

use std::time::Duration;

use callguard_alerts::{Alert, AlertKind, AlertManager, ChannelKind};
use callguard_core::{ErrorKind, ResilienceEvent, ServiceError};
use callguard_mocks::{SinkFailure, TELEGRAM_CHAT_ID};

use crate::common::{channel_counts, flushed, mock, service, with_telegram};

fn permanent_failure() -> ResilienceEvent {
    ResilienceEvent::PermanentFailure {
        service: service("crm"),
        retry_count: 0,
        error: ServiceError::new(ErrorKind::Unauthorized, "unauthorized").with_status(401),
    }
}

#[tokio::test(start_paused = true)]
async fn delivers_a_plain_text_message() {
    let server = mock().await;
    let manager = AlertManager::new(&with_telegram(&server)).unwrap();
    let alert = Alert::from_event(&permanent_failure())
        .unwrap()
        .with_contact("c-17");
    let trace_id = alert.trace_id.clone();
    manager.raise(alert);
    flushed(&manager).await;

    let requests = server.telegram_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].chat_id.as_deref(), Some(TELEGRAM_CHAT_ID));
    let text = requests[0].text.clone().unwrap();
    assert!(
        text.starts_with("[callguard] CRITICAL crm: crm call failed permanently"),
        "{text}"
    );
    for line in [
        "Error category: permanent",
        "Contact:        c-17",
        &format!("Trace id:       {trace_id}"),
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    let telegram = channel_counts(&manager, ChannelKind::Telegram);
    assert_eq!((telegram.delivered, telegram.failed), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn waits_the_retry_after_of_a_429_then_delivers() {
    let server = mock().await;
    server
        .telegram_fail(SinkFailure::new(429, 1).with_retry_after(Duration::from_secs(7)))
        .unwrap();
    let manager = AlertManager::new(&with_telegram(&server)).unwrap();
    manager.observe_event(&permanent_failure());
    flushed(&manager).await;

    let requests = server.telegram_requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = requests[1].at - requests[0].at;
    // The policy's own first delay is 1 s: the 7 s came from `retry_after`.
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let telegram = channel_counts(&manager, ChannelKind::Telegram);
    assert_eq!((telegram.delivered, telegram.failed), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_400_is_not_retried() {
    let server = mock().await;
    server.telegram_fail(SinkFailure::new(400, 1)).unwrap();
    let mut config = with_telegram(&server);
    if let Some(telegram) = &mut config.telegram {
        // One recorded failure would open the breaker.
        telegram.circuit_breaker.failure_threshold = 1;
    }
    let manager = AlertManager::new(&config).unwrap();
    manager.observe_event(&permanent_failure());
    flushed(&manager).await;
    assert_eq!(server.telegram_requests().len(), 1, "one attempt only");
    let telegram = channel_counts(&manager, ChannelKind::Telegram);
    assert_eq!((telegram.delivered, telegram.failed), (0, 1));

    // A request-level error does not open the channel's breaker.
    manager.raise(Alert::new(
        AlertKind::RetriesExhausted,
        service("llm"),
        "llm call failed after 4 attempt(s)",
        "timeout",
    ));
    flushed(&manager).await;
    assert_eq!(server.telegram_messages().len(), 1);
    assert!(
        manager
            .breaker(ChannelKind::Telegram)
            .unwrap()
            .state()
            .is_closed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_5000_character_message_is_split() {
    let server = mock().await;
    let manager = AlertManager::new(&with_telegram(&server)).unwrap();
    let detail: String = (0..5000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    manager.raise(Alert::new(
        AlertKind::PermanentFailure,
        service("llm"),
        "llm call failed permanently",
        detail.clone(),
    ));
    flushed(&manager).await;

    let messages = server.telegram_messages();
    assert_eq!(
        messages.len(),
        2,
        "{:?}",
        messages.iter().map(String::len).collect::<Vec<_>>()
    );
    for message in &messages {
        assert!(message.encode_utf16().count() <= 4096);
    }
    let whole = messages.concat();
    assert!(whole.contains(&detail), "nothing lost");
    assert!(whole.starts_with("[callguard] WARNING llm"), "in order");
    let telegram = channel_counts(&manager, ChannelKind::Telegram);
    assert_eq!(telegram.delivered, 1, "one alert, however many messages");
}
