//! The service clients against the mock services over real loopback sockets:
//! happy paths, every fault mode that maps to an error kind, the size cap,
//! the call's deadline bounding a request, CRM idempotency, and keys kept out
//! of errors. A raw TCP peer checks the
//! exact request shapes and the answers the mocks never give.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use callguard_clients::{
    CallOutcome, CallRecord, ClientSetupError, Contact, CrmClient, HttpServiceConfig, LlmAuth,
    LlmClient, LlmSettings, Prompt, Recorded, RequestContext, TokenLimitParam, TtsClient,
    TtsSettings,
};
use callguard_core::{ErrorKind, ServiceError};
use callguard_mocks::{
    EndpointKind, Fault, FaultMode, GEMINI_CHAT_PATH, MockConfig, MockLlm, MockServer, Service,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WRONG_KEY: &str = "sk-wrong-key-4f1b9c";

fn contact(id: &str, name: &str) -> Contact {
    Contact {
        id: id.into(),
        name: name.into(),
        phone: "+1-555-0100".into(),
        extra: BTreeMap::from([("company".into(), "Analytical Engines".into())]),
    }
}

fn http(server: &MockServer, service: Service) -> HttpServiceConfig {
    HttpServiceConfig::new(server.base_url(service), server.config().keys.get(service))
}

fn tts(config: HttpServiceConfig) -> TtsClient {
    TtsClient::new(&config, &TtsSettings::default()).unwrap()
}

fn llm(config: HttpServiceConfig) -> LlmClient {
    LlmClient::new(&config, &LlmSettings::default()).unwrap()
}

fn crm(config: HttpServiceConfig) -> CrmClient {
    CrmClient::new(&config).unwrap()
}

fn record(contact: &Contact) -> CallRecord {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    CallRecord::new(
        contact,
        CallOutcome::Completed,
        start,
        start + Duration::from_secs(3),
    )
    .with_script("Hello Ada, this is Ava.")
    .with_audio_bytes(1234)
}

/// One call of each client for `contact_id`, errors only.
async fn call_each(
    tts: &TtsClient,
    llm: &LlmClient,
    crm: &CrmClient,
    contact_id: &str,
) -> [Result<(), ServiceError>; 3] {
    let ada = contact(contact_id, "Ada Lovelace");
    let ctx = RequestContext::new(contact_id);
    [
        tts.synthesize(ctx, "Hello").await.result.map(drop),
        llm.generate_script(ctx, &Prompt::for_contact(&ada))
            .await
            .result
            .map(drop),
        crm.record_call(ctx, &record(&ada)).await.result.map(drop),
    ]
}

/// The three clients of `server`, each with `adjust` applied to its config.
fn clients(
    server: &MockServer,
    adjust: impl Fn(&mut HttpServiceConfig),
) -> (TtsClient, LlmClient, CrmClient) {
    let config = |service| {
        let mut config = http(server, service);
        adjust(&mut config);
        config
    };
    (
        tts(config(Service::Elevenlabs)),
        llm(config(Service::Llm)),
        crm(config(Service::Crm)),
    )
}

/// Injects `mode` on every service and checks that each client reports `kind`.
async fn every_client_sees(
    mode: FaultMode,
    kind: ErrorKind,
    adjust: impl Fn(&mut HttpServiceConfig),
) {
    let server = MockServer::start(MockConfig {
        oversized_body_bytes: 4 * 1024 * 1024,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for service in Service::ALL {
        server.inject(Fault::new(service, mode)).unwrap();
    }
    let (tts, llm, crm) = clients(&server, adjust);
    for (service, result) in Service::ALL
        .into_iter()
        .zip(call_each(&tts, &llm, &crm, "c-1").await)
    {
        let error = result.expect_err(service.as_str());
        assert_eq!(error.kind(), kind, "{service}: {error}");
    }
}

#[tokio::test]
async fn tts_returns_the_audio() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = tts(http(&server, Service::Elevenlabs));
    let audio = client
        .synthesize(
            RequestContext::new("c-1"),
            "Hello Ada, this is Ava calling.",
        )
        .await
        .result
        .unwrap();
    assert_eq!(audio.content_type, "audio/mpeg");
    assert!(audio.bytes.starts_with(b"ID3"), "an MP3 with an ID3 tag");
    assert_eq!(
        audio.bytes.len(),
        10 + 5 * 104,
        "two frames plus one per ten characters"
    );
}

#[tokio::test]
async fn llm_returns_the_script_for_the_contact() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = llm(http(&server, Service::Llm));
    let prompt = Prompt::for_contact(&contact("c-1", "Ada Lovelace"));
    let script = client
        .generate_script(RequestContext::new("c-1"), &prompt)
        .await
        .result
        .unwrap();
    assert!(
        script.starts_with("Hello Ada Lovelace, this is Ava"),
        "{script}"
    );
}

/// An LLM client of `server` with `settings`.
fn llm_with(server: &MockServer, settings: &LlmSettings) -> LlmClient {
    LlmClient::new(&http(server, Service::Llm), settings).unwrap()
}

#[tokio::test]
async fn llm_with_max_tokens_is_refused_by_a_current_model_for_good() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let settings = LlmSettings {
        token_limit_param: TokenLimitParam::MaxTokens,
        ..LlmSettings::default()
    };
    let prompt = Prompt::for_contact(&contact("c-1", "Ada Lovelace"));
    let error = llm_with(&server, &settings)
        .generate_script(RequestContext::new("c-1"), &prompt)
        .await
        .result
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(
        !error.counts_toward_breaker(),
        "one request's fault, not the service's: {error}"
    );
    let shown = error.to_string();
    assert!(
        shown.contains("HTTP 400")
            && shown.contains("Unsupported parameter: 'max_tokens'")
            && shown.contains("Use 'max_completion_tokens' instead"),
        "{shown}"
    );
    // An older model (or a server that knows only max_tokens) takes it.
    server.set_llm(MockLlm {
        refuse_max_tokens: false,
    });
    llm_with(&server, &settings)
        .generate_script(RequestContext::new("c-1"), &prompt)
        .await
        .result
        .unwrap();
}

