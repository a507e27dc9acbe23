//! Certificates for tests, made when a test runs (rcgen, aws-lc-rs): a CA and
//! server certificates it signs, written to a directory of the test's own, so
//! no private key is ever kept in the repository.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its private key, PEM, with the files they were
/// written to.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// The file holding [`Self::cert_pem`].
    pub cert_file: PathBuf,
    /// The file holding [`Self::key_pem`].
    pub key_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        Self { issuer }
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `dir/ca.pem` and returns the path.
    pub fn write_cert(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.cert_pem()).expect("the CA file written");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by
    /// this CA and written to `dir/NAME.pem` and `dir/NAME.key`, `NAME` being the
    /// first name.
    pub fn issue(&self, dir: &Path, names: &[&str]) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let key = KeyPair::generate().expect("a server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate signed by the CA");
        let server = ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: dir.join(format!("{}.pem", names[0])),
            key_file: dir.join(format!("{}.key", names[0])),
        };
        std::fs::write(&server.cert_file, &server.cert_pem).expect("the certificate written");
        std::fs::write(&server.key_file, &server.key_pem).expect("the key written");
        server
    }
}
