//! Turning reqwest's failures and error answers into classified
//! [`ServiceError`]s whose details carry no URL, header or token.

use callguard_core::{ServiceError, TransportFailure};

/// Longest excerpt of an error body kept in an error's detail.
const EXCERPT_CHARS: usize = 200;

/// A request that got no usable answer, as a transient error.
pub(crate) fn transport_error(what: &str, error: &reqwest::Error) -> ServiceError {
    let failure = if error.is_timeout() {
        TransportFailure::Timeout
    } else if error.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Reset
    };
    // Only the kind, never the error's text: it would name the URL, and a
    // body error could quote what was sent.
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "broken response body"
    } else {
        "connection failed"
    };
    failure.into_error(format!("{what} {kind}"))
}

/// The start of an error answer's body on one line, for the error's detail.
pub(crate) async fn read_error_excerpt(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}
