//! HTTP plumbing of the Telegram and webhook channels: the client, and errors
//! classified without URLs (a Telegram URL carries the bot token).

use std::time::Duration;

use callguard_core::ServiceError;
use callguard_core::http::{classify_response, error_chain, transport_error};

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
    let mut response = request.send().await.map_err(transport_error)?;
    let error = classify_response(&response);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        let room = BODY_CAP - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == BODY_CAP {
            break;
        }
    }
    Ok(Answer { error, body })
}

/// `error` with the start of the server's `reason` (one line, at most 200
/// characters) appended to its detail, everything else kept; `wait`, when
/// given, replaces its retry-after.
pub(crate) fn amend(error: &ServiceError, reason: &str, wait: Option<Duration>) -> ServiceError {
    let amended = error.clone().with_reason(&excerpt(reason, REASON_CHARS));
    match wait {
        Some(wait) => amended.with_retry_after(wait),
        None => amended,
    }
}

/// At most `max` characters of `text`, on one line.
fn excerpt(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max + 1)
        .collect();
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
    .trim()
    .to_owned()
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

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("héllo wörld", 5), "héllo…");
        assert_eq!(excerpt("short", 5), "short");
    }
}
