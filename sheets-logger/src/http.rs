//! Answers of the Sheets and token endpoints: a refusal is classified, and the
//! start of its body goes into the error's detail (transport failures are
//! classified by `callguard_core::http`, which strips URLs).

use callguard_core::ServiceError;
use callguard_core::http::{classify_response, read_body_up_to};
use callguard_core::text::one_line_excerpt;

/// Longest excerpt of an error body kept in an error's detail.
const EXCERPT_CHARS: usize = 200;
/// Most bytes read from an error body to make that excerpt.
const ERROR_BODY_BYTES: usize = 4 * 1024;

/// `response` when its status is 2xx; otherwise the error the status stands
/// for (honouring `Retry-After`), its detail naming `what` was refused and
/// the server's reason.
pub(crate) async fn accepted(
    response: reqwest::Response,
    what: &str,
) -> Result<reqwest::Response, ServiceError> {
    let Some(error) = classify_response(&response) else {
        return Ok(response);
    };
    let excerpt = read_error_excerpt(response).await;
    Err(explained(error, what, &excerpt))
}

/// The start of an error answer's body on one line, for the error's detail
/// (a body that cannot be read leaves it empty: it only explains).
async fn read_error_excerpt(response: reqwest::Response) -> String {
    let (body, _) = read_body_up_to(response, ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    one_line_excerpt(&String::from_utf8_lossy(&body), EXCERPT_CHARS)
}

/// `error` with a detail naming what was refused and the server's reason.
fn explained(error: ServiceError, what: &str, excerpt: &str) -> ServiceError {
    let detail = format!("{what}: {}", error.detail());
    error.with_detail(detail).with_reason(excerpt)
}
