//! A circuit breaker per service, as specified in DESIGN.md ("Breaker").
//!
//! * [`CircuitBreaker`]: CLOSED → OPEN after `failure_threshold` consecutive
//!   failures (or a failure rate over a sliding window), OPEN → HALF_OPEN once
//!   `recovery_timeout` has passed, HALF_OPEN admits exactly
//!   `half_open_max_calls` probes at a time and closes after `success_threshold`
//!   successes or reopens on any failure; FORCED_OPEN for manual control,
//!   held by an operator or a remote health server ([`ForcedBy`]).
//! * [`Permit`]: proof of admission; its outcome is recorded exactly once, and a
//!   permit dropped unrecorded frees its probe slot.
//! * [`BreakerRegistry`]: one breaker per service name, with one stream of every
//!   breaker's transitions.
//!
//! Admitting a call and recording a success in CLOSED take no lock and allocate
//! nothing: the state and its generation live in one atomic word. Turning a
//! call away in OPEN reads no clock either while the breaker's recovery timer
//! runs (a tokio task started on entering OPEN; without a runtime, the clock
//! decides).
//!
//! The concurrent parts (the state word, HALF_OPEN slots, the failure streak
//! and window) are model-checked with `loom` in `tests/loom.rs`:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p callguard-breaker --test loom --release`.

mod breaker;
mod config;
mod recovery;
mod registry;
mod stamped;
mod sync;
mod window;

pub use breaker::{BreakerOpen, BreakerSnapshot, CircuitBreaker, ForcedBy, Permit, Rejection};
pub use config::{BreakerConfig, FailureRateConfig};
pub use registry::BreakerRegistry;
