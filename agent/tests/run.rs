//! `callguard run` against mocks started by the test: malformed contact lines
//! are reported and skipped, garbage and oversized answers fail only the
//! contacts they hit, a fallback service takes over from a dead one, and the
//! rest of the campaign completes.

use std::path::Path;
use std::process::Output;

use callguard_mocks::{EndpointKind, Fault, FaultMode, MockConfig, MockLlm, MockServer, Service};
use serde_json::Value;

mod support;
use support::{SERVICES, temp_dir};

/// Fast retries and health checks, and a `[services.NAME]` section per
/// service pointing at `mocks` (key from `TEST_<NAME>_KEY`), each followed by
/// `extra(name)`.
fn mock_config(mocks: &MockServer, extra: impl Fn(&str) -> String) -> String {
    let mut config = String::from(
        "[retry]\ninitial_delay = \"50ms\"\n[health_check]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
    );
    for (name, service) in SERVICES {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key_env = \"TEST_{}_KEY\"\nmax_response_bytes = 65536\n{}",
            mocks.base_url(service),
            name.to_uppercase(),
            extra(name),
        ));
    }
    config
}

/// Runs `callguard run` in `dir` (config `agent.toml`, contacts
/// `contacts.csv`) with the mocks' keys in the environment; returns its stderr
/// and summary.
async fn run_callguard(dir: &Path, mocks: &MockServer) -> (String, Value) {
    let keys = mocks.config().keys.clone();
    let run_dir = dir.to_owned();
    let output: Output = tokio::task::spawn_blocking(move || {
        let mut command = support::callguard(&run_dir);
        command
            .args([
                "run",
                "--config",
                "agent.toml",
                "--contacts",
                "contacts.csv",
                "--summary-json",
                "summary.json",
            ])
            .current_dir(&run_dir)
            // Any free port: the default 50051 may be taken by another callguard.
            .env("CALLGUARD_GRPC__LISTEN", "127.0.0.1:0");
        for (name, service) in SERVICES {
            command.env(
                format!("TEST_{}_KEY", name.to_uppercase()),
                keys.get(service),
            );
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    (stderr, serde_json::from_str(&summary).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_garbage_answers_lose_nothing_else() {
    let mocks = MockServer::start(MockConfig {
        oversized_body_bytes: 4 * 1024 * 1024,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mocks
        .inject_all(vec![
            Fault::new(Service::Llm, FaultMode::Garbage).for_contacts(["c-garbage"]),
            Fault::new(Service::Elevenlabs, FaultMode::Oversized).for_contacts(["c-huge"]),
        ])
        .unwrap();
    let dir = temp_dir("bad-input");
    std::fs::write(
        dir.join("agent.toml"),
        mock_config(&mocks, |_| String::new()),
    )
    .unwrap();
    std::fs::write(
        dir.join("contacts.csv"),
        "id,name,phone\n\
         c-1,Ada Lovelace,+1-555-0101\n\
         c-2,\"Hopper, Grace\",+1-555-0102\n\
         this line,has too,many,fields\n\
         c-garbage,Alan Turing,+1-555-0103\n\
         ,No Id,+1-555-0104\n\
         c-huge,Katherine Johnson,+1-555-0105\n\
         c-3,Margaret Hamilton,+1-555-0106\n",
    )
    .unwrap();

    let (stderr, summary) = run_callguard(&dir, &mocks).await;
    assert!(
        stderr.contains("contacts.csv:4"),
        "line 4 reported: {stderr}"
    );
    assert!(
        stderr.contains("contacts.csv:6"),
        "line 6 reported: {stderr}"
    );
    assert_eq!(summary["contacts"], 5, "{summary}");
    assert_eq!(summary["completed"], 3, "{summary}");
    assert_eq!(summary["failed"], 2, "{summary}");
    let failures = summary["failures"].as_array().unwrap();
    let reason = |id: &str| {
        failures
            .iter()
            .find(|f| f["contact_id"] == id)
            .and_then(|f| f["reason"].as_str())
            .unwrap_or_else(|| panic!("{id} did not fail: {summary}"))
            .to_owned()
    };
    assert!(
        reason("c-garbage").contains("bad_response"),
        "{}",
        reason("c-garbage")
    );
    assert!(
        reason("c-huge").contains("bad_response"),
        "{}",
        reason("c-huge")
    );
    let mut recorded: Vec<String> = mocks
        .crm_records()
        .iter()
        .map(|r| r.contact_id().to_owned())
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        ["c-1", "c-2", "c-3"],
        "one CRM record per completed contact"
    );
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_service_takes_over_while_the_primary_is_down() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let backup = MockServer::start(MockConfig::default()).await.unwrap();
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
        .unwrap();
    let dir = temp_dir("fallback");
    let mut config = mock_config(&mocks, |name| {
        if name == "elevenlabs" {
            "fallback = \"tts_backup\"\n".into()
        } else {
            String::new()
        }
    });
    config.push_str(&format!(
        "[services.tts_backup]\nbase_url = \"{}\"\napi_key = \"{}\"\n",
        backup.base_url(Service::Elevenlabs),
        backup.config().keys.get(Service::Elevenlabs),
    ));
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    std::fs::write(
        dir.join("contacts.csv"),
        "id,name,phone\nc-1,Ada,1\nc-2,Grace,2\nc-3,Alan,3\nc-4,Linus,4\nc-5,Ken,5\nc-6,Dennis,6\n",
    )
    .unwrap();

    let (_, summary) = run_callguard(&dir, &mocks).await;
    assert_eq!(summary["completed"], 6, "{summary}");
    assert_eq!(
        summary["deferrals"], 0,
        "the backup answered, nobody waited"
    );
    assert_eq!(
        summary["breaker_transitions"]["elevenlabs"][0]["to"], "OPEN",
        "{summary}"
    );
    let spoken = backup
        .stats()
        .count(Service::Elevenlabs, EndpointKind::Api, "200");
    assert_eq!(spoken, 6, "every contact was spoken by the backup");
    mocks.shutdown().await;
    backup.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Writes `agent.toml` (the mocks' services, `llm_keys` in the LLM's
/// section) and three contacts to a new directory, runs `callguard run`
/// there, and returns the summary.
async fn run_with_llm_keys(mocks: &MockServer, label: &str, llm_keys: &str) -> Value {
    let dir = temp_dir(label);
    let config = mock_config(mocks, |name| match name {
        "llm" => format!("{llm_keys}\n"),
        _ => String::new(),
    });
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    std::fs::write(
        dir.join("contacts.csv"),
        "id,name,phone\nc-1,Ada Lovelace,+1-555-0101\nc-2,Grace Hopper,+1-555-0102\n\
         c-3,Alan Turing,+1-555-0103\n",
    )
    .unwrap();
    run_callguard(&dir, mocks).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_current_model_takes_the_campaign_on_its_own_terms() {
    let mocks = MockServer::start(MockConfig {
        llm: MockLlm {
            refuse_max_tokens: true,
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let llm_answers = |status: &str| mocks.stats().count(Service::Llm, EndpointKind::Api, status);

    // The default request (max_completion_tokens) on OpenAI's path.
    let summary = run_with_llm_keys(&mocks, "current-model", "").await;
    assert_eq!(summary["completed"], 3, "{summary}");
    assert_eq!(llm_answers("200"), 3);

    // Azure OpenAI's shape: a deployment's path, api-version, the api-key header.
    let summary = run_with_llm_keys(
        &mocks,
        "azure-path",
        "chat_path = \"/openai/deployments/callguard-gpt/chat/completions\"\n\
         api_version = \"2024-10-21\"\nauth = \"api-key\"",
    )
    .await;
    assert_eq!(summary["completed"], 3, "{summary}");
    assert_eq!(
        llm_answers("200"),
        6,
        "the deployment path reached the mock"
    );

    // The old field: refused for good, once per contact, and the reason says why.
    let summary =
        run_with_llm_keys(&mocks, "max-tokens", "token_limit_param = \"max_tokens\"").await;
    assert_eq!(summary["completed"], 0, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    assert_eq!(llm_answers("400"), 3, "a permanent error is not retried");
    for failure in summary["failures"].as_array().unwrap() {
        let reason = failure["reason"].as_str().unwrap();
        assert!(
            reason.contains("HTTP 400")
                && reason.contains("Unsupported parameter: 'max_tokens' is not supported"),
            "{reason}"
        );
    }
}
