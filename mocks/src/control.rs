//! The control API under `/_control`: inject, list and clear faults, set and
//! clear the services' limits, set how the LLM treats `max_tokens`, read and
//! reset request counts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::limits::{ConcurrencyLimit, RequestRate};
use crate::state::Shared;
use crate::{Fault, MockLlm, Service};

/// The control routes, relative to `/_control`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/faults", get(list).post(inject).delete(clear))
        .route("/stats", get(stats).delete(reset_stats))
        .route("/limits", get(limits))
        .route("/limits/{service}", put(set_limit).delete(clear_limit))
        .route("/llm", get(llm).put(set_llm))
}

fn bad_request(message: impl Into<String>) -> Response {
    let message = message.into();
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Parses one fault or a list of them; errors name the entry and field
/// (`[1].mode: unknown variant ...`).
fn parse_faults(body: &[u8]) -> Result<Vec<Fault>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let one = |value: Value, prefix: &str| {
        serde_path_to_error::deserialize::<_, Fault>(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match path.as_str() {
                "." => format!("invalid fault{prefix}: {inner}"),
                _ => format!("invalid fault{prefix}: {path}: {inner}"),
            }
        })
    };
    match value {
        Value::Array(list) if list.is_empty() => Err("the list of faults is empty".into()),
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, value)| one(value, &format!(" [{i}]")))
            .collect(),
        value => one(value, "").map(|fault| vec![fault]),
    }
}

async fn inject(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = match parse_faults(&body) {
        Ok(faults) => faults,
        Err(message) => return bad_request(message),
    };
    match shared.inject(faults) {
        Ok(ids) => (StatusCode::CREATED, Json(json!({ "ids": ids }))).into_response(),
        Err(e) => bad_request(format!("invalid fault: {e}")),
    }
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "faults": shared.faults() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearQuery {
    service: Option<String>,
}

async fn clear(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<ClearQuery>, QueryRejection>,
) -> Response {
    let service = match query {
        Err(rejection) => return bad_request(rejection.body_text()),
        Ok(Query(ClearQuery { service: None })) => None,
        Ok(Query(ClearQuery {
            service: Some(name),
        })) => match Service::from_name(&name) {
            Some(service) => Some(service),
            None => {
                return bad_request(format!(
                    "service: unknown service {name:?}, expected one of elevenlabs, llm, crm"
                ));
            }
        },
    };
    Json(json!({ "cleared": shared.clear(service) })).into_response()
}

async fn limits(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.limits.state()).into_response()
}

/// Parses a limit body into `T`, naming the field that is wrong.
fn parse_limit<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => format!("invalid limit: {}", e.into_inner()),
            _ => format!("invalid limit: {path}: {}", e.into_inner()),
        }
    })
}

async fn set_limit(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let set = match Service::from_name(&name) {
        Some(Service::Elevenlabs) => parse_limit::<ConcurrencyLimit>(&body).and_then(|limit| {
            limit
                .validate()
                .map_err(|e| format!("invalid limit: {e}"))?;
            shared.limits.set_concurrency(Some(limit));
            Ok(())
        }),
        Some(Service::Llm) => parse_limit::<RequestRate>(&body).and_then(|rate| {
            rate.validate().map_err(|e| format!("invalid limit: {e}"))?;
            shared.limits.set_rate(Some(rate));
            Ok(())
        }),
        _ => Err(format!(
            "service: no limit to set for {name:?}; elevenlabs takes max_concurrent \
             (and queue), llm takes requests_per_minute"
        )),
    };
    match set {
        Ok(()) => limits(State(shared)).await,
        Err(message) => bad_request(message),
    }
}

async fn clear_limit(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match Service::from_name(&name) {
        Some(Service::Elevenlabs) => shared.limits.set_concurrency(None),
        Some(Service::Llm) => shared.limits.set_rate(None),
        _ => return bad_request(format!("service: no limit to clear for {name:?}")),
    }
    limits(State(shared)).await
}

async fn llm(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.llm()).into_response()
}

/// Replaces the LLM's behaviour with the body's (`{"refuse_max_tokens":false}`;
/// a missing field takes its default).
async fn set_llm(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut json = serde_json::Deserializer::from_slice(&body);
    match serde_path_to_error::deserialize::<_, MockLlm>(&mut json) {
        Ok(behaviour) => {
            shared.set_llm(behaviour);
            llm(State(shared)).await
        }
        Err(e) => bad_request(format!("invalid llm behaviour: {e}")),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats.snapshot()).into_response()
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.stats.reset();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_entry_and_field() {
        let err = parse_faults(br#"{"service":"crm","mode":"explode"}"#).unwrap_err();
        assert!(
            err.starts_with("invalid fault: mode: unknown variant `explode`"),
            "{err}"
        );
        let err =
            parse_faults(br#"[{"service":"crm","mode":"ok"},{"service":"crm"}]"#).unwrap_err();
        assert_eq!(err, "invalid fault [1]: missing field `mode`");
        let err = parse_faults(br#"{"service":"tts","mode":"ok"}"#).unwrap_err();
        assert!(err.contains("service: unknown variant `tts`"), "{err}");
        let err = parse_faults(br#"{"service":"crm","mode":"ok","for":"soon"}"#).unwrap_err();
        assert!(err.contains("for: invalid duration"), "{err}");
        assert!(parse_faults(b"[]").is_err());
        assert!(parse_faults(b"{").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn parses_one_or_many() {
        assert_eq!(
            parse_faults(br#"{"service":"llm","mode":"reset"}"#)
                .unwrap()
                .len(),
            1
        );
        let both = br#"[{"service":"llm","mode":"reset"},{"service":"crm","mode":"garbage","after":"1s"}]"#;
        assert_eq!(parse_faults(both).unwrap().len(), 2);
    }
}
