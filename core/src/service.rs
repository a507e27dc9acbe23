//! Service names: the one key shared by breakers, health checks, logs and metrics.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The name of an external service (`elevenlabs`, `llm`, `crm`, …).
///
/// Cheap to clone (a shared string) so that events and permits can carry it
/// without allocating. Names are non-empty, at most 64 bytes, and made of ASCII
/// lowercase letters, digits, `_` and `-`, so they are safe as metric labels,
/// gRPC health service names and config section names alike.
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct ServiceName(Arc<str>);

/// Equal names are most often clones of one name (a service's breaker,
/// executor and events share it): the same string is equal without reading
/// it, and other names are compared by their text.
impl PartialEq for ServiceName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

/// By the text, as equality is.
impl std::hash::Hash for ServiceName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// Why a string is not a valid [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceNameError {
    /// The name was empty.
    #[error("service name must not be empty")]
    Empty,
    /// The name was longer than [`ServiceName::MAX_LEN`].
    #[error("service name {name:?} is longer than 64 bytes")]
    TooLong {
        /// The rejected name.
        name: String,
    },
    /// The name contains a character outside `[a-z0-9_-]`.
    #[error("service name {name:?} may only contain a-z, 0-9, '_' and '-' (found {found:?})")]
    InvalidCharacter {
        /// The rejected name.
        name: String,
        /// The first offending character.
        found: char,
    },
}

impl ServiceName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps a service name.
    pub fn new(name: &str) -> Result<Self, ServiceNameError> {
        if name.is_empty() {
            return Err(ServiceNameError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(ServiceNameError::TooLong { name: name.into() });
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(ServiceNameError::InvalidCharacter {
                name: name.into(),
                found,
            });
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ServiceName {
    type Err = ServiceNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl serde::Serialize for ServiceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_default_service_names() {
        for name in ["elevenlabs", "llm", "crm", "tts_backup", "crm-eu-2"] {
            assert_eq!(ServiceName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_bad_names_with_the_reason() {
        assert_eq!(ServiceName::new(""), Err(ServiceNameError::Empty));
        assert!(matches!(
            ServiceName::new("Eleven Labs"),
            Err(ServiceNameError::InvalidCharacter { found: 'E', .. })
        ));
        assert!(matches!(
            ServiceName::new(&"a".repeat(65)),
            Err(ServiceNameError::TooLong { .. })
        ));
        let msg = ServiceName::new("tts/backup").unwrap_err().to_string();
        assert!(msg.contains("tts/backup") && msg.contains('/'), "{msg}");
    }

    #[test]
    fn names_are_equal_by_their_text_whether_made_apart_or_cloned() {
        use std::hash::BuildHasher;
        let tts = ServiceName::new("elevenlabs").unwrap();
        let made_apart = ServiceName::new("elevenlabs").unwrap();
        assert_eq!(tts, tts.clone());
        assert_eq!(tts, made_apart);
        assert_ne!(tts, ServiceName::new("elevenlabs-eu").unwrap());
        assert_ne!(tts, ServiceName::new("llm").unwrap());
        let hasher = std::collections::hash_map::RandomState::new();
        assert_eq!(hasher.hash_one(&tts), hasher.hash_one(&made_apart));
        assert_eq!(
            hasher.hash_one(&tts),
            hasher.hash_one("elevenlabs"),
            "as Borrow<str> needs"
        );
    }

    #[test]
    fn deserializes_with_validation() {
        let ok: ServiceName = serde_json::from_str("\"llm\"").unwrap();
        assert_eq!(ok.as_str(), "llm");
        let err = serde_json::from_str::<ServiceName>("\"LLM\"").unwrap_err();
        assert!(err.to_string().contains("may only contain"), "{err}");
    }
}
