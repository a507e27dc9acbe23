//! Fake ElevenLabs text-to-speech: `POST /v1/text-to-speech/{voice_id}`
//! answers a short, plausible MP3 whose length grows with the text.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::Service;
use crate::state::Shared;

/// The API routes, relative to `/elevenlabs`.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/text-to-speech/{voice_id}", post(speak))
}

async fn speak(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(denied) = Service::Elevenlabs.deny(&headers, &shared.config.keys) {
        return denied;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return Service::Elevenlabs.error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("The request body is not valid JSON: {e}"),
            );
        }
    };
    let text = match request.get("text") {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) => {
            return unprocessable(
                "text",
                "String should have at least 1 character",
                "string_too_short",
            );
        }
        Some(_) => return unprocessable("text", "Input should be a valid string", "string_type"),
        None => return unprocessable("text", "Field required", "missing"),
    };
    if request.get("model_id").is_some_and(|m| !m.is_string()) {
        return unprocessable("model_id", "Input should be a valid string", "string_type");
    }
    ([(header::CONTENT_TYPE, "audio/mpeg")], fake_mp3(text)).into_response()
}

/// A FastAPI-style validation error, as ElevenLabs sends for a bad field.
fn unprocessable(field: &str, msg: &str, kind: &str) -> Response {
    let body = json!({ "detail": [{ "loc": ["body", field], "msg": msg, "type": kind }] });
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// An ID3v2 header followed by MPEG-1 Layer III frames (32 kbit/s, 44.1 kHz,
/// mono: 104 bytes each) of silence, two plus one per ten characters of text.
pub(crate) fn fake_mp3(text: &str) -> Vec<u8> {
    const ID3: [u8; 10] = *b"ID3\x04\x00\x00\x00\x00\x00\x00";
    const FRAME_HEADER: [u8; 4] = [0xFF, 0xFB, 0x10, 0xC4];
    const FRAME_LEN: usize = 104;
    let frames = 2 + text.chars().count() / 10;
    let mut audio = Vec::with_capacity(ID3.len() + frames * FRAME_LEN);
    audio.extend_from_slice(&ID3);
    for _ in 0..frames {
        audio.extend_from_slice(&FRAME_HEADER);
        audio.resize(audio.len() + FRAME_LEN - FRAME_HEADER.len(), 0);
    }
    audio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_framed_and_grows_with_the_text() {
        let short = fake_mp3("Hi");
        let long = fake_mp3(&"Hello there. ".repeat(10));
        assert!(short.starts_with(b"ID3"));
        assert_eq!(&short[10..12], &[0xFF, 0xFB]);
        assert_eq!(short.len(), 10 + 2 * 104);
        assert_eq!(long.len(), 10 + 15 * 104);
    }
}
