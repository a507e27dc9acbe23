//! End to end: the `callguard` binary runs each scenario against the mocks over
//! real sockets (time scaled down) and every contact ends in exactly one state.

use std::path::{Path, PathBuf};
use std::process::Output;

use callguard_agent::simulate::LIMITS_TTS_CONCURRENCY;
use callguard_mocks::{MockConfig, MockServer};
use serde_json::Value;

mod support;
use support::{temp_dir, text};

/// Every secret `simulate` uses: the services' keys, the Telegram bot token,
/// the webhook secret and the Sheets token.
const SECRETS: [&str; 6] = [
    "mock-elevenlabs-key",
    "mock-llm-key",
    "mock-crm-key",
    "mock-telegram-token",
    "simulated-webhook-secret",
    "mock-sheets-token",
];

struct Run {
    dir: PathBuf,
    output: Output,
    summary: Value,
}

impl Run {
    fn console(&self) -> String {
        text(&self.output)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/callguard.jsonl")).unwrap_or_default()
    }

    fn count(&self, key: &str) -> u64 {
        self.summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no {key}: {}", self.summary))
    }

    fn transitions(&self, service: &str) -> Vec<(String, String)> {
        self.summary["breaker_transitions"][service]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|t| {
                        (
                            t["from"].as_str().unwrap().to_owned(),
                            t["to"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_all_accounted_for(&self) {
        let contacts = self.count("contacts");
        let ended = self.count("completed")
            + self.count("failed")
            + self.count("expired")
            + self.count("pending");
        assert_eq!(ended, contacts, "summary: {}", self.summary);
        assert_eq!(self.count("lost"), 0);
        assert_eq!(self.count("duplicated"), 0);
        // Completed contacts and the mocks' CRM records were matched one to one.
        assert_eq!(
            self.summary["crm_records"].as_u64(),
            Some(self.count("completed")),
            "summary: {}",
            self.summary
        );
        assert!(
            self.output.status.success(),
            "exit status {:?}\n{}",
            self.output.status,
            self.console()
        );
    }
}

fn simulate(scenario: &str, contacts: usize) -> Run {
    let dir = temp_dir(scenario);
    let output = run_callguard(
        &dir,
        &[
            "simulate",
            "--scenario",
            scenario,
            "--count",
            &contacts.to_string(),
            "--time-scale",
            "0.05",
            "--summary-json",
            "summary.json",
        ],
    );
    let summary = std::fs::read_to_string(dir.join("summary.json"))
        .unwrap_or_else(|e| panic!("no summary ({e}); output:\n{}", text(&output)));
    Run {
        summary: serde_json::from_str(&summary).unwrap(),
        dir,
        output,
    }
}

#[test]
fn outage_opens_defers_recovers_and_completes_everyone() {
    let run = simulate("outage", 20);
    run.assert_all_accounted_for();
    assert_eq!(run.count("completed"), 20, "{}", run.summary);
    assert!(
        run.count("deferrals") >= 1,
        "contacts wait while TTS is down"
    );
    let tts = run.transitions("elevenlabs");
    assert_eq!(
        tts.first(),
        Some(&("CLOSED".to_owned(), "OPEN".to_owned())),
        "{tts:?}"
    );
    assert_eq!(tts.last().map(|t| t.1.as_str()), Some("CLOSED"), "{tts:?}");
    for pair in tts.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "transitions chain: {tts:?}");
    }
    assert!(run.transitions("llm").is_empty() && run.transitions("crm").is_empty());
    // The JSON log tells the same story with the seed's fields.
    let log = run.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    assert!(lines.iter().any(|l| l["circuit_state"] == "OPEN"
        && l["service"] == "elevenlabs"
        && l["level"] == "WARNING"));
    assert!(lines.iter().any(|l| l["retry_count"] == 0
        && l["error_category"] == "transient"
        && l["contact_id"].is_string()
        && l["trace_id"].is_string()));
    // Each TTS 503 is retried unless the breaker is OPEN by then: the
    // workers reach TTS together, so another's failure may open it first.
    // Every retry scheduled is in the summary.
    let tts_failures: Vec<&str> = lines
        .iter()
        .filter(|l| l["service"] == "elevenlabs" && l["http_status"] == 503)
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(!tts_failures.is_empty(), "no TTS failure was logged");
    let retried = tts_failures
        .iter()
        .filter(|message| message.contains("; retrying in "))
        .count();
    for message in &tts_failures {
        assert!(
            message.contains("; retrying in ")
                || message.contains("; not retrying: circuit breaker for elevenlabs is OPEN"),
            "a 503 neither retried nor refused by an OPEN breaker: {message}"
        );
    }
    // The LLM's only 503s are the first contact's three, each retried (its
    // fourth attempt succeeds).
    let llm_failures: Vec<&Value> = lines
        .iter()
        .filter(|l| l["service"] == "llm" && l["http_status"] == 503)
        .collect();
    assert_eq!(llm_failures.len(), 3, "{llm_failures:?}");
    for failure in &llm_failures {
        assert_eq!(failure["contact_id"], "c-001", "{failure}");
        assert!(
            failure["message"]
                .as_str()
                .is_some_and(|m| m.contains("; retrying in ")),
            "{failure}"
        );
    }
    assert_eq!(
        u64::try_from(retried + llm_failures.len()).unwrap(),
        run.count("retries")
    );
    // Each deferral is logged once, and the summary counts each once.
    let deferred = lines
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|message| message.contains(" deferred: "))
        .count();
    assert_eq!(u64::try_from(deferred).unwrap(), run.count("deferrals"));
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} leaked into the log file");
        assert!(
            !run.console().contains(secret),
            "{secret} leaked to the console"
        );
    }
    // The breaker's opening and its recovery reached people, once each at least.
    let alerts = &run.summary["alerts"];
    assert!(alerts["raised"].as_u64().unwrap() >= 2, "{alerts}");
    for channel in alerts["channels"].as_array().unwrap() {
        assert!(channel["delivered"].as_u64().unwrap() >= 2, "{channel}");
        assert_eq!(channel["failed"], 0, "{channel}");
    }
    let sheets = &run.summary["sheets"];
    assert!(sheets["rows_sent"].as_u64().unwrap() > 0, "{sheets}");
    assert_eq!(sheets["rows_dropped"], 0, "{sheets}");
}

