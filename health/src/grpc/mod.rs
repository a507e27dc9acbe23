//! The gRPC server: `grpc.health.v1.Health`, `callguard.v1.Breakers` and server
//! reflection (v1 and v1alpha), serving one [`BreakerRegistry`] and the
//! services' limiters.

mod breakers;
mod convert;
mod health;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use callguard_breaker::{BreakerRegistry, CircuitBreaker};
use callguard_core::ValidationError;
use callguard_limit::{LimitSnapshot, Limiter};
use callguard_proto::FILE_DESCRIPTOR_SET;
use callguard_proto::callguard::v1::Breaker;
use callguard_proto::callguard::v1::breakers_server::BreakersServer;
use callguard_proto::grpc::health::v1::health_server::HealthServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::{AdminToken, GrpcConfig};

/// Whether the process as a whole (health service `""`) is serving.
///
/// Cheap to clone; every clone flips the same status. Turn it to NOT_SERVING
/// when the process starts draining, so load balancers and watchers move away
/// before the server stops; [`serve`] does so itself when its shutdown signal
/// fires.
#[derive(Debug, Clone)]
pub struct ProcessHealth(Arc<watch::Sender<bool>>);

impl Default for ProcessHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessHealth {
    /// A process that is serving.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(true)))
    }

    /// Sets SERVING (`true`) or NOT_SERVING (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.0.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }

    /// Whether the process reports SERVING.
    pub fn is_serving(&self) -> bool {
        *self.0.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// How the gRPC server behaves beyond what it serves.
#[derive(Debug, Clone, Default)]
pub struct GrpcOptions {
    admin_token: Option<AdminToken>,
    process: ProcessHealth,
    tls: Option<Identity>,
    limiters: Vec<Arc<Limiter>>,
}

impl GrpcOptions {
    /// Options from the `[grpc]` section (keys reported as `grpc.*`); reads the
    /// TLS certificate and key when both are set.
    pub fn from_config(config: &GrpcConfig) -> Result<Self, ValidationError> {
        config.validate().map_err(|e| e.in_section("grpc"))?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem("grpc.tls_cert", cert)?,
                read_pem("grpc.tls_key", key)?,
            )),
            _ => None,
        };
        Ok(Self {
            admin_token: config.admin_token.clone(),
            process: ProcessHealth::new(),
            tls,
            limiters: Vec::new(),
        })
    }

    /// Serves TLS with this certificate chain and key (PEM).
    #[must_use]
    pub fn with_tls(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        self.tls = Some(Identity::from_pem(cert_pem, key_pem));
        self
    }

    /// Enables the admin RPCs for callers presenting `token`.
    #[must_use]
    pub fn with_admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Reports the process's health (service `""`) from `process`.
    #[must_use]
    pub fn with_process_health(mut self, process: ProcessHealth) -> Self {
        self.process = process;
        self
    }

    /// Shows each service's limiter (limit, in flight, waiting) beside its
    /// breaker, read as each message is made.
    #[must_use]
    pub fn with_limiters(mut self, limiters: Vec<Arc<Limiter>>) -> Self {
        self.limiters = limiters;
        self
    }

    /// The process health the server reports; flip it to drain.
    pub fn process_health(&self) -> &ProcessHealth {
        &self.process
    }
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ValidationError> {
    // The error names the file, never its contents.
    std::fs::read(path).map_err(|e| {
        ValidationError::new(key, path.display(), format!("a readable PEM file ({e})"))
    })
}

/// Why the gRPC server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// The reflection service could not be built from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed, or the TLS certificate or key was unusable.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// State shared by the services of one server.
#[derive(Clone)]
struct Shared {
    registry: Arc<BreakerRegistry>,
    limiters: Arc<[Arc<Limiter>]>,
    process: ProcessHealth,
    /// Becomes `true` at shutdown: open streams end so the server can stop.
    closing: watch::Receiver<bool>,
}

impl Shared {
    /// The limiter of `service` now, if the server knows one.
    fn limiter(&self, service: &str) -> Option<LimitSnapshot> {
        self.limiters
            .iter()
            .find(|limiter| limiter.service().as_str() == service)
            .map(|limiter| limiter.snapshot())
    }

    /// `breaker`'s message, with its service's limiter.
    fn breaker(&self, breaker: &CircuitBreaker) -> Breaker {
        let limiter = self.limiter(breaker.service().as_str());
        convert::breaker_message(&breaker.snapshot(), limiter.as_ref())
    }
}

/// Serves health, breakers and reflection on `listener` until `shutdown`
/// completes.
///
/// At shutdown the process turns NOT_SERVING (watchers of `""` are told),
/// open `Watch`/`WatchBreakers` streams end, and in-flight calls finish
/// before this returns.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<BreakerRegistry>,
    options: GrpcOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    // Both reflection protocols describe both, so a client of either sees
    // every service the server offers.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
    };
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl before 1.9 speaks only v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (closing_tx, closing) = watch::channel(false);
    let shared = Shared {
        registry,
        limiters: options.limiters.into(),
        process: options.process.clone(),
        closing,
    };
    let local_addr = listener.local_addr().ok();
    tracing::info!(
        addr = ?local_addr,
        admin_rpcs = options.admin_token.is_some(),
        tls = options.tls.is_some(),
        "gRPC server listening"
    );
    let process = options.process;
    let signal = async move {
        shutdown.await;
        tracing::info!(addr = ?local_addr, "gRPC server draining");
        process.set_serving(false);
        closing_tx.send_replace(true);
    };
    let mut builder = Server::builder();
    if let Some(identity) = options.tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    } else if options.admin_token.is_some() && local_addr.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            addr = ?local_addr,
            "admin RPCs are enabled on a non-loopback address without TLS; the token travels in clear text"
        );
    }
    builder
        .add_service(HealthServer::new(health::HealthService::new(
            shared.clone(),
        )))
        .add_service(BreakersServer::new(breakers::BreakersService::new(
            shared,
            options.admin_token,
        )))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal)
        .await?;
    tracing::info!(addr = ?local_addr, "gRPC server stopped");
    Ok(())
}