#[tokio::test]
async fn llm_reaches_azure_and_gemini_paths_of_the_mock() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let prompt = Prompt::for_contact(&contact("c-1", "Ada Lovelace"));
    let azure = LlmSettings {
        chat_path: "/openai/deployments/callguard-gpt/chat/completions".into(),
        api_version: Some("2024-10-21".into()),
        auth: LlmAuth::ApiKey,
        ..LlmSettings::default()
    };
    let gemini = LlmSettings {
        model: "gemini-2.5-flash".into(),
        chat_path: GEMINI_CHAT_PATH.into(),
        ..LlmSettings::default()
    };
    for settings in [&azure, &gemini] {
        let script = llm_with(&server, settings)
            .generate_script(RequestContext::new("c-1"), &prompt)
            .await
            .result
            .unwrap();
        assert!(script.starts_with("Hello Ada Lovelace,"), "{script}");
    }
    let stats = server.stats();
    assert_eq!(
        stats.count(Service::Llm, EndpointKind::Api, "200"),
        2,
        "{stats:?}"
    );
    // Without its api-version, Azure's path is a permanent error that says so.
    let unversioned = LlmSettings {
        api_version: None,
        ..azure
    };
    let error = llm_with(&server, &unversioned)
        .generate_script(RequestContext::new("c-1"), &prompt)
        .await
        .result
        .unwrap_err();
    assert!(
        !error.is_transient() && error.to_string().contains("api-version"),
        "{error}"
    );
}

#[tokio::test]
async fn crm_stores_one_record_per_contact_however_often_it_is_sent() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = crm(http(&server, Service::Crm));
    let ada = contact("c-1", "Ada Lovelace");
    let ctx = RequestContext::new("c-1");
    let first = client.record_call(ctx, &record(&ada)).await.result.unwrap();
    let again = client.record_call(ctx, &record(&ada)).await.result.unwrap();
    assert_eq!(first, again, "a repeated write answers the first record");
    let other = client
        .record_call(
            RequestContext::new("c-2"),
            &record(&contact("c-2", "Alan Turing")),
        )
        .await
        .result
        .unwrap();
    assert_ne!(other, first);
    let records = server.crm_records();
    assert_eq!(records.len(), 2, "{records:?}");
    let stored = &records[0];
    assert_eq!(first.id(), Some(stored.id.as_str()));
    assert_eq!(stored.idempotency_key.as_deref(), Some("callguard-c-1"));
    assert_eq!(stored.fields["outcome"], "completed");
    assert_eq!(stored.fields["started_at"], "2025-06-15T15:06:40.000Z");
    assert_eq!(stored.fields["finished_at"], "2025-06-15T15:06:43.000Z");
    assert_eq!(stored.fields["audio_bytes"], 1234);
    assert_eq!(stored.fields["phone"], "+1-555-0100");
}

