//! Classification of `reqwest` failures (feature `reqwest`), shared by every
//! callguard HTTP client so that a timeout, a refused connection or a reset
//! means the same thing everywhere — and no error detail names a URL.

use crate::classify::TransportFailure;
use crate::error::{ErrorKind, ServiceError};

/// Classifies a request that got no usable answer. The URL is stripped first
/// (it may carry a token, as Telegram's does); the detail keeps the chain of
/// causes, so "connection reset by peer" is seen.
pub fn transport_error(error: reqwest::Error) -> ServiceError {
    let error = error.without_url();
    if error.is_builder() {
        return ServiceError::new(ErrorKind::InvalidRequest, error_chain(&error));
    }
    let failure = if error.is_timeout() {
        TransportFailure::Timeout
    } else if error.is_connect() {
        TransportFailure::Connect
    } else {
        // Body and I/O errors: the connection was reset or closed mid-exchange.
        TransportFailure::Reset
    };
    failure.into_error(error_chain(&error))
}

/// `error: cause: cause`, on one line, each cause once.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCategory;

    #[test]
    fn a_refused_connection_is_a_transient_connect_error_without_the_url() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A loopback port that was just free: the connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = runtime
            .block_on(
                reqwest::Client::new()
                    .get(format!("http://127.0.0.1:{port}/bot123:SECRET/sendMessage"))
                    .send(),
            )
            .unwrap_err();
        let classified = transport_error(error);
        assert_eq!(classified.kind(), ErrorKind::Connect);
        assert_eq!(classified.category(), ErrorCategory::Transient);
        assert!(!classified.to_string().contains("SECRET"), "{classified}");
    }

    #[test]
    fn chains_name_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "reset by peer");
    }
}