/// The default story at the seed's own pace, as CI or a pipe sees it: plain
/// lines, short enough for one screen, telling what a person should notice.
#[test]
fn the_default_story_off_a_terminal_is_short_plain_and_complete() {
    let dir = temp_dir("story");
    let output = run_callguard(&dir, &["simulate"]);
    let (story, summary) = (
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout),
    );
    assert!(output.status.success(), "{story}{summary}");
    let lines = story.lines().count() + summary.lines().count();
    assert!(lines < 60, "{lines} lines:\n{story}{summary}");
    assert!(
        !story.contains('\x1b') && !summary.contains('\x1b') && !story.contains('\r'),
        "control codes off a terminal:\n{story}"
    );
    // The transitions, the alerts, and the deferred contacts resuming.
    for told in [
        "Circuit breaker for elevenlabs: CLOSED -> OPEN (2 consecutive failures)",
        "Circuit breaker for elevenlabs: OPEN -> CLOSED (health check recovered)",
        "alert: elevenlabs circuit breaker opened",
        "alert: elevenlabs circuit breaker closed again",
        "elevenlabs recovered: ",
    ] {
        assert!(story.contains(told), "{told:?} is not told:\n{story}");
    }
    // The first contact's three LLM failures, retried after the seed's
    // 5 s, 10 s and 20 s; its fourth attempt succeeds and it completes.
    let retries: Vec<&str> = story
        .lines()
        .filter(|line| line.contains("llm call failed") && line.ends_with("contact_id=c-001"))
        .collect();
    assert_eq!(retries.len(), 3, "{story}");
    for (line, delay) in retries.iter().zip(["5s", "10s", "20s"]) {
        assert!(line.contains(&format!("; retrying in {delay} ")), "{line}");
    }
    assert!(!story.contains("Circuit breaker for llm"), "{story}");
    // One call's details are not told, each field is said once, and the
    // progress is an occasional plain line.
    assert!(!story.contains(" deferred: "), "{story}");
    for line in story.lines() {
        assert!(line.matches("contact_id=").count() <= 1, "{line}");
    }
    assert!(
        story
            .lines()
            .any(|l| l.contains("/20 · ") && l.contains("elevenlabs ")),
        "{story}"
    );
    assert!(summary.contains("Summary") && summary.contains("completed              20"));
    assert!(summary.contains("Breaker transitions"), "{summary}");
}

