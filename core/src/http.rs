//! Classification of `reqwest` responses and failures (feature `reqwest`),
//! shared by every callguard HTTP client so that a status, a timeout, a refused
//! connection or a reset means the same thing everywhere — and no error detail
//! names a URL.

use std::time::SystemTime;

use crate::classify::{TransportFailure, classify_status};
use crate::error::{ErrorKind, ServiceError};

/// Classifies a response by its status, honouring its `Retry-After` header
/// (see [`classify_status`]): `None` for 2xx. Only the head is read, so the
/// caller may still read the body, e.g. for an excerpt in the error's detail.
pub fn classify_response(response: &reqwest::Response) -> Option<ServiceError> {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok());
    classify_status(response.status().as_u16(), retry_after, SystemTime::now())
}

/// Reads `response`'s body up to `cap` bytes: the bytes, and whether the
/// body went on past them (the rest is left unread).
pub async fn read_body_up_to(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

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

    /// The response to one `GET` from a server that answers `answer` once,
    /// and the runtime to read its body on.
    fn response_with(answer: Vec<u8>) -> (tokio::runtime::Runtime, reqwest::Response) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                assert_ne!(n, 0, "the request ends early");
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(&answer).unwrap();
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let response = runtime
            .block_on(reqwest::Client::new().get(format!("http://{addr}/")).send())
            .unwrap();
        server.join().unwrap();
        (runtime, response)
    }

    /// The response to one `GET` from a server that answers `head` once.
    fn response_to(head: &'static str) -> reqwest::Response {
        response_with(head.as_bytes().to_vec()).1
    }

    #[test]
    fn bodies_are_read_up_to_the_cap() {
        let answer = |body: &str| {
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            (head + body).into_bytes()
        };
        let long = "x".repeat(100_000);
        let (runtime, response) = response_with(answer(&long));
        let (body, cut) = runtime.block_on(read_body_up_to(response, 4096)).unwrap();
        assert_eq!((body.len(), cut), (4096, true));

        let (runtime, response) = response_with(answer("short"));
        let (body, cut) = runtime.block_on(read_body_up_to(response, 5)).unwrap();
        assert_eq!((body.as_slice(), cut), (&b"short"[..], false));
    }

    #[test]
    fn responses_are_classified_by_status_and_retry_after() {
        let ok = response_to("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert!(classify_response(&ok).is_none());

        let busy = response_to(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let error = classify_response(&busy).unwrap();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.status(), Some(503));
        assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(7)));
    }

    #[test]
    fn chains_name_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "reset by peer");
    }
}
