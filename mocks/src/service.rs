//! The faked services, their endpoint kinds, and each one's error-body dialect.

use std::fmt;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::MockKeys;

/// One of the external services the mock server fakes; each lives under
/// `/<name>` on the mock server's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Service {
    /// ElevenLabs text-to-speech (`/elevenlabs`).
    Elevenlabs,
    /// An OpenAI-compatible chat-completions LLM (`/llm`).
    Llm,
    /// The CRM that stores call records (`/crm`).
    Crm,
}

impl Service {
    /// Every faked service, in path order.
    pub const ALL: [Self; 3] = [Self::Elevenlabs, Self::Llm, Self::Crm];

    /// The service's name, which is also its path prefix and its name in the
    /// agent's config (`elevenlabs`, `llm`, `crm`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Elevenlabs => "elevenlabs",
            Self::Llm => "llm",
            Self::Crm => "crm",
        }
    }

    /// The service named `name`, if the mock fakes it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The content type of the service's successful API answer.
    pub(crate) const fn success_content_type(self) -> &'static str {
        match self {
            Self::Elevenlabs => "audio/mpeg",
            Self::Llm | Self::Crm => "application/json",
        }
    }

    /// An error response in the service's own JSON dialect.
    ///
    /// `code` is the machine-readable reason (`invalid_api_key`,
    /// `service_unavailable`, …), `message` the human-readable one.
    pub(crate) fn error(self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = match self {
            Self::Elevenlabs => json!({ "detail": { "status": code, "message": message } }),
            Self::Llm => {
                let kind = match status.as_u16() {
                    429 => "requests",
                    500.. => "server_error",
                    _ => "invalid_request_error",
                };
                json!({ "error": { "message": message, "type": kind, "code": code } })
            }
            Self::Crm => json!({ "error": { "code": code, "message": message } }),
        };
        (status, Json(body)).into_response()
    }
}

impl Service {
    /// The `401` the real service sends for a missing or wrong API key.
    pub(crate) fn unauthorized(self) -> Response {
        let message = match self {
            Self::Llm => "Incorrect API key provided",
            Self::Elevenlabs | Self::Crm => "Invalid API key",
        };
        self.error(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    /// The `401` to answer unless the request carries the key in `keys`:
    /// `xi-api-key` for ElevenLabs, `Authorization: Bearer …` for the others.
    pub(crate) fn deny(self, headers: &HeaderMap, keys: &MockKeys) -> Option<Response> {
        let given = match self {
            Self::Elevenlabs => headers.get("xi-api-key").and_then(|v| v.to_str().ok()),
            Self::Llm | Self::Crm => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ")),
        };
        (given != Some(keys.get(self))).then(|| self.unauthorized())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Service> for callguard_core::ServiceName {
    fn from(service: Service) -> Self {
        // The three names are lowercase ASCII words, always valid.
        Self::new(service.as_str()).unwrap_or_else(|e| unreachable!("{e}"))
    }
}

/// Which kind of endpoint a request hit, for the request counts in
/// [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EndpointKind {
    /// The service's real API (`/v1/...`).
    Api,
    /// The service's `/health` endpoint.
    Health,
}

impl EndpointKind {
    /// The kind of endpoint `request` is for.
    pub(crate) fn of(request: &Request) -> Self {
        if request.uri().path().ends_with("/health") {
            Self::Health
        } else {
            Self::Api
        }
    }
}

/// `{"status":"ok"}`, the body of a healthy `/health` answer.
pub(crate) fn health_ok() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Service::ALL {
            assert_eq!(Service::from_name(s.as_str()), Some(s));
            assert_eq!(callguard_core::ServiceName::from(s).as_str(), s.as_str());
        }
        assert_eq!(Service::from_name("sheets"), None);
    }
}
