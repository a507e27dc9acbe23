//! The example configs shipped in `examples/` load and pass validation (the
//! example campaign is read in `tests/contacts.rs`).

use std::path::Path;

use callguard_agent::app::App;
use callguard_agent::config::AgentConfig;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn production_config_loads() {
    let config = AgentConfig::load("", Some(&example("production.toml")), []).unwrap();
    assert_eq!(config.retry.max_retries, 3);
    assert_eq!(config.services.len(), 3);
}

#[tokio::test]
async fn mocks_config_builds_every_part() {
    let config = AgentConfig::load("", Some(&example("mocks.toml")), []).unwrap();
    let app = App::build(config).unwrap();
    let names: Vec<String> = app
        .registry()
        .all()
        .iter()
        .map(|b| b.service().to_string())
        .collect();
    assert_eq!(names, ["crm", "elevenlabs", "llm"]);
}

#[tokio::test]
async fn production_config_probes_only_services_with_a_health_endpoint() {
    let config = AgentConfig::load("", Some(&example("production.toml")), []).unwrap();
    let registry = callguard_breaker::BreakerRegistry::default();
    let checker = callguard_agent::app::health_checker(
        &config,
        &config.health_check,
        &registry,
        &std::sync::Arc::new(callguard_telemetry::Metrics::new()),
        config.services.keys(),
    )
    .unwrap();
    let probed: Vec<String> = checker.services().map(ToString::to_string).collect();
    assert_eq!(
        probed,
        ["crm"],
        "OpenAI and ElevenLabs have no health endpoint"
    );
}
