//! The pipeline and campaign `App::build` makes, against the mocks under a
//! paused clock: the call's deadline (`retry.deadline`) reaches the service
//! clients, so an attempt ends when the call must, not at its
//! `request_timeout`; and a campaign follows its breakers from the moment
//! it is made, so a transition before its first contact is in its summary.

use std::sync::Arc;
use std::time::Duration;

use callguard_agent::app::App;
use callguard_agent::config::AgentConfig;
use callguard_agent::pipeline::CallResult;
use callguard_agent::queue::CallQueue;
use callguard_agent::simulate::generate_contacts;
use callguard_breaker::ForcedBy;
use callguard_core::{CircuitState, ServiceName};
use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
use tokio::time::Instant;

mod support;
use support::SERVICES;

/// The agent for the mocks' three services, `settings` (whole sections) first.
fn app(mocks: &MockServer, settings: &str) -> App {
    let mut text = settings.to_owned();
    for (name, service) in SERVICES {
        text.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key = \"{}\"\nrequest_timeout = \"10s\"\n",
            mocks.base_url(service),
            mocks.config().keys.get(service),
        ));
    }
    App::build(AgentConfig::load(&text, None, []).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_attempt_ends_at_the_calls_deadline() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    // The LLM answers in 5 s: inside its request timeout, past the deadline.
    mocks
        .inject(Fault::new(Service::Llm, FaultMode::Slow).with_latency(Duration::from_secs(5)))
        .unwrap();
    let app = app(&mocks, "[retry]\ndeadline = \"1s\"\n");
    let queue = CallQueue::new(generate_contacts(1), 3);
    let mut entry = queue.next().await.unwrap();

    let start = Instant::now();
    let result = app
        .pipeline()
        .call(&entry.contact, &mut entry.progress)
        .await;
    let elapsed = start.elapsed();

    assert_eq!(
        result,
        CallResult::Unavailable {
            service: ServiceName::new("llm").unwrap(),
            retry_after: None,
        },
        "the LLM could not answer in time: the contact is deferred"
    );
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed <= Duration::from_millis(1_002),
        "the call ended at its deadline, not at the service's answer: {elapsed:?}"
    );
    assert!(entry.progress.script.is_none());
}

/// What the remote health watcher can do while a campaign is still starting
/// (it runs before the first contact is taken): the campaign's summary has it.
#[tokio::test(start_paused = true)]
async fn a_transition_before_the_first_contact_is_in_the_summary() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let app = app(&mocks, "");
    let queue = Arc::new(CallQueue::new(generate_contacts(3), 3));
    let mut campaign = app.campaign(queue);
    campaign.health = None;
    campaign.progress = false;
    let tts = campaign.registry.get("elevenlabs").unwrap();
    assert!(tts.force_open_by(ForcedBy::Remote, "remote"));
    assert!(tts.release(ForcedBy::Remote, "remote"));

    let summary = campaign.run(std::future::pending()).await;
    assert_eq!(summary.completed, 3, "{summary:?}");
    let moves: Vec<_> = summary.breaker_transitions["elevenlabs"]
        .iter()
        .map(|t| (t.from, t.to, t.reason.as_str()))
        .collect();
    assert_eq!(
        moves,
        [
            (
                CircuitState::Closed,
                CircuitState::ForcedOpen,
                "manual force_open: remote"
            ),
            (
                CircuitState::ForcedOpen,
                CircuitState::Closed,
                "manual force_close: remote"
            ),
        ]
    );
}
