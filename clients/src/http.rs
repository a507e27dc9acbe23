//! The HTTP plumbing every service client shares: one `reqwest::Client` per
//! service, the headers every request carries, and the single function that
//! turns a response (or its absence) into a body or a classified
//! [`ServiceError`], with the provider's limit headers of the answer
//! ([`Answered`]) for the service's limiter.
//!
//! Errors never carry secrets: reqwest errors are stripped of their URL, no
//! header is ever printed, and the excerpt of an error body that goes into the
//! detail has the service's own key blanked out should the service echo it.

use std::fmt;
use std::time::Duration;

use callguard_core::http::{classify_response, error_chain, read_body_up_to, transport_error};
use callguard_core::text::one_line_excerpt;
use callguard_core::{ErrorKind, Secret, ServiceError, TransportFailure, refine_by_body};
use callguard_limit::ProviderHeaders;
use reqwest::RequestBuilder;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::{ClientSetupError, HttpServiceConfig};

/// The header naming the contact a request is made for.
pub const CONTACT_ID_HEADER: &str = "x-contact-id";
pub use callguard_core::telemetry::TRACEPARENT_HEADER;

/// Longest excerpt of an error body kept in an error's detail, in characters.
const ERROR_EXCERPT_CHARS: usize = 200;
/// Most bytes read from an error body to make that excerpt.
const ERROR_BODY_BYTES: usize = 4 * 1024;

/// Per-request facts the caller passes down: which contact the request is for,
/// when tracing the W3C `traceparent` of the calling span, and the deadline of
/// the call the request is an attempt of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext<'a> {
    /// Sent as `X-Contact-Id`.
    pub contact_id: &'a str,
    /// Sent as `traceparent` when set (and a valid header value).
    pub traceparent: Option<&'a str>,
    /// When the call must be over: the request then ends at the earlier of
    /// its `request_timeout` and this instant, as a timeout.
    pub deadline: Option<Instant>,
}

impl<'a> RequestContext<'a> {
    /// A context for `contact_id`, without trace context or deadline.
    pub fn new(contact_id: &'a str) -> Self {
        Self {
            contact_id,
            traceparent: None,
            deadline: None,
        }
    }

    /// Sets (or clears) the `traceparent` to send.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: Option<&'a str>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// Sets (or clears) the call's deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }
}

/// How a service wants its key: in a header of its own or as a bearer token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyHeader {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `<name>: <key>`, e.g. ElevenLabs' `xi-api-key`.
    Named(&'static str),
}

/// One service's connection settings and HTTP client.
pub(crate) struct HttpService {
    client: reqwest::Client,
    base_url: String,
    auth_name: HeaderName,
    /// Marked sensitive, so even reqwest's own `Debug` hides it.
    auth_value: HeaderValue,
    key: Secret,
    request_timeout: Duration,
    max_response_bytes: u64,
}

/// A successful answer: its content type and its whole (capped) body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// A refusal: an answer whose status is not 2xx, classified — the body may
/// refine the kind ([`refine_by_body`]: a `429` over the concurrency limit) —
/// with an excerpt of the body in the error's detail, and the start of its body.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: ServiceError,
    pub(crate) body: Vec<u8>,
}

/// What a request came to, and the limit headers of its answer
/// ([`ProviderHeaders::NONE`] when there was no answer): the caller's limiter
/// learns from both, whatever the client made of the body.
#[derive(Debug)]
#[must_use]
pub struct Answered<T> {
    /// The value, or the classified error.
    pub result: Result<T, ServiceError>,
    /// The answer's `maximum-concurrent-requests`, `x-ratelimit-*` and the like.
    pub headers: ProviderHeaders,
}

impl<T> Answered<T> {
    /// No answer at all: `error`, and no headers.
    pub(crate) fn unanswered(error: ServiceError) -> Self {
        Self {
            result: Err(error),
            headers: ProviderHeaders::NONE,
        }
    }

    /// The same answer's headers, the value read on by `read`.
    pub(crate) fn and_then<U>(
        self,
        read: impl FnOnce(T) -> Result<U, ServiceError>,
    ) -> Answered<U> {
        Answered {
            result: self.result.and_then(read),
            headers: self.headers,
        }
    }
}

