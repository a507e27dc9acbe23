//! TLS to PostgreSQL, against a cluster of the test's own with `ssl = on`,
//! a CA and a server certificate made here (for `localhost` only), and
//! `hostssl`-only access: `verify-full` and `verify-ca` connect; a wrong CA,
//! a name the certificate does not hold and a plaintext attempt each stop
//! the store's opening with one line naming the `sslmode` and the cause,
//! never the password.

use std::path::Path;

use callguard_store::{CallStore, NewContact, StoreLocation, StoreSettings};
use callguard_testkit::PostgresCluster;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA certificate (PEM) and the issuer that signs with its key.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a server certificate for `localhost`, signed by `ca`, into `data`.
fn server_cert(data: &Path, ca: &CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
    let key_file = data.join("server.key");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn open(url: &str) -> Result<CallStore, String> {
    let location = StoreLocation::parse(url).map_err(|e| e.to_string())?;
    let settings = StoreSettings {
        table: "tls_contacts".into(),
        ..StoreSettings::default()
    };
    CallStore::open(location, settings)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn postgres_over_tls_checks_what_the_sslmode_asks() {
    let ca_made = ca("callguard test CA");
    let dir = callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), "tls");
    let (ca_file, wrong_ca_file) = (dir.join("ca.pem"), dir.join("wrong-ca.pem"));
    std::fs::write(&ca_file, ca_made.pem()).unwrap();
    std::fs::write(&wrong_ca_file, ca("another CA").pem()).unwrap();
    let cluster = PostgresCluster::start(
        "tls",
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'",
        Some(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        ),
        |data| server_cert(data, &ca_made),
    );
    let port = cluster.port();
    let url = |host: &str, params: &str| {
        format!("postgres://postgres:hunter2@{host}:{port}/postgres?{params}")
    };
    let ca = ca_file.display();
    let wrong = wrong_ca_file.display();

    let store = open(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-full with the server's CA connects");
    let added = store
        .import(&[NewContact {
            id: "a".into(),
            data: "{}".into(),
        }])
        .await
        .unwrap()
        .added;
    assert_eq!(added, 1);
    // verify-ca checks the chain only: the address is not a name the
    // certificate holds, and that is fine.
    open(&url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-ca ignores the name");
    open(&url("127.0.0.1", "sslmode=require"))
        .await
        .expect("require takes any certificate");

    for (params, host, mode, cause) in [
        (
            format!("sslmode=verify-full&sslrootcert={wrong}"),
            "localhost",
            "verify-full",
            "UnknownIssuer",
        ),
        (
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "127.0.0.1",
            "verify-full",
            "certificate not valid for name",
        ),
        (
            "sslmode=disable".to_owned(),
            "127.0.0.1",
            "disable",
            "no encryption",
        ),
    ] {
        let error = open(&url(host, &params)).await.err().unwrap_or_else(|| {
            panic!("{params} at {host} connected");
        });
        assert!(
            error.contains(&format!("(sslmode={mode})")) && error.contains(cause),
            "{params} at {host}: {error}"
        );
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
