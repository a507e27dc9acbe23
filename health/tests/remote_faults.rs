//! The remote watcher through a fault proxy (`callguard-mocks`), over real
//! sockets: a cut of the Watch stream and a blackholed link are each noticed
//! — the cut at once, the blackhole within the keepalive — the breakers the
//! remote forced open are released while an operator's stay forced, and the
//! watcher follows the remote again once the link heals.
//!
//! Real time: tonic's connections and keepalive run on real sockets; waits
//! are short (a keepalive of 200 ms + 200 ms) and end on what they observe.

use std::sync::Arc;
use std::time::Duration;

use callguard_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker, ForcedBy};
use callguard_core::{CircuitState, ConfigDuration, ServiceName};
use callguard_health::{
    GrpcOptions, KeepAlive, ReconnectBackoff, RemoteServer, RemoteUrl, RemoteWatcher,
};
use callguard_mocks::FaultProxy;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Generous bound for anything a test waits to see; only hit when it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Short enough that a blackholed link is noticed within [`PATIENCE`].
const QUICK_KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_millis(200),
    timeout: Duration::from_millis(200),
};

/// Long enough that a loaded machine's slow ping answer never drops the
/// connection on its own: a cut is then the only thing that ends it.
const PATIENT_KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(5),
    timeout: Duration::from_secs(5),
};

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        // OPEN stays OPEN for the length of a test.
        recovery_timeout: ConfigDuration::from_secs(3600),
        ..BreakerConfig::default()
    }
}

/// Waits until `breaker` is in `state`; fails the test after [`PATIENCE`].
async fn until_state(breaker: &CircuitBreaker, state: CircuitState) {
    let mut states = breaker.subscribe();
    tokio::time::timeout(PATIENCE, states.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("{} never became {state}", breaker.service()))
        .unwrap();
}

/// A health server for `registry`, a proxy in front of it, and a watcher of
/// `tts` and `llm` through the proxy feeding `local`; the test ends them by
/// dropping them.
struct Setup {
    remote: Arc<BreakerRegistry>,
    local: Arc<BreakerRegistry>,
    proxy: FaultProxy,
    _server_stop: oneshot::Sender<()>,
    _watcher_stop: oneshot::Sender<()>,
}

async fn setup(keep_alive: KeepAlive) -> Setup {
    let remote = Arc::new(BreakerRegistry::new(breaker_config()));
    let local = Arc::new(BreakerRegistry::new(breaker_config()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let (server_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(callguard_health::serve(
        listener,
        Arc::clone(&remote),
        GrpcOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let proxy = FaultProxy::start(server_addr.to_string()).await.unwrap();
    let url =
        RemoteServer::new(RemoteUrl::new(format!("http://{}", proxy.addr())).unwrap()).unwrap();
    let watcher = ["tts", "llm"]
        .into_iter()
        .map(|name| local.get_or_default(&ServiceName::new(name).unwrap()))
        .fold(RemoteWatcher::new(url), RemoteWatcher::with_breaker)
        .with_backoff(ReconnectBackoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .with_keep_alive(keep_alive);
    let (watcher_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(watcher.run(async move {
        let _ = stopped.await;
    }));
    Setup {
        remote,
        local,
        proxy,
        _server_stop: server_stop,
        _watcher_stop: watcher_stop,
    }
}

impl Setup {
    fn breaker(registry: &BreakerRegistry, name: &str) -> Arc<CircuitBreaker> {
        registry.get_or_default(&ServiceName::new(name).unwrap())
    }

    /// The remote reports both services NOT_SERVING; locally, tts follows it and
    /// llm is forced open by an operator.
    async fn remote_down_and_operator_holds_llm(&self) -> [Arc<CircuitBreaker>; 2] {
        let [tts, llm] = ["tts", "llm"].map(|name| Self::breaker(&self.local, name));
        for name in ["tts", "llm"] {
            Self::breaker(&self.remote, name).force_open("outage");
        }
        until_state(&tts, CircuitState::ForcedOpen).await;
        until_state(&llm, CircuitState::ForcedOpen).await;
        llm.force_open("maintenance");
        assert_eq!(tts.snapshot().forced_by, Some(ForcedBy::Remote));
        assert_eq!(llm.snapshot().forced_by, Some(ForcedBy::Operator));
        [tts, llm]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_stream_releases_the_remotes_breakers_and_is_followed_again() {
    let setup = setup(PATIENT_KEEP_ALIVE).await;
    let [tts, llm] = setup.remote_down_and_operator_holds_llm().await;

    // The link is cut and stays down for a while: released at once.
    setup.proxy.cut_for(Duration::from_secs(2));
    until_state(&tts, CircuitState::Closed).await;
    assert!(
        setup.proxy.state().conditions.refuse.is_some(),
        "released while still cut"
    );
    assert_eq!(
        llm.state(),
        CircuitState::ForcedOpen,
        "the operator's stays"
    );
    assert_eq!(
        setup.proxy.state().cut,
        1,
        "one connection carries both streams"
    );

    // Back: the remote still reports NOT_SERVING, and is followed again.
    until_state(&tts, CircuitState::ForcedOpen).await;
    assert!(setup.proxy.state().conditions.refuse.is_none());
    assert_eq!(tts.snapshot().forced_by, Some(ForcedBy::Remote));
    assert_eq!(llm.snapshot().forced_by, Some(ForcedBy::Operator));
    Setup::breaker(&setup.remote, "tts").force_close("recovered");
    until_state(&tts, CircuitState::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_watch_stream_is_noticed_within_the_keepalive_and_followed_again() {
    let setup = setup(QUICK_KEEP_ALIVE).await;
    let [tts, llm] = setup.remote_down_and_operator_holds_llm().await;

    // Nothing passes any more and nothing is closed: only the keepalive can tell.
    let start = Instant::now();
    setup.proxy.blackhole(None);
    until_state(&tts, CircuitState::Closed).await;
    let noticed = start.elapsed();
    // One quiet interval and one unanswered ping (400 ms), with room for a
    // busy machine; the default keepalive would take up to 30 s.
    assert!(
        noticed <= Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    assert_eq!(
        llm.state(),
        CircuitState::ForcedOpen,
        "the operator's stays"
    );
    assert_eq!(setup.proxy.state().cut, 0, "the proxy closed nothing");

    setup.proxy.heal();
    until_state(&tts, CircuitState::ForcedOpen).await;
    assert_eq!(tts.snapshot().forced_by, Some(ForcedBy::Remote));
    assert_eq!(llm.snapshot().forced_by, Some(ForcedBy::Operator));
}
