//! Cost of the executor on a first-try success against the bare async call,
//! measured in the same run. Both sides are polled the same way: once, with a
//! no-op waker (the futures are ready at once), so the difference is the
//! executor alone — breaker admission, recording the success, the retry loop.
//!
//! `cargo bench -p callguard-retry -- --warm-up-time 1 --measurement-time 3`;
//! figures are recorded in BENCHMARKS.md.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{ServiceError, ServiceName};
use callguard_retry::{BudgetConfig, Executor, RetryBudget, RetryPolicy};
use criterion::{Criterion, criterion_group, criterion_main};

async fn op() -> Result<u64, ServiceError> {
    Ok(black_box(42))
}

/// Polls a future that is ready at once.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the benchmarked future should be ready at once"),
    }
}

fn executor() -> Executor {
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("bench").unwrap(),
        BreakerConfig::default(),
    ));
    Executor::new(breaker, RetryPolicy::default()).unwrap()
}

fn first_try_success(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_try_success");
    group.bench_function("bare_call", |b| b.iter(|| ready(op()).ok()));
    let plain = executor();
    group.bench_function("executor", |b| {
        b.iter(|| ready(black_box(&plain).call(|_| op())).ok())
    });
    let budget = Arc::new(RetryBudget::new(BudgetConfig::default()).unwrap());
    let budgeted = executor().with_budget(budget);
    group.bench_function("executor_with_budget", |b| {
        b.iter(|| ready(black_box(&budgeted).call(|_| op())).ok())
    });
    group.finish();
}

criterion_group!(benches, first_try_success);
criterion_main!(benches);
