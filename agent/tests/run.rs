//! `callguard run` against mocks started by the test: malformed contact lines
//! are reported and skipped, garbage and oversized answers fail only the
//! contacts they hit, and the rest of the campaign completes.

use std::process::Command;

use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
use serde_json::Value;

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

    let dir = std::env::temp_dir().join(format!("callguard-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = String::from(
        "[retry]\ninitial_delay = \"50ms\"\n[health_check]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
    );
    for (name, service) in [
        ("llm", Service::Llm),
        ("elevenlabs", Service::Elevenlabs),
        ("crm", Service::Crm),
    ] {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key_env = \"TEST_{}_KEY\"\nmax_response_bytes = 65536\n",
            mocks.base_url(service),
            name.to_uppercase(),
        ));
    }
    std::fs::write(dir.join("agent.toml"), config).unwrap();
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

    let keys = mocks.config().keys.clone();
    let run_dir = dir.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_callguard"))
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
            .env("TEST_LLM_KEY", keys.get(Service::Llm))
            .env("TEST_ELEVENLABS_KEY", keys.get(Service::Elevenlabs))
            .env("TEST_CRM_KEY", keys.get(Service::Crm))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{console}");
    assert!(
        console.contains("contacts.csv:4"),
        "line 4 reported: {console}"
    );
    assert!(
        console.contains("contacts.csv:6"),
        "line 6 reported: {console}"
    );

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
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
