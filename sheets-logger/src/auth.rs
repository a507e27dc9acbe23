//! Access tokens for the Sheets API: a static bearer token, or a Google
//! service account's RS256-signed JWT exchanged at the key's `token_uri`
//! (OAuth 2.0 JWT bearer grant, RFC 7523), cached until shortly before it
//! expires.
//!
//! The private key, the JWT and every token are held in types whose `Debug`
//! hides them, and no error message is built from them.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callguard_core::http::transport_error;
use callguard_core::{ErrorKind, Secret, ServiceError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Url;
use tokio::time::Instant;

use crate::http::accepted;

/// The OAuth scope that allows writing to spreadsheets.
pub const SHEETS_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// The `grant_type` of the JWT bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime asked for in the JWT (`exp - iat`); Google allows at most one hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// A cached token is replaced this long before it expires…
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Why a service-account key file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("cannot read service-account key {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a service-account key (the message names the field,
    /// never a value).
    #[error("service-account key {path} is not usable: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The fields of a Google service-account key (JSON) that signing needs.
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: Secret,
    private_key_id: Option<String>,
    token_uri: String,
}

/// A loaded service-account key, ready to sign assertions.
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    key_id: Option<String>,
    token_uri: Url,
    signing_key: EncodingKey,
}

impl ServiceAccountKey {
    /// Reads and checks a key file.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_json(&text).map_err(|reason| CredentialsError::Invalid {
            path: shown,
            reason,
        })
    }

    /// Parses a key from its JSON text. The error names what is wrong, never
    /// a value from the text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            // serde_json's messages name fields and positions, not values,
            // except for "invalid type: string \"…\"", so keep only the category.
            format!(
                "not a service-account key JSON ({:?} error at line {})",
                e.classify(),
                e.line()
            )
        })?;
        if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "\"type\" is {kind:?}, expected \"service_account\""
            ));
        }
        if file.client_email.trim().is_empty() {
            return Err("\"client_email\" is empty".into());
        }
        let token_uri = Url::parse(&file.token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| format!("\"token_uri\" {:?} is not an http(s) URL", file.token_uri))?;
        let signing_key = EncodingKey::from_rsa_pem(file.private_key.expose().as_bytes())
            .map_err(|_| "\"private_key\" is not an RSA private key in PEM form".to_owned())?;
        Ok(Self {
            client_email: file.client_email,
            key_id: file.private_key_id,
            token_uri,
            signing_key,
        })
    }

    /// The service account's e-mail address (the JWT's issuer).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Where access tokens are fetched.
    pub fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// A signed assertion valid from `now` for one hour.
    fn assertion(&self, now: SystemTime) -> Result<Secret, ServiceError> {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: &self.client_email,
            scope: SHEETS_SCOPE,
            aud: self.token_uri.as_str(),
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map(Secret::new)
            .map_err(|e| {
                ServiceError::new(
                    ErrorKind::InvalidRequest,
                    format!("cannot sign the token request: {:?}", e.kind()),
                )
            })
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri.as_str())
            .field("private_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: Secret,
    expires_in: Option<u64>,
}

/// A token and when to stop using it.
pub(crate) struct Cached {
    token: Secret,
    refresh_at: Instant,
}

impl Cached {
    /// No token yet: stale from the start.
    fn none() -> Self {
        Self {
            token: Secret::default(),
            refresh_at: Instant::now(),
        }
    }
}

/// Where the worker gets the `Authorization` header from.
pub(crate) enum Auth {
    /// A token given in config, used as is.
    Static(Secret),
    /// A service account; the token is fetched and cached.
    ServiceAccount {
        key: ServiceAccountKey,
        cached: Cached,
    },
}

impl Auth {
    pub(crate) fn service_account(key: ServiceAccountKey) -> Self {
        Self::ServiceAccount {
            key,
            cached: Cached::none(),
        }
    }

    /// A token to send now: the static one, the cached one, or a fresh one.
    pub(crate) async fn token(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<&Secret, ServiceError> {
        match self {
            Self::Static(token) => Ok(token),
            Self::ServiceAccount { key, cached } => {
                if cached.token.is_empty() || Instant::now() >= cached.refresh_at {
                    *cached = fetch(key, http, timeout).await?;
                }
                Ok(&cached.token)
            }
        }
    }

    /// Forgets a cached token the API refused, so the next request fetches a
    /// new one. Returns whether there was one to forget (a static token
    /// cannot be renewed).
    pub(crate) fn invalidate(&mut self) -> bool {
        match self {
            Self::Static(_) => false,
            Self::ServiceAccount { cached, .. } => {
                let had = !cached.token.is_empty();
                *cached = Cached::none();
                had
            }
        }
    }
}

/// Exchanges a fresh assertion for an access token.
async fn fetch(
    key: &ServiceAccountKey,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Cached, ServiceError> {
    let assertion = key.assertion(SystemTime::now())?;
    let form = [
        ("grant_type", JWT_BEARER_GRANT),
        ("assertion", assertion.expose()),
    ];
    let sent = Instant::now();
    let response = http
        .post(key.token_uri.clone())
        .timeout(timeout)
        .form(&form)
        .send()
        .await
        .map_err(transport_error)?;
    let response = accepted(response, "token request refused").await?;
    let body: TokenResponse = response.json().await.map_err(|_| {
        ServiceError::new(
            ErrorKind::BadResponse,
            "token endpoint answered without an access_token",
        )
    })?;
    if body.access_token.is_empty() {
        return Err(ServiceError::new(
            ErrorKind::BadResponse,
            "token endpoint answered an empty access_token",
        ));
    }
    // Google says 3599 s; a missing value is taken as the shortest sensible one.
    let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60));
    Ok(Cached {
        token: body.access_token,
        refresh_at: sent + usable_for(lifetime),
    })
}

/// How long a token valid for `lifetime` is used: up to a minute less, and
/// never more than half a very short lifetime.
fn usable_for(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_a_minute_early_or_halfway() {
        assert_eq!(
            usable_for(Duration::from_secs(3599)),
            Duration::from_secs(3539)
        );
        assert_eq!(
            usable_for(Duration::from_secs(100)),
            Duration::from_secs(50)
        );
        assert_eq!(usable_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn key_errors_never_show_the_key() {
        let text = r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}"#;
        let err = ServiceAccountKey::from_json(text).unwrap_err();
        assert!(
            err.contains("private_key") && !err.contains("SECRETBYTES"),
            "{err}"
        );
        let err = ServiceAccountKey::from_json("{\"private_key\": 5}").unwrap_err();
        assert!(err.contains("service-account key"), "{err}");
        let wrong_type = text.replace("service_account", "authorized_user");
        let err = ServiceAccountKey::from_json(&wrong_type).unwrap_err();
        assert!(err.contains("authorized_user"), "{err}");
    }
}
