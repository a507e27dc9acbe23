//! `callguard simulate`: a scenario against in-process mocks.

use std::path::Path;
use std::process::ExitCode;

use callguard_agent::config::ConfigLoader;
use callguard_agent::simulate::{Scenario, SimulatedServices, generate_contacts};
use callguard_mocks::CrmRecord;
use callguard_telemetry::Verbosity;

use super::{finish, run_campaign};

pub(crate) async fn simulate(
    scenario: Scenario,
    count: usize,
    seed: u64,
    time_scale: f64,
    summary_json: Option<&Path>,
    config_file: Option<&Path>,
    verbosity: Verbosity,
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
    // A simulation keeps its contacts in memory and serves gRPC and /metrics
    // on free ports, unless the config file says otherwise.
    let defaults = toml::toml! {
        [queue]
        url = "memory:"
        pending_file = "logs/simulate-pending.jsonl"

        [grpc]
        listen = "127.0.0.1:0"

        [metrics]
        listen = "127.0.0.1:0"
    };
    let config = ConfigLoader::new()
        .defaults(defaults)
        .defaults(scenario.settings())
        .stand_ins(services.stand_ins(time_scale))
        .file(config_file)
        .env(std::env::vars())
        .time_scale(time_scale)
        .load()
        .map_err(|e| e.to_string())?;
    // Dropped on return: flushes the spans not yet exported.
    let mut telemetry =
        callguard_telemetry::init(&config.logging, config.sheets.as_ref(), verbosity)
            .map_err(|e| e.to_string())?;
    tracing::info!(
        "Simulating scenario {scenario:?}: {count} contacts, mocks at {}, time scale {time_scale}",
        services.server.url()
    );
    // The scenario's clock starts with the campaign, however long the agent
    // took to set up.
    let mut ran = run_campaign(&config, contacts, &telemetry, || {
        services
            .start_faults()
            .map_err(|e| format!("cannot inject the scenario's faults: {e}"))
    })
    .await?;
    let records = services.server.crm_records();
    let ids: Vec<&str> = records.iter().map(CrmRecord::contact_id).collect();
    ran.match_records(&ids)
        .await
        .map_err(|e| format!("cannot list the contacts to match the CRM's records: {e}"))?;
    // The mocks stay up until the log rows bound for their Sheets fake are sent.
    let code = finish(&config, ran, summary_json, &mut telemetry).await;
    services.server.shutdown().await;
    code
}