#[tokio::test]
async fn a_record_an_earlier_pass_wrote_differently_is_kept_and_not_an_error() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let client = crm(http(&server, Service::Crm));
    let ada = contact("c-1", "Ada Lovelace");
    let ctx = RequestContext::new("c-1");
    let first = client.record_call(ctx, &record(&ada)).await.result.unwrap();
    // A second pass after a crash: a new script, new times, the same key.
    let retold = record(&ada).with_script("Hello again, Ada.");
    let again = client.record_call(ctx, &retold).await.result.unwrap();
    assert_eq!(again, Recorded::Earlier);
    assert_eq!(again.id(), None);
    let records = server.crm_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(first.id(), Some(records[0].id.as_str()));
    assert_eq!(
        records[0].fields["script_excerpt"],
        "Hello Ada, this is Ava."
    );
}

#[tokio::test]
async fn another_422_from_the_crm_stays_a_permanent_error() {
    let (base, _peer) = one_shot(
        "HTTP/1.1 422 Unprocessable Entity\r\ncontent-type: application/json\r\ncontent-length: 59\r\n\r\n{\"error\":{\"code\":\"validation_error\",\"message\":\"bad phone\"}}",
    )
    .await;
    let client = crm(HttpServiceConfig::new(base, "crm-key-1"));
    let error = client
        .record_call(RequestContext::new("c-1"), &record(&contact("c-1", "Ada")))
        .await
        .result
        .expect_err("a validation error is not a record");
    assert_eq!(error.status(), Some(422));
    assert!(!error.is_transient());
    assert!(error.to_string().contains("bad phone"), "{error}");
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_never_shown() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (tts, llm, crm) = clients(&server, |config| config.api_key = Some(WRONG_KEY.into()));
    let shown = format!("{tts:?} {llm:?} {crm:?}");
    assert!(!shown.contains(WRONG_KEY), "{shown}");
    for (service, result) in Service::ALL
        .into_iter()
        .zip(call_each(&tts, &llm, &crm, "c-1").await)
    {
        let error = result.expect_err(service.as_str());
        assert_eq!(error.kind(), ErrorKind::Unauthorized, "{service}: {error}");
        assert_eq!(error.status(), Some(401));
        assert!(!error.is_transient());
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(WRONG_KEY), "{shown}");
        assert!(
            shown.contains("Invalid API key") || shown.contains("Incorrect API key"),
            "{shown}"
        );
    }
    assert!(server.crm_records().is_empty());
}

#[tokio::test]
async fn unavailable_carries_retry_after() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for service in Service::ALL {
        server
            .inject(
                Fault::new(service, FaultMode::Unavailable)
                    .with_retry_after(Duration::from_secs(2)),
            )
            .unwrap();
    }
    let (tts, llm, crm) = clients(&server, |_| {});
    for (service, result) in Service::ALL
        .into_iter()
        .zip(call_each(&tts, &llm, &crm, "c-1").await)
    {
        let error = result.expect_err(service.as_str());
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{service}: {error}");
        assert_eq!(error.status(), Some(503));
        assert_eq!(
            error.retry_after(),
            Some(Duration::from_secs(2)),
            "{service}"
        );
        assert!(error.is_transient());
    }
}

#[tokio::test]
async fn rate_limited_carries_retry_after() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    server
        .inject(
            Fault::new(Service::Llm, FaultMode::RateLimited)
                .with_retry_after(Duration::from_secs(7)),
        )
        .unwrap();
    let client = llm(http(&server, Service::Llm));
    let prompt = Prompt::for_contact(&contact("c-1", "Ada"));
    let error = client
        .generate_script(RequestContext::new("c-1"), &prompt)
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RateLimited, "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_reset_connection_is_connection_reset() {
    every_client_sees(FaultMode::Reset, ErrorKind::ConnectionReset, |_| {}).await;
}

#[tokio::test]
async fn a_hung_service_is_a_timeout() {
    // Real sockets need real time: the request timeout is short instead.
    every_client_sees(FaultMode::Timeout, ErrorKind::Timeout, |config| {
        config.request_timeout = Duration::from_millis(300).into();
    })
    .await;
}

