//! A fake of Google's OAuth 2.0 token endpoint (`POST /oauth2/token`) for the
//! JWT bearer grant: it verifies the assertion's RS256 signature against the
//! test service account's public key, checks `iss`, `aud`, `scope`, `iat` and
//! `exp`, and issues short-lived access tokens that the Sheets fake accepts.
//!
//! The key pair under `testdata/` is for tests only; it is committed, so it
//! protects nothing.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::MockServer;

/// The e-mail address of the test service account.
pub const TEST_SERVICE_ACCOUNT_EMAIL: &str =
    "callguard-test@callguard-mock.iam.gserviceaccount.com";
/// The scope the fake requires in the assertion.
const SHEETS_SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
/// The grant type of the JWT bearer flow.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The longest `exp - iat` accepted, as at Google.
const MAX_ASSERTION_LIFETIME: u64 = 3600;
/// Clock skew tolerated on `iat` and `exp`.
const LEEWAY_SECS: u64 = 60;
/// Lifetime of issued tokens unless changed with
/// [`MockServer::set_token_lifetime`](crate::MockServer::set_token_lifetime).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// TEST-ONLY private key of the test service account (see `testdata/README.md`).
const TEST_PRIVATE_KEY_PEM: &str = include_str!("testdata/test-service-account.key.pem");
const TEST_PUBLIC_KEY_PEM: &str = include_str!("testdata/test-service-account.pub.pem");

static TEST_PUBLIC_KEY: LazyLock<Option<DecodingKey>> =
    LazyLock::new(|| DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes()).ok());

/// A service-account key file (JSON, as Google issues them) for the test
/// service account, with `token_uri` pointing at `token_uri` — e.g.
/// [`MockServer::token_uri`](crate::MockServer::token_uri).
pub fn test_service_account_json(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "callguard-mock",
        "private_key_id": "callguard-test-key-1",
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": TEST_SERVICE_ACCOUNT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

/// One request to the token endpoint, as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequest {
    /// Whether a token was issued.
    pub granted: bool,
    /// The assertion's `iss`, when its signature checked out.
    pub issuer: Option<String>,
    /// Why it was refused (the `error_description` sent), if it was.
    pub error: Option<String>,
}

impl MockServer {
    /// `http://ADDR/oauth2/token`, the token endpoint (a service-account
    /// key's `token_uri`).
    pub fn token_uri(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    /// A service-account key file (JSON) whose `token_uri` is this server's.
    pub fn service_account_json(&self) -> String {
        test_service_account_json(&self.token_uri())
    }

    /// The requests to the token endpoint, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.tokens.requests()
    }

    /// Revokes every token issued so far: the Sheets fake refuses them from
    /// now on (`401`), as Google does after a key is disabled or rotated.
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke_all();
    }

    /// Sets the lifetime (`expires_in`) of tokens issued from now on; the
    /// Sheets fake refuses a token once its lifetime has passed.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.tokens.set_lifetime(lifetime);
    }
}

/// Issued tokens and the requests seen.
/// A handle: clones share them, so handlers take it as their axum state.
#[derive(Clone)]
pub(crate) struct TokenIssuer {
    inner: Arc<Mutex<Issuer>>,
}

struct Issuer {
    lifetime: Duration,
    /// Token → when it expires.
    issued: HashMap<String, Instant>,
    requests: Vec<TokenRequest>,
    rng: fastrand::Rng,
}

impl TokenIssuer {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Issuer {
                lifetime: DEFAULT_TOKEN_LIFETIME,
                issued: HashMap::new(),
                requests: Vec::new(),
                rng: fastrand::Rng::with_seed(seed),
            })),
        }
    }

    /// Whether `token` was issued here and has not expired.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        self.inner
            .lock()
            .issued
            .get(token)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    pub(crate) fn revoke_all(&self) {
        self.inner.lock().issued.clear();
    }

    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        self.inner.lock().lifetime = lifetime;
    }

    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        self.inner.lock().requests.clone()
    }

    fn refuse(&self, issuer: Option<String>, error: &str, description: &str) -> Response {
        self.inner.lock().requests.push(TokenRequest {
            granted: false,
            issuer,
            error: Some(description.to_owned()),
        });
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    }

    fn grant(&self, issuer: String) -> Response {
        let mut inner = self.inner.lock();
        let token = format!("ya29.mock-{:016x}", inner.rng.u64(..));
        let lifetime = inner.lifetime;
        inner
            .issued
            .insert(token.clone(), Instant::now() + lifetime);
        inner.requests.push(TokenRequest {
            granted: true,
            issuer: Some(issuer),
            error: None,
        });
        Json(json!({
            "access_token": token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        }))
        .into_response()
    }
}

#[derive(Deserialize)]
pub(crate) struct GrantForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    scope: Option<String>,
    iat: u64,
    exp: u64,
}

/// `POST /oauth2/token`.
pub(crate) async fn token(
    State(issuer): State<TokenIssuer>,
    headers: HeaderMap,
    Form(form): Form<GrantForm>,
) -> Response {
    if form.grant_type.as_deref() != Some(JWT_BEARER_GRANT) {
        return issuer.refuse(None, "unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.assertion else {
        return issuer.refuse(
            None,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    };
    let Some(key) = TEST_PUBLIC_KEY.as_ref() else {
        return issuer.refuse(None, "server_error", "the test public key does not parse");
    };
    // The audience is this endpoint's own URL, as the client reached it.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let audience = format!("http://{host}/oauth2/token");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&audience]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
    validation.leeway = LEEWAY_SECS;
    let claims = match jsonwebtoken::decode::<Claims>(&assertion, key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            let description = match e.kind() {
                ErrorKind::InvalidSignature => "Invalid JWT Signature.".to_owned(),
                ErrorKind::InvalidAudience => format!("Invalid JWT audience: expected {audience}"),
                ErrorKind::ExpiredSignature => "Invalid JWT: Token has expired.".to_owned(),
                other => format!("Invalid JWT: {other:?}"),
            };
            return issuer.refuse(None, "invalid_grant", &description);
        }
    };
    if claims.iss != TEST_SERVICE_ACCOUNT_EMAIL {
        return issuer.refuse(
            Some(claims.iss),
            "invalid_grant",
            "Invalid JWT: unknown issuer.",
        );
    }
    let scopes = claims.scope.unwrap_or_default();
    if !scopes.split_whitespace().any(|s| s == SHEETS_SCOPE) {
        return issuer.refuse(
            Some(claims.iss),
            "invalid_scope",
            "Invalid JWT: the scope must include the spreadsheets scope.",
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let short_lived = claims.exp > claims.iat
        && claims.exp - claims.iat <= MAX_ASSERTION_LIFETIME
        && claims.iat <= now + LEEWAY_SECS;
    if !short_lived {
        return issuer.refuse(
            Some(claims.iss),
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    issuer.grant(claims.iss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_key_pair_loads() {
        assert!(TEST_PUBLIC_KEY.is_some());
        let json: serde_json::Value =
            serde_json::from_str(&test_service_account_json("http://x/oauth2/token")).unwrap();
        assert_eq!(json["client_email"], TEST_SERVICE_ACCOUNT_EMAIL);
        assert!(
            json["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
}
