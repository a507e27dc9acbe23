//! Batching by size and by interval, backoff without reordering, the bounded
//! buffer, and the final flush.

use std::time::Duration;

use callguard_mocks::{MockServer, SinkFailure};
use callguard_sheets_logger::SheetsConfig;
use tokio::time::Instant;

use crate::common::{MESSAGE, column, config, install, secs, start, until};

fn messages(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("event {i}")).collect()
}

/// The number of rows of each append the server received, in order.
fn batch_sizes(server: &MockServer) -> Vec<usize> {
    server
        .sheets_appends()
        .iter()
        .map(|a| a.rows.len())
        .collect()
}

fn log(range: std::ops::Range<u32>) {
    for i in range {
        tracing::warn!("event {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_is_sent_without_waiting_for_the_interval() {
    let server = start().await;
    let logging = install(&SheetsConfig {
        batch_size: 3,
        flush_interval: secs(3600),
        ..config(&server)
    });
    let started = Instant::now();
    log(0..7);
    until("two full batches", || logging.handle.stats().rows_sent == 6).await;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(batch_sizes(&server), [3, 3]);
    let stats = logging
        .handle
        .flush_and_shutdown(Duration::from_secs(5))
        .await;
    assert_eq!(
        batch_sizes(&server),
        [3, 3, 1],
        "the last row goes at shutdown"
    );
    assert_eq!(column(&server, MESSAGE), messages(0..7));
    assert_eq!(
        (stats.rows_sent, stats.requests_sent, stats.rows_dropped),
        (7, 3, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_rows_go_out_once_per_interval() {
    let server = start().await;
    let logging = install(&SheetsConfig {
        flush_interval: secs(5),
        ..config(&server)
    });
    let started = Instant::now();
    log(0..3);
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(
        server.sheets_appends().is_empty(),
        "nothing before the interval"
    );
    until("the first interval", || {
        logging.handle.stats().rows_sent == 3
    })
    .await;
    assert!(started.elapsed() >= Duration::from_secs(5));
    let second = Instant::now();
    log(3..5);
    until("the next interval", || {
        logging.handle.stats().rows_sent == 5
    })
    .await;
    let waited = second.elapsed();
    assert!(waited <= Duration::from_secs(5), "{waited:?}");
    assert_eq!(batch_sizes(&server), [3, 2]);
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert_eq!(column(&server, MESSAGE), messages(0..5));
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_server_errors_back_off_without_reordering_or_duplicating() {
    let server = start().await;
    server
        .sheets_fail(SinkFailure::new(429, 2).with_retry_after(Duration::from_secs(7)))
        .unwrap();
    server.sheets_fail(SinkFailure::new(500, 1)).unwrap();
    let logging = install(&SheetsConfig {
        batch_size: 2,
        flush_interval: secs(3600),
        ..config(&server)
    });
    let started = Instant::now();
    log(0..2);
    // While the first batch is retried, more rows wait behind it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    log(2..5);
    until("every row", || logging.handle.stats().rows_sent == 4).await;
    let stats = logging
        .handle
        .flush_and_shutdown(Duration::from_secs(5))
        .await;
    assert_eq!(server.sheets_statuses(), [429, 429, 500, 200, 200, 200]);
    assert_eq!(
        column(&server, MESSAGE),
        messages(0..5),
        "in order, once each"
    );
    // Retry-After 7 s twice, then the policy's third delay (1 s × 2²).
    assert!(
        started.elapsed() >= Duration::from_secs(18),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.requests_failed, 3);
    assert_eq!((stats.rows_sent, stats.rows_dropped), (5, 0));
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_and_the_batch_is_dropped() {
    let server = start().await;
    server.sheets_fail(SinkFailure::new(503, 3)).unwrap();
    let mut config = config(&server);
    config.retry.max_retries = 2;
    let logging = install(&config);
    log(0..2);
    logging.handle.flush().await;
    log(2..3);
    logging.handle.flush().await;
    let stats = logging.handle.stats();
    assert_eq!((stats.rows_dropped, stats.requests_failed), (2, 3));
    assert_eq!(column(&server, MESSAGE), messages(2..3));
}

#[tokio::test(start_paused = true)]
async fn a_full_buffer_drops_and_counts_rows() {
    let server = start().await;
    let logging = install(&SheetsConfig {
        buffer_capacity: 2,
        flush_interval: secs(5),
        ..config(&server)
    });
    // No await in between: the task cannot drain the buffer meanwhile.
    log(0..5);
    let stats = logging.handle.stats();
    assert_eq!((stats.rows_dropped, stats.rows_overflowed), (3, 3));
    until("the interval", || logging.handle.stats().rows_sent == 2).await;
    assert_eq!(column(&server, MESSAGE), messages(0..2));
    let captured = logging.capture.text();
    assert!(
        captured.contains("buffer full") && captured.contains("rows=3"),
        "{captured}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_what_is_waiting() {
    let server = start().await;
    let logging = install(&SheetsConfig {
        flush_interval: secs(3600),
        ..config(&server)
    });
    log(0..4);
    let started = Instant::now();
    let stats = logging
        .handle
        .flush_and_shutdown(Duration::from_secs(5))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((stats.rows_sent, stats.requests_sent), (4, 1));
    assert_eq!(column(&server, MESSAGE), messages(0..4));
    tracing::warn!("after shutdown");
    // Past the interval, when a task still taking rows would have sent it.
    tokio::time::sleep(Duration::from_secs(3601)).await;
    assert_eq!(server.sheets_rows().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_at_its_deadline() {
    let server = start().await;
    server.sheets_fail(SinkFailure::new(503, 100)).unwrap();
    let logging = install(&SheetsConfig {
        flush_interval: secs(3600),
        ..config(&server)
    });
    log(0..3);
    let started = Instant::now();
    let stats = logging
        .handle
        .flush_and_shutdown(Duration::from_secs(4))
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!((stats.rows_sent, stats.rows_dropped), (0, 3));
    // 1 s + 2 s of backoff fit in the deadline: three attempts.
    assert_eq!(stats.requests_failed, 3);
    assert!(
        logging.capture.text().contains("shutdown deadline passed"),
        "{}",
        logging.capture.text()
    );
}