impl HttpService {
    /// Checks `config`, resolves its key (from the process environment when
    /// it names a variable) and builds the client.
    pub(crate) fn new(
        config: &HttpServiceConfig,
        key_header: KeyHeader,
    ) -> Result<Self, ClientSetupError> {
        let base_url = config.base_url()?;
        let key = config.resolve_api_key(|name| std::env::var(name).ok())?;
        let (auth_name, raw_value) = match key_header {
            KeyHeader::Bearer => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            ),
            KeyHeader::Named(name) => (HeaderName::from_static(name), key.expose().to_owned()),
        };
        let mut auth_value = HeaderValue::from_str(&raw_value).map_err(|_| {
            callguard_core::ValidationError::new(
                "api_key",
                "[redacted]",
                "printable ASCII without line breaks",
            )
        })?;
        auth_value.set_sensitive(true);
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout.get())
            .timeout(config.request_timeout.get())
            // A redirect is an error for these APIs; following one could also
            // carry a custom key header to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("callguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientSetupError::Http(error_chain(&e.without_url())))?;
        Ok(Self {
            client,
            base_url,
            auth_name,
            auth_value,
            key,
            request_timeout: config.request_timeout.get(),
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// The base URL, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A `POST` to `url` with the key, `X-Contact-Id` and `traceparent` set,
    /// ending at the call's deadline if that comes before `request_timeout`.
    pub(crate) fn post(&self, url: &str, context: RequestContext<'_>) -> RequestBuilder {
        record_url(url);
        let mut request = self
            .client
            .post(url)
            .header(self.auth_name.clone(), self.auth_value.clone())
            .header(CONTACT_ID_HEADER, contact_header_value(context.contact_id));
        if let Some(value) = context
            .traceparent
            .and_then(|tp| HeaderValue::from_str(tp).ok())
        {
            request = request.header(TRACEPARENT_HEADER, value);
        }
        if let Some(deadline) = context.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            request = request.timeout(left.min(self.request_timeout));
        }
        request
    }

    /// Sends `request` and reads the answer: a 2xx body within the size cap,
    /// or the classified error; with the answer's limit headers.
    pub(crate) async fn send(&self, request: RequestBuilder) -> Answered<Reply> {
        self.exchange(request)
            .await
            .and_then(|answer| answer.map_err(|refusal| refusal.error))
    }

    /// Sends `request` and reads the answer: a 2xx body within the size cap,
    /// or the service's [`Refusal`] (a status that is not 2xx) for a client
    /// that reads the service's own error codes; the error when there is no
    /// usable answer at all (transport failure, body over the cap). The
    /// answer's limit headers are read before its body is.
    pub(crate) async fn exchange(
        &self,
        request: RequestBuilder,
    ) -> Answered<Result<Reply, Refusal>> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Answered::unanswered(transport_error(error)),
        };
        let headers = ProviderHeaders::from_headers(response.headers());
        Answered {
            result: self.read(response).await,
            headers,
        }
    }

    async fn read(
        &self,
        response: reqwest::Response,
    ) -> Result<Result<Reply, Refusal>, ServiceError> {
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(error) = classify_response(&response) {
            // The body only explains (or refines the kind); failing to read
            // it changes nothing.
            let body = read_body_up_to(response, ERROR_BODY_BYTES)
                .await
                .map(|(body, _)| body)
                .unwrap_or_default();
            let error = refine_by_body(error, &body).with_reason(&self.excerpt(&body));
            return Ok(Err(Refusal { error, body }));
        }
        let too_large = || {
            TransportFailure::BodyTooLarge.into_error(format!(
                "the response body is larger than the {}-byte cap",
                self.max_response_bytes
            ))
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes)
        {
            return Err(too_large());
        }
        let cap = usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX);
        match read_body_up_to(response, cap).await {
            Ok((body, false)) => Ok(Ok(Reply { content_type, body })),
            Ok((_, true)) => Err(too_large()),
            Err(error) => Err(transport_error(error)),
        }
    }

    /// A one-line, bounded, key-free excerpt of an error body.
    fn excerpt(&self, body: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(body).into_owned();
        let key = self.key.expose();
        if !key.is_empty() {
            text = text.replace(key, "[redacted]");
        }
        one_line_excerpt(&text, ERROR_EXCERPT_CHARS)
    }
}

impl fmt::Debug for HttpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpService")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// The body as JSON of type `T`; anything else is a bad response.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let what = self.content_type.as_deref().unwrap_or("no content type");
            ServiceError::new(
                ErrorKind::BadResponse,
                format!(
                    "the response ({what}, {} bytes) is not the expected JSON: {e}",
                    self.body.len()
                ),
            )
        })
    }
}

/// Records `url` (without credentials, query or fragment) and its host and
/// port on the current span, the attempt span, under the OpenTelemetry
/// semantic-convention names; a span without those fields ignores them.
fn record_url(url: &str) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return; // nobody records spans: skip the parse
    }
    let Ok(mut url) = reqwest::Url::parse(url) else {
        return;
    };
    if let Some(host) = url.host_str() {
        span.record("server.address", host);
    }
    if let Some(port) = url.port_or_known_default() {
        span.record("server.port", port);
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    span.record("url.full", url.as_str());
}

/// The contact id as a header value: as it is when it is printable ASCII,
/// otherwise with every byte outside visible ASCII (and `%`) percent-encoded,
/// so the header always reads as plain ASCII on the other side.
fn contact_header_value(contact_id: &str) -> HeaderValue {
    let printable = |b: u8| (b' '..=b'~').contains(&b);
    let text = if contact_id.bytes().all(printable) {
        contact_id.to_owned()
    } else {
        contact_id
            .bytes()
            .map(|b| {
                if b.is_ascii_graphic() && b != b'%' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    // Printable ASCII is always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_core::classify_status;
    use std::time::SystemTime;

    #[test]
    fn contact_ids_become_header_values() {
        assert_eq!(contact_header_value("c-17"), "c-17");
        assert_eq!(contact_header_value("José 1"), "Jos%C3%A9%201");
        assert_eq!(contact_header_value("a\nb"), "a%0Ab");
        assert_eq!(contact_header_value("100% a"), "100% a");
    }

    #[test]
    fn extra_detail_keeps_status_and_retry_after() {
        let error = classify_status(503, Some("3"), SystemTime::now()).unwrap();
        let error = error.with_reason("overloaded");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert_eq!(error.status(), Some(503));
        assert_eq!(error.retry_after(), Some(std::time::Duration::from_secs(3)));
        assert_eq!(error.detail(), "service unavailable: overloaded");
    }

    #[test]
    fn excerpts_blank_the_key() {
        let config = HttpServiceConfig::new("http://127.0.0.1:1", "sk-secret-1");
        let service = HttpService::new(&config, KeyHeader::Bearer).unwrap();
        let excerpt = service.excerpt(b"{\"error\": \"bad key\n sk-secret-1\"}");
        assert_eq!(excerpt, "{\"error\": \"bad key [redacted]\"}");
        assert!(!format!("{service:?}").contains("sk-secret"));
    }
}
