//! The client side of a callguard gRPC server: its address ([`RemoteUrl`],
//! `http://` or `https://`), how a TLS server is checked ([`ClientTls`]: a CA
//! file, a server name) and the channel to it ([`RemoteServer`]).
//!
//! An `https://` server is checked against the CA file when one is given (the
//! file's certificates *replace* the system's roots, so a private CA trusts
//! only what it signed), else against the system's roots as rustls-native-certs
//! finds them (`SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution's bundle).
//! A system without any root certificate is a start-up error asking for the
//! CA file rather than a handshake that can never succeed. The certificate
//! must name the URL's host unless a server name is given. TLS settings with
//! an `http://` address are refused: they would be silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callguard_core::ValidationError;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::codegen::http::Uri;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Longest a connection attempt to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 keepalive of the connection to the remote server: a ping once
/// `interval` passes without a frame from the server, and the connection is
/// given up when the answer takes longer than `timeout`. This is how a server
/// that went silent without closing anything (a blackholed link, a host that
/// vanished) is noticed while the watch streams have nothing to say: within
/// `interval + timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Quiet time before a ping.
    pub interval: Duration,
    /// Longest wait for the ping's answer.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    /// A ping after 20 s of quiet, answered within 10 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The address of a callguard gRPC server, `http://HOST:PORT` or
/// `https://HOST:PORT` (`health_check.remote`, `callguard status --addr`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RemoteUrl(String);

impl RemoteUrl {
    /// The rule a URL must follow.
    pub const RULE: &'static str = "an http://HOST:PORT or https://HOST:PORT URL";

    /// Checks `url`: an `http` or `https` URL with a host, an optional port and
    /// no path, query or credentials (the error's key is `remote`).
    pub fn new(url: impl Into<String>) -> Result<Self, ValidationError> {
        let url = url.into();
        let invalid = || ValidationError::new("remote", &url, Self::RULE);
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let authority = uri.authority().ok_or_else(invalid)?;
        let scheme = uri.scheme_str().filter(|s| matches!(*s, "http" | "https"));
        let plain_path = matches!(uri.path(), "" | "/");
        let Some(scheme) = scheme else {
            return Err(invalid());
        };
        if authority.host().is_empty()
            || authority.as_str().contains('@')
            || !plain_path
            || uri.query().is_some()
        {
            return Err(invalid());
        }
        Ok(Self(format!("{scheme}://{authority}")))
    }

    /// The URL, normalized to `SCHEME://HOST[:PORT]`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the server is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl TryFrom<String> for RemoteUrl {
    type Error = ValidationError;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        Self::new(url)
    }
}

impl From<RemoteUrl> for String {
    fn from(url: RemoteUrl) -> Self {
        url.0
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a TLS server is checked: the CA to trust instead of the system's
/// roots, and the name its certificate must carry instead of the URL's host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA certificate(s) to trust.
    pub ca: Option<PathBuf>,
    /// The name to expect in the server's certificate (and to send as SNI).
    pub server_name: Option<String>,
}

/// The names errors give the URL and the TLS settings: config keys
/// ([`TlsKeys::CONFIG`], relative to `[health_check]`) or command-line flags.
#[derive(Debug, Clone, Copy)]
pub struct TlsKeys {
    /// The URL's key.
    pub url: &'static str,
    /// The CA file's key.
    pub ca: &'static str,
    /// The server name's key.
    pub server_name: &'static str,
}

impl TlsKeys {
    /// `remote`, `remote_tls_ca`, `remote_tls_server_name`.
    pub const CONFIG: Self = Self {
        url: "remote",
        ca: "remote_tls_ca",
        server_name: "remote_tls_server_name",
    };
}

impl ClientTls {
    /// Checks what can be checked without reading files: TLS settings only
    /// with an `https://` URL, a server name that is a DNS name or IP address.
    pub fn validate(&self, url: &RemoteUrl, keys: TlsKeys) -> Result<(), ValidationError> {
        if !url.is_https() {
            let rule = format!("unset unless {} is an https:// URL (got {url})", keys.url);
            if let Some(ca) = &self.ca {
                return Err(ValidationError::new(keys.ca, ca.display(), rule));
            }
            if let Some(name) = &self.server_name {
                return Err(ValidationError::new(keys.server_name, name, rule));
            }
        }
        if let Some(name) = &self.server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            return Err(ValidationError::new(
                keys.server_name,
                name,
                "a DNS name or an IP address",
            ));
        }
        Ok(())
    }
}

/// A callguard gRPC server to connect to: its URL and, for `https://`, the
/// TLS settings, read and checked.
#[derive(Clone)]
pub struct RemoteServer {
    url: RemoteUrl,
    tls: Option<ClientTlsConfig>,
}

