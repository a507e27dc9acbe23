//! `callguard simulate`: a scenario against in-process mocks.

use std::path::Path;
use std::process::ExitCode;

use callguard_agent::config::AgentConfig;
use callguard_agent::simulate::{Scenario, SimulatedServices, generate_contacts, scale_config};
use callguard_agent::telemetry;

use super::{finish, run_campaign};

pub(crate) async fn simulate(
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
        "{}\n[queue]\npending_file = \"logs/simulate-pending.jsonl\"\nurl = \"memory:\"\n\
         [grpc]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        services.config_defaults(time_scale)
    );
    let mut config =
        AgentConfig::load(&defaults, config_file, std::env::vars()).map_err(|e| e.to_string())?;
    scale_config(&mut config, time_scale);
    // Dropped on return: flushes the spans not yet exported.
    let mut telemetry =
        telemetry::init(&config.logging, config.sheets.as_ref()).map_err(|e| e.to_string())?;
    tracing::info!(
        "Simulating scenario {scenario:?}: {count} contacts, mocks at {}, time scale {time_scale}",
        services.server.url()
    );
    services
        .start_faults()
        .map_err(|e| format!("cannot inject the scenario's faults: {e}"))?;
    let mut ran = run_campaign(&config, contacts, &telemetry).await?;
    ran.match_records(&services.server.crm_records()).await?;
    // The mocks stay up until the log rows bound for their Sheets fake are sent.
    let code = finish(&config, ran, summary_json, &mut telemetry).await;
    services.server.shutdown().await;
    code
}
