//! The services' own limits as a client sees them over a real socket:
//! ElevenLabs' concurrent requests (the short queue, both 429 bodies, the
//! headers on every answer), the LLM's requests per minute (OpenAI's
//! `x-ratelimit-*` headers, a 429 that says which limit), set through the
//! config and the control API. The clock is paused: queues and refills are
//! exact.

use std::time::{Duration, SystemTime};

use callguard_core::{ErrorKind, classify_status, refine_by_body};
use callguard_limit::ProviderHeaders;
use callguard_mocks::{
    CONTACT_HEADER, ConcurrencyLimit, EndpointKind, Fault, FaultMode, MockConfig, MockLimits,
    MockServer, RequestRate, Service,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::common::{client, fetch_json, health, llm, start, start_with, tts};

const SECOND: Duration = Duration::from_secs(1);

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// How a client classifies the answer: status, `Retry-After`, then the body.
fn classified(status: StatusCode, retry_after: Option<&str>, body: &[u8]) -> ErrorKind {
    let error = classify_status(status.as_u16(), retry_after, SystemTime::now()).unwrap();
    refine_by_body(error, body).kind()
}

/// Waits (in virtual time) until ElevenLabs serves `n` requests.
async fn until_in_flight(server: &MockServer, n: u32) {
    while server.limits().elevenlabs.map(|s| s.in_flight) != Some(n) {
        sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn elevenlabs_refuses_past_its_concurrency_limit_after_a_short_queue() {
    let server = start_with(MockConfig {
        limits: MockLimits {
            elevenlabs: Some(ConcurrencyLimit::new(2)),
            llm: None,
        },
        ..MockConfig::default()
    })
    .await;
    let client = client();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(3 * SECOND))
        .unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(tts(&client, &server, "hi").send()))
        .collect();
    until_in_flight(&server, 2).await;

    let started = Instant::now();
    let refused = tts(&client, &server, "hi").send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        (Duration::from_millis(50)..Duration::from_millis(60)).contains(&waited),
        "queued {waited:?} before the 429"
    );
    assert_eq!(header(&refused, "current-concurrent-requests"), Some("2"));
    assert_eq!(header(&refused, "maximum-concurrent-requests"), Some("2"));
    let seen = ProviderHeaders::from_headers(refused.headers());
    assert_eq!(seen.maximum_concurrent.value(), Some(2));
    assert_eq!(seen.current_concurrent.value(), Some(2));
    let body = refused.bytes().await.unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["detail"]["status"], "too_many_concurrent_requests");
    assert_eq!(
        classified(StatusCode::TOO_MANY_REQUESTS, None, &body),
        ErrorKind::ConcurrencyLimited
    );

    for request in held {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "maximum-concurrent-requests"), Some("2"));
        let current = header(&response, "current-concurrent-requests");
        assert!(matches!(current, Some("1" | "2")), "{current:?}");
    }
    let stats = server.stats();
    assert_eq!(
        stats.count(Service::Elevenlabs, EndpointKind::Api, "429"),
        1
    );
    assert_eq!(
        stats.count(Service::Elevenlabs, EndpointKind::Api, "200"),
        2
    );
    assert_eq!(server.limits().elevenlabs.unwrap().in_flight, 0);
}

/// A server whose ElevenLabs serves `max` requests at once, each slowed by
/// the `slow` fault.
async fn limited(max: u32, slow: Fault) -> MockServer {
    let server = start().await;
    server
        .set_concurrency_limit(Some(ConcurrencyLimit::new(max)))
        .unwrap();
    server.inject(slow).unwrap();
    server
}

#[tokio::test(start_paused = true)]
async fn a_slot_freed_within_the_queue_lets_the_waiting_request_through() {
    let server = limited(
        1,
        Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(Duration::from_millis(30)),
    )
    .await;
    let client = client();
    let first = tokio::spawn(tts(&client, &server, "one").send());
    until_in_flight(&server, 1).await;
    let started = Instant::now();
    let second = tts(&client, &server, "two").send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(header(&second, "current-concurrent-requests"), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(80));
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_limit_without_headers_is_enforced_but_not_announced() {
    let server = start().await;
    let limit: ConcurrencyLimit =
        serde_json::from_value(json!({"max_concurrent": 1, "headers": false})).unwrap();
    assert_eq!(limit, ConcurrencyLimit::new(1).without_headers());
    server.set_concurrency_limit(Some(limit)).unwrap();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Slow).with_latency(SECOND))
        .unwrap();
    let client = client();
    let first = tokio::spawn(tts(&client, &server, "one").send());
    until_in_flight(&server, 1).await;
    let refused = tts(&client, &server, "two").send().await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "still enforced"
    );
    let served = first.await.unwrap().unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    for answer in [&refused, &served] {
        assert_eq!(header(answer, "maximum-concurrent-requests"), None);
        assert_eq!(header(answer, "current-concurrent-requests"), None);
    }
    let body = refused.bytes().await.unwrap();
    assert_eq!(
        classified(StatusCode::TOO_MANY_REQUESTS, None, &body),
        ErrorKind::ConcurrencyLimited,
        "the body still says why"
    );
}

