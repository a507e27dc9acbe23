//! HTTP plumbing of the Telegram and webhook channels: the client, and errors
//! classified without URLs (a Telegram URL carries the bot token).

use std::time::Duration;

use callguard_core::ServiceError;
use callguard_core::http::{classify_response, error_chain, read_body_up_to, transport_error};
use callguard_core::text::one_line_excerpt;

/// The most of a response body read: enough for any error description.
const BODY_CAP: usize = 64 * 1024;
/// The most of a server's reason kept in an error's detail, in characters.
const REASON_CHARS: usize = 200;

/// A client for one channel, every request bounded by `timeout`.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("callguard-alerts/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| error_chain(&e.without_url()))
}

/// A response: the error its status stands for (none for 2xx) and its body.
pub(crate) struct Answer {
    pub(crate) error: Option<ServiceError>,
    pub(crate) body: Vec<u8>,
}

/// Sends `request` and reads the answer, classifying failures (DESIGN.md,
/// "Classification"). The body is read up to 64 KiB.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ServiceError> {
    let response = request.send().await.map_err(transport_error)?;
    let error = classify_response(&response);
    let (body, _) = read_body_up_to(response, BODY_CAP)
        .await
        .map_err(transport_error)?;
    Ok(Answer { error, body })
}

/// `error` with the start of the server's `reason` (one line, at most 200
/// characters) appended to its detail, everything else kept; `wait`, when
/// given, replaces its retry-after.
pub(crate) fn amend(error: &ServiceError, reason: &str, wait: Option<Duration>) -> ServiceError {
    let amended = error
        .clone()
        .with_reason(&one_line_excerpt(reason, REASON_CHARS));
    match wait {
        Some(wait) => amended.with_retry_after(wait),
        None => amended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::{ErrorKind, classify_status};
    use std::time::SystemTime;

    #[test]
    fn amend_keeps_kind_status_and_wait() {
        let error = classify_status(429, None, SystemTime::now()).unwrap();
        let amended = amend(&error, "slow down", Some(Duration::from_secs(7)));
        assert_eq!(amended.kind(), ErrorKind::RateLimited);
        assert_eq!(amended.status(), Some(429));
        assert_eq!(amended.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(amended.detail(), "too many requests: slow down");
    }
}
