//! A fake of the Telegram Bot API's `sendMessage`
//! (`POST /telegram/bot{token}/sendMessage`): it checks the token and the
//! chat id, records every request with the status it answered, answers like
//! Telegram (`{"ok":…}`), and can be told to fail the next requests — a 429
//! carries `parameters.retry_after` in its body, as Telegram sends it.
//!
//! Also home of [`SinkFailure`], the scripted failures of the Telegram and
//! webhook fakes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callguard_core::{ConfigDuration, ValidationError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::MockServer;
use crate::state::{Shared, lock};

/// The bot token the fake accepts.
pub const TELEGRAM_BOT_TOKEN: &str = "123456:mock-telegram-token";
/// The chat id the fake knows; any other is "chat not found".
pub const TELEGRAM_CHAT_ID: &str = "-1001234567890";
/// Longest text accepted, in UTF-16 code units, as Telegram counts.
pub const TELEGRAM_TEXT_LIMIT: usize = 4096;

/// Failures a sink fake (Telegram, webhook) answers with before it answers
/// normally again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkFailure {
    /// The status to answer (400–599), e.g. 429, 400 or 500.
    pub status: u16,
    /// How many requests in a row get it (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// The wait asked for, rounded up to whole seconds: Telegram's
    /// `parameters.retry_after`, the webhook's `Retry-After` header.
    #[serde(default)]
    pub retry_after: Option<ConfigDuration>,
}

fn one() -> u32 {
    1
}

impl SinkFailure {
    /// `count` answers of `status`, without a wait.
    pub fn new(status: u16, count: u32) -> Self {
        Self {
            status,
            count,
            retry_after: None,
        }
    }

    /// Asks the client to wait `wait`.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(ConfigDuration::new(wait));
        self
    }

    /// Checks the status is an error status and the count is not zero.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(400..=599).contains(&self.status) {
            return Err(ValidationError::new(
                "status",
                self.status,
                "an error status between 400 and 599",
            ));
        }
        callguard_core::config::at_least("count", self.count, 1)
    }

    /// The wait in whole seconds, rounded up.
    pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
    }
}

/// A queue of scripted failures: one entry per request to fail.
#[derive(Default)]
pub(crate) struct Failures(VecDeque<(StatusCode, Option<Duration>)>);

impl Failures {
    /// Queues `failure`; returns how many are queued now.
    pub(crate) fn push(&mut self, failure: SinkFailure) -> Result<usize, ValidationError> {
        failure.validate()?;
        let status = StatusCode::from_u16(failure.status)
            .map_err(|_| ValidationError::new("status", failure.status, "an HTTP status"))?;
        for _ in 0..failure.count {
            self.0
                .push_back((status, failure.retry_after.map(ConfigDuration::get)));
        }
        Ok(self.0.len())
    }

    pub(crate) fn pop(&mut self) -> Option<(StatusCode, Option<Duration>)> {
        self.0.pop_front()
    }

    /// Removes every queued failure; returns how many there were.
    pub(crate) fn clear(&mut self) -> usize {
        let cleared = self.0.len();
        self.0.clear();
        cleared
    }
}

/// The control answer to a failure posted as JSON: `201 {"queued":n}` or
/// `400 {"error":…}`.
pub(crate) fn queue_failure_from(
    body: &[u8],
    push: impl FnOnce(SinkFailure) -> Result<usize, ValidationError>,
) -> Response {
    let bad = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("invalid failure: {e}") })),
        )
            .into_response()
    };
    match serde_json::from_slice::<SinkFailure>(body) {
        Err(e) => bad(e.to_string()),
        Ok(failure) => match push(failure) {
            Ok(queued) => (StatusCode::CREATED, Json(json!({ "queued": queued }))).into_response(),
            Err(e) => bad(e.to_string()),
        },
    }
}

/// One request to `sendMessage`, as received.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TelegramRequest {
    /// Whether the token in the path was [`TELEGRAM_BOT_TOKEN`].
    pub token_ok: bool,
    /// `chat_id` as sent (a number is shown in decimal), if any.
    pub chat_id: Option<String>,
    /// `text` as sent, if any.
    pub text: Option<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived, on the runtime clock (virtual under paused test time).
    pub at: Instant,
}

