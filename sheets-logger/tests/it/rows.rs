//! What becomes a row, and what is in it.

use std::time::Duration;

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::ServiceName;
use callguard_sheets_logger::{COLUMNS, MinLevel, SheetsConfig};
use serde_json::{Value, json};

use crate::common::{MESSAGE, column, config, install, start};

#[tokio::test(start_paused = true)]
async fn rows_arrive_in_order_with_the_right_columns() {
    let server = start().await;
    let logging = install(&config(&server));
    {
        let call = tracing::info_span!("call", contact_id = "c-7", trace_id = "t-abc");
        let _call = call.enter();
        tracing::warn!(
            retry_count = 2u32,
            error_category = "transient",
            "no stage yet"
        );
        let stage = tracing::info_span!("stage", service = "elevenlabs");
        let _stage = stage.enter();
        tracing::warn!(retry_count = 1u32, "TTS slow");
        tracing::error!(service = "crm", status = 503, "the event's service wins");
        tracing::info!("below min_level: not sent");
        tracing::debug!("below min_level: not sent");
        tracing::info!(
            service = "llm",
            circuit_state = "CLOSED",
            from_state = "HALF_OPEN",
            reason = "probe succeeded",
            "Circuit breaker for llm: HALF_OPEN -> CLOSED"
        );
    }
    tracing::warn!("outside any span");
    logging.handle.flush().await;

    let rows = server.sheets_rows();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r.len() == COLUMNS.len()));
    assert_eq!(
        column(&server, MESSAGE),
        [
            "no stage yet",
            "TTS slow",
            "the event's service wins (status=503)",
            "Circuit breaker for llm: HALF_OPEN -> CLOSED (reason=probe succeeded)",
            "outside any span",
        ]
    );
    assert_eq!(
        column(&server, 1),
        ["WARNING", "WARNING", "ERROR", "INFO", "WARNING"]
    );
    assert_eq!(column(&server, 2), ["", "elevenlabs", "crm", "llm", ""]);
    assert_eq!(column(&server, 3), ["transient", "", "", "", ""]);
    assert_eq!(rows[0][4], json!(2));
    assert_eq!(rows[1][4], json!(1));
    assert_eq!(rows[2][4], json!(""));
    assert_eq!(column(&server, 5), ["", "", "", "CLOSED", ""]);
    assert_eq!(column(&server, 7), ["c-7", "c-7", "c-7", "c-7", ""]);
    assert_eq!(column(&server, 8), ["t-abc", "t-abc", "t-abc", "t-abc", ""]);
    for row in &rows {
        let Value::String(stamp) = &row[0] else {
            panic!("timestamp {:?}", row[0])
        };
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{stamp}"
        );
    }
    let appends = server.sheets_appends();
    assert_eq!(appends.len(), 1, "one flush, one request");
    assert_eq!(appends[0].spreadsheet_id, "sheet-1");
    assert_eq!(appends[0].range, "Logs!A1");
    assert_eq!(appends[0].value_input_option, "RAW");
    assert_eq!(appends[0].insert_data_option, "INSERT_ROWS");
    let stats = logging.handle.stats();
    assert_eq!((stats.rows_sent, stats.requests_sent), (5, 1));
    assert_eq!(
        server.token_requests().len(),
        0,
        "a static token needs none"
    );
}

/// The breaker's own transition events are rows whatever their level: the
/// field that marks them is the one the breaker sets.
#[tokio::test(start_paused = true)]
async fn a_breakers_transitions_are_rows_at_any_level() {
    let server = start().await;
    let logging = install(&config(&server));
    let breaker = CircuitBreaker::new(ServiceName::new("crm").unwrap(), BreakerConfig::default());
    breaker.force_open("maintenance"); // a transition at WARN
    breaker.force_close("maintenance"); // a transition at INFO
    breaker.force_close("again"); // INFO, no transition: not a row
    logging.handle.flush().await;

    let messages = column(&server, MESSAGE);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("Circuit breaker for crm: CLOSED -> FORCED_OPEN"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("Circuit breaker for crm: FORCED_OPEN -> CLOSED"),
        "{messages:?}"
    );
    assert_eq!(column(&server, 1), ["WARNING", "INFO"]);
    assert_eq!(column(&server, 2), ["crm", "crm"]);
    assert_eq!(column(&server, 5), ["FORCED_OPEN", "CLOSED"]);
}

#[tokio::test(start_paused = true)]
async fn min_level_is_configurable_and_span_fields_follow_records() {
    let server = start().await;
    let logging = install(&SheetsConfig {
        min_level: MinLevel::Error,
        range: "Errors!A1".into(),
        ..config(&server)
    });
    let call = tracing::info_span!("call", contact_id = "c-1", trace_id = tracing::field::Empty);
    let _call = call.enter();
    tracing::warn!("not an error: not sent");
    call.record("trace_id", "t-late");
    tracing::error!("sent, with the trace id recorded later");
    logging.handle.flush().await;
    assert_eq!(
        column(&server, MESSAGE),
        ["sent, with the trace id recorded later"]
    );
    assert_eq!(column(&server, 8), ["t-late"]);
    assert_eq!(server.sheets_appends()[0].range, "Errors!A1");
}

#[tokio::test(start_paused = true)]
async fn the_loggers_own_events_are_not_sent() {
    let server = start().await;
    // A permanent refusal makes the task log an ERROR of its own.
    server
        .sheets_fail(callguard_mocks::SinkFailure::new(400, 1))
        .unwrap();
    let logging = install(&config(&server));
    tracing::warn!("first");
    logging.handle.flush().await;
    tracing::warn!("second");
    logging.handle.flush().await;
    assert!(
        logging
            .capture
            .text()
            .contains("sheets logger: rows dropped"),
        "{}",
        logging.capture.text()
    );
    assert_eq!(column(&server, MESSAGE), ["second"]);
    let stats = logging
        .handle
        .flush_and_shutdown(Duration::from_secs(1))
        .await;
    assert_eq!(stats.rows_dropped, 1);
    assert_eq!(stats.requests_failed, 1);
    assert_eq!(stats.rows_sent, 1);
}
