//! A limiter per service: how many calls may be in flight, how many may start
//! per interval, and how long a call may wait for its turn (DESIGN.md,
//! "Provider limits").
//!
//! * [`Limiter`]: the concurrency limit — `off` (none of its own), `static`
//!   or `adaptive` ([`aimd`]) — capped by the limit the provider announces in
//!   its answers (`maximum-concurrent-requests`, on by default); the rate —
//!   callguard's own `rate` (GCRA) and the pause the provider asks for
//!   (`x-ratelimit-remaining-requests: 0` until `x-ratelimit-reset-requests`);
//!   waiting bounded by `queue_length` and `queue_timeout`.
//! * [`Permit`]: a slot for one attempt, completed with the attempt's
//!   [`Outcome`] and its answer's [`ProviderHeaders`]; dropped, it gives the
//!   slot back and teaches nothing.
//! * [`LimitError`]: a call that got no slot in time, with when to try again;
//!   as a [`ServiceError`](callguard_core::ServiceError) it is
//!   [`ErrorKind::Throttled`](callguard_core::ErrorKind::Throttled), which the
//!   retry executor ends the call with, for the caller to defer.
//!
//! The limiter sits between the breaker and the attempt,
//! `Retry(Breaker(Limit(attempt)))`: every attempt, retries included, takes a
//! slot only once the breaker admitted it, and holds it only while it is sent.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use callguard_core::{ServiceError, ServiceName};
//! use callguard_limit::{LimitConfig, Limiter, Outcome, ProviderHeaders};
//!
//! let limiter = Limiter::new(ServiceName::new("elevenlabs")?, LimitConfig::default())?;
//! // In the attempt, after the breaker admitted it:
//! let permit = limiter.acquire().await.map_err(ServiceError::from)?;
//! let sent = tokio::time::Instant::now();
//! let answer = http::HeaderMap::new(); // the response's headers
//! let seen = ProviderHeaders::from_headers(&answer);
//! let result: Result<(), ServiceError> = Ok(()); // … classified, its body read …
//! permit.complete(Outcome::of(&result, sent.elapsed()), &seen);
//! # Ok(()) }
//! ```

pub mod aimd;
mod config;
mod error;
pub mod headers;
mod limiter;
mod outcome;
mod probe;
mod rate;
mod share;
mod slots;

pub use config::{LimitConfig, LimitMode, RateConfig};
pub use error::LimitError;
pub use headers::{ProviderHeaders, Reading};
pub use limiter::{LimitSnapshot, Limiter, Permit};
pub use outcome::Outcome;