/// The recorded requests and the scripted failures.
#[derive(Default)]
pub(crate) struct TelegramStore {
    inner: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    requests: Vec<TelegramRequest>,
    failures: Failures,
    next_message_id: u64,
}

impl MockServer {
    /// `http://ADDR/telegram`, the `api_base` to configure for the Bot API.
    pub fn telegram_api_base(&self) -> String {
        format!("{}/telegram", self.url())
    }

    /// Every `sendMessage` request, in order, with the status answered.
    pub fn telegram_requests(&self) -> Vec<TelegramRequest> {
        lock(&self.shared.telegram.inner).requests.clone()
    }

    /// The texts of the messages accepted (answered `200`), in order.
    pub fn telegram_messages(&self) -> Vec<String> {
        lock(&self.shared.telegram.inner)
            .requests
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.text.clone())
            .collect()
    }

    /// Makes the next `failure.count` requests with a valid token fail with
    /// `failure.status`; returns how many failures are queued.
    pub fn telegram_fail(&self, failure: SinkFailure) -> Result<usize, ValidationError> {
        lock(&self.shared.telegram.inner).failures.push(failure)
    }
}

/// The API routes, relative to `/telegram`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/{bot_token}/sendMessage", post(send_message))
}

/// The control routes, relative to `/_control/telegram`.
pub(crate) fn control_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/failures", post(queue_failure).delete(clear_failures))
        .route("/requests", axum::routing::get(list_requests))
}

/// A Bot API error: `{"ok":false,"error_code":…,"description":…}`.
fn bot_error(status: StatusCode, description: &str, retry_after: Option<u64>) -> Response {
    let mut body =
        json!({ "ok": false, "error_code": status.as_u16(), "description": description });
    if let Some(secs) = retry_after {
        body["parameters"] = json!({ "retry_after": secs });
    }
    (status, Json(body)).into_response()
}

