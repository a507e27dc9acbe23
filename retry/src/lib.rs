//! Retry for callguard: exponential backoff with jitter, the server's
//! `Retry-After`, a deadline per call and a retry budget per service, and the
//! [`Executor`] that runs `Retry(Breaker(attempt))` for one service.
//!
//! The rules (DESIGN.md, "Semantics"): `max_retries = 3` means up to three retries
//! after the first attempt; the delay before retry n is
//! `min(initial_delay × backoff_factor^(n−1), max_delay)`, then jitter; a server's
//! `Retry-After` replaces it (capped by `max_delay`); only transient errors are
//! retried; a call that would wait past its deadline ends without sleeping, and
//! so does a call whose breaker rejects (or would reject) the next attempt.
//! A `429` over the service's concurrency limit is retried soon, outside
//! `max_retries`, the backoff and the budget; a call the service's limiter
//! did not send ends at once, to be deferred.

pub mod backoff;
pub mod budget;
pub mod error;
pub mod executor;
pub mod policy;
pub mod sink;

pub use backoff::Backoff;
pub use budget::{BudgetConfig, RetryBudget};
pub use error::{CallError, StopReason};
pub use executor::{AttemptContext, Executor};
pub use policy::{Jitter, RetryPolicy};
pub use sink::EventSink;
