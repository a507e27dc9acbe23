//! Shared vocabulary of callguard: service names, the error taxonomy and its
//! classification, `Retry-After` parsing, the names of providers' limit headers, resilience events, config types,
//! the short texts error details quote from servers, and the log schema.
//!
//! Every other callguard crate speaks in these types, so a breaker, a retry loop,
//! an alert channel and a log line agree on what "transient", "OPEN" or
//! "rate-limited" mean.

pub mod classify;
pub mod config;
pub mod error;
pub mod event;
#[cfg(feature = "reqwest")]
pub mod http;
pub mod limit_headers;
pub mod retry_after;
pub mod secret;
pub mod service;
pub mod telemetry;
pub mod text;

pub use classify::{TransportFailure, classify_status, refine_by_body};
pub use config::{ConfigDuration, ValidationError};
pub use error::{ErrorCategory, ErrorKind, ServiceError};
pub use event::{
    AttemptInfo, CircuitState, ManualAction, ResilienceEvent, Transition, TransitionReason,
};
pub use retry_after::{RetryAfterError, parse_retry_after};
pub use secret::Secret;
pub use service::{ServiceName, ServiceNameError};
