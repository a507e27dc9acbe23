//! Fake OpenAI-compatible LLM: a chat completion answers a
//! `chat.completion` whose content is a short call script greeting the
//! contact named in the last user message (`Name: Alice Smith`).
//!
//! It is reached the ways real providers are: OpenAI's path (which vLLM and
//! Ollama serve too) and Gemini's OpenAI endpoint with a bearer key, and
//! Azure OpenAI's deployment path with an `api-key` header and a required
//! `api-version`. Like OpenAI's current models it refuses the deprecated
//! `max_tokens` with `400 unsupported_parameter` (unless told not to:
//! [`MockLlm`]), and takes `max_completion_tokens`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Service;
use crate::state::Shared;

/// OpenAI's chat-completions path, which vLLM and Ollama serve too.
pub const OPENAI_CHAT_PATH: &str = "/v1/chat/completions";
/// Gemini's OpenAI-compatible chat-completions path.
pub const GEMINI_CHAT_PATH: &str = "/v1beta/openai/chat/completions";

/// How the fake LLM treats the request's token fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockLlm {
    /// Answer a request carrying `max_tokens` with OpenAI's `400
    /// unsupported_parameter`, as its o-series and GPT-5 class models do;
    /// default true. False: take it, as older models and most
    /// OpenAI-compatible servers do.
    pub refuse_max_tokens: bool,
}

impl Default for MockLlm {
    fn default() -> Self {
        Self {
            refuse_max_tokens: true,
        }
    }
}

/// The API routes, relative to `/llm`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(OPENAI_CHAT_PATH, post(bearer))
        .route(GEMINI_CHAT_PATH, post(bearer))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure),
        )
}

#[derive(Deserialize)]
struct ChatRequest {
    /// Required, except on Azure's deployment path, which names the model.
    model: Option<String>,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

impl ChatMessage {
    /// The message's text: a string, or the `text` of each part of a list.
    fn text(&self) -> String {
        match &self.content {
            Value::String(text) => text.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text")?.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// OpenAI's and Gemini's paths: `Authorization: Bearer KEY`.
async fn bearer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = Service::Llm.deny(&headers, &shared.config.keys) {
        return denied;
    }
    complete(&shared, None, &body)
}

/// Azure OpenAI's deployment path: `api-key: KEY` and an `api-version`
/// query parameter, errors in Azure's own shape.
async fn azure(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers.get("api-key").and_then(|v| v.to_str().ok());
    if key != Some(shared.config.keys.llm.as_str()) {
        return azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure \
             to provide a valid key for an active subscription and use a correct regional \
             API endpoint for your resource.",
        );
    }
    if query.get("api-version").is_none_or(String::is_empty) {
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Missing required query parameter: api-version",
        );
    }
    complete(&shared, Some(&deployment), &body)
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    (status, Json(body)).into_response()
}

/// Answers the chat request in `body`; `deployment` names the model on
/// Azure's path.
fn complete(shared: &Shared, deployment: Option<&str>, body: &[u8]) -> Response {
    let mut json = serde_json::Deserializer::from_slice(body);
    let request: ChatRequest = match serde_path_to_error::deserialize(&mut json) {
        Ok(request) => request,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    if request.messages.is_empty() {
        return invalid("messages: must contain at least one message");
    }
    let Some(model) = request.model.as_deref().or(deployment) else {
        return invalid("you must provide a model parameter");
    };
    if request.max_tokens.is_some() && shared.llm().refuse_max_tokens {
        return unsupported_max_tokens();
    }
    for (field, value) in [
        ("max_completion_tokens", request.max_completion_tokens),
        ("max_tokens", request.max_tokens),
    ] {
        if value == Some(0) {
            return invalid(&format!(
                "Invalid '{field}': integer below minimum value. Expected a value >= 1, \
                 but got 0 instead."
            ));
        }
    }
    let prompt = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(ChatMessage::text)
        .unwrap_or_default();
    let content = script(contact_name(&prompt));
    let prompt_tokens: usize = request
        .messages
        .iter()
        .map(|m| m.text().split_whitespace().count())
        .sum();
    let completion_tokens = content.split_whitespace().count();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Json(json!({
        "id": format!("chatcmpl-mock-{}", shared.next_completion()),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

fn invalid(message: &str) -> Response {
    Service::Llm.error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// OpenAI's answer to `max_tokens` from a model that takes only
/// `max_completion_tokens`.
fn unsupported_max_tokens() -> Response {
    let body = json!({ "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. \
                    Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The text after the first `name:` (any case), up to the end of its line or
/// the first `,`, `;` or `.`.
fn contact_name(prompt: &str) -> Option<&str> {
    // ASCII lowercasing keeps byte offsets, so they index `prompt` too.
    let start = prompt.to_ascii_lowercase().find("name:")? + "name:".len();
    let rest = &prompt[start..];
    let end = rest.find(['\n', ',', ';', '.']).unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|name| !name.is_empty())
}

fn script(name: Option<&str>) -> String {
    let name = name.unwrap_or("there");
    format!(
        "Hello {name}, this is Ava calling on behalf of Callguard. \
         I'm following up on your recent enquiry and have two quick questions. \
         Is now a good time, or shall I call back later?"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_contact_name() {
        assert_eq!(
            contact_name("Write a call script.\nContact NAME: Alice Smith\nPhone: +1"),
            Some("Alice Smith")
        );
        assert_eq!(contact_name("name: Bob, phone 555"), Some("Bob"));
        assert_eq!(contact_name("Name: Zoë Ångström."), Some("Zoë Ångström"));
        assert_eq!(contact_name("name:   \nphone"), None);
        assert_eq!(contact_name("no contact here"), None);
    }

    #[test]
    fn script_greets_by_name_or_generically() {
        assert!(script(Some("Alice")).starts_with("Hello Alice,"));
        assert!(script(None).starts_with("Hello there,"));
    }
}
