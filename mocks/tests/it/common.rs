//! Helpers shared by the tests: a client, servers, and one ready-made valid
//! request per service.

use callguard_mocks::{MockConfig, MockServer, Service};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// A client without proxies or pooled connections (an idle pool's timer
/// would let a paused clock jump ahead).
pub(crate) fn client() -> Client {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

pub(crate) async fn start() -> MockServer {
    start_with(MockConfig::default()).await
}

pub(crate) async fn start_with(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// Sends `request` and decodes the JSON body of the answer, whatever its status.
pub(crate) async fn fetch_json(request: RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// A valid text-to-speech request.
pub(crate) fn tts(client: &Client, server: &MockServer, text: &str) -> RequestBuilder {
    client
        .post(format!(
            "{}/v1/text-to-speech/voice-1",
            server.base_url(Service::Elevenlabs)
        ))
        .header("xi-api-key", "mock-elevenlabs-key")
        .json(&json!({ "text": text, "model_id": "eleven_multilingual_v2" }))
}

/// A valid chat-completion request whose prompt names `name`.
pub(crate) fn llm(client: &Client, server: &MockServer, name: &str) -> RequestBuilder {
    client
        .post(format!("{}/v1/chat/completions", server.base_url(Service::Llm)))
        .bearer_auth("mock-llm-key")
        .json(&json!({
            "model": "gpt-4o-mini",
            "messages": [
                { "role": "system", "content": "You write short call scripts." },
                { "role": "user", "content": format!("Write a script.\nName: {name}\nPhone: +1 555 0100") },
            ],
        }))
}

/// A valid CRM call record for `contact`, posted with `idempotency_key`.
pub(crate) fn crm(
    client: &Client,
    server: &MockServer,
    contact: &str,
    idempotency_key: &str,
) -> RequestBuilder {
    client
        .post(format!("{}/v1/calls", server.base_url(Service::Crm)))
        .bearer_auth("mock-crm-key")
        .header("Idempotency-Key", idempotency_key)
        .json(&json!({ "contact_id": contact, "name": "Alice", "outcome": "completed" }))
}

/// The status of `GET /<service>/health`.
pub(crate) async fn health(client: &Client, server: &MockServer, service: Service) -> StatusCode {
    client
        .get(format!("{}/health", server.base_url(service)))
        .send()
        .await
        .unwrap()
        .status()
}
