//! Health checks for callguard's services and the gRPC face of its breakers.
//!
//! * [`HealthChecker`] probes each service every `health_check.interval` (a
//!   [`Probe`], such as [`HttpProbe`]'s `GET {base}/health`): a healthy probe of
//!   an OPEN breaker closes it (or moves it to HALF_OPEN with
//!   `on_recovery = "half_open"`), a failed probe counts toward the breaker's
//!   failure streak (not its failure-rate window) when its error would count
//!   for a call (a 404 from a wrong health URL does not).
//! * [`grpc::serve`] serves a [`BreakerRegistry`](callguard_breaker::BreakerRegistry):
//!   the standard `grpc.health.v1.Health` (`Check`, `Watch`, `List`; CLOSED is
//!   SERVING, every other state NOT_SERVING, `""` is the process itself),
//!   `callguard.v1.Breakers` (list, get, watch, each breaker with its service's
//!   limiter when given [`GrpcOptions::with_limiters`]; `ForceOpen`/`ForceClose`/`Reset`
//!   behind a bearer admin token) and server reflection, v1 and v1alpha;
//!   plaintext, or TLS (rustls with aws-lc-rs) from `grpc.tls_cert`/`tls_key`.
//! * [`RemoteWatcher`] follows another process's `grpc.health.v1.Health`
//!   (`health_check.remote`): NOT_SERVING forces the local breaker open, SERVING
//!   or a lost server releases what it forced, never an operator's force-open.
//! * [`RemoteServer`] is the client side of such a server: `http://` or
//!   `https://` ([`RemoteUrl`]), a TLS server checked against a CA file or the
//!   system's roots ([`ClientTls`]).
//!
//! [`HttpProbe`] uses the `reqwest::Client` it is given; `https` bases need a
//! client built with reqwest's `rustls` feature (the agent enables it).

mod checker;
mod client;
mod config;
pub mod grpc;
mod probe;
mod remote;

pub use checker::HealthChecker;
pub use client::{ClientTls, KeepAlive, RemoteServer, RemoteUrl, TlsKeys, status_reason};
pub use config::{AdminToken, GrpcConfig, HealthCheckConfig, OnRecovery};
pub use grpc::{GrpcError, GrpcOptions, ProcessHealth, serve};
pub use probe::{HttpProbe, NotABaseUrl, Probe, ProbeFuture, ProbeListener, ProbeResult};
pub use remote::{REMOTE_NOTE, ReconnectBackoff, RemoteWatcher};
