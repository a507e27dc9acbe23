//! The HTTP server: routes, the connection loop (which can reset a connection
//! on a fault's request), [`serve`] for the binary and [`MockServer`] for
//! in-process use.
//!
//! Connections are served by hyper directly rather than `axum::serve`, so that
//! each connection's task can be told to drop its socket with `SO_LINGER = 0`
//! mid-request: the client then sees a connection reset, not an HTTP answer.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use callguard_core::ValidationError;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::crm::CrmRecord;
use crate::gate::{ConnectionKill, closed, gate};
use crate::limits::{ConcurrencyLimit, LimitsState, RequestRate};
use crate::service::health_ok;
use crate::state::Shared;
use crate::{
    Fault, FaultId, FaultProxy, ListedFault, MockConfig, MockLlm, Service, Stats, control, crm,
    limits, llm, proxy, sinks, tracing_ctx, tts,
};

/// How long a stopping server waits for open requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a mock server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The config breaks a rule.
    #[error("invalid mock config: {0}")]
    Config(#[from] ValidationError),
    /// The listening socket could not be bound or inspected.
    #[error("mock server socket: {0}")]
    Io(#[from] std::io::Error),
    /// The SMTP sink could not start.
    #[error("SMTP sink: {0}")]
    Smtp(String),
}

fn router(shared: &Arc<Shared>) -> Router {
    let mut app = Router::new()
        .nest(
            "/_control",
            control::routes()
                .merge(sinks::control_routes())
                .merge(proxy::control::routes()),
        )
        .merge(sinks::routes());
    for service in Service::ALL {
        let api = match service {
            Service::Elevenlabs => tts::routes(),
            Service::Llm => llm::routes(),
            Service::Crm => crm::routes(),
        };
        let guarded = api
            .route("/health", get(|| async { health_ok() }))
            .layer(from_fn_with_state((Arc::clone(shared), service), gate))
            .layer(from_fn_with_state(
                (
                    Arc::clone(&shared.limits),
                    Arc::clone(&shared.stats),
                    service,
                ),
                limits::enforce,
            ))
            .layer(from_fn_with_state(service, tracing_ctx::server_span));
        app = app.nest(&format!("/{service}"), guarded);
    }
    app.with_state(Arc::clone(shared))
}

/// Serves the mock services on `listener` until `shutdown` completes, then
/// waits up to 5 s for open requests. Faults are injected through the
/// control API (`/_control/faults`).
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), MockError> {
    config.validate()?;
    run(listener, Arc::new(Shared::new(config)), shutdown).await;
    Ok(())
}

async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let app = router(&shared);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, app.clone(), shared.closing()));
                }
                // Out of file descriptors and the like: pause instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "mock server could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    shared.close();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        connections.abort_all();
    }
}

/// Serves one connection; resets it when a request asks to.
async fn connection(stream: TcpStream, app: Router, mut closing: watch::Receiver<bool>) {
    let kill = ConnectionKill::default();
    let handle = kill.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        app.clone().oneshot(request)
    });
    let mut conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = &mut conn => {}
        () = kill.0.notified() => {
            let stream = conn.into_parts().io.into_inner();
            // Zero linger turns the close into a reset.
            if let Err(e) = stream.set_zero_linger() {
                tracing::debug!(error = %e, "could not set SO_LINGER on a reset connection");
            }
        }
        () = closed(&mut closing) => {
            std::pin::Pin::new(&mut conn).graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A mock server running in this process, on the current tokio runtime.
///
/// Dropping it stops the server too; [`shutdown`](Self::shutdown) also waits
/// for the server to finish.
pub struct MockServer {
    addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a server on `127.0.0.1` at a free port.
    pub async fn start(config: MockConfig) -> Result<Self, MockError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener, config)
    }

    /// Starts a server on an already bound listener.
    pub fn start_on(listener: TcpListener, config: MockConfig) -> Result<Self, MockError> {
        config.validate()?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, Arc::clone(&shared), async move {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the root of the server (control API under `/_control`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/<service>`, the base URL to configure for `service`.
    pub fn base_url(&self, service: Service) -> String {
        format!("http://{}/{service}", self.addr)
    }

    /// The config the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Injects a fault, timed from now.
    pub fn inject(&self, fault: Fault) -> Result<FaultId, ValidationError> {
        let ids = self.shared.inject(vec![fault])?;
        Ok(ids[0])
    }

    /// Injects several faults, all timed from now; none if one is invalid.
    pub fn inject_all(&self, faults: Vec<Fault>) -> Result<Vec<FaultId>, ValidationError> {
        self.shared.inject(faults)
    }

    /// Removes every fault (held `timeout` requests are then answered);
    /// returns how many there were.
    pub fn clear_faults(&self) -> usize {
        self.shared.clear(None)
    }

    /// Removes the faults of one service; returns how many there were.
    pub fn clear_faults_for(&self, service: Service) -> usize {
        self.shared.clear(Some(service))
    }

    /// The faults that have not ended yet, oldest first.
    pub fn faults(&self) -> Vec<ListedFault> {
        self.shared.faults()
    }

    /// Request counts so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// Sets every request count back to zero.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Sets ElevenLabs' concurrency limit (`None` removes it); requests in
    /// flight keep their slots.
    pub fn set_concurrency_limit(
        &self,
        limit: Option<ConcurrencyLimit>,
    ) -> Result<(), ValidationError> {
        if let Some(limit) = &limit {
            limit.validate()?;
        }
        self.shared.limits.set_concurrency(limit);
        Ok(())
    }

    /// Sets the LLM's requests per minute (`None` removes it); a new rate
    /// starts with a full bucket.
    pub fn set_request_rate(&self, rate: Option<RequestRate>) -> Result<(), ValidationError> {
        if let Some(rate) = &rate {
            rate.validate()?;
        }
        self.shared.limits.set_rate(rate);
        Ok(())
    }

    /// The limits and their use now.
    pub fn limits(&self) -> LimitsState {
        self.shared.limits.state()
    }

    /// How the LLM behaves now (the config's `llm` until changed).
    pub fn llm(&self) -> MockLlm {
        self.shared.llm()
    }

    /// Changes how the LLM behaves, from the next request on.
    pub fn set_llm(&self, llm: MockLlm) {
        self.shared.set_llm(llm);
    }

    /// Lets `proxy` be driven over this server's control API, under
    /// `/_control/proxies/NAME`; a name may be used once.
    pub fn attach_proxy(&self, name: &str, proxy: &FaultProxy) -> Result<(), ValidationError> {
        proxy::validate_name(name)?;
        let mut proxies = self.shared.proxies.lock();
        if proxies.contains_key(name) {
            return Err(ValidationError::new(
                "proxy name",
                format!("{name:?}"),
                "a name no other proxy of this server has",
            ));
        }
        proxies.insert(name.to_owned(), proxy.shared());
        Ok(())
    }

    /// The CRM's call records, in creation order.
    pub fn crm_records(&self) -> Vec<CrmRecord> {
        self.shared.crm.records()
    }

    /// Stops accepting connections, releases held requests, and waits (up to
    /// 5 s) for open requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "mock server task failed");
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}
