//! The gRPC server over real sockets, with the generated tonic clients; its
//! TLS with a CA and certificate the test makes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use callguard_core::{CircuitState, ServiceName};
use callguard_health::{AdminToken, GrpcConfig, GrpcOptions, ProcessHealth};
use callguard_limit::{LimitConfig, LimitMode, Limiter};
use callguard_proto::callguard::v1::breaker::State;
use callguard_proto::callguard::v1::breaker_event::Event;
use callguard_proto::callguard::v1::breakers_client::BreakersClient;
use callguard_proto::callguard::v1::{
    ForceCloseRequest, ForceOpenRequest, GetBreakerRequest, ListBreakersRequest, ResetRequest,
    WatchBreakersRequest,
};
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use callguard_proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest,
};
use callguard_testkit::tls::{ServerCert, TestCa};
use support::{TestServer, start, trip};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request, Streaming};

const TOKEN: &str = "test-admin-token-0123456789";

/// Generous bound for anything a test waits to see; only hit when it fails.
const PATIENCE: Duration = Duration::from_secs(10);

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(server: &TestServer) -> HealthClient<Channel> {
    HealthClient::new(channel(server).await)
}

async fn breakers(server: &TestServer) -> BreakersClient<Channel> {
    BreakersClient::new(channel(server).await)
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<ServingStatus, Code> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
        .map_err(|s| s.code())
}

async fn watch(
    client: &mut HealthClient<Channel>,
    service: &str,
) -> Streaming<HealthCheckResponse> {
    client
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_status(stream: &mut Streaming<HealthCheckResponse>) -> Option<ServingStatus> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a Watch message in time")
        .unwrap()
        .map(|r| r.status())
}

/// One breaker in each state: llm CLOSED, tts OPEN, crm FORCED_OPEN, backup HALF_OPEN.
fn one_breaker_per_state(server: &TestServer) {
    server.breaker("llm");
    trip(&server.breaker("tts"));
    server.breaker("crm").force_open("maintenance");
    let backup = server.breaker("backup");
    trip(&backup);
    backup.half_open_on_recovery();
    assert_eq!(backup.state(), CircuitState::HalfOpen);
}

