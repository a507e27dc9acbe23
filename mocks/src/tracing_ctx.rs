//! W3C trace context for the mock services: each request to a service runs in
//! a server span whose parent is the caller's `traceparent`, so the mocks'
//! spans join the agent's trace when the process exports spans.
//!
//! The mocks only read the header (through the `opentelemetry` global
//! propagator) and open the span; the process decides whether spans are
//! exported (`callguard mocks` with `OTEL_EXPORTER_OTLP_ENDPOINT` set). Without
//! a propagator or an OpenTelemetry layer this is a plain `tracing` span.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Service;

/// Reads propagation headers from an HTTP request.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Middleware: runs the request in a server span (`otel.kind = "server"`)
/// parented on its `traceparent`, recording the response status.
pub(crate) async fn server_span(
    State(service): State<Service>,
    request: Request,
    next: Next,
) -> Response {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let method = request.method().as_str().to_owned();
    let path = format!("/{service}{}", request.uri().path());
    let span = tracing::info_span!(
        "mock request",
        otel.name = format!("{method} {path}"),
        otel.kind = "server",
        service = %service,
        http.request.method = method,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
    );
    // Fails only without an OpenTelemetry layer, when there is nothing to join.
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
