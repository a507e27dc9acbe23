//! A fake of the Telegram Bot API's `sendMessage`
//! (`POST /telegram/bot{token}/sendMessage`): it checks the token and the
//! chat id, records every request with the status it answered, answers like
//! Telegram (`{"ok":…}`), and can be told to fail the next requests — a 429
//! carries `parameters.retry_after` in its body, as Telegram sends it.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callguard_core::ValidationError;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::failures::{Failures, SinkFailure, queue_failure_from};
use crate::MockServer;

/// The bot token the fake accepts.
pub const TELEGRAM_BOT_TOKEN: &str = "123456:mock-telegram-token";
/// The chat id the fake knows; any other is "chat not found".
pub const TELEGRAM_CHAT_ID: &str = "-1001234567890";
/// Longest text accepted, in UTF-16 code units, as Telegram counts.
pub const TELEGRAM_TEXT_LIMIT: usize = 4096;

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
/// A handle: clones share them, so handlers take it as their axum state.
#[derive(Clone, Default)]
pub(crate) struct TelegramStore {
    inner: Arc<Mutex<Store>>,
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
        self.shared.telegram.inner.lock().requests.clone()
    }

    /// The texts of the messages accepted (answered `200`), in order.
    pub fn telegram_messages(&self) -> Vec<String> {
        self.shared
            .telegram
            .inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.text.clone())
            .collect()
    }

    /// Makes the next `failure.count` requests with a valid token fail with
    /// `failure.status`; returns how many failures are queued.
    pub fn telegram_fail(&self, failure: SinkFailure) -> Result<usize, ValidationError> {
        self.shared.telegram.inner.lock().failures.push(failure)
    }
}

/// The API routes, relative to `/telegram`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    TelegramStore: FromRef<S>,
{
    Router::new().route("/{bot_token}/sendMessage", post(send_message))
}

/// The control routes, relative to `/_control/telegram`.
pub(crate) fn control_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    TelegramStore: FromRef<S>,
{
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
    State(telegram): State<TelegramStore>,
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
    let mut store = telegram.inner.lock();
    let response = answer(&mut store, token_ok, chat_id.as_deref(), text.as_deref());
    store.requests.push(TelegramRequest {
        token_ok,
        chat_id,
        text,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn answer(
    store: &mut Store,
    token_ok: bool,
    chat_id: Option<&str>,
    text: Option<&str>,
) -> Response {
    let fail = |status: StatusCode, description: &str| bot_error(status, description, None);
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
        return bot_error(status, &description, secs);
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
    Json(json!({ "ok": true, "result": result })).into_response()
}

async fn queue_failure(State(telegram): State<TelegramStore>, body: Bytes) -> Response {
    queue_failure_from(&body, |failure| {
        telegram.inner.lock().failures.push(failure)
    })
}

async fn clear_failures(State(telegram): State<TelegramStore>) -> Json<Value> {
    Json(json!({ "cleared": telegram.inner.lock().failures.clear() }))
}

async fn list_requests(State(telegram): State<TelegramStore>) -> Json<Value> {
    let store = telegram.inner.lock();
    let requests: Vec<Value> = store
        .requests
        .iter()
        .map(|r| json!({ "chat_id": r.chat_id, "text": r.text, "status": r.status }))
        .collect();
    Json(json!({ "requests": requests }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::json_answer;

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
        let cleared = json_answer(client.delete(&control)).await;
        assert_eq!(cleared["cleared"], 1);
        assert_eq!(send(&server, TELEGRAM_BOT_TOKEN, good).await.0, 200);
        let listed =
            json_answer(client.get(format!("{}/_control/telegram/requests", server.url()))).await;
        assert_eq!(listed["requests"].as_array().unwrap().len(), 4);
        server.shutdown().await;
    }
}