/// `-q` leaves warnings, errors and the summary; `-v` brings back a line per
/// call event, with every field.
#[test]
fn quiet_and_verbose_say_less_and_more() {
    let dir = temp_dir("quiet");
    let quiet = run_callguard(&dir, &["simulate", "-q", "--time-scale", "0.05"]);
    let story = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{story}");
    assert!(
        story
            .lines()
            .all(|line| line.contains(" WARN ") || line.contains(" ERROR ")),
        "{story}"
    );
    assert!(story.contains("Circuit breaker for elevenlabs: CLOSED -> OPEN"));
    assert!(String::from_utf8_lossy(&quiet.stdout).contains("Summary"));

    let dir = temp_dir("verbose");
    let verbose = run_callguard(&dir, &["--verbose", "simulate", "--time-scale", "0.05"]);
    let story = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{story}");
    assert!(
        story
            .lines()
            .any(|line| line.contains(" deferred: ") && line.contains("deferral=")),
        "{story}"
    );
    assert!(story.contains("retry_count=1"), "{story}");
    for line in story.lines() {
        assert!(line.matches("contact_id=").count() <= 1, "{line}");
    }
}

/// On a terminal (a pseudo-terminal made by `script`) the progress is a bar
/// redrawn in place, with the breakers' states, and the story's lines above it.
#[test]
fn on_a_terminal_the_progress_is_a_bar() {
    let dir = temp_dir("terminal");
    // A terminal 200 columns wide, so that the bar has room for every breaker.
    let command = format!(
        "stty cols 200 rows 50; {} simulate --time-scale 0.1",
        env!("CARGO_BIN_EXE_callguard")
    );
    // `script` (util-linux) runs the binary under a pseudo-terminal.
    let mut script = std::process::Command::new("script");
    script
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env("CALLGUARD_METRICS__LISTEN", "127.0.0.1:0")
        .env("TERM", "xterm")
        .args(["-qc", &command, "/dev/null"]);
    let output = script.output().expect("script (util-linux) runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    // The bar: drawn in place (carriage returns, erase-line codes), filled
    // with block characters, with the counts and every breaker's state.
    assert!(
        screen.contains("\x1b[2K") && screen.contains('\r'),
        "{screen}"
    );
    assert!(screen.contains('█'), "{screen}");
    assert!(
        screen.contains("/20 · ")
            && screen.contains("elevenlabs OPEN")
            && screen.contains("llm CLOSED"),
        "{screen}"
    );
    assert!(screen.contains("Circuit breaker for elevenlabs: CLOSED -> OPEN"));
    assert!(screen.contains("Summary"));
}

#[test]
fn auth_failures_fail_fast_without_retries() {
    let run = simulate("auth", 12);
    run.assert_all_accounted_for();
    assert_eq!(run.count("retries"), 0, "a 401 is never retried");
    assert!(run.count("failed") >= 1, "{}", run.summary);
    for failure in run.summary["failures"].as_array().unwrap() {
        assert_eq!(failure["service"], "llm");
        let reason = failure["reason"].as_str().unwrap();
        assert!(reason.contains("401"), "{reason}");
    }
    assert_eq!(
        run.transitions("llm").first(),
        Some(&("CLOSED".to_owned(), "OPEN".to_owned())),
        "a rejected key says the service is unusable"
    );
}

#[test]
fn a_bad_request_fails_one_contact_without_opening_the_breaker() {
    let run = simulate("bad-request", 16);
    run.assert_all_accounted_for();
    assert_eq!(run.count("failed"), 2, "{}", run.summary);
    assert_eq!(run.count("completed"), 14);
    assert!(
        run.transitions("crm").is_empty(),
        "400s are about one request, not the service"
    );
    for failure in run.summary["failures"].as_array().unwrap() {
        assert_eq!(failure["service"], "crm");
    }
}

#[test]
fn flaky_service_is_absorbed_by_retries() {
    let run = simulate("flaky", 16);
    run.assert_all_accounted_for();
    assert!(run.count("retries") > 0, "{}", run.summary);
    assert_eq!(
        run.count("failed"),
        0,
        "transient errors never fail a contact"
    );
}

#[test]
fn chaos_loses_nobody() {
    let run = simulate("chaos", 30);
    run.assert_all_accounted_for();
    assert_eq!(run.count("pending"), 0);
}

#[test]
fn limits_finds_the_tts_limit_from_its_headers_and_completes_everyone() {
    let run = simulate("limits", 48);
    run.assert_all_accounted_for();
    assert_eq!(run.count("completed"), 48, "{}", run.summary);
    assert_eq!(run.count("expired"), 0, "{}", run.summary);
    let tts = &run.summary["limits"]["elevenlabs"];
    let limit = u64::from(LIMITS_TTS_CONCURRENCY);
    assert_eq!(
        tts["provider_limit"].as_u64(),
        Some(limit),
        "{}",
        run.summary
    );
    // It follows the provider's limit, never above it; at the end it may
    // still be climbing back to it.
    let found = tts["limit"].as_u64().unwrap();
    assert!(
        (limit - 1..=limit).contains(&found),
        "limit {found}: {}",
        run.summary
    );
    // One request went first and its answer told the limit: every later
    // call waited its turn in callguard, none was refused.
    let refused = tts["refused"].as_u64().unwrap();
    assert_eq!(refused, 0, "{}", run.summary);
    assert!(
        run.summary["limits"].get("llm").is_none(),
        "the LLM had no limit: {}",
        run.summary
    );
    let console = run.console();
    let line = console
        .lines()
        .find(|line| line.trim_start().starts_with("elevenlabs") && line.contains("429s"))
        .unwrap_or_else(|| panic!("no limits line in:\n{console}"));
    let cells: Vec<_> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "elevenlabs",
            "mode",
            "off",
            "limit",
            &found.to_string(),
            "provider's",
            &limit.to_string(),
            "429s",
            &refused.to_string()
        ],
        "{console}"
    );
}

