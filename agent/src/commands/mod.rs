//! The subcommands, and what they share: running a campaign (with the gRPC
//! server beside it), reporting its summary, and waiting for Ctrl-C or SIGTERM.

pub(crate) mod health;
#[cfg(feature = "mocks")]
pub(crate) mod mocks;
mod report_text;
pub(crate) mod run;
#[cfg(feature = "mocks")]
pub(crate) mod simulate;
mod status_json;
pub(crate) mod store;
mod table;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use callguard_agent::app::{App, Ran};
use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::Contact;
use callguard_telemetry::Telemetry;

/// Builds the agent from `config`, opens its call store (importing
/// `contacts`), calls `ready` (the last thing before the first call), and
/// runs the campaign with its servers until every contact has ended or
/// Ctrl-C / SIGTERM; contacts a memory store still holds are then written to
/// `[queue] pending_file`.
pub(crate) async fn run_campaign(
    config: &AgentConfig,
    contacts: Vec<Contact>,
    telemetry: &Telemetry,
    ready: impl FnOnce() -> Result<(), String>,
) -> Result<Ran, String> {
    let app = App::build(config.clone()).map_err(|e| e.to_string())?;
    app.metrics().watch_telemetry(telemetry);
    let queue = Arc::new(store::open_queue(config, &contacts).await?);
    ready()?;
    let ran = app.run(queue.clone(), shutdown_signal()).await?;
    store::keep_pending(config, &queue, &contacts).await?;
    Ok(ran)
}

/// Flushes the log export, prints the summary (and writes it as JSON when
/// asked), then keeps `/metrics` up for `metrics.linger` (or until Ctrl-C or
/// SIGTERM); success when every contact is accounted for.
pub(crate) async fn finish(
    config: &AgentConfig,
    ran: Ran,
    summary_json: Option<&Path>,
    telemetry: &mut Telemetry,
) -> Result<ExitCode, String> {
    let Ran {
        mut summary,
        metrics,
        ..
    } = ran;
    summary.sheets = telemetry
        .flush_sheets(config.queue.shutdown_grace.get())
        .await;
    print!("{}", callguard_agent::report::summary_table(&summary));
    if let Some(path) = summary_json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    tracing::info!(log = %config.logging.path.display(), "Campaign finished");
    if let Some(server) = metrics {
        let linger = config.metrics.linger.get();
        if !linger.is_zero() {
            tracing::info!(
                "Metrics served on http://{}/metrics for {:.1}s more (metrics.linger)",
                server.local_addr(),
                linger.as_secs_f64()
            );
            tokio::select! {
                () = tokio::time::sleep(linger) => {}
                () = shutdown_signal() => {}
            }
        }
        server.stop().await;
    }
    Ok(if summary.all_accounted_for() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
