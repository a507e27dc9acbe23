//! The servers beside a campaign (and beside `health-server`'s probes): the
//! gRPC health and breakers server, `/metrics`, and the watcher that follows
//! a remote health server into the local breakers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callguard_breaker::BreakerRegistry;
use callguard_health::{GrpcConfig, GrpcError, GrpcOptions, ProcessHealth, RemoteWatcher};
use callguard_limit::Limiter;
use callguard_store::CallStore;
use callguard_telemetry::{ContactGauge, Metrics, MetricsConfig, MetricsServer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::AgentConfig;

/// The gRPC server (health, breakers, reflection) on `grpc.listen`, running in
/// the background until [`GrpcServer::stop`].
pub struct GrpcServer {
    addr: SocketAddr,
    process: ProcessHealth,
    /// Set once the drain begins: the store's health no longer moves `""`.
    draining: Arc<AtomicBool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), GrpcError>>,
}

impl GrpcServer {
    /// Binds `grpc.listen` (port 0 picks a free port) and serves `registry`,
    /// each breaker shown with its service's limiter among `limiters`.
    pub async fn start(
        config: &GrpcConfig,
        registry: Arc<BreakerRegistry>,
        limiters: Vec<Arc<Limiter>>,
    ) -> Result<Self, String> {
        let options = GrpcOptions::from_config(config)
            .map_err(|e| e.to_string())?
            .with_limiters(limiters);
        let listen = config.listen;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            format!(
                "cannot serve gRPC on {listen} (grpc.listen): {e}; \
                 choose another address with [grpc] listen or CALLGUARD_GRPC__LISTEN"
            )
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot serve gRPC on {listen}: {e}"))?;
        tracing::info!("gRPC health and breakers on {addr}");
        let process = options.process_health().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(callguard_health::serve(
            listener,
            registry,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            process,
            draining: Arc::default(),
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Completes when `shutdown` does, after turning the process NOT_SERVING:
    /// watchers hear of the drain while calls in flight finish.
    pub fn drain_on<F: Future<Output = ()>>(
        &self,
        shutdown: F,
    ) -> impl Future<Output = ()> + use<F> {
        let process = self.process.clone();
        let draining = self.draining.clone();
        let addr = self.addr;
        async move {
            shutdown.await;
            tracing::info!("Draining: gRPC on {addr} reports NOT_SERVING");
            draining.store(true, Ordering::Release);
            process.set_serving(false);
        }
    }

    /// Reports the process (`""`) NOT_SERVING while `store` has been out of
    /// reach longer than `grace` (`queue.unreachable_grace`), SERVING again
    /// once it answers; looks four times a second until the server stops.
    pub fn follow_store(&self, store: Arc<CallStore>, grace: Duration) -> JoinHandle<()> {
        let process = self.process.clone();
        let draining = self.draining.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticker.tick().await;
                if draining.load(Ordering::Acquire) {
                    return;
                }
                let out_too_long = store
                    .health()
                    .unreachable_since
                    .is_some_and(|(_, at)| at.elapsed() > grace);
                if out_too_long == process.is_serving() {
                    tracing::warn!(
                        "gRPC health reports {}: the call store {}",
                        if out_too_long {
                            "NOT_SERVING"
                        } else {
                            "SERVING"
                        },
                        if out_too_long {
                            "has been out of reach longer than queue.unreachable_grace"
                        } else {
                            "answers again"
                        }
                    );
                    process.set_serving(!out_too_long);
                }
            }
        })
    }

    /// Stops serving: open watch streams end, calls in flight finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(addr = %self.addr, "gRPC server failed: {e}"),
            Err(e) => tracing::error!(addr = %self.addr, "gRPC server task failed: {e}"),
        }
    }
}

/// Serves `/metrics` as `[metrics]` asks (`None` with `enabled = false`):
/// `metrics`, the breakers of `registry`, and the contacts of `contacts`
/// when there is a campaign.
pub async fn serve_metrics(
    config: &MetricsConfig,
    metrics: Arc<Metrics>,
    registry: Arc<BreakerRegistry>,
    contacts: Option<Arc<dyn ContactGauge>>,
) -> Result<Option<MetricsServer>, String> {
    let Some(listen) = config.served_on() else {
        return Ok(None);
    };
    MetricsServer::start(listen, metrics, registry, contacts)
        .await
        .map(Some)
        .map_err(|e| {
            format!(
                "cannot serve metrics on {listen} (metrics.listen): {e}; \
                 choose another address with [metrics] listen or CALLGUARD_METRICS__LISTEN, \
                 or turn /metrics off with [metrics] enabled = false"
            )
        })
}

/// A [`RemoteWatcher`] of `health_check.remote` for every breaker of
/// `registry`, running until [`RemoteFollower::stop`].
pub struct RemoteFollower {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RemoteFollower {
    /// Starts following the remote, if `health_check.remote` is set; an
    /// unreadable `remote_tls_ca` (or an `https://` remote on a system
    /// without root certificates) is an error naming the key.
    pub fn start(config: &AgentConfig, registry: &BreakerRegistry) -> Result<Option<Self>, String> {
        let Some(remote) = config
            .health_check
            .remote_server()
            .map_err(|e| e.in_section("health_check").to_string())?
        else {
            return Ok(None);
        };
        let watcher = registry
            .all()
            .into_iter()
            .fold(RemoteWatcher::new(remote), RemoteWatcher::with_breaker)
            .with_keep_alive(config.health_check.remote_keep_alive());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watcher.run(async move {
            let _ = stopped.await;
        }));
        Ok(Some(Self { stop, task }))
    }

    /// Stops following; breakers the remote forced open are released.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
