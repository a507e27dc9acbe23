//! What the agent's benches share: the agent's config for the in-process
//! mocks, made-up contacts with ids unique to a run, the process's CPU
//! time, and the median and verdict of the figures they print.

use std::time::Duration;

use callguard_agent::config::AgentConfig;
use callguard_agent::contacts::Contact;
use callguard_agent::simulate::generate_contacts;
use callguard_mocks::{MockServer, Service};

/// The agent's config for the mocks of `server`: quick retries (1 ms, at
/// most 4 ms), `workers` workers, and `extra` (whole TOML sections) on top.
pub(crate) fn mock_config(server: &MockServer, workers: usize, extra: &str) -> AgentConfig {
    let mut text = format!(
        "[retry]\ninitial_delay = \"1ms\"\nmax_delay = \"4ms\"\n\n\
         [queue]\nworkers = {workers}\n\n{extra}\n"
    );
    for service in [Service::Llm, Service::Elevenlabs, Service::Crm] {
        text.push_str(&format!(
            "[services.{service}]\nbase_url = \"{}\"\napi_key = \"{}\"\n\n",
            server.base_url(service),
            server.config().keys.get(service),
        ));
    }
    AgentConfig::load(&text, None, std::iter::empty()).expect("the bench config is valid")
}

/// `n` made-up contacts whose ids start with `run`, so that no CRM write
/// repeats the idempotency key of another run (the mocks' CRM keeps them all).
pub(crate) fn contacts(n: usize, run: &str) -> Vec<Contact> {
    generate_contacts(n)
        .into_iter()
        .map(|mut contact| {
            contact.id = format!("{run}-{}", contact.id);
            contact
        })
        .collect()
}

/// The median: the middle value, or the mean of the middle two.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// How a figure's target reads in the output.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// CPU time used so far by the process's live threads (the sum of their
/// [`schedstat_cpu_time`]); `None` where that is not readable. Less
/// disturbed than wall time by other work on the machine.
pub(crate) fn process_cpu_time() -> Option<Duration> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|task| schedstat_cpu_time(&task.ok()?.path()))
            .sum(),
    )
}

/// The CPU time a process or thread has run, from the first field of the
/// `schedstat` file in its `/proc` directory `dir` (ns).
pub(crate) fn schedstat_cpu_time(dir: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    Some(Duration::from_nanos(
        text.split_whitespace().next()?.parse().ok()?,
    ))
}
