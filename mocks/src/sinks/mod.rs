//! Fakes of the sinks the agent reports to: the Google Sheets API and the
//! Google OAuth token endpoint it needs.

use std::sync::Arc;

use axum::Router;
use axum::routing::post;

use crate::state::Shared;

pub(crate) mod sheets;
pub(crate) mod token;

/// The sinks' routes, relative to the server's root.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .nest("/sheets", sheets::routes())
        .route("/oauth2/token", post(token::token))
}

/// The sinks' control routes, relative to `/_control`.
pub(crate) fn control_routes() -> Router<Arc<Shared>> {
    Router::new().nest("/sheets", sheets::control_routes())
}
