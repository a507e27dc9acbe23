//! The OpenAI-compatible LLM client (`POST {base}/v1/chat/completions` with a
//! bearer key) and the prompt that asks it for a contact's call script.

use std::fmt::Write as _;

use callguard_core::config::at_least;
use callguard_core::{ErrorKind, ServiceError, ValidationError};
use serde::{Deserialize, Serialize};

use crate::http::{Answered, HttpService, KeyHeader};
use crate::{ClientSetupError, Contact, HttpServiceConfig, RequestContext};

/// The keys of an LLM service beside the common [`HttpServiceConfig`] ones:
/// the model and the length of the answer.
///
/// ```toml
/// [services.llm]
/// base_url = "https://api.openai.com"
/// api_key_env = "OPENAI_API_KEY"
/// model = "gpt-4o-mini"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmSettings {
    /// The chat model; default [`LlmSettings::DEFAULT_MODEL`].
    pub model: String,
    /// Longest script, in tokens; default [`LlmSettings::DEFAULT_MAX_TOKENS`].
    pub max_tokens: u32,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            model: Self::DEFAULT_MODEL.to_owned(),
            max_tokens: Self::DEFAULT_MAX_TOKENS,
        }
    }
}

impl LlmSettings {
    /// Default `model`.
    pub const DEFAULT_MODEL: &'static str = "gpt-4o-mini";
    /// Default `max_tokens`: room for a script of about 150 words.
    pub const DEFAULT_MAX_TOKENS: u32 = 300;

    /// Checks both keys.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.model.trim().is_empty() {
            return Err(ValidationError::new(
                "model",
                "\"\"",
                "a non-empty model name",
            ));
        }
        at_least("max_tokens", self.max_tokens, 1)
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

/// The chat-completions request body.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 2],
    max_tokens: u32,
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
    max_tokens: u32,
}

impl LlmClient {
    /// Checks `http` and `settings`, resolves the key and builds the client.
    pub fn new(http: &HttpServiceConfig, settings: &LlmSettings) -> Result<Self, ClientSetupError> {
        settings.validate()?;
        let http = HttpService::new(http, KeyHeader::Bearer)?;
        let url = format!("{}/v1/chat/completions", http.base_url());
        Ok(Self {
            http,
            url,
            model: settings.model.clone(),
            max_tokens: settings.max_tokens,
        })
    }

    /// Asks for a script: `choices[0].message.content`, trimmed. An answer
    /// without choices or with empty content is a [`ErrorKind::BadResponse`].
    pub async fn generate_script(
        &self,
        context: RequestContext<'_>,
        prompt: &Prompt,
    ) -> Result<String, ServiceError> {
        self.generate_script_answered(context, prompt).await.result
    }

    /// [`generate_script`](Self::generate_script), with the answer's limit headers.
    pub async fn generate_script_answered(
        &self,
        context: RequestContext<'_>,
        prompt: &Prompt,
    ) -> Answered<String> {
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
            max_tokens: self.max_tokens,
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
        assert_eq!(settings.model, "gpt-4o-mini");
        assert_eq!(settings.max_tokens, 300);
        settings.validate().unwrap();
        let zero = LlmSettings {
            max_tokens: 0,
            ..settings
        };
        assert_eq!(zero.validate().unwrap_err().key, "max_tokens");
        let unnamed = LlmSettings {
            model: " ".into(),
            ..LlmSettings::default()
        };
        assert_eq!(unnamed.validate().unwrap_err().key, "model");
    }
}