/// Sends each client's request to a service that answers in 5 s, with the
/// given `request_timeout` and a call deadline `deadline_in` from now, and
/// checks that each ends as a timeout after `expected` (virtual time, give or
/// take the timer's millisecond).
async fn each_request_times_out_after(
    request_timeout: Duration,
    deadline_in: Duration,
    expected: Duration,
) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for service in Service::ALL {
        server
            .inject(Fault::new(service, FaultMode::Slow).with_latency(Duration::from_secs(5)))
            .unwrap();
    }
    let (tts, llm, crm) = clients(&server, |config| {
        config.request_timeout = request_timeout.into();
    });
    let ada = contact("c-1", "Ada Lovelace");
    let (prompt, record) = (Prompt::for_contact(&ada), record(&ada));
    for client in ["tts", "llm", "crm"] {
        let start = Instant::now();
        let ctx = RequestContext::new("c-1").with_deadline(Some(start + deadline_in));
        let result = match client {
            "tts" => tts.synthesize(ctx, "Hello").await.result.map(drop),
            "llm" => llm.generate_script(ctx, &prompt).await.result.map(drop),
            _ => crm.record_call(ctx, &record).await.result.map(drop),
        };
        let error = result.expect_err(client);
        let elapsed = start.elapsed();
        assert_eq!(error.kind(), ErrorKind::Timeout, "{client}: {error}");
        assert!(
            elapsed >= expected && elapsed <= expected + Duration::from_millis(2),
            "{client}: {elapsed:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_ends_at_the_calls_deadline_when_it_comes_first() {
    let second = Duration::from_secs(1);
    each_request_times_out_after(10 * second, second, second).await;
}

#[tokio::test(start_paused = true)]
async fn a_request_made_at_the_deadline_ends_at_once() {
    let zero = Duration::ZERO;
    each_request_times_out_after(Duration::from_secs(10), zero, zero).await;
}

#[tokio::test(start_paused = true)]
async fn a_request_ends_at_its_timeout_when_that_comes_first() {
    let second = Duration::from_secs(1);
    each_request_times_out_after(2 * second, 30 * second, 2 * second).await;
}

#[tokio::test]
async fn a_garbage_body_is_a_bad_response() {
    every_client_sees(FaultMode::Garbage, ErrorKind::BadResponse, |_| {}).await;
}

#[tokio::test]
async fn a_body_over_the_cap_is_a_bad_response() {
    every_client_sees(FaultMode::Oversized, ErrorKind::BadResponse, |config| {
        config.max_response_bytes = 64 * 1024;
    })
    .await;
}

#[tokio::test]
async fn the_cap_error_names_the_cap() {
    let server = MockServer::start(MockConfig {
        oversized_body_bytes: 1024 * 1024,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    server
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Oversized))
        .unwrap();
    let mut config = http(&server, Service::Elevenlabs);
    config.max_response_bytes = 1000;
    let error = tts(config)
        .synthesize(RequestContext::new("c-1"), "Hi")
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadResponse);
    assert!(error.detail().contains("1000-byte cap"), "{error}");
}

#[tokio::test]
async fn contact_ids_reach_the_service() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for service in Service::ALL {
        server
            .inject(Fault::new(service, FaultMode::BadRequest).for_contacts(["c-bad"]))
            .unwrap();
    }
    let (tts, llm, crm) = clients(&server, |_| {});
    for result in call_each(&tts, &llm, &crm, "c-good").await {
        result.unwrap();
    }
    for (service, result) in Service::ALL
        .into_iter()
        .zip(call_each(&tts, &llm, &crm, "c-bad").await)
    {
        let error = result.expect_err(service.as_str());
        assert_eq!(
            error.kind(),
            ErrorKind::InvalidRequest,
            "{service}: {error}"
        );
        assert!(!error.counts_toward_breaker());
    }
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = crm(HttpServiceConfig::new(format!("http://{addr}/crm"), "k"));
    let ada = contact("c-1", "Ada");
    let error = client
        .record_call(RequestContext::new("c-1"), &record(&ada))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    assert!(
        !error.detail().contains(&addr.to_string()),
        "no URL in errors: {error}"
    );
}

#[test]
fn a_key_variable_that_is_not_set_stops_construction() {
    let config: HttpServiceConfig = serde_json::from_str(
        r#"{"base_url":"http://127.0.0.1:1/crm","api_key_env":"CALLGUARD_TEST_SURELY_UNSET_KEY"}"#,
    )
    .unwrap();
    let error = CrmClient::new(&config)
        .unwrap_err()
        .in_section("services.crm");
    assert!(matches!(error, ClientSetupError::Config(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "services.crm.api_key_env must be the name of a set, non-empty environment variable, \
         got \"CALLGUARD_TEST_SURELY_UNSET_KEY\""
    );
}

/// A peer that accepts one connection, captures the request (head and
/// body), answers `response` verbatim and closes.
async fn one_shot(response: impl Into<String>) -> (String, JoinHandle<String>) {
    let response = response.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/svc", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length || n == 0 {
                    break;
                }
            } else if n == 0 {
                break;
            }
        }
        socket.write_all(response.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
        String::from_utf8(request).unwrap()
    });
    (base, task)
}