#[tokio::test]
async fn check_maps_breaker_states_and_knows_the_process() {
    let server = start(GrpcOptions::default()).await;
    one_breaker_per_state(&server);
    let mut client = health(&server).await;
    assert_eq!(check(&mut client, "llm").await, Ok(ServingStatus::Serving));
    for service in ["tts", "crm", "backup"] {
        assert_eq!(
            check(&mut client, service).await,
            Ok(ServingStatus::NotServing),
            "{service}"
        );
    }
    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&mut client, "nosuch").await, Err(Code::NotFound));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_reports_every_breaker_and_the_process() {
    let server = start(GrpcOptions::default()).await;
    one_breaker_per_state(&server);
    let mut client = health(&server).await;
    let statuses = client
        .list(HealthListRequest {})
        .await
        .unwrap()
        .into_inner()
        .statuses;
    let mut got: Vec<_> = statuses
        .iter()
        .map(|(name, r)| (name.as_str(), r.status()))
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ("", ServingStatus::Serving),
            ("backup", ServingStatus::NotServing),
            ("crm", ServingStatus::NotServing),
            ("llm", ServingStatus::Serving),
            ("tts", ServingStatus::NotServing),
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_sends_the_current_status_then_each_change() {
    let server = start(GrpcOptions::default()).await;
    let llm = server.breaker("llm");
    let mut client = health(&server).await;
    let mut stream = watch(&mut client, "llm").await;
    assert_eq!(next_status(&mut stream).await, Some(ServingStatus::Serving));

    trip(&llm);
    assert_eq!(
        next_status(&mut stream).await,
        Some(ServingStatus::NotServing)
    );
    // OPEN -> HALF_OPEN keeps NOT_SERVING: no message for it.
    llm.half_open_on_recovery();
    assert_eq!(llm.state(), CircuitState::HalfOpen);
    llm.close_on_recovery();
    assert_eq!(next_status(&mut stream).await, Some(ServingStatus::Serving));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_of_an_unknown_service_waits_for_it_to_appear() {
    let server = start(GrpcOptions::default()).await;
    let mut client = health(&server).await;
    let mut stream = watch(&mut client, "crm").await;
    assert_eq!(
        next_status(&mut stream).await,
        Some(ServingStatus::ServiceUnknown)
    );
    // The stream stays open; once the breaker exists its status follows.
    server.breaker("crm").force_open("not ready yet");
    assert_eq!(
        next_status(&mut stream).await,
        Some(ServingStatus::NotServing)
    );
    server.breaker("crm").force_close("ready");
    assert_eq!(next_status(&mut stream).await, Some(ServingStatus::Serving));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_process_goes_not_serving_to_drain_and_streams_end_at_shutdown() {
    let process = ProcessHealth::new();
    let server = start(GrpcOptions::default().with_process_health(process.clone())).await;
    let mut client = health(&server).await;
    let mut process_watch = watch(&mut client, "").await;
    let mut llm_watch = {
        server.breaker("llm");
        watch(&mut client, "llm").await
    };
    assert_eq!(
        next_status(&mut process_watch).await,
        Some(ServingStatus::Serving)
    );
    assert_eq!(
        next_status(&mut llm_watch).await,
        Some(ServingStatus::Serving)
    );

    process.set_serving(false);
    assert_eq!(
        next_status(&mut process_watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(check(&mut client, "").await, Ok(ServingStatus::NotServing));
    process.set_serving(true);
    assert_eq!(
        next_status(&mut process_watch).await,
        Some(ServingStatus::Serving)
    );

    // Shutdown: NOT_SERVING is announced, then every stream ends and the
    // server returns.
    let stopped = tokio::spawn(server.shutdown());
    assert_eq!(
        next_status(&mut process_watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(next_status(&mut process_watch).await, None);
    assert_eq!(next_status(&mut llm_watch).await, None);
    tokio::time::timeout(PATIENCE, stopped)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(!process.is_serving());
}

#[tokio::test]
async fn list_and_get_breakers_describe_each_breaker() {
    let server = start(GrpcOptions::default()).await;
    server.breaker("llm").record_failure();
    trip(&server.breaker("tts"));
    let mut client = breakers(&server).await;

    let list = client
        .list_breakers(ListBreakersRequest {})
        .await
        .unwrap()
        .into_inner()
        .breakers;
    let names: Vec<_> = list.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["llm", "tts"]);

    let llm = &list[0];
    assert_eq!(llm.state(), State::Closed);
    assert_eq!(llm.consecutive_failures, 1);
    assert_eq!(llm.failure_rate, None, "no failure-rate window configured");
    assert!(llm.retry_after.is_none() && llm.last_transition_time.is_none());

    let tts = client
        .get_breaker(GetBreakerRequest { name: "tts".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tts.state(), State::Open);
    assert_eq!(tts.last_transition_reason, "2 consecutive failures");
    assert!(tts.last_transition_time.is_some());
    let retry_after = tts.retry_after.expect("retry_after while OPEN");
    assert!(
        retry_after.seconds > 3500 && retry_after.seconds <= 3600,
        "{retry_after:?}"
    );
    assert_eq!(tts.generation, server.breaker("tts").snapshot().generation);

    let missing = client
        .get_breaker(GetBreakerRequest {
            name: "nosuch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn breakers_show_their_services_limiters() {
    let tts = Arc::new(
        Limiter::new(
            ServiceName::new("tts").unwrap(),
            LimitConfig {
                mode: LimitMode::Static,
                max_concurrency: Some(2),
                ..LimitConfig::default()
            },
        )
        .unwrap(),
    );
    let llm =
        Arc::new(Limiter::new(ServiceName::new("llm").unwrap(), LimitConfig::default()).unwrap());
    let server = start(GrpcOptions::default().with_limiters(vec![tts.clone(), llm])).await;
    for name in ["crm", "llm", "tts"] {
        server.breaker(name);
    }
    let held = [tts.try_acquire().unwrap(), tts.try_acquire().unwrap()];
    let waiter = {
        let tts = tts.clone();
        tokio::spawn(async move { tts.acquire().await.is_ok() })
    };
    tokio::time::timeout(PATIENCE, async {
        while tts.snapshot().waiting == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the third call waits");
    let mut client = breakers(&server).await;

    let list = client
        .list_breakers(ListBreakersRequest {})
        .await
        .unwrap()
        .into_inner()
        .breakers;
    let limiters: Vec<_> = list
        .iter()
        .map(|b| (b.name.as_str(), b.limiter.clone()))
        .collect();
    assert_eq!(limiters[0], ("crm", None), "no limiter given for the CRM");
    let llm = limiters[1].1.as_ref().expect("the LLM's limiter");
    assert_eq!(
        (llm.mode.as_str(), llm.limit, llm.in_flight, llm.waiting),
        ("off", Some(1), 0, 0),
        "one request until the first answer says whether the service announces a limit"
    );
    let shown = limiters[2].1.as_ref().expect("the TTS limiter");
    assert_eq!(
        (shown.mode.as_str(), shown.limit, shown.provider_limit),
        ("static", Some(2), None)
    );
    assert_eq!((shown.in_flight, shown.waiting), (2, 1));

    drop(held);
    assert!(waiter.await.unwrap(), "a slot came free");
    let tts = client
        .get_breaker(GetBreakerRequest { name: "tts".into() })
        .await
        .unwrap()
        .into_inner()
        .limiter
        .unwrap();
    assert_eq!(
        (tts.in_flight, tts.waiting),
        (0, 0),
        "read as each message is made"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_breakers_sends_snapshots_then_transitions() {
    let server = start(GrpcOptions::default()).await;
    server.breaker("llm");
    server.breaker("tts").force_open("maintenance");
    let mut client = breakers(&server).await;
    let mut stream = client
        .watch_breakers(WatchBreakersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("an event in time")
            .unwrap()
            .and_then(|e| e.event)
            .expect("an event")
    };
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        match next().await {
            Event::Snapshot(b) => snapshots.push((b.name.clone(), b.state())),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }
    assert_eq!(
        snapshots,
        [
            ("llm".to_owned(), State::Closed),
            ("tts".to_owned(), State::ForcedOpen)
        ]
    );

    trip(&server.breaker("llm"));
    // A breaker registered after the watch began is followed too.
    server.breaker("crm").force_open("new");
    let mut transitions = Vec::new();
    for _ in 0..2 {
        match next().await {
            Event::Transition(t) => {
                transitions.push((t.name.clone(), t.from(), t.to(), t.reason.clone()));
            }
            other => panic!("expected a transition, got {other:?}"),
        }
    }
    assert_eq!(
        transitions,
        [
            (
                "llm".to_owned(),
                State::Closed,
                State::Open,
                "2 consecutive failures".to_owned()
            ),
            (
                "crm".to_owned(),
                State::Closed,
                State::ForcedOpen,
                "manual force_open: new".to_owned()
            ),
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_breakers_can_select_by_name() {
    let server = start(GrpcOptions::default()).await;
    server.breaker("llm");
    server.breaker("tts");
    let mut client = breakers(&server).await;
    let mut stream = client
        .watch_breakers(WatchBreakersRequest {
            names: vec!["tts".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap().event.unwrap();
    assert!(
        matches!(&first, Event::Snapshot(b) if b.name == "tts"),
        "{first:?}"
    );
    server.breaker("llm").force_open("not watched");
    server.breaker("tts").force_open("watched");
    let second = stream.message().await.unwrap().unwrap().event.unwrap();
    assert!(
        matches!(&second, Event::Transition(t) if t.name == "tts" && t.reason.ends_with("watched")),
        "{second:?}"
    );

    let invalid = client
        .watch_breakers(WatchBreakersRequest {
            names: vec!["Not A Name".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    server.shutdown().await.unwrap();
}

fn force_open(name: &str, reason: &str, authorization: Option<&str>) -> Request<ForceOpenRequest> {
    let mut request = Request::new(ForceOpenRequest {
        name: name.into(),
        reason: reason.into(),
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn admin_rpcs_are_refused_without_a_configured_token() {
    let server = start(GrpcOptions::default()).await;
    let llm = server.breaker("llm");
    let mut client = breakers(&server).await;
    let err = client
        .force_open(force_open("llm", "x", Some(&format!("Bearer {TOKEN}"))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(llm.state(), CircuitState::Closed);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_rpcs_need_the_right_bearer_token() {
    let options = GrpcOptions::default().with_admin_token(AdminToken::new(TOKEN).unwrap());
    let server = start(options).await;
    let llm = server.breaker("llm");
    let mut client = breakers(&server).await;

    for authorization in [
        None,
        Some("Bearer wrong-token-of-enough-length"),
        Some(&format!("Basic {TOKEN}")),
        Some(&format!("Bearer {TOKEN}x")),
    ] {
        let err = client
            .force_open(force_open("llm", "x", authorization))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{authorization:?}");
        assert!(!err.message().contains(TOKEN), "{}", err.message());
    }
    assert_eq!(llm.state(), CircuitState::Closed);

    let bearer = format!("Bearer {TOKEN}");
    let mut transitions = llm.transitions();
    let opened = client
        .force_open(force_open("llm", "vendor maintenance", Some(&bearer)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.state(), State::ForcedOpen);
    assert_eq!(
        opened.last_transition_reason,
        "manual force_open: vendor maintenance"
    );
    assert_eq!(llm.state(), CircuitState::ForcedOpen);
    let transition = transitions.recv().await.unwrap();
    assert_eq!(transition.to, CircuitState::ForcedOpen);
    assert_eq!(
        transition.reason.to_string(),
        "manual force_open: vendor maintenance"
    );

    let mut close = Request::new(ForceCloseRequest {
        name: "llm".into(),
        reason: "back".into(),
    });
    close
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    assert_eq!(
        client
            .force_close(close)
            .await
            .unwrap()
            .into_inner()
            .state(),
        State::Closed
    );

    trip(&llm);
    let mut reset = Request::new(ResetRequest {
        name: "llm".into(),
        reason: String::new(),
    });
    reset
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let after = client.reset(reset).await.unwrap().into_inner();
    assert_eq!(
        (after.state(), after.consecutive_failures),
        (State::Closed, 0)
    );
    assert_eq!(after.last_transition_reason, "manual reset");

    let unknown = client
        .force_open(force_open("nosuch", "x", Some(&bearer)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let forged = client
        .force_open(force_open("llm", "ok\nFAKE LOG LINE", Some(&bearer)))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::InvalidArgument);
    assert_eq!(llm.state(), CircuitState::Closed);
    server.shutdown().await.unwrap();
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1, in `dir`.
fn certificates(dir: &std::path::Path) -> (TestCa, ServerCert) {
    let ca = TestCa::new("callguard test CA");
    let cert = ca.issue(dir, &["localhost", "127.0.0.1"]);
    (ca, cert)
}

fn tls_config(cert: &ServerCert) -> GrpcConfig {
    GrpcConfig {
        tls_cert: Some(cert.cert_file.clone()),
        tls_key: Some(cert.key_file.clone()),
        ..GrpcConfig::default()
    }
}

#[tokio::test]
async fn serves_tls_with_the_configured_certificate() {
    let dir = callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), "tls");
    let (ca, cert) = certificates(&dir);
    let server = start(GrpcOptions::from_config(&tls_config(&cert)).unwrap()).await;
    let ca = Certificate::from_pem(ca.cert_pem());
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    // A plaintext client gets no answer from the TLS port.
    let plaintext = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let result = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await;
        assert!(result.is_err(), "{result:?}");
    }
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unreadable_certificate_is_a_config_error() {
    let dir = callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), "tls-missing");
    let (_, cert) = certificates(&dir);
    let config = GrpcConfig {
        tls_cert: Some(dir.join("missing.pem")),
        ..tls_config(&cert)
    };
    let err = GrpcOptions::from_config(&config).unwrap_err();
    assert_eq!(err.key, "grpc.tls_cert");
    assert!(err.value.ends_with("missing.pem"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
