//! A gRPC server on 127.0.0.1 for the tests, stopped when the test ends.

use std::net::SocketAddr;
use std::sync::Arc;

use callguard_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker};
use callguard_core::{ConfigDuration, ServiceName};
use callguard_health::{GrpcError, GrpcOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    registry: Arc<BreakerRegistry>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GrpcError>>,
}

pub(crate) async fn start(options: GrpcOptions) -> TestServer {
    let registry = Arc::new(BreakerRegistry::new(BreakerConfig {
        // OPEN stays OPEN for the length of a test.
        recovery_timeout: ConfigDuration::from_secs(3600),
        ..BreakerConfig::default()
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(callguard_health::serve(
        listener,
        Arc::clone(&registry),
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        addr,
        registry,
        stop,
        task,
    }
}

impl TestServer {
    pub(crate) fn breaker(&self, name: &str) -> Arc<CircuitBreaker> {
        self.registry
            .get_or_default(&ServiceName::new(name).unwrap())
    }

    /// Signals shutdown and waits for the server to stop.
    pub(crate) async fn shutdown(self) -> Result<(), GrpcError> {
        self.stop.send(()).unwrap();
        self.task.await.unwrap()
    }
}

/// Opens the breaker by recorded failures (not by hand).
pub(crate) fn trip(breaker: &CircuitBreaker) {
    for _ in 0..breaker.config().failure_threshold {
        breaker.record_failure();
    }
}
