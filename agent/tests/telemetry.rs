//! Traces and metrics end to end: `callguard simulate` as a process exporting
//! spans to an OTLP receiver in this test (gRPC and HTTP/protobuf, each over
//! TLS too), its JSON
//! log lines carrying the exported ids, and its `/metrics` endpoint scraped
//! while it runs and once more after the summary is written, its numbers
//! checked against the summary's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use serde_json::Value;

mod support;
use callguard_testkit::free_addr as free_port;
use callguard_testkit::otlp::{
    Received, otlp_grpc_receiver, start_otlp_grpc_receiver, start_otlp_http_receiver, string_attr,
};
use callguard_testkit::tls::{ServerCert, TestCa};
use support::{temp_dir, text};

/// The breaker opens after five failures, so that the first failures (at
/// most four workers at once) are always retried; health probes are left out
/// of the story, so that every breaker transition comes from a call.
const CONFIG: &str =
    "[circuit_breaker]\nfailure_threshold = 5\n[health_check]\ninterval = \"1h\"\n";

/// `callguard simulate` (outage, time scaled down) in `dir` with `env` and
/// [`CONFIG`] plus `config`, writing `summary.json`, off the test's runtime
/// so the receiver keeps serving.
async fn simulate(dir: &Path, env: Vec<(&'static str, String)>, config: &str) -> Output {
    let dir = dir.to_owned();
    let file = dir.join("callguard.toml");
    std::fs::write(&file, format!("{CONFIG}{config}")).unwrap();
    let extra = vec!["--config".to_owned(), file.to_string_lossy().into_owned()];
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_callguard"));
        command
            .args([
                "simulate",
                "--scenario",
                "outage",
                "--count",
                "20",
                "--time-scale",
                "0.05",
                "--summary-json",
                "summary.json",
            ])
            .args(&extra)
            .current_dir(&dir);
        for (key, _) in std::env::vars() {
            if key.starts_with("OTEL_")
                || key.starts_with("CALLGUARD_")
                || key.starts_with("SSL_CERT_")
            {
                command.env_remove(key);
            }
        }
        command.envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    string_attr(&span.attributes, key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The agent's spans form `call` → stage → attempt trees, one trace per call.
fn check_span_tree(spans: &[(String, Span)]) {
    let agent: Vec<&Span> = spans
        .iter()
        .filter(|(service, _)| service == "callguard")
        .map(|(_, span)| span)
        .collect();
    let by_id: HashMap<Vec<u8>, &Span> = agent.iter().map(|s| (s.span_id.clone(), *s)).collect();
    let calls: Vec<&Span> = agent.iter().copied().filter(|s| s.name == "call").collect();
    assert!(calls.len() >= 6, "one call span per pass: {}", calls.len());
    let mut call_traces = HashSet::new();
    for call in &calls {
        assert!(call.parent_span_id.is_empty(), "a call span is a root");
        assert!(attr(call, "contact_id").is_some());
        assert!(attr(call, "outcome").is_some());
        assert!(
            call_traces.insert(call.trace_id.clone()),
            "one trace per call"
        );
    }
    let stages: Vec<&Span> = agent
        .iter()
        .copied()
        .filter(|s| ["llm", "tts", "crm"].contains(&s.name.as_str()))
        .collect();
    for stage in &stages {
        let parent = by_id[&stage.parent_span_id];
        assert_eq!(parent.name, "call");
        assert_eq!(parent.trace_id, stage.trace_id);
        assert!(attr(stage, "service").is_some());
    }
    let names: HashSet<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, HashSet::from(["llm", "tts", "crm"]));

    let attempts: Vec<&Span> = agent
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert!(!attempts.is_empty());
    for attempt in &attempts {
        let stage = by_id[&attempt.parent_span_id];
        assert!(names.contains(stage.name.as_str()), "attempt under a stage");
        assert_eq!(attempt.name, "POST");
        assert_eq!(
            attr(attempt, "http.request.method").as_deref(),
            Some("POST")
        );
        assert_eq!(
            attr(attempt, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        let url = attr(attempt, "url.full").expect("url.full");
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.contains('?'),
            "{url}"
        );
        assert!(attr(attempt, "retry_count").is_some());
        assert!(attr(attempt, "circuit_state").is_some());
    }
    // The TTS outage: failed attempts say why, and were retried.
    let failed: Vec<&&Span> = attempts
        .iter()
        .filter(|s| attr(s, "error.type").as_deref() == Some("503"))
        .collect();
    assert!(!failed.is_empty(), "503 attempts are marked");
    for span in &failed {
        assert_eq!(
            attr(span, "http.response.status_code").as_deref(),
            Some("503")
        );
        assert_eq!(attr(span, "error_category").as_deref(), Some("transient"));
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(2),
            "status ERROR"
        );
    }
    assert!(
        attempts
            .iter()
            .any(|s| attr(s, "http.response.status_code").as_deref() == Some("200"))
    );
    // Breaker transitions, scheduled retries and deferrals are span events.
    let events: Vec<&str> = agent
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.name.as_str()))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("Circuit breaker for elevenlabs: CLOSED -> OPEN")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.contains("deferred")), "{events:?}");
    assert!(
        events.iter().any(|e| e.contains("retrying in")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_carries_the_span_tree_traceparent_and_log_ids() {
    let (addr, received) = start_otlp_grpc_receiver(None).await;
    let dir = temp_dir("grpc");
    let output = simulate(
        &dir,
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
        "",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    let spans = received.spans();
    assert!(spans.iter().all(|(service, _)| service == "callguard"));
    check_span_tree(&spans);

    // The in-process mocks read each request's traceparent: their server
    // spans are children of the attempt spans, in the call's trace.
    let by_id: HashMap<Vec<u8>, &Span> =
        spans.iter().map(|(_, s)| (s.span_id.clone(), s)).collect();
    let served: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        // Health probes (GET) come without a trace.
        .filter(|s| s.kind == SpanKind::Server as i32 && s.name.starts_with("POST /"))
        .collect();
    assert!(!served.is_empty());
    for span in &served {
        let attempt = by_id
            .get(&span.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no exported parent", span.name));
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(attempt.trace_id, span.trace_id);
    }
    assert!(
        served
            .iter()
            .any(|s| s.name.starts_with("POST /elevenlabs"))
    );

    // JSON lines inside spans carry the exported ids.
    let log = std::fs::read_to_string(dir.join("logs/callguard.jsonl")).unwrap();
    let mut checked = 0;
    for line in log.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        let (Some(trace_id), Some(span_id)) = (line["trace_id"].as_str(), line["span_id"].as_str())
        else {
            continue;
        };
        let span = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| hex(&s.span_id) == span_id)
            .unwrap_or_else(|| panic!("log line's span {span_id} was not exported: {line}"));
        assert_eq!(hex(&span.trace_id), trace_id);
        checked += 1;
    }
    assert!(checked > 10, "only {checked} lines inside spans");
    std::fs::remove_dir_all(dir).unwrap();
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// A receiver of this protocol on a fresh port, over TLS with `cert`.
    async fn receiver(self, cert: &ServerCert) -> (SocketAddr, Received) {
        match self {
            Self::Grpc => start_otlp_grpc_receiver(Some(cert)).await,
            Self::HttpProtobuf => start_otlp_http_receiver(Some(cert)).await,
        }
    }

    /// The variables sending spans by this protocol to the collector at
    /// `base` (`https://HOST:PORT`), named by `endpoint_key`. Over HTTP a
    /// signal's own endpoint is the whole URL, `/v1/traces` included.
    fn env(self, endpoint_key: &'static str, base: String) -> Vec<(&'static str, String)> {
        match self {
            Self::Grpc => vec![(endpoint_key, base)],
            Self::HttpProtobuf => {
                let url = if endpoint_key == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" {
                    format!("{base}/v1/traces")
                } else {
                    base
                };
                vec![
                    (endpoint_key, url),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
                ]
            }
        }
    }
}

/// An https collector speaking `protocol`, whose certificate a private CA
/// signed: spans reach it with `OTEL_EXPORTER_OTLP_CERTIFICATE` naming the
/// CA, or with the CA among the system's roots (`SSL_CERT_FILE`), and not
/// with other roots; a certificate file that is not there stops start-up
/// with its variable named.
async fn export_over_tls_trusts_the_certificate_variable_or_the_system_roots(protocol: Protocol) {
    let dir = temp_dir(&format!("tls-{protocol:?}"));
    let ca = TestCa::new("collector CA");
    let cert = ca.issue(&dir, &["localhost"]);
    let ca_file = ca.write_cert(&dir).to_string_lossy().into_owned();
    let elsewhere = dir.join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other_roots = TestCa::new("some other CA")
        .write_cert(&elsewhere)
        .to_string_lossy()
        .into_owned();
    let endpoint = |addr: SocketAddr| format!("https://localhost:{}", addr.port());
    // A `simulate` run exporting to a fresh TLS receiver, `endpoint_key`
    // naming it and `trust` the certificate settings; the spans it received.
    let export = async |endpoint_key: &'static str, trust: Vec<(&'static str, String)>| {
        let (addr, received) = protocol.receiver(&cert).await;
        let mut env = protocol.env(endpoint_key, endpoint(addr));
        env.extend(trust);
        let output = simulate(&dir, env, "").await;
        assert!(output.status.success(), "{}", text(&output));
        (addr, received.spans())
    };

    let (_, spans) = export(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        vec![
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file.clone()),
            ("SSL_CERT_FILE", other_roots.clone()),
        ],
    )
    .await;
    check_span_tree(&spans);

    let (_, spans) = export(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        vec![("SSL_CERT_FILE", ca_file.clone())],
    )
    .await;
    check_span_tree(&spans);

    let (addr, spans) = export(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        vec![("SSL_CERT_FILE", other_roots)],
    )
    .await;
    assert!(spans.is_empty(), "an untrusted collector got spans");

    let missing = dir.join("missing.pem").to_string_lossy().into_owned();
    let mut env = protocol.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint(addr));
    env.push(("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", missing.clone()));
    let output = simulate(&dir, env, "").await;
    assert!(!output.status.success(), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains(&format!(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=\"{missing}\" must be a readable PEM file"
        )),
        "{said}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_tls_trusts_the_certificate_variable_or_the_system_roots() {
    export_over_tls_trusts_the_certificate_variable_or_the_system_roots(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_over_tls_trusts_the_certificate_variable_or_the_system_roots() {
    export_over_tls_trusts_the_certificate_variable_or_the_system_roots(Protocol::HttpProtobuf)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_names_the_service_from_the_environment() {
    let (addr, received) = start_otlp_http_receiver(None).await;
    let dir = temp_dir("http");
    let output = simulate(
        &dir,
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_SERVICE_NAME", "callguard".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test".into(),
            ),
        ],
        "",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    check_span_tree(&received.spans());
    let resources = received.resource_spans();
    let resource = resources[0].resource.as_ref().unwrap();
    assert_eq!(
        string_attr(&resource.attributes, "deployment.environment").as_deref(),
        Some("test")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_or_said() {
    // Listening on OTLP/gRPC's default port catches an exporter that falls
    // back to the default endpoint when none is set.
    let default_port = tokio::net::TcpListener::bind("127.0.0.1:4317").await;
    let received = match default_port {
        Ok(listener) => Some(otlp_grpc_receiver(listener, None)),
        Err(e) => {
            eprintln!("127.0.0.1:4317 is taken ({e}): not checking that nothing is sent there");
            None
        }
    };
    let dir = temp_dir("off");
    let output = simulate(&dir, vec![], "").await;
    assert!(output.status.success(), "{}", text(&output));
    let console = text(&output).to_lowercase();
    for word in ["otlp", "opentelemetry", "exporter", "collector"] {
        assert!(!console.contains(word), "{word} mentioned:\n{console}");
    }
    if let Some(received) = received {
        assert!(
            received.spans().is_empty(),
            "spans sent to the default endpoint"
        );
    }
    // Logs still correlate: W3C-sized ids inside spans.
    let log = std::fs::read_to_string(dir.join("logs/callguard.jsonl")).unwrap();
    let ids: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["contact_id"].is_string())
        .collect();
    assert!(!ids.is_empty());
    for line in &ids {
        assert_eq!(line["trace_id"].as_str().map(str::len), Some(32), "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_sampler_variable_is_honoured() {
    let (addr, received) = start_otlp_grpc_receiver(None).await;
    let dir = temp_dir("sampler");
    let output = simulate(
        &dir,
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_TRACES_SAMPLER", "traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG", "0".into()),
        ],
        "",
    )
    .await;
    assert!(output.status.success(), "{}", text(&output));
    // Spans still queued are flushed at exit, so any sampled span is in by now.
    assert!(
        received.spans().is_empty(),
        "a ratio of 0 samples no trace, yet {} spans arrived",
        received.spans().len()
    );
    // Sampled out is not unrecorded: the log lines keep their trace ids.
    let log = std::fs::read_to_string(dir.join("logs/callguard.jsonl")).unwrap();
    let traced = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["contact_id"].is_string())
        .filter(|l| l["trace_id"].as_str().map(str::len) == Some(32))
        .count();
    assert!(traced > 10, "only {traced} lines with a trace id");
    std::fs::remove_dir_all(dir).unwrap();
}

/// One sample of an exposition: its name and labels.
type Sample = (String, BTreeMap<String, String>);

/// The samples of a text exposition (`name{label="value",…} number`).
fn parse_exposition(text: &str) -> HashMap<Sample, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("NAME VALUE");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let mut labels = BTreeMap::new();
                let mut rest = rest.strip_suffix('}').expect("closing brace");
                while let Some((key, after)) = rest.split_once("=\"") {
                    let end = after.find('"').expect("closing quote");
                    labels.insert(key.to_owned(), after[..end].to_owned());
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (name, labels)
            }
        };
        samples.insert((name.to_owned(), labels), value);
    }
    samples
}

