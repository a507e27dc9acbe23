//! The control API over HTTP, and `serve` as the binary uses it.

use std::time::Duration;

use callguard_mocks::{MockConfig, MockError, MockServer, Service, Stats, serve};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{client, fetch_json, health, llm, start};

async fn post_faults(client: &Client, server: &MockServer, body: &Value) -> (StatusCode, Value) {
    let response = client
        .post(format!("{}/_control/faults", server.url()))
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn listed(client: &Client, server: &MockServer) -> Vec<Value> {
    let body = fetch_json(client.get(format!("{}/_control/faults", server.url()))).await;
    body["faults"].as_array().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn faults_are_injected_listed_and_cleared_over_http() {
    let server = start().await;
    let client = client();
    let (status, body) = post_faults(
        &client,
        &server,
        &json!({"service": "elevenlabs", "mode": "unavailable", "for": "20s", "retry_after": "2s"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"ids": [1]}));
    let (status, body) = post_faults(
        &client,
        &server,
        &json!([
            {"service": "llm", "mode": "slow", "latency": "250ms"},
            {"service": "crm", "mode": "flaky", "rate": 0.25, "after": "3s"},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"ids": [2, 3]}));
    assert_eq!(
        health(&client, &server, Service::Elevenlabs).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let faults = listed(&client, &server).await;
    assert_eq!(faults.len(), 3);
    assert_eq!(faults[0]["id"], 1);
    assert_eq!(faults[0]["state"], "active");
    assert_eq!(faults[0]["for"], "20s");
    assert_eq!(faults[0]["ends_in"], "20s");
    assert_eq!(faults[1]["latency"], "250ms");
    assert_eq!(faults[2]["state"], "scheduled");
    assert_eq!(faults[2]["starts_in"], "3s");
    assert_eq!(faults[2]["rate"], 0.25);

    let cleared =
        fetch_json(client.delete(format!("{}/_control/faults?service=llm", server.url()))).await;
    assert_eq!(cleared, json!({"cleared": 1}));
    let remaining: Vec<_> = listed(&client, &server)
        .await
        .iter()
        .map(|f| f["service"].clone())
        .collect();
    assert_eq!(remaining, [json!("elevenlabs"), json!("crm")]);
    let cleared = fetch_json(client.delete(format!("{}/_control/faults", server.url()))).await;
    assert_eq!(cleared, json!({"cleared": 2}));
    assert!(listed(&client, &server).await.is_empty());
    assert_eq!(
        health(&client, &server, Service::Elevenlabs).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_control_bodies_name_the_bad_field() {
    let server = start().await;
    let client = client();
    let cases = [
        (json!({"service": "elevenlabs"}), "mode"),
        (json!({"mode": "reset"}), "service"),
        (json!({"service": "tts", "mode": "reset"}), "service"),
        (json!({"service": "llm", "mode": "explode"}), "mode"),
        (
            json!({"service": "llm", "mode": "reset", "for": "soon"}),
            "for",
        ),
        (
            json!({"service": "llm", "mode": "reset", "duration": "2s"}),
            "duration",
        ),
        (
            json!({"service": "llm", "mode": "flaky", "rate": 1.5}),
            "rate",
        ),
        (json!({"service": "llm", "mode": "slow"}), "latency"),
        (
            json!({"service": "llm", "mode": "timeout", "retry_after": "1s"}),
            "retry_after",
        ),
        (
            json!([{"service": "llm", "mode": "ok"}, {"service": "llm", "mode": "flaky", "rate": -1}]),
            "faults[1].rate",
        ),
        (json!([]), "empty"),
    ];
    for (body, field) in cases {
        let (status, answer) = post_faults(&client, &server, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    let not_json = client
        .post(format!("{}/_control/faults", server.url()))
        .body("{service")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert!(server.faults().is_empty(), "a bad list injects nothing");

    for query in ["service=sheets", "servce=llm"] {
        let response = client
            .delete(format!("{}/_control/faults?{query}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let answer: Value = response.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains("serv"), "{query}: {message}");
    }
}

#[tokio::test]
async fn stats_count_per_service_kind_and_status_and_can_be_reset() {
    let server = start().await;
    let client = client();
    llm(&client, &server, "A").send().await.unwrap();
    client
        .post(format!(
            "{}/v1/chat/completions",
            server.base_url(Service::Llm)
        ))
        .bearer_auth("wrong")
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    health(&client, &server, Service::Crm).await;
    let stats_url = format!("{}/_control/stats", server.url());
    let stats = fetch_json(client.get(&stats_url)).await;
    assert_eq!(
        stats,
        json!({
            "elevenlabs": {"api": {}, "health": {}},
            "llm": {"api": {"200": 1, "401": 1}, "health": {}},
            "crm": {"api": {}, "health": {"200": 1}},
        })
    );
    assert_eq!(
        serde_json::from_value::<Stats>(stats).unwrap(),
        server.stats()
    );
    let reset = client.delete(&stats_url).send().await.unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.stats(), Stats::default());
}

#[tokio::test]
async fn serve_runs_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, MockConfig::default(), async {
        let _ = stopped.await;
    }));
    let client = client();
    let response = client
        .get(format!("http://{addr}/crm/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let injected = client
        .post(format!("http://{addr}/_control/faults"))
        .json(&json!({"service": "crm", "mode": "unavailable"}))
        .send()
        .await
        .unwrap();
    assert_eq!(injected.status(), StatusCode::CREATED);
    let response = client
        .get(format!("http://{addr}/crm/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve stops after the shutdown signal")
        .unwrap()
        .unwrap();
    assert!(
        client
            .get(format!("http://{addr}/crm/health"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn invalid_configs_are_refused() {
    let mut config = MockConfig::default();
    config.keys.llm.clear();
    let err = MockServer::start(config.clone()).await.unwrap_err();
    assert!(
        matches!(&err, MockError::Config(e) if e.key == "keys.llm"),
        "{err}"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("keys.llm"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_held_requests_go() {
    let server = start().await;
    let client = client();
    server
        .inject(callguard_mocks::Fault::new(
            Service::Llm,
            callguard_mocks::FaultMode::Timeout,
        ))
        .unwrap();
    let held = tokio::spawn(llm(&client, &server, "A").send());
    while server
        .stats()
        .total(Service::Llm, callguard_mocks::EndpointKind::Api)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
