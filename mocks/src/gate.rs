//! The middleware in front of every service: finds the fault that applies to a
//! request, acts it out (or lets the request through), and counts the outcome.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, watch};
use tokio::time::{sleep, sleep_until};

use crate::fault::Pick;
use crate::service::Service;
use crate::sinks::failures::with_retry_after;
use crate::state::Shared;
use crate::stats::{OUTCOME_RESET, OUTCOME_TIMEOUT};
use crate::{EndpointKind, FaultMode};

/// ElevenLabs' code for a `429` when it is overloaded (back off).
pub const SYSTEM_BUSY: &str = "system_busy";

/// Header by which a client names the contact a request is for.
pub const CONTACT_HEADER: &str = "x-contact-id";

/// Largest request body searched for a `contact_id`.
const CONTACT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Put in each request's extensions by the connection loop: notifying it makes
/// the loop drop the connection with a TCP reset.
#[derive(Clone, Default)]
pub(crate) struct ConnectionKill(pub(crate) Arc<Notify>);

/// How a held request (mode `timeout`) ended.
enum Hold {
    /// The fault ended, was cleared, or the server is closing: answer normally.
    Released,
    /// The config's `timeout_cap` passed.
    Capped,
}

/// The middleware: `State` is the shared state and the service it guards.
pub(crate) async fn gate(
    State((shared, service)): State<(Arc<Shared>, Service)>,
    request: Request,
    next: Next,
) -> Response {
    let kind = EndpointKind::of(&request);
    let (request, contact) = match contact_of(&shared, service, request).await {
        Ok(found) => found,
        Err(response) => return counted(&shared, service, kind, response),
    };
    let Some(pick) = shared.pick(service, contact.as_deref()) else {
        return counted(&shared, service, kind, next.run(request).await);
    };
    tracing::debug!(%service, mode = pick.mode.name(), "fault applied");
    let response = match pick.mode {
        FaultMode::Ok => next.run(request).await,
        FaultMode::Unavailable | FaultMode::Flaky => with_retry_after(
            service.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Service temporarily unavailable",
            ),
            pick.retry_after,
        ),
        FaultMode::RateLimited => with_retry_after(
            service.error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Too many requests",
            ),
            pick.retry_after,
        ),
        FaultMode::SystemBusy => with_retry_after(
            service.error(
                StatusCode::TOO_MANY_REQUESTS,
                SYSTEM_BUSY,
                "The system is experiencing heavy traffic, please try again later",
            ),
            pick.retry_after,
        ),
        FaultMode::Unauthorized => service.unauthorized(),
        FaultMode::BadRequest => service.error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request was rejected for this contact",
        ),
        FaultMode::Slow => {
            sleep(pick.latency.unwrap_or_default()).await;
            next.run(request).await
        }
        FaultMode::Garbage => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>oops</body></html>",
        )
            .into_response(),
        FaultMode::Oversized => oversized(service, shared.config.oversized_body_bytes),
        FaultMode::Reset => {
            shared.stats.record(service, kind, OUTCOME_RESET);
            return reset(request.extensions().get::<ConnectionKill>().cloned()).await;
        }
        FaultMode::Timeout => {
            shared.stats.record(service, kind, OUTCOME_TIMEOUT);
            return match hold(&shared, &pick).await {
                Hold::Released => next.run(request).await,
                Hold::Capped => service.error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "The request timed out",
                ),
            };
        }
    };
    counted(&shared, service, kind, response)
}

fn counted(shared: &Shared, service: Service, kind: EndpointKind, response: Response) -> Response {
    shared
        .stats
        .record(service, kind, response.status().as_str());
    response
}

/// The request's contact id: the `X-Contact-Id` header, else — only when a
/// live fault is narrowed to contacts — a top-level `contact_id` string in the
/// JSON body. Reading the body means rebuilding the request from its bytes.
async fn contact_of(
    shared: &Shared,
    service: Service,
    request: Request,
) -> Result<(Request, Option<String>), Response> {
    if let Some(contact) = request
        .headers()
        .get(CONTACT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        let contact = contact.to_owned();
        return Ok((request, Some(contact)));
    }
    if !shared.wants_contact(service) {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, CONTACT_BODY_LIMIT)
        .await
        .map_err(|_| {
            service.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            )
        })?;
    let contact = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("contact_id")?.as_str().map(str::to_owned));
    Ok((Request::from_parts(parts, Body::from(bytes)), contact))
}

/// A `200` whose streamed body is `len` bytes of `x`.
fn oversized(service: Service, len: u64) -> Response {
    const CHUNK: usize = 64 * 1024;
    static FILL: [u8; CHUNK] = [b'x'; CHUNK];
    let chunks = futures_util::stream::unfold(len, |left| async move {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        (n > 0).then(|| {
            let chunk = Bytes::from_static(&FILL[..n]);
            (Ok::<_, Infallible>(chunk), left - n as u64)
        })
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(service.success_content_type()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
        ],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// Has the connection loop reset the connection; the answer never comes.
async fn reset(kill: Option<ConnectionKill>) -> Response {
    match kill {
        Some(kill) => {
            kill.0.notify_one();
            std::future::pending().await
        }
        // Only requests that did not come through the connection loop lack
        // the handle; there is no connection to reset.
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Holds a request while its `timeout` fault lives, up to the config's cap.
async fn hold(shared: &Shared, pick: &Pick) -> Hold {
    let cap = sleep(shared.config.timeout_cap.get());
    tokio::pin!(cap);
    let mut changed = shared.faults_changed();
    let mut closing = shared.closing();
    loop {
        let Some(ends) = shared.end_of(pick.id) else {
            return Hold::Released;
        };
        let expiry = async move {
            match ends {
                Some(end) => sleep_until(end).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut cap => return Hold::Capped,
            () = expiry => return Hold::Released,
            _ = changed.changed() => {}
            () = closed(&mut closing) => return Hold::Released,
        }
    }
}

/// Completes once the server starts closing.
pub(crate) async fn closed(closing: &mut watch::Receiver<bool>) {
    // An error means the state (and its sender) is gone: closed as well.
    let _ = closing.wait_for(|closing| *closing).await;
}
