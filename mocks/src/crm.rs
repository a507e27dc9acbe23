//! Fake CRM: `POST /v1/calls` stores a call record once per `Idempotency-Key`
//! (a repeat returns the stored record with `200`); `GET /v1/calls` lists them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value};

use crate::{MockKeys, Service};

/// Header that makes a `POST /v1/calls` safe to repeat.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The API routes, relative to `/crm`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    CrmStore: FromRef<S>,
{
    Router::new().route("/v1/calls", get(list).post(create))
}

/// A stored call record.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmRecord {
    /// The id the CRM gave it (`call_1`, `call_2`, …).
    pub id: String,
    /// The `Idempotency-Key` it was created with, if any.
    pub idempotency_key: Option<String>,
    /// The fields as posted (without `id`); `contact_id` is always a string.
    pub fields: Map<String, Value>,
}

impl CrmRecord {
    /// The record's `contact_id`.
    pub fn contact_id(&self) -> &str {
        self.fields
            .get("contact_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The record as the API shows it: `{"id": …, …fields}`.
    pub fn to_json(&self) -> Value {
        let mut json = Map::with_capacity(self.fields.len() + 1);
        json.insert("id".into(), Value::String(self.id.clone()));
        json.extend(self.fields.clone());
        Value::Object(json)
    }
}

/// The CRM's records, which idempotency key created which, and the API keys
/// it checks. A handle: clones share the records, so handlers take it as
/// their axum state.
#[derive(Clone)]
pub(crate) struct CrmStore {
    keys: Arc<MockKeys>,
    inner: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    records: Vec<CrmRecord>,
    by_key: HashMap<String, usize>,
}

impl CrmStore {
    pub(crate) fn new(keys: MockKeys) -> Self {
        Self {
            keys: Arc::new(keys),
            inner: Arc::default(),
        }
    }

    pub(crate) fn records(&self) -> Vec<CrmRecord> {
        self.inner.lock().records.clone()
    }
}

async fn list(State(crm): State<CrmStore>, headers: HeaderMap) -> Response {
    if let Some(denied) = Service::Crm.deny(&headers, &crm.keys) {
        return denied;
    }
    let records: Vec<Value> = crm
        .inner
        .lock()
        .records
        .iter()
        .map(CrmRecord::to_json)
        .collect();
    Json(records).into_response()
}

async fn create(State(crm): State<CrmStore>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = Service::Crm.deny(&headers, &crm.keys) {
        return denied;
    }
    let mut fields = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => return invalid("The body must be a JSON object"),
        Err(e) => return invalid(&format!("The body is not valid JSON: {e}")),
    };
    match fields.get("contact_id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(_) => return invalid("contact_id must be a non-empty string"),
        None => return invalid("contact_id is required"),
    }
    fields.remove("id");
    let key = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_owned);

    let mut store = crm.inner.lock();
    if let Some(&index) = key.as_ref().and_then(|k| store.by_key.get(k)) {
        let existing = &store.records[index];
        return if existing.fields == fields {
            (StatusCode::OK, Json(existing.to_json())).into_response()
        } else {
            Service::Crm.error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "The Idempotency-Key was already used with a different record",
            )
        };
    }
    let record = CrmRecord {
        id: format!("call_{}", store.records.len() + 1),
        idempotency_key: key.clone(),
        fields,
    };
    let json = record.to_json();
    if let Some(key) = key {
        let index = store.records.len();
        store.by_key.insert(key, index);
    }
    store.records.push(record);
    (StatusCode::CREATED, Json(json)).into_response()
}

fn invalid(message: &str) -> Response {
    Service::Crm.error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
        message,
    )
}
