//! The call store from the command line: opening it for a campaign (importing
//! contacts, idempotently), `callguard report` (counts by state, failures) and
//! `callguard requeue` (failed or expired contacts back to pending).

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use callguard_agent::config::{AgentConfig, QueueConfig};
use callguard_agent::contacts::{Contact, write_contacts};
use callguard_agent::queue::CallQueue;
use callguard_store::{CallStore, ContactState, StoreLocation};

use super::report_text::StoreReport;

/// Opens the store `[queue]` names and imports `contacts` into it (those it
/// already holds are left as they are).
pub(crate) async fn open_queue(
    config: &AgentConfig,
    contacts: &[Contact],
) -> Result<CallQueue, String> {
    let queue = CallQueue::open(&config.queue)
        .await
        .map_err(|e| format!("cannot open the call store: {e}"))?;
    let location = queue.store().location().clone();
    if !contacts.is_empty() {
        let report = queue
            .import(contacts)
            .await
            .map_err(|e| format!("cannot import contacts into {location}: {e}"))?;
        tracing::info!(
            "Call store {location}: {} contacts added, {} already there",
            report.added,
            report.existing
        );
    }
    let counts = queue.refresh_counts().await;
    let unfinished = counts.unfinished();
    tracing::info!(
        "Call store {location}: {unfinished} contacts to call ({} completed, {} failed, {} expired before)",
        counts.completed,
        counts.failed,
        counts.expired
    );
    Ok(queue)
}

/// Writes the contacts a memory store still holds to `[queue] pending_file`
/// (a durable store keeps them itself).
pub(crate) async fn keep_pending(
    config: &AgentConfig,
    queue: &CallQueue,
    contacts: &[Contact],
) -> Result<(), String> {
    if queue.store().is_durable() {
        return Ok(());
    }
    let ids: std::collections::HashSet<String> = queue.pending().await.into_iter().collect();
    let pending: Vec<Contact> = contacts
        .iter()
        .filter(|c| ids.contains(&c.id))
        .cloned()
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let path = &config.queue.pending_file;
    write_contacts(path, &pending)
        .map_err(|e| format!("cannot keep {} pending contacts: {e}", pending.len()))?;
    tracing::warn!(
        "{} contacts pending; kept in {} (resume with `callguard run --contacts {}`)",
        pending.len(),
        path.display(),
        path.display()
    );
    Ok(())
}

/// The `[queue]` section of `config_file` (or the defaults) with the
/// environment's overrides, from a config checked as a whole.
fn queue_config(config_file: Option<&Path>) -> Result<QueueConfig, String> {
    let config = AgentConfig::load("", config_file, std::env::vars()).map_err(|e| e.to_string())?;
    Ok(config.queue)
}

async fn open_store(config_file: Option<&Path>) -> Result<CallStore, String> {
    let queue = queue_config(config_file)?;
    let location = StoreLocation::parse(queue.url.expose()).map_err(|e| e.to_string())?;
    if let StoreLocation::Sqlite(path) = &location {
        if !path.exists() {
            return Err(format!("no call store at {location}"));
        }
    }
    CallStore::open(location.clone(), queue.store_settings())
        .await
        .map_err(|e| format!("cannot open the call store {location}: {e}"))
}

/// `callguard report`: contacts by state, then the failed and expired ones —
/// as tables on a terminal, plain lines elsewhere, one JSON object of the
/// counts with `json`.
pub(crate) async fn report(config_file: Option<&Path>, json: bool) -> Result<ExitCode, String> {
    let store = open_store(config_file).await?;
    let counts = store.counts().await.map_err(|e| e.to_string())?;
    if json {
        let text = serde_json::to_string(&counts).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut listed = Vec::new();
    for (state, title) in [
        (ContactState::Failed, "Failed contacts"),
        (ContactState::Expired, "Expired contacts"),
    ] {
        listed.push((title, store.list(state).await.map_err(|e| e.to_string())?));
    }
    let report = StoreReport {
        heading: format!(
            "Call store {} (table {})",
            store.location(),
            store.settings().table
        ),
        counts,
        listed,
    };
    if std::io::stdout().is_terminal() {
        print!("{}", report.table());
    } else {
        print!("{}", report.plain());
    }
    Ok(ExitCode::SUCCESS)
}

/// The states `callguard requeue --state` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RequeueState {
    /// Contacts a permanent error ended.
    Failed,
    /// Contacts deferred too often.
    Expired,
}

/// `callguard requeue`: failed or expired contacts back to pending.
pub(crate) async fn requeue(
    config_file: Option<&Path>,
    state: RequeueState,
) -> Result<ExitCode, String> {
    let store = open_store(config_file).await?;
    let state = match state {
        RequeueState::Failed => ContactState::Failed,
        RequeueState::Expired => ContactState::Expired,
    };
    let requeued = store.requeue(state).await.map_err(|e| e.to_string())?;
    println!(
        "{requeued} {state} contacts are pending again in {}",
        store.location()
    );
    Ok(ExitCode::SUCCESS)
}
