//! Each fault mode as a client sees it, schedules under a paused clock, and
//! flaky faults' seeded randomness.

use std::time::Duration;

use callguard_mocks::{
    EndpointKind, Fault, FaultMode, MockConfig, OUTCOME_RESET, OUTCOME_TIMEOUT, Service,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::common::{client, crm, health, llm, start, start_with, tts};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn unavailable_answers_503_with_retry_after_on_api_and_health() {
    let server = start().await;
    let client = client();
    server
        .inject(
            Fault::new(Service::Elevenlabs, FaultMode::Unavailable).with_retry_after(2 * SECOND),
        )
        .unwrap();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"]["status"], "service_unavailable");
    assert_eq!(
        health(&client, &server, Service::Elevenlabs).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        health(&client, &server, Service::Llm).await,
        StatusCode::OK,
        "other services are untouched"
    );
    let stats = server.stats();
    assert_eq!(
        stats.count(Service::Elevenlabs, EndpointKind::Api, "503"),
        1
    );
    assert_eq!(
        stats.count(Service::Elevenlabs, EndpointKind::Health, "503"),
        1
    );

    server.clear_faults();
    assert_eq!(
        tts(&client, &server, "hi").send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limited_answers_429_and_rounds_retry_after_up() {
    let server = start().await;
    let client = client();
    server
        .inject(
            Fault::new(Service::Llm, FaultMode::RateLimited)
                .with_retry_after(Duration::from_millis(1500)),
        )
        .unwrap();
    let response = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests");

    server.clear_faults();
    server
        .inject(Fault::new(Service::Llm, FaultMode::RateLimited))
        .unwrap();
    let response = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_none());
}

#[tokio::test(start_paused = true)]
async fn unauthorized_answers_401_even_with_the_right_key() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Crm, FaultMode::Unauthorized))
        .unwrap();
    let response = crm(&client, &server, "c-1", "k").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(server.crm_records().is_empty());
}

#[tokio::test(start_paused = true)]
async fn bad_request_hits_only_the_listed_contacts() {
    let server = start().await;
    let client = client();
    server
        .inject_all(vec![
            Fault::new(Service::Crm, FaultMode::BadRequest).for_contacts(["c-2"]),
            Fault::new(Service::Llm, FaultMode::BadRequest).for_contacts(["c-2"]),
        ])
        .unwrap();
    // CRM: the contact id is read from the body.
    assert_eq!(
        crm(&client, &server, "c-1", "k1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let rejected = crm(&client, &server, "c-2", "k2").send().await.unwrap();
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        server.crm_records().len(),
        1,
        "the rejected record is not stored"
    );
    // LLM: the contact id comes in the X-Contact-Id header.
    let with_contact = |contact| {
        llm(&client, &server, "A")
            .header("X-Contact-Id", contact)
            .send()
    };
    assert_eq!(with_contact("c-1").await.unwrap().status(), StatusCode::OK);
    let rejected = with_contact("c-2").await.unwrap();
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
    let body: Value = rejected.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert_eq!(
        llm(&client, &server, "A").send().await.unwrap().status(),
        StatusCode::OK,
        "no contact"
    );
    assert_eq!(health(&client, &server, Service::Crm).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn slow_adds_the_latency_then_answers() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(3 * SECOND))
        .unwrap();
    let started = Instant::now();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().starts_with(b"ID3"));
    assert!((3 * SECOND..4 * SECOND).contains(&elapsed), "{elapsed:?}");

    let started = Instant::now();
    server.clear_faults();
    tts(&client, &server, "hi").send().await.unwrap();
    assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn timeout_holds_until_the_client_gives_up() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Llm, FaultMode::Timeout))
        .unwrap();
    let started = Instant::now();
    let err = llm(&client, &server, "A")
        .timeout(2 * SECOND)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= 2 * SECOND);
    assert_eq!(
        server
            .stats()
            .count(Service::Llm, EndpointKind::Api, OUTCOME_TIMEOUT),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn clearing_a_timeout_fault_answers_held_requests() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Crm, FaultMode::Timeout))
        .unwrap();
    let held = tokio::spawn(crm(&client, &server, "c-1", "k").send());
    while server
        .stats()
        .count(Service::Crm, EndpointKind::Api, OUTCOME_TIMEOUT)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!held.is_finished());
    assert_eq!(server.clear_faults(), 1);
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(server.crm_records().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_fault_lets_go_when_it_ends_or_at_the_cap() {
    let server = start_with(MockConfig {
        timeout_cap: Duration::from_secs(30).into(),
        ..MockConfig::default()
    })
    .await;
    let client = client();
    // Ends after 10 s: the held request is then answered normally.
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Timeout).lasting(10 * SECOND))
        .unwrap();
    let started = Instant::now();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        (10 * SECOND..11 * SECOND).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );

    // Lasts forever: the cap answers 504.
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Timeout))
        .unwrap();
    let started = Instant::now();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        (30 * SECOND..31 * SECOND).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Crm, FaultMode::Reset))
        .unwrap();
    let err = crm(&client, &server, "c-1", "k").send().await.unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    assert!(err.is_request() && !err.is_timeout(), "{err:?}");
    let chain = error_chain(&err);
    assert!(
        chain.contains("connection reset"),
        "a TCP reset, got: {chain}"
    );
    assert!(server.crm_records().is_empty());
    assert_eq!(
        server
            .stats()
            .count(Service::Crm, EndpointKind::Api, OUTCOME_RESET),
        1
    );
    let health_err = client
        .get(format!("{}/health", server.base_url(Service::Crm)))
        .send()
        .await
        .unwrap_err();
    assert!(health_err.status().is_none(), "{health_err:?}");

    server.clear_faults();
    assert_eq!(
        crm(&client, &server, "c-1", "k")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(" / ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text.to_lowercase()
}

#[tokio::test(start_paused = true)]
async fn garbage_is_a_200_that_is_neither_json_nor_audio() {
    let server = start().await;
    let client = client();
    server
        .inject_all(vec![
            Fault::new(Service::Llm, FaultMode::Garbage),
            Fault::new(Service::Elevenlabs, FaultMode::Garbage),
        ])
        .unwrap();
    let response = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert!(response.json::<Value>().await.is_err());
    let audio = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(audio.status(), StatusCode::OK);
    assert_ne!(audio.headers()["content-type"], "audio/mpeg");
    assert!(audio.bytes().await.unwrap().starts_with(b"<html>"));
}

#[tokio::test]
async fn oversized_streams_the_configured_length() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Oversized))
        .unwrap();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    assert_eq!(response.content_length(), Some(50 * 1024 * 1024));
    assert_eq!(response.bytes().await.unwrap().len(), 50 * 1024 * 1024);

    let small = start_with(MockConfig {
        oversized_body_bytes: 100_003,
        ..MockConfig::default()
    })
    .await;
    small
        .inject(Fault::new(Service::Crm, FaultMode::Oversized))
        .unwrap();
    let body = crm(&client, &small, "c-1", "k")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 100_003);
}

