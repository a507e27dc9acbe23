//! The fault proxies' control API under `/_control/proxies`: read a proxy's
//! state; cut, refuse, blackhole, add latency, heal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callguard_core::ConfigDuration;
use callguard_core::config::nonzero_duration;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::ProxyShared;
use crate::state::Shared;

/// The routes, relative to `/_control`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/proxies", get(list))
        .route("/proxies/{name}", get(show))
        .route("/proxies/{name}/cut", post(cut))
        .route("/proxies/{name}/refuse", post(refuse))
        .route("/proxies/{name}/blackhole", post(blackhole))
        .route("/proxies/{name}/latency", post(latency))
        .route("/proxies/{name}/heal", post(heal))
}

/// The body of `cut`, `refuse` and `blackhole`; empty means `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Lasting {
    /// How long the condition lasts (for `cut`: how long new connections are
    /// refused after it); until healed if unset.
    #[serde(rename = "for")]
    duration: Option<ConfigDuration>,
}

/// The body of `latency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    latency: ConfigDuration,
    #[serde(rename = "for")]
    duration: Option<ConfigDuration>,
}

/// The body of `heal`: no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// A request body and its `for`, if it has one.
trait Body: DeserializeOwned {
    fn duration(&self) -> Option<ConfigDuration>;
}

impl Body for Lasting {
    fn duration(&self) -> Option<ConfigDuration> {
        self.duration
    }
}

impl Body for Latency {
    fn duration(&self) -> Option<ConfigDuration> {
        self.duration
    }
}

impl Body for Empty {
    fn duration(&self) -> Option<ConfigDuration> {
        None
    }
}

/// A request the API turns down: the status and the message of its
/// `{"error": …}` body.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Parses a body (empty reads as `{}`), naming the field that is wrong, and
/// checks that a `for` is not zero.
fn parse<T: Body>(body: &[u8]) -> Result<T, Refusal> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let invalid = |message: String| Refusal(StatusCode::BAD_REQUEST, message);
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        invalid(match path.as_str() {
            "." => format!("invalid proxy request: {}", e.into_inner()),
            _ => format!("invalid proxy request: {path}: {}", e.into_inner()),
        })
    })?;
    if let Some(duration) = parsed.duration() {
        nonzero_duration("for", duration.get())
            .map_err(|e| invalid(format!("invalid proxy request: {e}")))?;
    }
    Ok(parsed)
}

fn find(shared: &Shared, name: &str) -> Result<Arc<ProxyShared>, Refusal> {
    let proxies = shared.proxies.lock();
    proxies.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = proxies.keys().map(String::as_str).collect();
        Refusal(
            StatusCode::NOT_FOUND,
            format!("no proxy named {name:?}; proxies: {known:?}"),
        )
    })
}

/// Finds the proxy, parses the body, applies `act`, answers the state after.
fn act<T: Body>(
    shared: &Shared,
    name: &str,
    body: &[u8],
    act: impl FnOnce(&ProxyShared, T),
) -> Response {
    let acted = find(shared, name).and_then(|proxy| {
        act(&proxy, parse(body)?);
        Ok(proxy.state())
    });
    match acted {
        Ok(state) => Json(state).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn as_std(duration: Option<ConfigDuration>) -> Option<Duration> {
    duration.map(ConfigDuration::get)
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    let proxies: BTreeMap<String, _> = shared
        .proxies
        .lock()
        .iter()
        .map(|(name, proxy)| (name.clone(), proxy.state()))
        .collect();
    Json(json!({ "proxies": proxies })).into_response()
}

async fn show(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match find(&shared, &name) {
        Ok(proxy) => Json(proxy.state()).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn cut(State(shared): State<Arc<Shared>>, Path(name): Path<String>, body: Bytes) -> Response {
    act(&shared, &name, &body, |proxy, l: Lasting| {
        proxy.cut(as_std(l.duration));
    })
}

async fn refuse(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    act(&shared, &name, &body, |proxy, l: Lasting| {
        proxy.refuse(as_std(l.duration));
    })
}

async fn blackhole(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    act(&shared, &name, &body, |proxy, l: Lasting| {
        proxy.blackhole(as_std(l.duration));
    })
}

async fn latency(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    act(&shared, &name, &body, |proxy, l: Latency| {
        proxy.set_latency(l.latency.get(), as_std(l.duration));
    })
}

async fn heal(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    act(&shared, &name, &body, |proxy, _: Empty| proxy.heal())
}
