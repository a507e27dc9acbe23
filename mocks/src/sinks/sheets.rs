//! A fake of the Google Sheets API's `spreadsheets.values.append`
//! (`POST /sheets/v4/spreadsheets/{id}/values/{range}:append`): it checks the
//! bearer token (issued by the token fake, or [`SHEETS_STATIC_TOKEN`]) and the
//! query parameters, records the rows in order, answers like Google, and can
//! be told to fail the next requests with a given status.

use parking_lot::Mutex;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use callguard_core::ValidationError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::failures::{Failures, SinkFailure, queue_failure_from, with_retry_after};
use super::token::TokenIssuer;
use crate::MockServer;

/// A static access token the Sheets fake always accepts, for clients
/// configured with `bearer_token` instead of a service account.
pub const SHEETS_STATIC_TOKEN: &str = "mock-sheets-token";

/// One accepted append request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SheetsAppend {
    /// The spreadsheet id from the path.
    pub spreadsheet_id: String,
    /// The range from the path, without `:append` (percent-decoded).
    pub range: String,
    /// `valueInputOption` as sent.
    pub value_input_option: String,
    /// `insertDataOption` as sent (`OVERWRITE`, Google's default, if absent).
    pub insert_data_option: String,
    /// The rows, in order.
    pub rows: Vec<Vec<Value>>,
}

/// The recorded appends, scripted failures and every status answered.
/// A handle: clones share them, so handlers take it as their axum state.
#[derive(Clone, Default)]
pub(crate) struct SheetsStore {
    inner: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct Store {
    appends: Vec<SheetsAppend>,
    failures: Failures,
    statuses: Vec<u16>,
}

impl MockServer {
    /// `http://ADDR/sheets`, the `api_base` to configure for the Sheets API.
    pub fn sheets_api_base(&self) -> String {
        format!("{}/sheets", self.url())
    }

    /// The accepted append requests, in order.
    pub fn sheets_appends(&self) -> Vec<SheetsAppend> {
        self.shared.sheets.inner.lock().appends.clone()
    }

    /// Every row appended, in order, over all requests.
    pub fn sheets_rows(&self) -> Vec<Vec<Value>> {
        self.sheets_appends()
            .into_iter()
            .flat_map(|a| a.rows)
            .collect()
    }

    /// The status of every append request answered, in order (`401`s and
    /// injected failures included).
    pub fn sheets_statuses(&self) -> Vec<u16> {
        self.shared.sheets.inner.lock().statuses.clone()
    }

