//! The `callguard` command line: `simulate`, `run` and `mocks`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use callguard_agent::assemble::assemble;
use callguard_agent::campaign::{Campaign, Summary};
use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::{Contact, read_contacts, write_contacts};
use callguard_agent::queue::CallQueue;
use callguard_agent::simulate::{Scenario, SimulatedServices, generate_contacts, scale_config};
use callguard_agent::telemetry;
use clap::{Parser, Subcommand};

/// An AI call agent that keeps working while the services it depends on fail.
#[derive(Parser)]
#[command(name = "callguard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign against in-process mocks with a scenario of injected faults.
    Simulate {
        /// The story to tell.
        #[arg(long, value_enum, default_value = "outage")]
        scenario: Scenario,
        /// How many made-up contacts to call.
        #[arg(long, default_value_t = 20)]
        contacts: usize,
        /// Seed of the mocks' random choices (flaky faults).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Multiplies every duration: 0.1 runs the same story ten times faster.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// A config file layered over the simulation's own settings.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a campaign against the services a config file names.
    Run {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// The contacts: CSV with a header (id,name,phone,…) or JSON Lines.
        #[arg(long)]
        contacts: PathBuf,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Serve the mock services (ElevenLabs, LLM, CRM) with their fault-injection API.
    Mocks {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seed of the mocks' random choices.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Simulate {
                scenario,
                contacts,
                seed,
                time_scale,
                summary_json,
                config,
            } => {
                simulate(
                    scenario,
                    contacts,
                    seed,
                    time_scale,
                    summary_json.as_deref(),
                    config.as_deref(),
                )
                .await
            }
            Command::Run {
                config,
                contacts,
                summary_json,
            } => run(&config, &contacts, summary_json.as_deref()).await,
            Command::Mocks { listen, seed } => mocks(listen, seed).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn simulate(
    scenario: Scenario,
    count: usize,
    seed: u64,
    time_scale: f64,
    summary_json: Option<&Path>,
    config_file: Option<&Path>,
) -> Result<ExitCode, String> {
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(format!(
            "--time-scale must be a positive number, got {time_scale}"
        ));
    }
    let contacts = generate_contacts(count);
    let services = SimulatedServices::start(scenario, &contacts, seed, time_scale)
        .await
        .map_err(|e| format!("cannot start the mocks: {e}"))?;
    let defaults = format!(
        "{}\n[queue]\npending_file = \"logs/simulate-pending.jsonl\"\n",
        services.config_defaults(time_scale)
    );
    let mut config =
        AgentConfig::load(&defaults, config_file, std::env::vars()).map_err(|e| e.to_string())?;
    scale_config(&mut config, time_scale);
    telemetry::init(&config.logging.path, &config.logging.console_level)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "Simulating scenario {scenario:?}: {count} contacts, mocks at {}, time scale {time_scale}",
        services.server.url()
    );
    services
        .start_faults()
        .map_err(|e| format!("cannot inject the scenario's faults: {e}"))?;
    let summary = run_campaign(&config, contacts).await?;
    services.server.shutdown().await;
    finish(&config, summary, summary_json)
}

async fn run(
    config_file: &Path,
    contacts_file: &Path,
    summary_json: Option<&Path>,
) -> Result<ExitCode, String> {
    let config =
        AgentConfig::load("", Some(config_file), std::env::vars()).map_err(|e| e.to_string())?;
    telemetry::init(&config.logging.path, &config.logging.console_level)
        .map_err(|e| e.to_string())?;
    let file = read_contacts(contacts_file).map_err(|e| e.to_string())?;
    for rejected in &file.rejected {
        tracing::warn!(
            "{}:{}: contact skipped: {}",
            contacts_file.display(),
            rejected.line,
            rejected.reason
        );
    }
    tracing::info!(
        "Calling {} contacts from {} ({} lines skipped)",
        file.contacts.len(),
        contacts_file.display(),
        file.rejected.len()
    );
    let summary = run_campaign(&config, file.contacts).await?;
    finish(&config, summary, summary_json)
}

async fn run_campaign(config: &AgentConfig, contacts: Vec<Contact>) -> Result<Summary, String> {
    let parts = assemble(config).map_err(|e| e.to_string())?;
    let queue = Arc::new(CallQueue::new(contacts, config.queue.max_deferrals));
    let campaign = Campaign {
        pipeline: parts.pipeline,
        registry: parts.registry,
        queue: queue.clone(),
        stats: parts.stats,
        workers: config.queue.workers as usize,
        default_wait: config.circuit_breaker.recovery_timeout.get(),
        health: Some(parts.health),
        shutdown_grace: config.queue.shutdown_grace.get(),
        progress: true,
    };
    let summary = campaign.run(shutdown_signal()).await;
    let pending: Vec<Contact> = queue.pending().into_iter().map(|e| e.contact).collect();
    if !pending.is_empty() {
        let path = &config.queue.pending_file;
        write_contacts(path, &pending)
            .map_err(|e| format!("cannot keep {} pending contacts: {e}", pending.len()))?;
        tracing::warn!(
            "{} contacts pending; kept in {} (resume with `callguard run --contacts {}`)",
            pending.len(),
            path.display(),
            path.display()
        );
    }
    Ok(summary)
}

fn finish(
    config: &AgentConfig,
    summary: Summary,
    summary_json: Option<&Path>,
) -> Result<ExitCode, String> {
    print!("{}", callguard_agent::report::summary_table(&summary));
    if let Some(path) = summary_json {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    tracing::info!(log = %config.logging.path.display(), "Campaign finished");
    Ok(if summary.all_accounted_for() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn mocks(listen: SocketAddr, seed: u64) -> Result<ExitCode, String> {
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

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
