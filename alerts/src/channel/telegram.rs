//! The Telegram channel: `POST {api_base}/bot{token}/sendMessage` with
//! `{chat_id, text}` in plain text, texts over 4096 characters split at line
//! breaks, a 429's `parameters.retry_after` honoured.
//!
//! The token is part of the URL, so nothing that may print a URL is ever
//! logged or returned: reqwest errors lose theirs (`without_url`), and any
//! detail that still contained the token would have it masked.

use std::time::Duration;

use callguard_core::{Secret, ServiceError};

use super::http::{self, Answer};
use super::{Channel, ChannelKind, Sending};
use crate::config::TelegramConfig;
use crate::{Alert, AlertsError};

/// Longest message the Bot API accepts, in UTF-16 code units (its "characters").
pub const TELEGRAM_MESSAGE_LIMIT: usize = 4096;

pub(crate) struct Telegram {
    client: reqwest::Client,
    /// `{api_base}/bot{token}/sendMessage`: holds the token, never printed.
    endpoint: Secret,
    token: Secret,
    chat_id: String,
}

impl Telegram {
    pub(crate) fn new(config: &TelegramConfig) -> Result<Self, AlertsError> {
        let base = config.api_base.trim_end_matches('/');
        let endpoint = format!("{base}/bot{}/sendMessage", config.bot_token.expose());
        Ok(Self {
            client: http::client(config.timeout.get()).map_err(|e| AlertsError::Client {
                channel: ChannelKind::Telegram,
                reason: e,
            })?,
            endpoint: Secret::new(endpoint),
            token: config.bot_token.clone(),
            chat_id: config.chat_id.clone(),
        })
    }

    async fn send_text(&self, text: &str) -> Result<(), ServiceError> {
        let body = serde_json::json!({ "chat_id": self.chat_id, "text": text });
        let request = self.client.post(self.endpoint.expose()).json(&body);
        let Answer { error, body } = http::send(request).await.map_err(|e| self.mask(e))?;
        match error {
            None => Ok(()),
            Some(error) => Err(self.mask(describe(&error, &body))),
        }
    }

    /// `error` with the token masked out of its detail, should it be there.
    fn mask(&self, error: ServiceError) -> ServiceError {
        let token = self.token.expose();
        if token.is_empty() || !error.detail().contains(token) {
            return error;
        }
        let masked = error.detail().replace(token, "[redacted]");
        error.with_detail(masked)
    }
}

/// Adds the Bot API's `description` to `error`, and its
/// `parameters.retry_after` (seconds) as the wait.
fn describe(error: &ServiceError, body: &[u8]) -> ServiceError {
    #[derive(serde::Deserialize)]
    struct Reply {
        description: Option<String>,
        parameters: Option<Parameters>,
    }
    #[derive(serde::Deserialize)]
    struct Parameters {
        retry_after: Option<u64>,
    }
    let (reason, wait) = match serde_json::from_slice::<Reply>(body) {
        Ok(reply) => (
            reply.description.unwrap_or_default(),
            reply
                .parameters
                .and_then(|p| p.retry_after)
                .map(Duration::from_secs),
        ),
        Err(_) => (String::from_utf8_lossy(body).into_owned(), None),
    };
    http::amend(error, &reason, wait)
}

impl Channel for Telegram {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    fn parts(&self, alert: &Alert) -> usize {
        split_message(&message(alert), TELEGRAM_MESSAGE_LIMIT).len()
    }

    fn send<'a>(&'a self, alert: &'a Alert, part: usize) -> Sending<'a> {
        Box::pin(async move {
            let text = message(alert);
            let parts = split_message(&text, TELEGRAM_MESSAGE_LIMIT);
            match parts.get(part) {
                Some(piece) => self.send_text(piece).await,
                None => Ok(()),
            }
        })
    }
}

/// The message: the subject line, a blank line, the body.
fn message(alert: &Alert) -> String {
    format!("{}\n\n{}", alert.subject(), alert.text())
}

/// Splits `text` into pieces of at most `limit` UTF-16 code units, at a line
/// break when one falls in the second half of a piece, else at a character.
pub(crate) fn split_message(text: &str, limit: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.encode_utf16().count() > limit {
        let mut units = 0;
        let mut cut = 0;
        let mut line_end = None;
        for (i, c) in rest.char_indices() {
            units += c.len_utf16();
            if units > limit {
                break;
            }
            cut = i + c.len_utf8();
            if c == '\n' {
                line_end = Some(cut);
            }
        }
        let cut = line_end.filter(|&end| end > cut / 2).unwrap_or(cut);
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(rest);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_one_piece() {
        assert_eq!(split_message("hello", 4096), ["hello"]);
    }

    #[test]
    fn long_texts_split_at_line_breaks_when_they_can() {
        let text = format!("{}\n{}", "a".repeat(3000), "b".repeat(3000));
        let pieces = split_message(&text, 4096);
        assert_eq!(
            pieces,
            [format!("{}\n", "a".repeat(3000)), "b".repeat(3000)]
        );
    }

    #[test]
    fn pieces_respect_the_limit_and_lose_nothing() {
        for text in [
            "x".repeat(5000),
            "é".repeat(9000),
            "😀".repeat(3000), // two UTF-16 units each
            format!("{}\n{}", "y".repeat(100), "z".repeat(8000)),
        ] {
            let pieces = split_message(&text, 4096);
            assert!(pieces.len() >= 2, "{}", pieces.len());
            for piece in &pieces {
                let units = piece.encode_utf16().count();
                assert!((1..=4096).contains(&units), "{units}");
            }
            assert_eq!(pieces.concat(), text);
        }
    }
}
