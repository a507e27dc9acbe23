//! The OpenAI-compatible LLM client (`POST {base}{chat_path}`, by default
//! `/v1/chat/completions`) and the prompt that asks it for a contact's call
//! script.
//!
//! One client serves the providers that speak OpenAI's chat-completions
//! shape: OpenAI itself, Azure OpenAI (a deployment's path, an `api-version`
//! query parameter and an `api-key` header), Gemini's OpenAI endpoint
//! (`/v1beta/openai/chat/completions`) and local servers such as vLLM and
//! Ollama. The answer's length goes in `max_completion_tokens`, the field
//! OpenAI's current models require (they refuse the deprecated `max_tokens`
//! with a `400 unsupported_parameter`); `token_limit_param = "max_tokens"`
//! sends the old field for a server that knows only that one.

use std::fmt::Write as _;

use callguard_core::config::at_least;
use callguard_core::{ErrorKind, ServiceError, ValidationError};
use serde::{Deserialize, Serialize};

use crate::http::{Answered, HttpService, KeyHeader};
use crate::{ClientSetupError, Contact, HttpServiceConfig, RequestContext};

/// The keys of an LLM service beside the common [`HttpServiceConfig`] ones:
/// the model, the length of the answer and how the provider wants the
/// request.
///
/// ```toml
/// [services.llm]
/// base_url = "https://api.openai.com"
/// api_key_env = "OPENAI_API_KEY"
/// model = "gpt-4o-mini"
/// max_completion_tokens = 300
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// The chat model; default [`LlmSettings::DEFAULT_MODEL`]. Azure OpenAI's
    /// deployment path names the model itself and ignores this.
    pub model: String,
    /// Longest script, in tokens; default [`LlmSettings::DEFAULT_MAX_COMPLETION_TOKENS`].
    pub max_completion_tokens: u32,
    /// The request field that carries `max_completion_tokens`.
    pub token_limit_param: TokenLimitParam,
    /// The chat-completions path under `base_url`; default
    /// [`LlmSettings::DEFAULT_CHAT_PATH`].
    pub chat_path: String,
    /// Sent as the `api-version` query parameter when set (Azure OpenAI's
    /// deployment API requires one).
    pub api_version: Option<String>,
    /// How the key is sent.
    pub auth: LlmAuth,
}

/// The request field that limits the answer's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenLimitParam {
    /// `max_completion_tokens`: OpenAI's current field, which every current
    /// model takes (and o-series and GPT-5 class models require).
    #[default]
    MaxCompletionTokens,
    /// `max_tokens`: deprecated by OpenAI and refused by its newer models;
    /// for an OpenAI-compatible server that does not know the new field.
    MaxTokens,
}

/// How an LLM service wants its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LlmAuth {
    /// `Authorization: Bearer KEY` (OpenAI, Gemini, vLLM, Ollama).
    #[default]
    Bearer,
    /// `api-key: KEY` (Azure OpenAI).
    ApiKey,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            model: Self::DEFAULT_MODEL.to_owned(),
            max_completion_tokens: Self::DEFAULT_MAX_COMPLETION_TOKENS,
            token_limit_param: TokenLimitParam::default(),
            chat_path: Self::DEFAULT_CHAT_PATH.to_owned(),
            api_version: None,
            auth: LlmAuth::default(),
        }
    }
}

impl LlmSettings {
    /// Default `model`.
    pub const DEFAULT_MODEL: &'static str = "gpt-4o-mini";
    /// Default `max_completion_tokens`: room for a script of about 150 words.
    pub const DEFAULT_MAX_COMPLETION_TOKENS: u32 = 300;
    /// Default `chat_path`: OpenAI's, which vLLM and Ollama serve too.
    pub const DEFAULT_CHAT_PATH: &'static str = "/v1/chat/completions";