#[test]
fn a_bad_config_stops_start_up_with_the_key() {
    let dir = temp_dir("bad-config");
    std::fs::write(dir.join("bad.toml"), "[retry]\nbackoff_factor = 0.5\n").unwrap();
    std::fs::write(dir.join("contacts.csv"), "id,name,phone\nc1,A,1\n").unwrap();
    let output = run_callguard(
        &dir,
        &["run", "--config", "bad.toml", "--contacts", "contacts.csv"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("retry.backoff_factor must be ≥ 1.0, got 0.5"),
        "{stderr}"
    );

    std::fs::write(dir.join("typo.toml"), "[queue]\nworkerz = 3\n").unwrap();
    let output = run_callguard(
        &dir,
        &["run", "--config", "typo.toml", "--contacts", "contacts.csv"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("workerz"), "{stderr}");
}

#[test]
fn the_former_count_flag_is_refused_with_its_new_name() {
    let dir = temp_dir("old-flag");
    let output = run_callguard(&dir, &["simulate", "--contacts", "5"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--count 5") && stderr.contains("callguard run"),
        "{stderr}"
    );
    assert!(
        !dir.join("logs").exists(),
        "refused before anything started"
    );
}

/// A `[sheets]` section in `simulate --config` replaces the simulation's own
/// (a static token for the in-process Sheets fake) whole: rows go to the
/// user's sheet, authorised with the user's service-account key.
#[test]
fn simulate_config_sections_replace_the_built_in_ones_whole() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sheets = runtime
        .block_on(MockServer::start(MockConfig::default()))
        .unwrap();
    let dir = temp_dir("own-sheets");
    std::fs::write(dir.join("sa.json"), sheets.service_account_json()).unwrap();
    std::fs::write(
        dir.join("own.toml"),
        format!(
            "[sheets]\napi_base = \"{}\"\nspreadsheet_id = \"my-sheet\"\n\
             credentials_file = \"sa.json\"\n",
            sheets.sheets_api_base()
        ),
    )
    .unwrap();
    let output = run_callguard(
        &dir,
        &[
            "simulate",
            "--count",
            "6",
            "--time-scale",
            "0.05",
            "--config",
            "own.toml",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let appends = sheets.sheets_appends();
    assert!(!appends.is_empty(), "no rows reached the user's sheet");
    assert!(appends.iter().all(|a| a.spreadsheet_id == "my-sheet"));
    let tokens = sheets.token_requests();
    assert!(
        tokens.iter().any(|t| t.granted),
        "rows were sent with a token from the user's key: {tokens:?}"
    );
}

/// Runs `callguard ARGS` in `dir` to its end.
fn run_callguard(dir: &Path, args: &[&str]) -> Output {
    support::callguard(dir)
        .args(args)
        .output()
        .expect("the callguard binary runs")
}
