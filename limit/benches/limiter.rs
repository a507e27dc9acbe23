//! Cost of admission under the limit — a slot taken and given back — against
//! tokio's `Semaphore::try_acquire` and its permit's drop, in the same run.
//! The limiter adds to the semaphore the provider's pause (one load), the
//! in-flight count and the limit's debt; an adaptive limit also reads the
//! clock and, when its permit is completed, learns under a mutex.
//!
//! Benches are built with the dev-dependencies' features, so tokio's
//! `test-util` is on here, and with it a clock that takes a mutex on every
//! read (for pausing); without it, tokio's `Instant::now` is std's. Both
//! clocks are measured too, to tell the clock's share from the limiter's.
//!
//! `cargo bench -p callguard-limit --bench limiter -- --warm-up-time 1 --measurement-time 3`;
//! figures are recorded in BENCHMARKS.md.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use callguard_core::{ConfigDuration, ServiceName};
use callguard_limit::{LimitConfig, Limiter, Outcome, ProviderHeaders, RateConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::Semaphore;

/// A success as an HTTP client reports one.
const SUCCESS: Outcome = Outcome::Success {
    latency: Duration::from_millis(100),
};

/// Polls a future that is ready at once.
fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the benchmarked future should be ready at once"),
    }
}

fn limiter(config: LimitConfig) -> Limiter {
    Limiter::new(ServiceName::new("bench").unwrap(), config).unwrap()
}

fn admission(c: &mut Criterion) {
    // A runtime's clock, as in the agent (tokio's Instant reads it).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("admission");
    let semaphore = Semaphore::new(8);
    group.bench_function("semaphore_try_acquire", |b| {
        b.iter(|| drop(black_box(black_box(&semaphore).try_acquire())))
    });
    let rate = RateConfig {
        requests: 1_000_000,
        per: ConfigDuration::from_millis(1),
    };
    for (name, config) in [
        ("off", LimitConfig::default()),
        ("static", LimitConfig::fixed(8)),
        ("adaptive", LimitConfig::adaptive(8, 1, 100)),
        (
            "static_with_rate",
            LimitConfig {
                rate: Some(rate),
                ..LimitConfig::fixed(8)
            },
        ),
    ] {
        let limiter = limiter(config);
        group.bench_function(format!("try_acquire_{name}"), |b| {
            b.iter(|| drop(black_box(black_box(&limiter).try_acquire())))
        });
    }
    for (name, config) in [
        ("static", LimitConfig::fixed(8)),
        ("adaptive", LimitConfig::adaptive(8, 1, 100)),
    ] {
        let limiter = limiter(config);
        group.bench_function(format!("acquire_complete_{name}"), |b| {
            b.iter(|| {
                let permit = ready(black_box(&limiter).acquire()).unwrap();
                permit.complete(SUCCESS, &ProviderHeaders::NONE);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("clock");
    group.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    // The baseline of what a clock read costs without tokio's wrapper.
    #[allow(clippy::disallowed_types)]
    group.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