    /// Checks every key.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.model.trim().is_empty() {
            return Err(ValidationError::new(
                "model",
                "\"\"",
                "a non-empty model name",
            ));
        }
        at_least("max_completion_tokens", self.max_completion_tokens, 1)?;
        let path_char = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
        if !self.chat_path.starts_with('/')
            || !self.chat_path.chars().all(path_char)
            || self.chat_path.split('/').any(|segment| segment == "..")
        {
            return Err(ValidationError::new(
                "chat_path",
                format!("{:?}", self.chat_path),
                "a path starting with '/' of letters, digits, '-', '.', '_', '~' and '/', \
                 without '..' (no query: the API version goes in api_version)",
            ));
        }
        if let Some(version) = &self.api_version {
            let version_char = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
            if version.is_empty() || !version.chars().all(version_char) {
                return Err(ValidationError::new(
                    "api_version",
                    format!("{version:?}"),
                    "a non-empty version of letters, digits, '-', '.' and '_' (e.g. 2024-10-21)",
                ));
            }
        }
        Ok(())
    }

    /// The chat-completions URL under `base_url` (which has no trailing slash).
    fn chat_url(&self, base_url: &str) -> String {
        let mut url = format!("{base_url}{}", self.chat_path);
        if let Some(version) = &self.api_version {
            // Checked: the version needs no escaping.
            let _ = write!(url, "?api-version={version}");
        }
        url
    }
}

/// What the LLM is asked: the system instructions and the user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// How the model should behave.
    pub system: String,
    /// What it should write.
    pub user: String,
}

impl Prompt {
    /// The system instructions every call script is written under.
    pub const SYSTEM: &'static str = "You are a friendly, concise phone agent. Write the words \
        you will say when the person answers: greet them by name, say briefly why you are \
        calling, and ask one question. Plain spoken text only, no stage directions, under \
        80 words.";

    /// The prompt for a call to `contact`: the name and the contact's extra
    /// fields (company, reason, …), never the phone number, which the model
    /// does not need.
    pub fn for_contact(contact: &Contact) -> Self {
        let mut user = format!(
            "Write the opening of a phone call to this contact.\nName: {}",
            contact.name.trim()
        );
        for (key, value) in &contact.extra {
            // Writing to a String cannot fail.
            let _ = write!(user, "\n{key}: {value}");
        }
        Self {
            system: Self::SYSTEM.to_owned(),
            user,
        }
    }
}

/// The chat-completions request body: the length goes in one of the two
/// token fields, the other is left out.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// The part of a chat-completions answer the agent reads.
#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AnswerMessage,
}

#[derive(Deserialize)]
struct AnswerMessage {
    #[serde(default)]
    content: Option<String>,
}

/// A client of an OpenAI-compatible chat-completions API.
#[derive(Debug)]
pub struct LlmClient {
    http: HttpService,
    url: String,
    model: String,
    max_completion_tokens: u32,
    token_limit_param: TokenLimitParam,
}

impl LlmClient {
    /// Checks `http` and `settings`, resolves the key and builds the client.
    pub fn new(http: &HttpServiceConfig, settings: &LlmSettings) -> Result<Self, ClientSetupError> {
        settings.validate()?;
        let key_header = match settings.auth {
            LlmAuth::Bearer => KeyHeader::Bearer,
            LlmAuth::ApiKey => KeyHeader::Named("api-key"),
        };
        let http = HttpService::new(http, key_header)?;
        let url = settings.chat_url(http.base_url());
        Ok(Self {
            http,
            url,
            model: settings.model.clone(),
            max_completion_tokens: settings.max_completion_tokens,
            token_limit_param: settings.token_limit_param,
        })
    }