/// The statuses of `n` health checks of the LLM under a 30% flaky fault.
async fn flaky_statuses(seed: u64, n: usize) -> Vec<u16> {
    let server = start_with(MockConfig {
        seed,
        ..MockConfig::default()
    })
    .await;
    let client = client();
    server
        .inject(Fault::new(Service::Llm, FaultMode::Flaky).with_rate(0.3))
        .unwrap();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(health(&client, &server, Service::Llm).await.as_u16());
    }
    statuses
}

#[tokio::test(start_paused = true)]
async fn flaky_fails_about_its_rate_the_same_way_for_the_same_seed() {
    let first = flaky_statuses(7, 300).await;
    let failed = first.iter().filter(|s| **s == 503).count();
    assert_eq!(first.iter().filter(|s| **s == 200).count() + failed, 300);
    assert!(
        (60..=120).contains(&failed),
        "{failed} of 300 failed at rate 0.3"
    );
    assert_eq!(
        flaky_statuses(7, 300).await,
        first,
        "same seed, same failures"
    );
    assert_ne!(
        flaky_statuses(8, 300).await,
        first,
        "another seed, other failures"
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_fault_acts_only_in_its_window() {
    let server = start().await;
    let client = client();
    server
        .inject(
            Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
                .starting_after(3 * SECOND)
                .lasting(20 * SECOND),
        )
        .unwrap();
    let status = || health(&client, &server, Service::Elevenlabs);
    assert_eq!(status().await, StatusCode::OK, "t = 0");
    tokio::time::advance(2 * SECOND).await;
    assert_eq!(status().await, StatusCode::OK, "t = 2 s");
    tokio::time::advance(SECOND).await;
    assert_eq!(status().await, StatusCode::SERVICE_UNAVAILABLE, "t = 3 s");
    tokio::time::advance(19 * SECOND).await;
    assert_eq!(status().await, StatusCode::SERVICE_UNAVAILABLE, "t = 22 s");
    tokio::time::advance(SECOND).await;
    assert_eq!(status().await, StatusCode::OK, "t = 23 s");
    assert!(server.faults().is_empty(), "the fault is over");
}

#[tokio::test(start_paused = true)]
async fn ok_shadows_an_older_fault_while_it_lives() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Crm, FaultMode::Unavailable))
        .unwrap();
    server
        .inject(Fault::new(Service::Crm, FaultMode::Ok).lasting(5 * SECOND))
        .unwrap();
    assert_eq!(health(&client, &server, Service::Crm).await, StatusCode::OK);
    tokio::time::advance(5 * SECOND).await;
    assert_eq!(
        health(&client, &server, Service::Crm).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
