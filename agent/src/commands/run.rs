//! `callguard run`: a campaign against the services a config file names,
//! resuming the campaign its call store holds (the contacts file is then
//! optional; importing it again adds only contacts the store lacks).

use std::path::Path;
use std::process::ExitCode;

use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::read_contacts;
use callguard_telemetry::Verbosity;

use super::{finish, run_campaign};

pub(crate) async fn run(
    config_file: &Path,
    contacts_file: Option<&Path>,
    summary_json: Option<&Path>,
    verbosity: Verbosity,
) -> Result<ExitCode, String> {
    let config =
        AgentConfig::load("", Some(config_file), std::env::vars()).map_err(|e| e.to_string())?;
    // Dropped on return: flushes the spans not yet exported.
    let mut telemetry =
        callguard_telemetry::init(&config.logging, config.sheets.as_ref(), verbosity)
            .map_err(|e| e.to_string())?;
    let contacts = match contacts_file {
        Some(contacts_file) => {
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
            file.contacts
        }
        None => Vec::new(),
    };
    let ran = run_campaign(&config, contacts, &telemetry, || Ok(())).await?;
    finish(&config, ran, summary_json, &mut telemetry).await
}
