//! The remote watcher against an in-process gRPC server over real sockets:
//! the remote's NOT_SERVING forces the local breaker open, SERVING closes it,
//! a stopped server releases it, and the watcher reconnects when the server is
//! back on the same port; an operator's `ForceOpen` over the local process's
//! own gRPC server outranks the remote; a TLS server is followed over
//! `https://` with the CA that signed its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callguard_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker, ForcedBy};
use callguard_core::{CircuitState, ConfigDuration, ServiceName};
use callguard_health::{
    AdminToken, ClientTls, GrpcError, GrpcOptions, ReconnectBackoff, RemoteServer, RemoteUrl,
    RemoteWatcher, TlsKeys,
};
use callguard_proto::callguard::v1::ForceOpenRequest;
use callguard_proto::callguard::v1::breaker::State;
use callguard_proto::callguard::v1::breakers_client::BreakersClient;
use callguard_testkit::tls::TestCa;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything a test waits to see; only hit when it fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        // OPEN stays OPEN for the length of a test.
        recovery_timeout: ConfigDuration::from_secs(3600),
        ..BreakerConfig::default()
    }
}

struct Remote {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GrpcError>>,
}

/// Serves `registry` on `listener` until [`Remote::stop`].
fn serve(listener: TcpListener, registry: &Arc<BreakerRegistry>) -> Remote {
    serve_with(listener, registry, GrpcOptions::default())
}

