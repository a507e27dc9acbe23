//! The CRM client: `POST {base}/v1/calls` with a bearer key stores one call
//! record per contact, made safe to repeat by an `Idempotency-Key`.
//!
//! The key is `callguard-<contact id>`: the same for every attempt and every
//! retry of one contact's write, and across restarts of the agent, so a write
//! whose answer was lost (timeout, reset, crash before the state was saved)
//! can be sent again without creating a second record. A CRM that honours the
//! header answers a repeat with the record it already holds, and a key
//! already used with a different body with `422 idempotency_key_reused`: the
//! contact's call was recorded by an earlier pass (one whose final state was
//! never saved, the agent having crashed after the write), so that answer is
//! [`Recorded::Earlier`], not an error. The flip side: a
//! contact gets one record for good, so re-calling the same contact id in a
//! later campaign needs a new id (or a CRM that scopes keys in time, as most
//! expire them after a day or so).

use std::fmt;
use std::time::SystemTime;

use callguard_core::text::truncate_chars;
use callguard_core::{ErrorKind, ServiceError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::http::{Answered, HttpService, KeyHeader};
use crate::{ClientSetupError, Contact, HttpServiceConfig, RequestContext};

/// The header that makes a `POST /v1/calls` safe to repeat.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// How a call ended, as the CRM records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallOutcome {
    /// Script written and spoken.
    Completed,
    /// Stopped by a permanent error (see the record's `error`).
    Failed,
    /// Deferred too often while a service was down.
    Expired,
}

/// The record of one call, as posted to the CRM.
///
/// ```json
/// {"contact_id":"c-001","name":"Ada Lovelace","phone":"+1-555-0100","outcome":"completed",
///  "started_at":"2025-01-01T10:00:00.000Z","finished_at":"2025-01-01T10:00:02.480Z",
///  "script_excerpt":"Hello Ada, …","audio_bytes":5626}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The contact's id.
    pub contact_id: String,
    /// The contact's name.
    pub name: String,
    /// The number called.
    pub phone: String,
    /// How the call ended.
    pub outcome: CallOutcome,
    /// When work on the contact started (RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    pub started_at: SystemTime,
    /// When it ended.
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    pub finished_at: SystemTime,
    /// The start of the script, at most [`CallRecord::SCRIPT_EXCERPT_CHARS`]
    /// characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_excerpt: Option<String>,
    /// Length of the spoken audio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_bytes: Option<u64>,
    /// Why the call failed or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CallRecord {
    /// Longest script excerpt kept in a record, in characters.
    pub const SCRIPT_EXCERPT_CHARS: usize = 200;

    /// A record of a call to `contact` with no script, audio or error yet.
    pub fn new(
        contact: &Contact,
        outcome: CallOutcome,
        started_at: SystemTime,
        finished_at: SystemTime,
    ) -> Self {
        Self {
            contact_id: contact.id.clone(),
            name: contact.name.clone(),
            phone: contact.phone.clone(),
            outcome,
            started_at,
            finished_at,
            script_excerpt: None,
            audio_bytes: None,
            error: None,
        }
    }

    /// Keeps the start of `script`.
    #[must_use]
    pub fn with_script(mut self, script: &str) -> Self {
        self.script_excerpt = Some(truncate_chars(script, Self::SCRIPT_EXCERPT_CHARS));
        self
    }

    /// Records the audio's length.
    #[must_use]
    pub fn with_audio_bytes(mut self, bytes: u64) -> Self {
        self.audio_bytes = Some(bytes);
        self
    }

    /// Records why the call did not complete.
    #[must_use]
    pub fn with_error(mut self, error: impl fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// The `Idempotency-Key` of this contact's record: `callguard-<contact id>`
    /// (see the module docs for why one key per contact).
    pub fn idempotency_key(&self) -> String {
        format!("callguard-{}", self.contact_id)
    }
}

fn rfc3339<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*at))
}

/// Reads a time written by `rfc3339` back (a record kept in the call store).
fn from_rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

/// The part of the CRM's answer the agent reads.
#[derive(Deserialize)]
struct Created {
    id: String,
}

/// The part of a CRM error body the agent reads: `{"error": {"code": …}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorCode,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: String,
}

/// The CRM's error code for an idempotency key already used with another body.
const KEY_REUSED: &str = "idempotency_key_reused";

/// How the CRM holds a contact's call record after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Stored by this write, or by an earlier one with the same body: the
    /// record's id.
    Stored(String),
    /// An earlier pass wrote the contact's record with another body (its
    /// script and times); the CRM keeps that one and created nothing new.
    Earlier,
}

impl Recorded {
    /// The record's id, when the CRM gave it.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Stored(id) => Some(id),
            Self::Earlier => None,
        }
    }
}

/// A client of the CRM's call-record API.
#[derive(Debug)]
pub struct CrmClient {
    http: HttpService,
    url: String,
}

impl CrmClient {
    /// Checks `config`, resolves its key and builds the client.
    pub fn new(config: &HttpServiceConfig) -> Result<Self, ClientSetupError> {
        let http = HttpService::new(config, KeyHeader::Bearer)?;
        let url = format!("{}/v1/calls", http.base_url());
        Ok(Self { http, url })
    }

    /// Stores `record` (with its [`CallRecord::idempotency_key`]) and says
    /// how the CRM holds it, with the answer's limit headers: a repeat
    /// answers the id of the first write, and a key an earlier pass used with
    /// another body is [`Recorded::Earlier`].
    pub async fn record_call(
        &self,
        context: RequestContext<'_>,
        record: &CallRecord,
    ) -> Answered<Recorded> {
        let request = self
            .http
            .post(&self.url, context)
            .header(IDEMPOTENCY_KEY_HEADER, record.idempotency_key())
            .json(record);
        self.http.exchange(request).await.and_then(|answer| {
            let created: Created = match answer {
                Ok(reply) => reply.json()?,
                Err(refusal) => {
                    let key_reused = refusal.error.status() == Some(422)
                        && serde_json::from_slice::<ErrorBody>(&refusal.body)
                            .is_ok_and(|body| body.error.code == KEY_REUSED);
                    return if key_reused {
                        Ok(Recorded::Earlier)
                    } else {
                        Err(refusal.error)
                    };
                }
            };
            if created.id.trim().is_empty() {
                return Err(ServiceError::new(
                    ErrorKind::BadResponse,
                    "the CRM answered an empty record id",
                ));
            }
            Ok(Recorded::Stored(created.id))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn records_serialize_with_rfc3339_times_and_without_empty_fields() {
        let contact = Contact {
            id: "c-9".into(),
            name: "Grace Hopper".into(),
            phone: "+1-555-0109".into(),
            extra: BTreeMap::new(),
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_735_725_600_250);
        let record = CallRecord::new(
            &contact,
            CallOutcome::Completed,
            start,
            start + Duration::from_secs(2),
        )
        .with_script(&"word ".repeat(100))
        .with_audio_bytes(4242);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["started_at"], "2025-01-01T10:00:00.250Z");
        assert_eq!(json["finished_at"], "2025-01-01T10:00:02.250Z");
        assert_eq!(json["outcome"], "completed");
        assert_eq!(json["audio_bytes"], 4242);
        assert_eq!(
            json["script_excerpt"].as_str().unwrap().chars().count(),
            201
        );
        assert!(json.get("error").is_none());
        assert_eq!(record.idempotency_key(), "callguard-c-9");
    }
}
