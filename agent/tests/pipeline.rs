//! One contact through the built pipeline against the mocks, under a
//! paused clock: the call's deadline (`retry.deadline`) reaches the service
//! clients, so an attempt ends when the call must, not at its
//! `request_timeout`.

use std::time::Duration;

use callguard_agent::app::App;
use callguard_agent::config::AgentConfig;
use callguard_agent::pipeline::CallResult;
use callguard_agent::queue::CallQueue;
use callguard_agent::simulate::generate_contacts;
use callguard_core::ServiceName;
use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn an_attempt_ends_at_the_calls_deadline() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    // The LLM answers in 5 s: inside its request timeout, past the deadline.
    mocks
        .inject(Fault::new(Service::Llm, FaultMode::Slow).with_latency(Duration::from_secs(5)))
        .unwrap();
    let mut text = String::from("[retry]\ndeadline = \"1s\"\n");
    for (name, service) in [
        ("llm", Service::Llm),
        ("elevenlabs", Service::Elevenlabs),
        ("crm", Service::Crm),
    ] {
        text.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key = \"{}\"\nrequest_timeout = \"10s\"\n",
            mocks.base_url(service),
            mocks.config().keys.get(service),
        ));
    }
    let config = AgentConfig::load(&text, None, []).unwrap();
    let app = App::build(config).unwrap();
    let queue = CallQueue::new(generate_contacts(1), 3);
    let mut entry = queue.next().await.unwrap();

    let start = Instant::now();
    let result = app.pipeline().call(&mut entry).await;
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
