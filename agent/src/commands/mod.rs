//! The subcommands, and what they share: running a campaign (with the gRPC
//! server beside it), reporting its summary, and waiting for Ctrl-C or SIGTERM.

pub(crate) mod health;
pub(crate) mod mocks;
pub(crate) mod run;
pub(crate) mod simulate;
pub(crate) mod store;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use callguard_agent::accounting::Census;
use callguard_agent::assemble::assemble;
use callguard_agent::campaign::{Campaign, Summary};
use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::Contact;
use callguard_agent::metrics::MetricsServer;
use callguard_agent::queue::CallQueue;
use callguard_agent::telemetry::Telemetry;
use callguard_mocks::CrmRecord;

/// A campaign that has run: its summary, its queue, and the `/metrics`
/// server, kept up until [`finish`] has written the summary.
pub(crate) struct Ran {
    summary: Summary,
    queue: Arc<CallQueue>,
    metrics: Option<MetricsServer>,
}

impl Ran {
    /// Matches the completed contacts with the CRM's `records` (where the
    /// CRM can list them: the mocks of `simulate`).
    pub(crate) async fn match_records(&mut self, records: &[CrmRecord]) -> Result<(), String> {
        let end = Census::take(&self.queue)
            .await
            .map_err(|e| format!("cannot list the contacts to match the CRM's records: {e}"))?;
        let ids: Vec<&str> = records.iter().map(CrmRecord::contact_id).collect();
        self.summary.match_records(&end, &ids);
        Ok(())
    }
}

pub(crate) async fn run_campaign(
    config: &AgentConfig,
    contacts: Vec<Contact>,
    telemetry: &Telemetry,
) -> Result<Ran, String> {
    let parts = assemble(config).map_err(|e| e.to_string())?;
    parts.metrics.watch_alerts(parts.alerts.clone());
    parts.metrics.watch_telemetry(telemetry);
    let queue = Arc::new(store::open_queue(config, &contacts).await?);
    let metrics = match config.metrics.served_on() {
        Some(listen) => Some(
            MetricsServer::start(listen, parts.metrics, parts.registry.clone(), queue.clone())
                .await
                .map_err(|e| {
                    format!(
                        "cannot serve metrics on {listen} (metrics.listen): {e}; \
                         choose another address with [metrics] listen or CALLGUARD_METRICS__LISTEN, \
                         or turn /metrics off with [metrics] enabled = false"
                    )
                })?,
        ),
        None => None,
    };
    let grpc = health::GrpcServer::start(&config.grpc, parts.registry.clone()).await?;
    let remote = health::RemoteFollower::start(config, &parts.registry);
    let campaign = Campaign {
        pipeline: parts.pipeline,
        registry: parts.registry,
        queue: queue.clone(),
        stats: parts.stats,
        workers: config.queue.workers as usize,
        default_wait: config.circuit_breaker.recovery_timeout.get(),
        health: Some(parts.health),
        alerts: parts.alerts,
        shutdown_grace: config.queue.shutdown_grace.get(),
        progress: true,
    };
    let summary = campaign.run(grpc.drain_on_shutdown()).await;
    if let Some(remote) = remote {
        remote.stop().await;
    }
    grpc.stop().await;
    store::keep_pending(config, &queue, &contacts).await?;
    Ok(Ran {
        summary,
        queue,
        metrics,
    })
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
