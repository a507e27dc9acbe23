//! How the PostgreSQL store connects: the URL with libpq's `sslmode` and
//! `sslrootcert` parameters, read into a `tokio_postgres::Config` and a
//! rustls connector (aws-lc-rs, the workspace's one crypto provider).
//!
//! The modes mean what they mean to libpq: `disable` never speaks TLS;
//! `prefer` tries TLS and falls back to plaintext when the server refuses it;
//! `require` insists on TLS; neither checks the server's certificate unless
//! `sslrootcert` is given, which makes `require` check the chain like
//! `verify-ca`. `verify-ca` checks the chain against `sslrootcert`,
//! `verify-full` the chain and the host name. `sslrootcert` is a PEM file of
//! CA certificates, or `system` for the platform's roots. tokio-postgres
//! knows only `disable`, `prefer` and `require`, so both parameters are taken
//! out of the URL before it reads the rest.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use callguard_core::ValidationError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireMode;

use crate::model::StoreError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&str, Self); 5] = [
        ("disable", Self::Disable),
        ("prefer", Self::Prefer),
        ("require", Self::Require),
        ("verify-ca", Self::VerifyCa),
        ("verify-full", Self::VerifyFull),
    ];

    fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, mode)| *mode)
            .ok_or_else(|| {
                ValidationError::new(
                    "sslmode",
                    format!("{value:?}"),
                    "one of disable, prefer, require, verify-ca, verify-full",
                )
            })
    }

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("?", |(name, _)| name)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    File(PathBuf),
    System,
}

/// A PostgreSQL URL read: the driver's config and how to speak TLS.
pub(crate) struct ConnectOptions {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) sslmode: SslMode,
    roots: Option<RootCerts>,
}

impl ConnectOptions {
    /// Reads `url`, checking `sslmode` (default `prefer`, as libpq's) and
    /// that an `sslrootcert` file can be read. The errors never hold the URL.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut sslmode = SslMode::Prefer;
        let mut roots = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => sslmode = SslMode::parse(&percent_decoded(value))?,
                "sslrootcert" => roots = Some(RootCerts::parse(&percent_decoded(value))?),
                _ => rest.push(pair),
            }
        }
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && roots.is_none() {
            return Err(ValidationError::new(
                "sslrootcert",
                "(not set)",
                format!("a CA file or `system` with sslmode={sslmode}"),
            )
            .into());
        }
        let rest = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| StoreError::Location(format!("the PostgreSQL URL cannot be read: {e}")))?;
        config.ssl_mode(match sslmode {
            SslMode::Disable => WireMode::Disable,
            SslMode::Prefer => WireMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => WireMode::Require,
        });
        Ok(Self {
            config,
            sslmode,
            roots,
        })
    }

    /// The connector for the mode: a rustls client that checks what the
    /// mode asks for.
    pub(crate) fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.refused(e))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.sslmode) {
            (None, _) | (_, SslMode::Disable | SslMode::Prefer) => Arc::new(Lenient {
                chain: None,
                provider,
            }),
            (Some(roots), mode) => {
                let roots = Arc::new(roots.load().map_err(|e| self.refused(e))?);
                let full = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| self.refused(e))?;
                if mode == SslMode::VerifyFull {
                    full
                } else {
                    Arc::new(Lenient {
                        chain: Some(full),
                        provider,
                    })
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// A connection that could not be made, naming the mode and the cause.
    pub(crate) fn refused(&self, cause: impl fmt::Display) -> StoreError {
        StoreError::Unavailable {
            backend: "postgres",
            message: format!("cannot connect (sslmode={}): {cause}", self.sslmode),
        }
    }
}

impl RootCerts {
    fn parse(value: &str) -> Result<Self, ValidationError> {
        if value == "system" {
            return Ok(Self::System);
        }
        let path = PathBuf::from(value);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Self::File(path)),
            _ => Err(ValidationError::new(
                "sslrootcert",
                format!("{value:?}"),
                "a readable file of PEM CA certificates, or `system`",
            )),
        }
    }

    fn load(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match self {
            Self::File(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "sslrootcert {} holds no CA certificate",
                        path.display()
                    ));
                }
            }
            Self::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err("sslrootcert=system: the platform has no CA certificates".into());
                }
            }
        }
        Ok(store)
    }
}

/// `error` and its causes on one line: a handshake's error says only that
/// the handshake failed; its source says why.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// `%XX` escapes decoded (a URL parameter's value); a `%` that starts no
/// escape stays as it is.
fn percent_decoded(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// What `prefer`, `require` and `verify-ca` check of the server's
/// certificate, as libpq does: `chain: None` (`prefer`, `require` without a
/// CA) takes any certificate; `Some` (`verify-ca`) wants a chain to a trusted
/// CA but not the name — webpki checks the name last, so a name error means
/// the chain held. The handshake's signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let options = ConnectOptions::parse(
            "postgres://u:secret@db:5433/calls?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(options.sslmode, SslMode::Require);
        assert_eq!(options.config.get_ssl_mode(), WireMode::Require);
        assert_eq!(options.config.get_application_name(), Some("x"));
        let default = ConnectOptions::parse("postgres://db/calls").unwrap();
        assert_eq!(default.sslmode, SslMode::Prefer);
    }

    #[test]
    fn bad_tls_parameters_name_key_value_and_rule() {
        let error = ConnectOptions::parse("postgres://u:secret@db/calls?sslmode=verify_full")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            error,
            "sslmode must be one of disable, prefer, require, verify-ca, verify-full, got \"verify_full\""
        );
        let error = ConnectOptions::parse(
            "postgres://db/calls?sslmode=verify-full&sslrootcert=/no/such.pem",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.starts_with("sslrootcert must be a readable file"),
            "{error}"
        );
        assert!(error.contains("/no/such.pem"), "{error}");
        let error = ConnectOptions::parse("postgres://u:secret@db/calls?sslmode=verify-ca")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("with sslmode=verify-ca"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(percent_decoded("/a%20b/ca.pem"), "/a b/ca.pem");
        assert_eq!(percent_decoded("100%"), "100%");
    }
}
