//! `callguard mocks`: the fake services on their own.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::shutdown_signal;

pub(crate) async fn mocks(listen: SocketAddr, seed: u64) -> Result<ExitCode, String> {
    let _telemetry = callguard_agent::telemetry::init_mocks("info").map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let config = callguard_mocks::MockConfig {
        seed,
        ..callguard_mocks::MockConfig::default()
    };
    eprintln!("callguard mocks listening on http://{listen} (control API: /_control/faults)");
    callguard_mocks::serve(listener, config, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