    /// Makes the next `failure.count` append requests (with a valid token)
    /// fail with `failure.status`; returns how many failures are queued.
    pub fn sheets_fail(&self, failure: SinkFailure) -> Result<usize, ValidationError> {
        self.shared.sheets.inner.lock().failures.push(failure)
    }
}

/// The API routes, relative to `/sheets`.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SheetsStore: FromRef<S>,
    TokenIssuer: FromRef<S>,
{
    Router::new().route(
        "/v4/spreadsheets/{spreadsheet_id}/values/{range_method}",
        post(append),
    )
}

/// The control routes, relative to `/_control/sheets`.
pub(crate) fn control_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SheetsStore: FromRef<S>,
{
    Router::new().route("/failures", post(queue_failure).delete(clear_failures))
}

/// An error in Google's shape: `{"error":{"code","message","status"}}`.
fn google_error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        500..=599 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    };
    (
        status,
        Json(json!({ "error": { "code": status.as_u16(), "message": message, "status": name } })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct AppendQuery {
    #[serde(rename = "valueInputOption")]
    value_input_option: Option<String>,
    #[serde(rename = "insertDataOption")]
    insert_data_option: Option<String>,
}

async fn append(
    State(sheets): State<SheetsStore>,
    State(tokens): State<TokenIssuer>,
    Path((spreadsheet_id, range_method)): Path<(String, String)>,
    Query(query): Query<AppendQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = handle(
        &sheets,
        &tokens,
        spreadsheet_id,
        &range_method,
        query,
        &headers,
        &body,
    );
    sheets
        .inner
        .lock()
        .statuses
        .push(response.status().as_u16());
    response
}

fn handle(
    sheets: &SheetsStore,
    tokens: &TokenIssuer,
    spreadsheet_id: String,
    range_method: &str,
    query: AppendQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // axum cannot match a parameter and a literal in one segment.
    let Some(range) = range_method.strip_suffix(":append") else {
        return google_error(StatusCode::NOT_FOUND, "Method not found.");
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| t == SHEETS_STATIC_TOKEN || tokens.is_valid(t)) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    if let Some((status, wait)) = sheets.inner.lock().failures.pop() {
        return with_retry_after(google_error(status, "Injected failure (mock)."), wait);
    }
    let value_input_option = query.value_input_option.unwrap_or_default();
    if !matches!(value_input_option.as_str(), "RAW" | "USER_ENTERED") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "'valueInputOption' is required (RAW or USER_ENTERED).",
        );
    }
    let insert_data_option = query
        .insert_data_option
        .unwrap_or_else(|| "OVERWRITE".into());
    if !matches!(insert_data_option.as_str(), "OVERWRITE" | "INSERT_ROWS") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "Invalid value for 'insertDataOption' (OVERWRITE or INSERT_ROWS).",
        );
    }
    let rows = match parse_rows(body) {
        Ok(rows) => rows,
        Err(message) => return google_error(StatusCode::BAD_REQUEST, message),
    };
    let mut inner = sheets.inner.lock();
    let before: usize = inner
        .appends
        .iter()
        .filter(|a| a.spreadsheet_id == spreadsheet_id && a.range == range)
        .map(|a| a.rows.len())
        .sum();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let sheet = range.split_once('!').map_or(range, |(sheet, _)| sheet);
    let updated_range = format!(
        "{sheet}!A{}:{}{}",
        before + 1,
        column_name(columns.max(1)),
        before + rows.len()
    );
    let answer = json!({
        "spreadsheetId": spreadsheet_id,
        "tableRange": format!("{sheet}!A1:{}{}", column_name(columns.max(1)), before.max(1)),
        "updates": {
            "spreadsheetId": spreadsheet_id,
            "updatedRange": updated_range,
            "updatedRows": rows.len(),
            "updatedColumns": columns,
            "updatedCells": rows.iter().map(Vec::len).sum::<usize>(),
        }
    });
    inner.appends.push(SheetsAppend {
        spreadsheet_id,
        range: range.to_owned(),
        value_input_option,
        insert_data_option,
        rows,
    });
    Json(answer).into_response()
}

/// The `values` of an append body: a list of rows, each a list of cells.
fn parse_rows(body: &[u8]) -> Result<Vec<Vec<Value>>, &'static str> {
    #[derive(Deserialize)]
    struct Body {
        values: Vec<Vec<Value>>,
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|_| "Invalid JSON payload: expected {\"values\": [[...], ...]}.")?;
    if body.values.is_empty() {
        return Err("Invalid values: no rows.");
    }
    Ok(body.values)
}

/// `1` → `A`, `26` → `Z`, `27` → `AA`.
fn column_name(mut n: usize) -> String {
    let mut name = Vec::new();
    while n > 0 {
        let digit = (n - 1) % 26;
        name.push(b'A' + digit as u8);
        n = (n - 1) / 26;
    }
    name.reverse();
    String::from_utf8(name).unwrap_or_default()
}

async fn queue_failure(State(sheets): State<SheetsStore>, body: Bytes) -> Response {
    queue_failure_from(&body, |failure| sheets.inner.lock().failures.push(failure))
}

async fn clear_failures(State(sheets): State<SheetsStore>) -> Json<Value> {
    Json(json!({ "cleared": sheets.inner.lock().failures.clear() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names() {
        let names: Vec<String> = [1, 9, 26, 27, 52, 703].map(column_name).to_vec();
        assert_eq!(names, ["A", "I", "Z", "AA", "AZ", "AAA"]);
    }
}