impl fmt::Debug for RemoteServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteServer")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl RemoteServer {
    /// A server reached over plaintext HTTP/2, or over TLS checked against
    /// the system's roots: `url` with no [`ClientTls`] settings.
    pub fn new(url: RemoteUrl) -> Result<Self, ValidationError> {
        Self::with_tls(url, &ClientTls::default(), TlsKeys::CONFIG)
    }

    /// A server at `url` checked as `tls` says; reads the CA file. Errors name
    /// the key of `keys` that is wrong, its value and the rule.
    pub fn with_tls(
        url: RemoteUrl,
        tls: &ClientTls,
        keys: TlsKeys,
    ) -> Result<Self, ValidationError> {
        tls.validate(&url, keys)?;
        if !url.is_https() {
            return Ok(Self { url, tls: None });
        }
        let config = match &tls.ca {
            Some(path) => ClientTlsConfig::new().ca_certificate(read_ca(path, keys.ca)?),
            None => {
                if rustls_native_certs::load_native_certs().certs.is_empty() {
                    return Err(ValidationError::new(
                        keys.ca,
                        "(unset)",
                        format!(
                            "set for an https:// {}: the system has no root certificates \
                             (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs)",
                            keys.url
                        ),
                    ));
                }
                ClientTlsConfig::new().with_native_roots()
            }
        };
        let config = match &tls.server_name {
            Some(name) => config.domain_name(name),
            None => config,
        };
        // Builds the TLS connector once, so nothing is left to fail later.
        endpoint(&url).tls_config(config.clone()).map_err(|e| {
            ValidationError::new(keys.ca, url.as_str(), format!("usable TLS settings ({e})"))
        })?;
        Ok(Self {
            url,
            tls: Some(config),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &RemoteUrl {
        &self.url
    }

    /// A channel to the server that connects on first use and again after the
    /// connection is lost; attempts time out after a few seconds; the default
    /// [`KeepAlive`].
    pub fn channel(&self) -> Channel {
        self.channel_keeping_alive(KeepAlive::default())
    }

    /// [`channel`](Self::channel) with the given keepalive.
    pub fn channel_keeping_alive(&self, keep_alive: KeepAlive) -> Channel {
        let endpoint = endpoint(&self.url)
            .http2_keep_alive_interval(keep_alive.interval)
            .keep_alive_timeout(keep_alive.timeout);
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .expect("TLS settings checked when the server was made"),
            None => endpoint,
        };
        endpoint.connect_lazy()
    }
}

/// What a failed call's status says, with the chain of errors behind it,
/// where a transport failure's cause (a refused connection, a certificate
/// the client does not trust) is told.
pub fn status_reason(status: &tonic::Status) -> String {
    let mut reason = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = error.source();
    }
    reason
}

fn endpoint(url: &RemoteUrl) -> Endpoint {
    Endpoint::from_shared(url.0.clone())
        .expect("a RemoteUrl is a valid URI")
        .connect_timeout(CONNECT_TIMEOUT)
}

/// The CA certificates at `path`: a readable PEM file with at least one.
fn read_ca(path: &Path, key: &str) -> Result<Certificate, ValidationError> {
    let pem = std::fs::read(path).map_err(|e| {
        ValidationError::new(key, path.display(), format!("a readable PEM file ({e})"))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>();
    if !certificates.is_ok_and(|c| !c.is_empty()) {
        return Err(ValidationError::new(
            key,
            path.display(),
            "a PEM file with at least one CERTIFICATE",
        ));
    }
    Ok(Certificate::from_pem(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_are_plain_http_or_https_addresses() {
        let url = RemoteUrl::new("http://127.0.0.1:50051/").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:50051");
        assert!(!url.is_https());
        let url = RemoteUrl::new("https://prober.internal:50051").unwrap();
        assert_eq!(url.to_string(), "https://prober.internal:50051");
        assert!(url.is_https());
        for bad in [
            "127.0.0.1:50051",
            "ftp://127.0.0.1:50051",
            "http://127.0.0.1:50051/health",
            "https://user:pw@127.0.0.1:50051",
            "http://127.0.0.1:50051?x=1",
            "",
        ] {
            let err = RemoteUrl::new(bad).unwrap_err();
            assert_eq!(err.key, "remote", "{bad}");
            assert_eq!(err.rule, RemoteUrl::RULE, "{bad}");
        }
    }

    #[test]
    fn tls_settings_with_an_http_url_are_refused() {
        let url = RemoteUrl::new("http://127.0.0.1:50051").unwrap();
        let tls = ClientTls {
            ca: Some("ca.pem".into()),
            server_name: None,
        };
        let err = RemoteServer::with_tls(url.clone(), &tls, TlsKeys::CONFIG).unwrap_err();
        assert_eq!(
            err.in_section("health_check").to_string(),
            "health_check.remote_tls_ca must be unset unless remote is an https:// URL \
             (got http://127.0.0.1:50051), got ca.pem"
        );
        let tls = ClientTls {
            ca: None,
            server_name: Some("prober".into()),
        };
        let err = tls.validate(&url, TlsKeys::CONFIG).unwrap_err();
        assert_eq!(err.key, "remote_tls_server_name");
    }

    #[test]
    fn a_server_name_must_be_a_name() {
        let url = RemoteUrl::new("https://127.0.0.1:50051").unwrap();
        let tls = ClientTls {
            ca: None,
            server_name: Some("not a name".into()),
        };
        let err = tls.validate(&url, TlsKeys::CONFIG).unwrap_err();
        assert_eq!(
            err.to_string(),
            "remote_tls_server_name must be a DNS name or an IP address, got not a name"
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let url = RemoteUrl::new("https://localhost:50051").unwrap();
        let dir = std::env::temp_dir().join(format!("callguard-health-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ClientTls {
            ca: Some(dir.join("missing.pem")),
            server_name: None,
        };
        let err = RemoteServer::with_tls(url.clone(), &missing, TlsKeys::CONFIG).unwrap_err();
        assert_eq!(err.key, "remote_tls_ca");
        assert!(err.value.ends_with("missing.pem"), "{err}");
        assert!(err.rule.starts_with("a readable PEM file ("), "{err}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = RemoteServer::with_tls(
            url,
            &ClientTls {
                ca: Some(empty),
                server_name: None,
            },
            TlsKeys::CONFIG,
        )
        .unwrap_err();
        assert_eq!(err.rule, "a PEM file with at least one CERTIFICATE");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
