//! A webhook sink (`POST /webhook` or `POST /webhook/{any path}`): it records
//! each request's path, headers and body with the status it answered, answers
//! `200 {"ok":true}`, and can be told to fail the next requests (e.g. `500`).

use parking_lot::Mutex;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callguard_core::ValidationError;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::failures::{Failures, SinkFailure, queue_failure_from, with_retry_after};
use crate::MockServer;

/// One request to the webhook sink, as received.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WebhookRequest {
    /// The path after `/webhook` (`/` when none).
    pub path: String,
    /// The headers, names in lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
    /// When it arrived, on the runtime clock (virtual under paused test time).
    pub at: Instant,
}

impl WebhookRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The recorded requests and the scripted failures.
/// A handle: clones share them, so handlers take it as their axum state.
#[derive(Clone, Default)]
pub(crate) struct WebhookStore {
    inner: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    requests: Vec<WebhookRequest>,
    failures: Failures,
}

impl MockServer {
    /// `http://ADDR/webhook{path}`, a URL of the webhook sink (`path` empty
    /// or starting with `/`).
    pub fn webhook_url(&self, path: &str) -> String {
        format!("{}/webhook{path}", self.url())
    }

    /// Every request the webhook sink received, in order, with the status answered.
    pub fn webhook_requests(&self) -> Vec<WebhookRequest> {
        self.shared.webhook.inner.lock().requests.clone()
    }

    /// Makes the next `failure.count` requests fail with `failure.status`
    /// (with `Retry-After` if set); returns how many failures are queued.
    pub fn webhook_fail(&self, failure: SinkFailure) -> Result<usize, ValidationError> {
        self.shared.webhook.inner.lock().failures.push(failure)
    }
}

/// The sink's routes, relative to `/webhook`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    WebhookStore: FromRef<S>,
{
    Router::new()
        .route("/", post(receive_root))
        .route("/{*path}", post(receive))
}

/// The control routes, relative to `/_control/webhook`.
pub(crate) fn control_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    WebhookStore: FromRef<S>,
{
    Router::new()
        .route("/failures", post(queue_failure).delete(clear_failures))
        .route("/requests", get(list_requests))
}

async fn receive_root(
    State(webhook): State<WebhookStore>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&webhook, "/".to_owned(), &headers, body)
}

async fn receive(
    State(webhook): State<WebhookStore>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&webhook, format!("/{path}"), &headers, body)
}

fn record(webhook: &WebhookStore, path: String, headers: &HeaderMap, body: Bytes) -> Response {
    let mut store = webhook.inner.lock();
    let response = match store.failures.pop() {
        Some((status, wait)) => with_retry_after(
            (status, Json(json!({ "error": "injected failure (mock)" }))).into_response(),
            wait,
        ),
        None => Json(json!({ "ok": true })).into_response(),
    };
    store.requests.push(WebhookRequest {
        path,
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

async fn queue_failure(State(webhook): State<WebhookStore>, body: Bytes) -> Response {
    queue_failure_from(&body, |failure| webhook.inner.lock().failures.push(failure))
}

async fn clear_failures(State(webhook): State<WebhookStore>) -> Json<Value> {
    Json(json!({ "cleared": webhook.inner.lock().failures.clear() }))
}

async fn list_requests(State(webhook): State<WebhookStore>) -> Json<Value> {
    let store = webhook.inner.lock();
    let requests: Vec<Value> = store
        .requests
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            json!({ "path": r.path, "headers": headers, "body": r.body_text(), "status": r.status })
        })
        .collect();
    Json(json!({ "requests": requests }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::json_answer;

    #[tokio::test]
    async fn records_path_headers_and_body_and_fails_on_request() {
        let server = MockServer::start(crate::MockConfig::default())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let post = |path: &str| {
            client
                .post(server.webhook_url(path))
                .header("x-callguard-signature", "sha256=abc")
                .body("{\"version\":1}")
        };
        assert_eq!(post("/alerts").send().await.unwrap().status().as_u16(), 200);
        server
            .webhook_fail(
                SinkFailure::new(500, 1).with_retry_after(std::time::Duration::from_secs(2)),
            )
            .unwrap();
        let failed = post("").send().await.unwrap();
        assert_eq!(failed.status().as_u16(), 500);
        assert_eq!(failed.headers()["retry-after"], "2");
        let control = format!("{}/_control/webhook/failures", server.url());
        let queued = client
            .post(&control)
            .json(&serde_json::json!({ "status": 503, "count": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(queued.status().as_u16(), 201);
        assert_eq!(post("/a/b").send().await.unwrap().status().as_u16(), 503);

        let requests = server.webhook_requests();
        let seen: Vec<(&str, u16)> = requests
            .iter()
            .map(|r| (r.path.as_str(), r.status))
            .collect();
        assert_eq!(seen, [("/alerts", 200), ("/", 500), ("/a/b", 503)]);
        assert_eq!(
            requests[0].header("X-Callguard-Signature"),
            Some("sha256=abc")
        );
        assert_eq!(requests[0].body_text(), "{\"version\":1}");
        let listed =
            json_answer(client.get(format!("{}/_control/webhook/requests", server.url()))).await;
        assert_eq!(
            listed["requests"][0]["headers"]["x-callguard-signature"],
            "sha256=abc"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn flaps_when_told_through_the_control_api_until_cleared() {
        let server = MockServer::start(crate::MockConfig::default())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let control = format!("{}/_control/webhook/failures", server.url());
        let flapping = json!({ "status": 503, "count": 2, "then_ok": 1 });
        let queued = json_answer(client.post(&control).json(&flapping)).await;
        assert_eq!(queued["queued"], 2);
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let response = client.post(server.webhook_url("")).send().await.unwrap();
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [503, 503, 200, 503, 503, 200]);
        let cleared = json_answer(client.delete(&control)).await;
        assert_eq!(cleared["cleared"], 2);
        let after = client.post(server.webhook_url("")).send().await.unwrap();
        assert_eq!(after.status().as_u16(), 200);
        server.shutdown().await;
    }
}
