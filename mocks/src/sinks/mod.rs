//! Fakes of the sinks the agent reports to: the Google Sheets API and the
//! Google OAuth token endpoint it needs, the Telegram Bot API and a webhook
//! receiver for alerts.

use axum::Router;
use axum::extract::FromRef;
use axum::routing::post;

use self::sheets::SheetsStore;
use self::telegram::TelegramStore;
use self::token::TokenIssuer;
use self::webhook::WebhookStore;

pub(crate) mod failures;
pub(crate) mod sheets;
pub(crate) mod telegram;
pub(crate) mod token;
pub(crate) mod webhook;

/// The sinks' routes, relative to the server's root.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SheetsStore: FromRef<S>,
    TokenIssuer: FromRef<S>,
    TelegramStore: FromRef<S>,
    WebhookStore: FromRef<S>,
{
    Router::new()
        .nest("/sheets", sheets::routes())
        .route("/oauth2/token", post(token::token))
        .nest("/telegram", telegram::routes())
        .nest("/webhook", webhook::routes())
}

/// The sinks' control routes, relative to `/_control`.
pub(crate) fn control_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SheetsStore: FromRef<S>,
    TelegramStore: FromRef<S>,
    WebhookStore: FromRef<S>,
{
    Router::new()
        .nest("/sheets", sheets::control_routes())
        .nest("/telegram", telegram::control_routes())
        .nest("/webhook", webhook::control_routes())
}

/// For the sinks' tests: sends `request` and reads its answer's JSON body.
#[cfg(test)]
pub(crate) async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}