async fn send_message(
    State(shared): State<Arc<Shared>>,
    Path(bot_token): Path<String>,
    body: Bytes,
) -> Response {
    // axum cannot match a literal and a parameter in one segment.
    let token_ok = bot_token.strip_prefix("bot") == Some(TELEGRAM_BOT_TOKEN);
    let fields = serde_json::from_slice::<Value>(&body).ok();
    let field = |name: &str| {
        fields.as_ref().and_then(|f| match &f[name] {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let (chat_id, text) = (field("chat_id"), field("text"));
    let mut store = lock(&shared.telegram.inner);
    let (status, response) = answer(&mut store, token_ok, chat_id.as_deref(), text.as_deref());
    store.requests.push(TelegramRequest {
        token_ok,
        chat_id,
        text,
        status: status.as_u16(),
        at: Instant::now(),
    });
    response
}

fn answer(
    store: &mut Store,
    token_ok: bool,
    chat_id: Option<&str>,
    text: Option<&str>,
) -> (StatusCode, Response) {
    let fail =
        |status: StatusCode, description: &str| (status, bot_error(status, description, None));
    if !token_ok {
        return fail(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if let Some((status, wait)) = store.failures.pop() {
        let description = match status.as_u16() {
            429 => "Too Many Requests: retry later".to_owned(),
            400 => "Bad Request: injected failure".to_owned(),
            _ => format!("Injected failure ({})", status.as_u16()),
        };
        let secs = wait.map(SinkFailure::retry_after_secs);
        return (status, bot_error(status, &description, secs));
    }
    if chat_id.is_none_or(|id| id != TELEGRAM_CHAT_ID) {
        return fail(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    }
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
        );
    };
    if text.encode_utf16().count() > TELEGRAM_TEXT_LIMIT {
        return fail(StatusCode::BAD_REQUEST, "Bad Request: message is too long");
    }
    store.next_message_id += 1;
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let result = json!({
        "message_id": store.next_message_id,
        "date": date,
        "chat": { "id": TELEGRAM_CHAT_ID.parse::<i64>().unwrap_or_default(), "type": "supergroup" },
        "text": text,
    });
    (
        StatusCode::OK,
        Json(json!({ "ok": true, "result": result })).into_response(),
    )
}

async fn queue_failure(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    queue_failure_from(&body, |failure| {
        lock(&shared.telegram.inner).failures.push(failure)
    })
}

async fn clear_failures(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "cleared": lock(&shared.telegram.inner).failures.clear() }))
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let store = lock(&shared.telegram.inner);
    let requests: Vec<Value> = store
        .requests
        .iter()
        .map(|r| json!({ "chat_id": r.chat_id, "text": r.text, "status": r.status }))
        .collect();
    Json(json!({ "requests": requests }))
}

/// The `Retry-After` header asking for `wait`, rounded up to whole seconds.
pub(crate) fn retry_after_header(wait: Duration) -> (header::HeaderName, HeaderValue) {
    (
        header::RETRY_AFTER,
        HeaderValue::from(SinkFailure::retry_after_secs(wait)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_validated_and_queued() {
        let mut failures = Failures::default();
        assert_eq!(
            failures.push(SinkFailure::new(200, 1)).unwrap_err().key,
            "status"
        );
        assert_eq!(
            failures.push(SinkFailure::new(429, 0)).unwrap_err().key,
            "count"
        );
        assert_eq!(failures.push(SinkFailure::new(429, 2)).unwrap(), 2);
        assert_eq!(failures.pop().map(|(s, _)| s.as_u16()), Some(429));
        assert_eq!(failures.clear(), 1);
        assert_eq!(
            SinkFailure::retry_after_secs(Duration::from_millis(1500)),
            2
        );
    }

    async fn send(server: &MockServer, token: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/bot{token}/sendMessage",
                server.telegram_api_base()
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn checks_token_chat_and_text_and_records_everything() {
        let server = MockServer::start(crate::MockConfig::default())
            .await
            .unwrap();
        let good = json!({ "chat_id": TELEGRAM_CHAT_ID, "text": "hello" });
        let (status, body) = send(&server, TELEGRAM_BOT_TOKEN, good.clone()).await;
        assert_eq!((status, body["ok"].clone()), (200, json!(true)));
        assert_eq!(body["result"]["text"], "hello");
        let (status, body) = send(&server, "123:wrong", good).await;
        assert_eq!(
            (status, body["description"].clone()),
            (401, json!("Unauthorized"))
        );
        let numeric = json!({ "chat_id": -1001234567890_i64, "text": "numeric id" });
        assert_eq!(send(&server, TELEGRAM_BOT_TOKEN, numeric).await.0, 200);
        let other_chat = json!({ "chat_id": "42", "text": "x" });
        let (status, body) = send(&server, TELEGRAM_BOT_TOKEN, other_chat).await;
        assert_eq!(
            (status, body["description"].clone()),
            (400, json!("Bad Request: chat not found"))
        );
        let too_long = json!({ "chat_id": TELEGRAM_CHAT_ID, "text": "x".repeat(4097) });
        assert_eq!(send(&server, TELEGRAM_BOT_TOKEN, too_long).await.0, 400);

        let statuses: Vec<u16> = server
            .telegram_requests()
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [200, 401, 200, 400, 400]);
        assert_eq!(server.telegram_messages(), ["hello", "numeric id"]);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn scripted_failures_through_the_control_api() {
        let server = MockServer::start(crate::MockConfig::default())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let control = format!("{}/_control/telegram/failures", server.url());
        let response = client
            .post(&control)
            .json(&json!({ "status": 429, "count": 2, "retry_after": "3s" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let bad = client
            .post(&control)
            .json(&json!({ "status": 200 }))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status().as_u16(), 400);

        let good = json!({ "chat_id": TELEGRAM_CHAT_ID, "text": "hi" });
        for _ in 0..2 {
            let (status, body) = send(&server, TELEGRAM_BOT_TOKEN, good.clone()).await;
            assert_eq!(status, 429);
            assert_eq!(body["error_code"], 429);
            assert_eq!(body["parameters"]["retry_after"], 3);
        }
        assert_eq!(send(&server, TELEGRAM_BOT_TOKEN, good.clone()).await.0, 200);

        server.telegram_fail(SinkFailure::new(500, 1)).unwrap();
        let cleared: Value = client
            .delete(&control)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cleared["cleared"], 1);
        assert_eq!(send(&server, TELEGRAM_BOT_TOKEN, good).await.0, 200);
        let listed: Value = client
            .get(format!("{}/_control/telegram/requests", server.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["requests"].as_array().unwrap().len(), 4);
        server.shutdown().await;
    }
}