fn serve_with(
    listener: TcpListener,
    registry: &Arc<BreakerRegistry>,
    options: GrpcOptions,
) -> Remote {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(callguard_health::serve(
        listener,
        Arc::clone(registry),
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    Remote { stop, task }
}

impl Remote {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// A registry served on a fresh 127.0.0.1 port.
async fn start_server(options: GrpcOptions) -> (Arc<BreakerRegistry>, SocketAddr, Remote) {
    let registry = Arc::new(BreakerRegistry::new(breaker_config()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_with(listener, &registry, options);
    (registry, addr, server)
}

/// Waits until `breaker` is in `state`; fails the test after [`PATIENCE`].
async fn until_state(breaker: &CircuitBreaker, state: CircuitState) {
    let mut states = breaker.subscribe();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("{} never became {state}", breaker.service()))
        .unwrap();
}

fn last_reason(breaker: &CircuitBreaker) -> String {
    breaker
        .snapshot()
        .last_transition
        .map(|t| t.reason.to_string())
        .unwrap_or_default()
}

/// A running watcher: stop it and wait for its last releases with [`Watcher::stop`].
struct Watcher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Watcher {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// The plaintext server at `addr`.
fn plaintext(addr: SocketAddr) -> RemoteServer {
    RemoteServer::new(RemoteUrl::new(format!("http://{addr}")).unwrap()).unwrap()
}

fn watch(remote: RemoteServer, breakers: &[&Arc<CircuitBreaker>]) -> Watcher {
    let mut watcher = RemoteWatcher::new(remote).with_backoff(ReconnectBackoff::new(
        Duration::from_millis(20),
        Duration::from_millis(200),
    ));
    for breaker in breakers {
        watcher = watcher.with_breaker(Arc::clone(breaker));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watcher.run(async move {
        let _ = stopped.await;
    }));
    Watcher { stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_health_drives_the_local_breaker_and_a_lost_server_releases_it() {
    let name = ServiceName::new("tts").unwrap();
    let (registry, addr, server) = start_server(GrpcOptions::default()).await;
    let remote_tts = registry.get_or_default(&name);

    let local = Arc::new(CircuitBreaker::new(name.clone(), breaker_config()));
    let _watcher = watch(plaintext(addr), &[&local]);

    remote_tts.force_open("maintenance");
    until_state(&local, CircuitState::ForcedOpen).await;
    assert_eq!(last_reason(&local), "manual force_open: remote");
    // The local breaker really rejects calls.
    assert!(local.try_acquire().is_err());

    remote_tts.force_close("done");
    until_state(&local, CircuitState::Closed).await;
    assert_eq!(last_reason(&local), "manual force_close: remote");

    // Stale news is dropped: the server goes away while reporting NOT_SERVING.
    remote_tts.force_open("maintenance again");
    until_state(&local, CircuitState::ForcedOpen).await;
    server.stop().await;
    until_state(&local, CircuitState::Closed).await;
    assert_eq!(last_reason(&local), "manual force_close: remote");

    // Back on the same port, still NOT_SERVING: the watcher reconnects.
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = serve(listener, &registry);
    until_state(&local, CircuitState::ForcedOpen).await;
    remote_tts.force_close("recovered");
    until_state(&local, CircuitState::Closed).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_waits_for_a_server_that_is_not_up_yet_and_watches_each_service() {
    let registry = Arc::new(BreakerRegistry::new(breaker_config()));
    let llm = ServiceName::new("llm").unwrap();
    let tts = ServiceName::new("tts").unwrap();
    registry.get_or_default(&llm);
    registry.get_or_default(&tts).force_open("outage");
    // Reserve a port, then leave it closed while the watcher starts.
    let addr = callguard_testkit::free_addr();

    let local_llm = Arc::new(CircuitBreaker::new(llm, breaker_config()));
    let local_tts = Arc::new(CircuitBreaker::new(tts, breaker_config()));
    let watcher = watch(plaintext(addr), &[&local_llm, &local_tts]);
    assert_eq!(local_tts.state(), CircuitState::Closed);

    let server = serve(TcpListener::bind(addr).await.unwrap(), &registry);
    until_state(&local_tts, CircuitState::ForcedOpen).await;
    assert_eq!(local_llm.state(), CircuitState::Closed);

    // Stopping the watcher releases what the remote forced open.
    watcher.stop().await;
    assert_eq!(local_tts.state(), CircuitState::Closed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_force_open_over_grpc_outranks_the_remote() {
    const TOKEN: &str = "test-admin-token-0123456789";
    let name = ServiceName::new("tts").unwrap();
    let (remote_registry, remote_addr, remote) = start_server(GrpcOptions::default()).await;
    let remote_tts = remote_registry.get_or_default(&name);

    // The local process: its breakers, the watcher, and its own gRPC server
    // where the operator sends commands.
    let (local_registry, local_addr, local) =
        start_server(GrpcOptions::default().with_admin_token(AdminToken::new(TOKEN).unwrap()))
            .await;
    let local_tts = local_registry.get_or_default(&name);
    let watcher = watch(plaintext(remote_addr), &[&local_tts]);

    remote_tts.force_open("outage");
    until_state(&local_tts, CircuitState::ForcedOpen).await;
    assert_eq!(last_reason(&local_tts), "manual force_open: remote");

    let channel = tonic::transport::Channel::from_shared(format!("http://{local_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut operator = BreakersClient::new(channel);
    let mut request = tonic::Request::new(ForceOpenRequest {
        name: "tts".into(),
        reason: "maintenance".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let answer = operator.force_open(request).await.unwrap().into_inner();
    assert_eq!(answer.state(), State::ForcedOpen);
    assert_eq!(local_tts.snapshot().forced_by, Some(ForcedBy::Operator));

    // The remote recovers, then the watcher stops (the path a lost stream
    // takes): neither releases the operator's force-open.
    remote_tts.force_close("recovered");
    watcher.stop().await;
    assert_eq!(local_tts.state(), CircuitState::ForcedOpen);
    local.stop().await;
    remote.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_is_followed_with_its_ca_and_the_name_on_its_certificate() {
    let dir = callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), "tls-remote");
    let ca = TestCa::new("callguard test CA");
    // The certificate names the prober, not the address it is reached at.
    let cert = ca.issue(&dir, &["prober.callguard.test"]);
    let (registry, addr, server) =
        start_server(GrpcOptions::default().with_tls(&cert.cert_pem, &cert.key_pem)).await;
    let name = ServiceName::new("tts").unwrap();
    let remote_tts = registry.get_or_default(&name);
    remote_tts.force_open("outage");

    let tls = ClientTls {
        ca: Some(ca.write_cert(&dir)),
        server_name: Some("prober.callguard.test".into()),
    };
    let remote = RemoteServer::with_tls(
        RemoteUrl::new(format!("https://{addr}")).unwrap(),
        &tls,
        TlsKeys::CONFIG,
    )
    .unwrap();
    let local = Arc::new(CircuitBreaker::new(name, breaker_config()));
    let watcher = watch(remote, &[&local]);
    until_state(&local, CircuitState::ForcedOpen).await;
    assert_eq!(last_reason(&local), "manual force_open: remote");
    remote_tts.force_close("recovered");
    until_state(&local, CircuitState::Closed).await;
    watcher.stop().await;
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