#[tokio::test(start_paused = true)]
async fn health_checks_are_not_limited() {
    let server = limited(
        1,
        Fault::new(Service::Elevenlabs, FaultMode::Slow)
            .with_latency(3 * SECOND)
            .for_contacts(["c-1"]),
    )
    .await;
    let client = client();
    let held = tokio::spawn(
        tts(&client, &server, "hi")
            .header(CONTACT_HEADER, "c-1")
            .send(),
    );
    until_in_flight(&server, 1).await;
    let started = Instant::now();
    assert_eq!(
        health(&client, &server, Service::Elevenlabs).await,
        StatusCode::OK
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "not queued");
    held.await.unwrap().unwrap();
}

async fn put_limit(
    client: &Client,
    server: &MockServer,
    service: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let response = client
        .put(format!("{}/_control/limits/{service}", server.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn limits_are_set_changed_and_cleared_over_the_control_api() {
    let server = start().await;
    let client = client();
    let none = fetch_json(client.get(format!("{}/_control/limits", server.url()))).await;
    assert_eq!(none, json!({"elevenlabs": null, "llm": null}));
    let plain = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(
        header(&plain, "maximum-concurrent-requests"),
        None,
        "no limit set"
    );

    let (status, body) = put_limit(
        &client,
        &server,
        "elevenlabs",
        &json!({"max_concurrent": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["elevenlabs"],
        json!({"max_concurrent": 3, "queue": "50ms", "headers": true, "in_flight": 0})
    );
    let answer = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(header(&answer, "maximum-concurrent-requests"), Some("3"));
    assert_eq!(header(&answer, "current-concurrent-requests"), Some("1"));

    let (status, body) = put_limit(
        &client,
        &server,
        "elevenlabs",
        &json!({"max_concurrent": 5, "queue": "200ms"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["elevenlabs"]["queue"], "200ms");
    let answer = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(header(&answer, "maximum-concurrent-requests"), Some("5"));

    for (service, bad, error) in [
        (
            "elevenlabs",
            json!({"max_concurrent": 0}),
            "invalid limit: max_concurrent must be ≥ 1, got 0",
        ),
        (
            "elevenlabs",
            json!({"max": 3}),
            "invalid limit: max: unknown field `max`",
        ),
        (
            "llm",
            json!({"requests_per_minute": -1}),
            "invalid limit: requests_per_minute: invalid value: integer `-1`",
        ),
        (
            "crm",
            json!({"max_concurrent": 1}),
            "service: no limit to set for \"crm\"",
        ),
    ] {
        let (status, body) = put_limit(&client, &server, service, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = body["error"].as_str().unwrap();
        assert!(message.starts_with(error), "{message}");
    }

    let cleared =
        fetch_json(client.delete(format!("{}/_control/limits/elevenlabs", server.url()))).await;
    assert_eq!(cleared["elevenlabs"], Value::Null);
    let plain = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(header(&plain, "maximum-concurrent-requests"), None);
}

#[tokio::test(start_paused = true)]
async fn system_busy_is_a_429_to_back_off_from() {
    let server = start().await;
    let client = client();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::SystemBusy).with_retry_after(2 * SECOND))
        .unwrap();
    let response = tts(&client, &server, "hi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("2"));
    let body = response.bytes().await.unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["detail"]["status"], "system_busy");
    assert_eq!(
        classified(StatusCode::TOO_MANY_REQUESTS, Some("2"), &body),
        ErrorKind::RateLimited
    );
}

#[tokio::test(start_paused = true)]
async fn the_llm_enforces_requests_per_minute_with_openai_headers() {
    let server = start().await;
    let client = client();
    let (status, body) =
        put_limit(&client, &server, "llm", &json!({"requests_per_minute": 3})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["llm"],
        json!({"requests_per_minute": 3, "remaining": 3})
    );

    for (remaining, reset) in [("2", "20s"), ("1", "40s"), ("0", "1m0s")] {
        let response = llm(&client, &server, "A").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some(remaining)
        );
        assert_eq!(header(&response, "x-ratelimit-reset-requests"), Some(reset));
    }

    let refused = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let seen = ProviderHeaders::from_headers(refused.headers());
    assert_eq!(seen.exhausted_for(), Some(Duration::from_secs(60)));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests", "which limit: requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("requests per min (RPM): Limit 3")
            && message.contains("Please try again in 20s"),
        "{message}"
    );

    sleep(20 * SECOND).await;
    let response = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "one request refilled");
    assert_eq!(
        header(&response, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let stats = server.stats();
    assert_eq!(stats.count(Service::Llm, EndpointKind::Api, "429"), 1);
    assert_eq!(stats.count(Service::Llm, EndpointKind::Api, "200"), 4);

    server.set_request_rate(None).unwrap();
    let response = llm(&client, &server, "A").send().await.unwrap();
    assert_eq!(header(&response, "x-ratelimit-limit-requests"), None);
    assert!(
        server
            .set_request_rate(Some(RequestRate {
                requests_per_minute: 0
            }))
            .is_err()
    );
}
