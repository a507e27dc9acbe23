//! Fake OpenAI-compatible LLM: `POST /v1/chat/completions` answers a
//! `chat.completion` whose content is a short call script greeting the
//! contact named in the last user message (`Name: Alice Smith`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Service;
use crate::state::Shared;

/// The API routes, relative to `/llm`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/chat/completions", post(complete))
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
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

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = Service::Llm.deny(&headers, &shared.config.keys) {
        return denied;
    }
    let mut json = serde_json::Deserializer::from_slice(&body);
    let request: ChatRequest = match serde_path_to_error::deserialize(&mut json) {
        Ok(request) => request,
        Err(e) => return invalid(&format!("Invalid request body: {e}")),
    };
    if request.messages.is_empty() {
        return invalid("messages: must contain at least one message");
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
        "model": request.model,
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
