//! The `spreadsheets.values.append` call: one request per batch of rows.

use std::time::Duration;

use callguard_core::ServiceError;
use callguard_core::http::transport_error;
use reqwest::Url;

use crate::auth::Auth;
use crate::http::accepted;
use crate::row::Row;

/// Appends rows to one range of one spreadsheet.
pub(crate) struct SheetsClient {
    http: reqwest::Client,
    url: Url,
    pub(crate) auth: Auth,
    timeout: Duration,
}

#[derive(serde::Serialize)]
struct AppendBody<'a> {
    values: &'a [Row],
}

impl SheetsClient {
    pub(crate) fn new(
        http: reqwest::Client,
        api_base: &Url,
        spreadsheet_id: &str,
        range: &str,
        auth: Auth,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            url: append_url(api_base, spreadsheet_id, range),
            auth,
            timeout,
        }
    }

    /// Sends `rows` as one append request.
    pub(crate) async fn append(&mut self, rows: &[Row]) -> Result<(), ServiceError> {
        let token = self.auth.token(&self.http, self.timeout).await?;
        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .bearer_auth(token.expose())
            .json(&AppendBody { values: rows })
            .send()
            .await
            .map_err(transport_error)?;
        accepted(response, "append refused").await.map(drop)
    }
}

/// `{api_base}/v4/spreadsheets/{id}/values/{range}:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS`,
/// the id and range percent-encoded as path segments.
fn append_url(api_base: &Url, spreadsheet_id: &str, range: &str) -> Url {
    let mut url = api_base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend([
            "v4",
            "spreadsheets",
            spreadsheet_id,
            "values",
            &format!("{range}:append"),
        ]);
    }
    url.query_pairs_mut()
        .clear()
        .append_pair("valueInputOption", "RAW")
        .append_pair("insertDataOption", "INSERT_ROWS");
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_url_follows_the_api() {
        let base = Url::parse("https://sheets.googleapis.com").unwrap();
        assert_eq!(
            append_url(&base, "abc123", "Logs!A1").as_str(),
            "https://sheets.googleapis.com/v4/spreadsheets/abc123/values/Logs!A1:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS"
        );
        let base = Url::parse("http://127.0.0.1:8080/sheets/").unwrap();
        assert_eq!(
            append_url(&base, "id", "My Logs/2!A1").as_str(),
            "http://127.0.0.1:8080/sheets/v4/spreadsheets/id/values/My%20Logs%2F2!A1:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS"
        );
    }
}