/// The sum of the samples of `name` whose labels include `with`.
fn total(samples: &HashMap<Sample, f64>, name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|((n, labels), _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, value)| value)
        .sum()
}

/// A summary count as a sample value.
fn count(summary: &Value, path: &[&str]) -> f64 {
    let mut value = summary;
    for key in path {
        value = &value[*key];
    }
    value
        .as_u64()
        .unwrap_or_else(|| panic!("summary {path:?} is {value}")) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_while_the_campaign_runs_and_match_the_summary() {
    let dir = temp_dir("metrics");
    let port = free_port().port();
    // Nothing listens on the collector's port: every export fails.
    let collector = free_port();
    let run = tokio::spawn({
        let dir = dir.clone();
        let config = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\nlinger = \"2s\"\n");
        let env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ];
        async move { simulate(&dir, env, &config).await }
    });
    // Scrape while it runs, and once more when the summary is written (the
    // endpoint lingers after that, with the final numbers).
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut scrapes = Vec::new();
    let summary_file = dir.join("summary.json");
    let summary: Value = loop {
        assert!(
            !run.is_finished(),
            "the agent ended before its summary was scraped"
        );
        let written = std::fs::read_to_string(&summary_file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        if let Ok(response) = client.get(&url).send().await {
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/openmetrics-text")
            );
            scrapes.push(response.text().await.unwrap());
        }
        if let Some(summary) = written {
            break summary;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output = run.await.unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(scrapes.len() > 3, "only {} scrapes", scrapes.len());
    let open = "callguard_breaker_state{service=\"elevenlabs\",state=\"OPEN\"}";
    assert!(
        scrapes.iter().any(|text| series(text, open) == Some(1.0)),
        "the TTS breaker was never seen OPEN"
    );
    let last = scrapes.last().unwrap();
    for (state, value) in [("CLOSED", 1.0), ("OPEN", 0.0), ("HALF_OPEN", 0.0)] {
        assert_eq!(
            series(
                last,
                &format!("callguard_breaker_state{{service=\"llm\",state=\"{state}\"}}")
            ),
            Some(value),
            "{state}"
        );
    }
    assert!(last.contains("callguard_attempt_duration_seconds_bucket{"));

    let samples = parse_exposition(last);
    for (series, key) in [
        ("callguard_retries_total", "retries"),
        ("callguard_attempts_total", "attempts"),
        ("callguard_rejections_total", "rejections"),
        ("callguard_deferrals_total", "deferrals"),
    ] {
        assert_eq!(
            total(&samples, series, &[]),
            count(&summary, &[key]),
            "{series}"
        );
    }
    assert!(count(&summary, &["retries"]) >= 1.0 && count(&summary, &["deferrals"]) >= 1.0);
    for state in ["completed", "failed", "expired"] {
        assert_eq!(
            total(&samples, "callguard_contacts", &[("state", state)]),
            count(&summary, &[state]),
            "{state}"
        );
    }
    let pending: f64 = ["ready", "deferred", "in_flight"]
        .iter()
        .map(|state| total(&samples, "callguard_contacts", &[("state", state)]))
        .sum();
    assert_eq!(pending, count(&summary, &["pending"]));
    assert_eq!(
        total(&samples, "callguard_contacts", &[]),
        count(&summary, &["contacts"])
    );

    let transitions = summary["breaker_transitions"].as_object().unwrap();
    assert!(transitions["elevenlabs"].as_array().unwrap().len() >= 2);
    for (service, list) in transitions {
        let list = list.as_array().unwrap();
        assert_eq!(
            total(
                &samples,
                "callguard_breaker_transitions_total",
                &[("service", service)]
            ),
            list.len() as f64,
            "{service}"
        );
        for transition in list {
            let (from, to) = (
                transition["from"].as_str().unwrap(),
                transition["to"].as_str().unwrap(),
            );
            let expected = list
                .iter()
                .filter(|t| t["from"] == from && t["to"] == to)
                .count();
            assert_eq!(
                total(
                    &samples,
                    "callguard_breaker_transitions_total",
                    &[("service", service), ("from", from), ("to", to)]
                ),
                expected as f64,
                "{service} {from} -> {to}"
            );
        }
    }
    assert_eq!(
        total(&samples, "callguard_breaker_transitions_total", &[]),
        transitions
            .values()
            .map(|l| l.as_array().unwrap().len())
            .sum::<usize>() as f64
    );

    for result in ["raised", "suppressed"] {
        assert_eq!(
            total(&samples, "callguard_alerts_total", &[("result", result)]),
            count(&summary, &["alerts", result]),
            "alerts {result}"
        );
    }
    let channels = summary["alerts"]["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2, "Telegram and the webhook");
    for channel in channels {
        let name = channel["channel"].as_str().unwrap();
        for result in ["delivered", "failed", "dropped"] {
            assert_eq!(
                total(
                    &samples,
                    "callguard_alert_notifications_total",
                    &[("channel", name), ("result", result)]
                ),
                channel[result].as_u64().unwrap() as f64,
                "{name} {result}"
            );
        }
        assert!(
            channel["delivered"].as_u64().unwrap() >= 1,
            "{name} delivered none"
        );
    }

    for (result, key) in [("sent", "rows_sent"), ("dropped", "rows_dropped")] {
        assert_eq!(
            total(
                &samples,
                "callguard_sheets_rows_total",
                &[("result", result)]
            ),
            count(&summary, &["sheets", key]),
            "sheets rows {result}"
        );
    }
    assert!(count(&summary, &["sheets", "rows_sent"]) >= 1.0);

    assert!(
        total(&samples, "callguard_otlp_export_failures_total", &[]) >= 1.0,
        "no failed export counted:\n{last}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The value of the series `name` (labels included) in an exposition.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
