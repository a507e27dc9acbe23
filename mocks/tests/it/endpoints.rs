//! Each service's API without faults: answers, auth, bad requests, idempotency.

use callguard_mocks::{EndpointKind, MockConfig, MockKeys, Service};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{client, crm, fetch_json, health, llm, start, start_with, tts};

#[tokio::test]
async fn tts_speaks_audio_that_grows_with_the_text() {
    let server = start().await;
    let client = client();
    let short = tts(&client, &server, "Hello.").send().await.unwrap();
    assert_eq!(short.status(), StatusCode::OK);
    assert_eq!(short.headers()["content-type"], "audio/mpeg");
    let short = short.bytes().await.unwrap();
    assert!(short.starts_with(b"ID3"), "{:?}", &short[..10]);
    assert_eq!(
        &short[10..12],
        &[0xFF, 0xFB],
        "an MPEG frame follows the tag"
    );
    assert!((100..1000).contains(&short.len()), "{} bytes", short.len());
    let long = tts(&client, &server, &"Hello there, Alice. ".repeat(20))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        long.len() > short.len(),
        "{} vs {}",
        long.len(),
        short.len()
    );
}

#[tokio::test]
async fn tts_rejects_missing_and_wrong_keys() {
    let server = start().await;
    let client = client();
    let url = format!(
        "{}/v1/text-to-speech/v",
        server.base_url(Service::Elevenlabs)
    );
    let expected = json!({"detail":{"status":"invalid_api_key","message":"Invalid API key"}});
    for key in [None, Some("mock-llm-key")] {
        let mut request = client.post(&url).json(&json!({ "text": "hi" }));
        if let Some(key) = key {
            request = request.header("xi-api-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "key {key:?}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected);
    }
}

#[tokio::test]
async fn tts_rejects_malformed_json_and_missing_text() {
    let server = start().await;
    let client = client();
    let url = format!(
        "{}/v1/text-to-speech/v",
        server.base_url(Service::Elevenlabs)
    );
    let send = |body: &'static str| {
        client
            .post(&url)
            .header("xi-api-key", "mock-elevenlabs-key")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let malformed = send("{\"text\": ").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["detail"]["status"], "invalid_json");

    for (body, msg) in [
        (r#"{"model_id":"m"}"#, "Field required"),
        (
            r#"{"text":"  "}"#,
            "String should have at least 1 character",
        ),
        (r#"{"text":7}"#, "Input should be a valid string"),
    ] {
        let response = send(body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let detail: Value = response.json().await.unwrap();
        assert_eq!(
            detail["detail"][0]["loc"],
            json!(["body", "text"]),
            "{body}"
        );
        assert_eq!(detail["detail"][0]["msg"], msg, "{body}");
    }
}

#[tokio::test]
async fn llm_writes_a_script_for_the_named_contact() {
    let server = start().await;
    let client = client();
    let response = llm(&client, &server, "Alice Smith").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let script = choice["message"]["content"].as_str().unwrap();
    assert!(script.contains("Alice Smith"), "{script}");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let other = fetch_json(llm(&client, &server, "Bob")).await;
    let script = other["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        script.contains("Bob") && !script.contains("Alice"),
        "{script}"
    );
    assert_ne!(other["id"], body["id"], "completion ids are unique");
}

#[tokio::test]
async fn llm_rejects_wrong_keys_and_malformed_requests() {
    let server = start().await;
    let client = client();
    let url = format!("{}/v1/chat/completions", server.base_url(Service::Llm));
    let wrong = client
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&json!({"model":"m","messages":[{"role":"user","content":"hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}})
    );

    for (body, field) in [
        (r#"{"model":"m""#, "EOF"),
        (r#"{"model":"m"}"#, "messages"),
        (r#"{"model":"m","messages":[]}"#, "messages"),
        (r#"{"model":"m","messages":[{"content":"hi"}]}"#, "role"),
    ] {
        let response = client
            .post(&url)
            .bearer_auth("mock-llm-key")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
}

#[tokio::test]
async fn crm_stores_each_idempotency_key_once() {
    let server = start().await;
    let client = client();
    let first = crm(&client, &server, "c-1", "key-1").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["contact_id"], "c-1");
    assert_eq!(first["outcome"], "completed");
    let id = first["id"].as_str().unwrap();

    let again = crm(&client, &server, "c-1", "key-1").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let second = crm(&client, &server, "c-2", "key-2").send().await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["id"].as_str().unwrap(), id);

    let listed = fetch_json(
        client
            .get(format!("{}/v1/calls", server.base_url(Service::Crm)))
            .bearer_auth("mock-crm-key"),
    )
    .await;
    assert_eq!(listed, json!([first, second]));
    let records = server.crm_records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id, id);
    assert_eq!(records[0].contact_id(), "c-1");
    assert_eq!(records[0].idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(records[1].to_json(), second);
}

#[tokio::test]
async fn crm_refuses_a_reused_key_with_another_record() {
    let server = start().await;
    let client = client();
    let created = crm(&client, &server, "c-1", "key-1").send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let clash = crm(&client, &server, "c-9", "key-1").send().await.unwrap();
    assert_eq!(clash.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = clash.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(server.crm_records().len(), 1);
}

#[tokio::test]
async fn crm_rejects_wrong_keys_and_invalid_records() {
    let server = start().await;
    let client = client();
    let url = format!("{}/v1/calls", server.base_url(Service::Crm));
    let wrong = client
        .post(&url)
        .bearer_auth("mock-llm-key")
        .json(&json!({"contact_id":"c-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let listing = client.get(&url).send().await.unwrap();
    assert_eq!(
        listing.status(),
        StatusCode::UNAUTHORIZED,
        "listing needs the key too"
    );

    for (body, message) in [
        ("{\"contact_id\":", "not valid JSON"),
        ("[1,2]", "JSON object"),
        (r#"{"name":"Alice"}"#, "contact_id is required"),
        (
            r#"{"contact_id":""}"#,
            "contact_id must be a non-empty string",
        ),
    ] {
        let response = client
            .post(&url)
            .bearer_auth("mock-crm-key")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "validation_error", "{body}");
        let text = error["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    assert!(server.crm_records().is_empty());
}

#[tokio::test]
async fn configured_keys_replace_the_defaults() {
    let server = start_with(MockConfig {
        keys: MockKeys {
            crm: "crm-secret".into(),
            ..MockKeys::default()
        },
        ..MockConfig::default()
    })
    .await;
    let client = client();
    let default_key = crm(&client, &server, "c-1", "k").send().await.unwrap();
    assert_eq!(default_key.status(), StatusCode::UNAUTHORIZED);
    let configured = client
        .post(format!("{}/v1/calls", server.base_url(Service::Crm)))
        .bearer_auth("crm-secret")
        .json(&json!({"contact_id":"c-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(configured.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn health_answers_ok_without_a_key_and_is_counted_apart() {
    let server = start().await;
    let client = client();
    for service in Service::ALL {
        let response = client
            .get(format!("{}/health", server.base_url(service)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{service}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status":"ok"})
        );
    }
    assert_eq!(health(&client, &server, Service::Llm).await, StatusCode::OK);
    llm(&client, &server, "A").send().await.unwrap();
    let stats = server.stats();
    assert_eq!(stats.count(Service::Llm, EndpointKind::Health, "200"), 2);
    assert_eq!(stats.count(Service::Llm, EndpointKind::Api, "200"), 1);
    assert_eq!(stats.total(Service::Elevenlabs, EndpointKind::Health), 1);
    assert_eq!(stats.total(Service::Crm, EndpointKind::Api), 0);
}

/// A chat request for Ada with `extra` fields merged into the body.
fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-5-mini",
        "messages": [{ "role": "user", "content": "Write a script.\nName: Ada" }],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn llm_answers_like_a_current_model_about_token_fields() {
    let server = start().await;
    let client = client();
    let url = format!("{}/v1/chat/completions", server.base_url(Service::Llm));
    let post = |body: Value| client.post(&url).bearer_auth("mock-llm-key").json(&body);

    let refused = post(chat_body(json!({"max_tokens": 300})))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. \
                        Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }})
    );
    let taken = post(chat_body(json!({"max_completion_tokens": 300})))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::OK);
    let zero = fetch_json(post(chat_body(json!({"max_completion_tokens": 0})))).await;
    assert!(
        zero["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'max_completion_tokens'"),
        "{zero}"
    );

    // Told to answer like an older model, through the control API.
    let control = format!("{}/_control/llm", server.url());
    let set = fetch_json(
        client
            .put(&control)
            .json(&json!({"refuse_max_tokens": false})),
    )
    .await;
    assert_eq!(set, json!({"refuse_max_tokens": false}));
    let legacy = post(chat_body(json!({"max_tokens": 300})))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), StatusCode::OK);
    assert_eq!(fetch_json(client.get(&control)).await, set);
    let bad = client
        .put(&control)
        .json(&json!({"refuse_max_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let error = bad.json::<Value>().await.unwrap()["error"].to_string();
    assert!(error.contains("refuse_max_token"), "{error}");
}

#[tokio::test]
async fn llm_takes_the_config_s_behaviour_and_gemini_s_path() {
    let mut config = MockConfig::default();
    config.llm.refuse_max_tokens = false;
    let server = start_with(config).await;
    let answer = fetch_json(
        client()
            .post(format!(
                "{}/v1beta/openai/chat/completions",
                server.base_url(Service::Llm)
            ))
            .bearer_auth("mock-llm-key")
            .json(&chat_body(json!({"max_tokens": 300}))),
    )
    .await;
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["model"], "gpt-5-mini");
}

#[tokio::test]
async fn llm_serves_azure_deployments_with_api_key_and_api_version() {
    let server = start().await;
    let client = client();
    let deployment = format!(
        "{}/openai/deployments/my-gpt/chat/completions",
        server.base_url(Service::Llm)
    );
    let body = json!({
        "messages": [{ "role": "user", "content": "Name: Ada" }],
        "max_completion_tokens": 300,
    });
    let answer = fetch_json(
        client
            .post(format!("{deployment}?api-version=2024-10-21"))
            .header("api-key", "mock-llm-key")
            .json(&body),
    )
    .await;
    assert_eq!(answer["model"], "my-gpt", "the deployment names the model");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello Ada,"),
        "{answer}"
    );

    let no_version = client
        .post(&deployment)
        .header("api-key", "mock-llm-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        no_version.json::<Value>().await.unwrap(),
        json!({"error": {"code": "BadRequest", "message": "Missing required query parameter: api-version"}})
    );
    let bearer = client
        .post(format!("{deployment}?api-version=2024-10-21"))
        .bearer_auth("mock-llm-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bearer.status(),
        StatusCode::UNAUTHORIZED,
        "Azure reads api-key"
    );
    assert_eq!(
        bearer.json::<Value>().await.unwrap()["error"]["code"],
        "401"
    );
}
