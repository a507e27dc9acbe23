//! Excerpts of error answers for error details (transport failures are
//! classified by `callguard_core::http`, which strips URLs).

/// Longest excerpt of an error body kept in an error's detail.
const EXCERPT_CHARS: usize = 200;

/// The start of an error answer's body on one line, for the error's detail.
pub(crate) async fn read_error_excerpt(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}