/// A `200` with a JSON body.
fn ok_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The request's head lines (lowercased) and its JSON body.
fn split_request(raw: &str) -> (Vec<String>, serde_json::Value) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let lines = head.lines().map(str::to_ascii_lowercase).collect();
    (lines, serde_json::from_str(body).unwrap())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn tts_request_shape() {
    let (base, peer) =
        one_shot("HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ncontent-length: 3\r\n\r\nID3")
            .await;
    let client = tts(HttpServiceConfig::new(base, "xi-key-1"));
    let ctx = RequestContext::new("c-7").with_traceparent(Some(TRACEPARENT));
    let audio = client.synthesize(ctx, "Hello").await.result.unwrap();
    assert_eq!(audio.bytes, b"ID3");
    let (head, body) = split_request(&peer.await.unwrap());
    assert_eq!(
        head[0],
        "post /svc/v1/text-to-speech/21m00tcm4tlvdq8ikwam http/1.1"
    );
    let traceparent = format!("traceparent: {TRACEPARENT}");
    for line in [
        "xi-api-key: xi-key-1",
        "accept: audio/mpeg",
        "content-type: application/json",
        "x-contact-id: c-7",
        traceparent.as_str(),
    ] {
        assert!(
            head.iter().any(|l| l == line),
            "{line} missing from {head:?}"
        );
    }
    assert_eq!(
        body,
        serde_json::json!({"text": "Hello", "model_id": "eleven_multilingual_v2"})
    );
}

#[tokio::test]
async fn llm_request_shape() {
    let (base, peer) = one_shot(ok_json(
        r#"{"choices":[{"message":{"content":"  Hi Ada! "}}]}"#,
    ))
    .await;
    let client = llm(HttpServiceConfig::new(base, "sk-llm-1"));
    let prompt = Prompt::for_contact(&contact("c-7", "Ada Lovelace"));
    let script = client
        .generate_script(RequestContext::new("c-7"), &prompt)
        .await
        .result
        .unwrap();
    assert_eq!(script, "Hi Ada!");
    let (head, body) = split_request(&peer.await.unwrap());
    assert_eq!(head[0], "post /svc/v1/chat/completions http/1.1");
    assert!(
        head.iter().any(|l| l == "authorization: bearer sk-llm-1"),
        "{head:?}"
    );
    assert!(
        !head.iter().any(|l| l.starts_with("traceparent")),
        "none given, none sent"
    );
    assert_eq!(
        body,
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": Prompt::SYSTEM},
                {"role": "user", "content": prompt.user},
            ],
            "max_completion_tokens": 300,
        })
    );
}

