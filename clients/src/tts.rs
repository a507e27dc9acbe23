//! The ElevenLabs text-to-speech client:
//! `POST {base}/v1/text-to-speech/{voice_id}` with `xi-api-key`, audio back.

use std::fmt;

use callguard_core::{ErrorKind, ServiceError, ValidationError};
use serde::{Deserialize, Serialize};

use crate::http::{Answered, HttpService, KeyHeader, Reply};
use crate::{ClientSetupError, HttpServiceConfig, RequestContext};

/// The keys of a TTS service beside the common [`HttpServiceConfig`] ones:
/// the voice and the model.
///
/// ```toml
/// [services.elevenlabs]
/// base_url = "https://api.elevenlabs.io"
/// api_key_env = "ELEVENLABS_API_KEY"
/// voice_id = "21m00Tcm4TlvDq8ikWAM"
/// model_id = "eleven_multilingual_v2"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsSettings {
    /// The ElevenLabs voice; default [`TtsSettings::DEFAULT_VOICE_ID`] ("Rachel").
    pub voice_id: String,
    /// The ElevenLabs model; default [`TtsSettings::DEFAULT_MODEL_ID`].
    pub model_id: String,
}

impl Default for TtsSettings {
    fn default() -> Self {
        Self {
            voice_id: Self::DEFAULT_VOICE_ID.to_owned(),
            model_id: Self::DEFAULT_MODEL_ID.to_owned(),
        }
    }
}

impl TtsSettings {
    /// Default `voice_id`.
    pub const DEFAULT_VOICE_ID: &'static str = "21m00Tcm4TlvDq8ikWAM";
    /// Default `model_id`.
    pub const DEFAULT_MODEL_ID: &'static str = "eleven_multilingual_v2";

    /// Checks both keys; the voice id becomes a path segment, so it is
    /// limited to letters, digits, `-` and `_`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let path_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.voice_id.is_empty() || !self.voice_id.chars().all(path_safe) {
            return Err(ValidationError::new(
                "voice_id",
                format!("{:?}", self.voice_id),
                "a non-empty id of letters, digits, '-' and '_'",
            ));
        }
        if self.model_id.trim().is_empty() {
            return Err(ValidationError::new(
                "model_id",
                "\"\"",
                "a non-empty model id",
            ));
        }
        Ok(())
    }
}

/// Speech returned by the TTS service.
#[derive(Clone, PartialEq, Eq)]
pub struct Audio {
    /// The answer's content type, e.g. `audio/mpeg`.
    pub content_type: String,
    /// The encoded audio, never empty.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Audio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Audio")
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// The request body ElevenLabs expects.
#[derive(Serialize)]
struct SpeechRequest<'a> {
    text: &'a str,
    model_id: &'a str,
}

/// A client of the ElevenLabs text-to-speech API.
#[derive(Debug)]
pub struct TtsClient {
    http: HttpService,
    url: String,
    model_id: String,
}

impl TtsClient {
    /// Checks `http` and `settings`, resolves the key and builds the client.
    pub fn new(http: &HttpServiceConfig, settings: &TtsSettings) -> Result<Self, ClientSetupError> {
        settings.validate()?;
        let http = HttpService::new(http, KeyHeader::Named("xi-api-key"))?;
        let url = format!(
            "{}/v1/text-to-speech/{}",
            http.base_url(),
            settings.voice_id
        );
        Ok(Self {
            http,
            url,
            model_id: settings.model_id.clone(),
        })
    }

    /// Speaks `text`: the audio, or a classified error, with the answer's
    /// limit headers. A `200` whose body is empty or not `audio/*` is a
    /// [`ErrorKind::BadResponse`].
    pub async fn synthesize(&self, context: RequestContext<'_>, text: &str) -> Answered<Audio> {
        let body = SpeechRequest {
            text,
            model_id: &self.model_id,
        };
        let request = self
            .http
            .post(&self.url, context)
            .header(reqwest::header::ACCEPT, "audio/mpeg")
            .json(&body);
        self.http.send(request).await.and_then(audio)
    }
}

/// The audio of a `200`.
fn audio(reply: Reply) -> Result<Audio, ServiceError> {
    let content_type = reply.content_type.unwrap_or_default();
    let is_audio = content_type
        .get(..6)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("audio/"));
    if !is_audio {
        return Err(ServiceError::new(
            ErrorKind::BadResponse,
            format!(
                "expected audio, got {:?} ({} bytes)",
                content_type,
                reply.body.len()
            ),
        ));
    }
    if reply.body.is_empty() {
        return Err(ServiceError::new(
            ErrorKind::BadResponse,
            "the audio body is empty",
        ));
    }
    Ok(Audio {
        content_type,
        bytes: reply.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_not_given() {
        let settings: TtsSettings = serde_json::from_str(r#"{"voice_id":"v1"}"#).unwrap();
        assert_eq!(settings.voice_id, "v1");
        assert_eq!(settings.model_id, TtsSettings::DEFAULT_MODEL_ID);
        settings.validate().unwrap();
        let err = serde_json::from_str::<TtsSettings>(r#"{"voice":"v"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `voice`"), "{err}");
    }

    #[test]
    fn voice_ids_must_be_path_safe() {
        let settings = TtsSettings {
            voice_id: "../admin".into(),
            ..TtsSettings::default()
        };
        assert_eq!(settings.validate().unwrap_err().key, "voice_id");
        let err = TtsClient::new(&HttpServiceConfig::new("http://x", "k"), &settings)
            .unwrap_err()
            .in_section("services.elevenlabs");
        assert!(
            err.to_string()
                .starts_with("services.elevenlabs.voice_id must be"),
            "{err}"
        );
    }
}