    /// Asks for a script: `choices[0].message.content`, trimmed, or a
    /// classified error, with the answer's limit headers. An answer without
    /// choices or with empty content is a [`ErrorKind::BadResponse`].
    pub async fn generate_script(
        &self,
        context: RequestContext<'_>,
        prompt: &Prompt,
    ) -> Answered<String> {
        let limit = Some(self.max_completion_tokens);
        let (max_completion_tokens, max_tokens) = match self.token_limit_param {
            TokenLimitParam::MaxCompletionTokens => (limit, None),
            TokenLimitParam::MaxTokens => (None, limit),
        };
        let body = ChatRequest {
            model: &self.model,
            messages: [
                ChatMessage {
                    role: "system",
                    content: &prompt.system,
                },
                ChatMessage {
                    role: "user",
                    content: &prompt.user,
                },
            ],
            max_completion_tokens,
            max_tokens,
        };
        let request = self.http.post(&self.url, context).json(&body);
        self.http.send(request).await.and_then(|reply| {
            let answer: ChatResponse = reply.json()?;
            answer
                .choices
                .into_iter()
                .next()
                .and_then(|choice| choice.message.content)
                .map(|content| content.trim().to_owned())
                .filter(|script| !script.is_empty())
                .ok_or_else(|| {
                    ServiceError::new(
                        ErrorKind::BadResponse,
                        "the completion has no choices[0].message.content",
                    )
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_prompt_names_the_contact_and_its_details_but_not_the_phone() {
        let contact = Contact {
            id: "c-1".into(),
            name: "Ada Lovelace".into(),
            phone: "+1-555-0100".into(),
            extra: BTreeMap::from([("company".into(), "Analytical Engines".into())]),
        };
        let prompt = Prompt::for_contact(&contact);
        assert_eq!(prompt.system, Prompt::SYSTEM);
        assert_eq!(
            prompt.user,
            "Write the opening of a phone call to this contact.\nName: Ada Lovelace\ncompany: Analytical Engines"
        );
        assert!(!prompt.user.contains("555"));
    }

    #[test]
    fn settings_defaults_and_checks() {
        let settings: LlmSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, LlmSettings::default());
        assert_eq!(settings.model, "gpt-4o-mini");
        assert_eq!(settings.max_completion_tokens, 300);
        assert_eq!(
            settings.token_limit_param,
            TokenLimitParam::MaxCompletionTokens
        );
        assert_eq!(
            settings.chat_url("https://api.openai.com"),
            "https://api.openai.com/v1/chat/completions"
        );
        settings.validate().unwrap();
        let zero = LlmSettings {
            max_completion_tokens: 0,
            ..LlmSettings::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "max_completion_tokens must be ≥ 1, got 0"
        );
        let unnamed = LlmSettings {
            model: " ".into(),
            ..LlmSettings::default()
        };
        assert_eq!(unnamed.validate().unwrap_err().key, "model");
    }

    #[test]
    fn provider_shapes_are_read_from_their_keys() {
        let azure: LlmSettings = serde_json::from_str(
            r#"{"chat_path":"/openai/deployments/gpt-4o-mini/chat/completions",
                "api_version":"2024-10-21","auth":"api-key","token_limit_param":"max_tokens"}"#,
        )
        .unwrap();
        azure.validate().unwrap();
        assert_eq!(azure.auth, LlmAuth::ApiKey);
        assert_eq!(azure.token_limit_param, TokenLimitParam::MaxTokens);
        assert_eq!(
            azure.chat_url("https://r.openai.azure.com"),
            "https://r.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        );
        let err = serde_json::from_str::<LlmSettings>(r#"{"auth":"basic"}"#).unwrap_err();
        assert!(err.to_string().contains("bearer"), "{err}");
    }

    #[test]
    fn a_bad_path_or_version_is_refused_with_key_value_and_rule() {
        for path in ["v1/chat", "/v1/chat?x=1", "/a/../admin", "/a b", ""] {
            let settings = LlmSettings {
                chat_path: path.into(),
                ..LlmSettings::default()
            };
            let err = settings.validate().unwrap_err();
            assert_eq!(err.key, "chat_path", "{path}");
            assert!(err.to_string().contains(&format!("{path:?}")), "{err}");
        }
        let settings = LlmSettings {
            api_version: Some("2024-10-21&x=1".into()),
            ..LlmSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "api_version must be a non-empty version of letters, digits, '-', '.' and '_' \
             (e.g. 2024-10-21), got \"2024-10-21&x=1\""
        );
    }
}