#[tokio::test]
async fn llm_request_shape_for_azure_openai() {
    let (base, peer) = one_shot(ok_json(r#"{"choices":[{"message":{"content":"Hi"}}]}"#)).await;
    let settings = LlmSettings {
        chat_path: "/openai/deployments/my-gpt/chat/completions".into(),
        api_version: Some("2024-10-21".into()),
        auth: LlmAuth::ApiKey,
        token_limit_param: TokenLimitParam::MaxTokens,
        ..LlmSettings::default()
    };
    let client = LlmClient::new(&HttpServiceConfig::new(base, "az-key-1"), &settings).unwrap();
    let prompt = Prompt::for_contact(&contact("c-7", "Ada Lovelace"));
    client
        .generate_script(RequestContext::new("c-7"), &prompt)
        .await
        .result
        .unwrap();
    let (head, body) = split_request(&peer.await.unwrap());
    assert_eq!(
        head[0],
        "post /svc/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21 http/1.1"
    );
    assert!(head.iter().any(|l| l == "api-key: az-key-1"), "{head:?}");
    assert!(
        !head.iter().any(|l| l.starts_with("authorization")),
        "{head:?}"
    );
    assert_eq!(body["max_tokens"], 300);
    assert!(body.get("max_completion_tokens").is_none(), "{body}");
}

#[tokio::test]
async fn crm_request_shape() {
    let (base, peer) = one_shot(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"id\":\"rec-9\"}\n",
    )
    .await;
    let client = crm(HttpServiceConfig::new(base, "crm-key-1"));
    let ada = contact("c-7", "Ada Lovelace");
    let failed = CallRecord::new(
        &ada,
        CallOutcome::Failed,
        SystemTime::UNIX_EPOCH,
        SystemTime::UNIX_EPOCH,
    )
    .with_error("permanent error (invalid_request), HTTP 400");
    let id = client
        .record_call(RequestContext::new("c-7"), &failed)
        .await
        .result
        .unwrap();
    assert_eq!(id, Recorded::Stored("rec-9".into()));
    let (head, body) = split_request(&peer.await.unwrap());
    assert_eq!(head[0], "post /svc/v1/calls http/1.1");
    assert!(
        head.iter().any(|l| l == "authorization: bearer crm-key-1"),
        "{head:?}"
    );
    assert!(
        head.iter().any(|l| l == "idempotency-key: callguard-c-7"),
        "{head:?}"
    );
    assert_eq!(
        body,
        serde_json::json!({
            "contact_id": "c-7",
            "name": "Ada Lovelace",
            "phone": "+1-555-0100",
            "outcome": "failed",
            "started_at": "1970-01-01T00:00:00.000Z",
            "finished_at": "1970-01-01T00:00:00.000Z",
            "error": "permanent error (invalid_request), HTTP 400",
        })
    );
}

/// Answers the peers give that the mocks never do.
#[tokio::test]
async fn unusable_successes_are_bad_responses() {
    let empty_audio = "HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ncontent-length: 0\r\n\r\n";
    let (base, _peer) = one_shot(empty_audio).await;
    let error = tts(HttpServiceConfig::new(base, "k"))
        .synthesize(RequestContext::new("c-1"), "Hi")
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadResponse, "{error}");
    assert!(error.detail().contains("empty"), "{error}");

    let prompt = Prompt::for_contact(&contact("c-1", "Ada"));
    for answer in [
        "{\"choices\":[]}",
        "{\"choices\":[{\"message\":{\"content\":\"   \"}}]}",
        "{\"choices\":[{\"message\":{\"content\":null}}]}",
    ] {
        let (base, _peer) = one_shot(ok_json(answer)).await;
        let error = llm(HttpServiceConfig::new(base, "k"))
            .generate_script(RequestContext::new("c-1"), &prompt)
            .await
            .result
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadResponse, "{answer}: {error}");
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, _peer) = one_shot(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let error = tts(HttpServiceConfig::new(base, "k"))
        .synthesize(RequestContext::new("c-1"), "Hi")
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadResponse, "{error}");
    assert_eq!(error.status(), Some(307));
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_unread() {
    let (base, _peer) = one_shot(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 999999999\r\n\r\n{",
    )
    .await;
    let mut config = HttpServiceConfig::new(base, "k");
    config.max_response_bytes = 1024;
    let ada = contact("c-1", "Ada");
    let error = crm(config)
        .record_call(RequestContext::new("c-1"), &record(&ada))
        .await
        .result
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadResponse, "{error}");
    assert!(error.detail().contains("1024-byte cap"), "{error}");
}

/// The answers' limit headers come back with the value or the error, and a
/// `429` over the concurrency limit is told apart by its body.
#[tokio::test(start_paused = true)]
async fn answers_carry_the_limit_headers_and_a_concurrency_429_its_kind() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    server
        .set_concurrency_limit(Some(callguard_mocks::ConcurrencyLimit::new(1)))
        .unwrap();
    server
        .inject(
            Fault::new(Service::Elevenlabs, FaultMode::Slow)
                .with_latency(Duration::from_millis(200)),
        )
        .unwrap();
    let client = tts(http(&server, Service::Elevenlabs));
    let (first, second) = tokio::join!(
        client.synthesize(RequestContext::new("c-1"), "Hi"),
        client.synthesize(RequestContext::new("c-2"), "Hi"),
    );
    let (served, refused) = if first.result.is_ok() {
        (first, second)
    } else {
        (second, first)
    };
    assert!(served.result.is_ok(), "{:?}", served.result);
    let error = refused.result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConcurrencyLimited, "{error}");
    for answer in [served.headers, refused.headers] {
        assert_eq!(answer.maximum_concurrent.value(), Some(1));
    }
    server.shutdown().await;

    // No answer, no headers.
    let unanswered = client.synthesize(RequestContext::new("c-3"), "Hi").await;
    assert!(unanswered.result.is_err());
    assert_eq!(unanswered.headers, callguard_limit::ProviderHeaders::NONE);
}
