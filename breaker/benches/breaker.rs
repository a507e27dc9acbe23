//! Hot-path cost of `CircuitBreaker` against a bare call and against the
//! `failsafe` crate's consecutive-failures breaker, measured in the same run.
//!
//! `cargo bench -p callguard-breaker`; figures are recorded in BENCHMARKS.md.

// A bench measures wall-clock time: std's Instant is what it needs.
#![allow(clippy::disallowed_types)]
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::ServiceName;
use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;

fn work() -> Result<u64, ()> {
    Ok(black_box(42))
}

fn callguard_call(breaker: &CircuitBreaker) -> Option<u64> {
    let permit = breaker.try_acquire().ok()?;
    let result = work();
    match result {
        Ok(value) => {
            permit.success();
            Some(value)
        }
        Err(()) => {
            permit.failure();
            None
        }
    }
}

fn callguard_breaker() -> CircuitBreaker {
    CircuitBreaker::new(ServiceName::new("bench").unwrap(), BreakerConfig::default())
}

fn failsafe_breaker() -> impl failsafe::CircuitBreaker {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            2,
            failsafe::backoff::constant(Duration::from_secs(10)),
        ))
        .build()
}

fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed_admit_and_success");
    group.bench_function("bare_call", |b| b.iter(|| black_box(work()).ok()));
    let ours = callguard_breaker();
    group.bench_function("callguard", |b| b.iter(|| callguard_call(black_box(&ours))));
    let theirs = failsafe_breaker();
    group.bench_function("failsafe", |b| {
        b.iter(|| black_box(&theirs).call(work).ok())
    });
    group.finish();
}

/// Rejection by an OPEN breaker whose recovery timeout has not passed.
/// `callguard` is opened inside a tokio runtime, as the agent's breakers are:
/// its recovery timer runs, and the rejection reads no clock.
/// `callguard_outside_runtime` is opened outside any runtime, so no timer
/// runs and the rejection reads the clock, as failsafe's does (which also
/// takes its state's lock); `clock_read` alone is the baseline for those.
fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open_rejection");
    group.bench_function("clock_read", |b| b.iter(tokio::time::Instant::now));
    // Kept for the whole group and not driven, so the recovery timer cannot
    // fire however long the group runs (it would at the 10 s deadline).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ours = callguard_breaker();
    runtime.block_on(async {
        ours.record_failure();
        ours.record_failure();
        tokio::task::yield_now().await; // the recovery timer starts
    });
    assert!(ours.try_acquire().is_err());
    group.bench_function("callguard", |b| {
        b.iter(|| black_box(&ours).try_acquire().is_err())
    });
    let ours = callguard_breaker();
    ours.record_failure();
    ours.record_failure();
    assert!(ours.try_acquire().is_err());
    group.bench_function("callguard_outside_runtime", |b| {
        b.iter(|| black_box(&ours).try_acquire().is_err())
    });
    let theirs = failsafe_breaker();
    for _ in 0..2 {
        let _ = theirs.call(|| Err::<(), ()>(()));
    }
    assert!(!theirs.is_call_permitted());
    group.bench_function("failsafe", |b| {
        b.iter(|| black_box(&theirs).is_call_permitted())
    });
    group.finish();
}

/// Each of `threads` threads makes `iters` calls on one CLOSED breaker; the
/// wall time divided by `iters` is the time per call per thread, which stays
/// flat when the breaker scales and grows when threads contend.
fn hammer(breaker: &CircuitBreaker, threads: usize, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..iters {
                    black_box(callguard_call(breaker));
                }
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed_shared_by_threads");
    let breaker = callguard_breaker();
    for threads in [1, 2] {
        group.bench_function(format!("callguard_{threads}_threads"), |b| {
            b.iter_custom(|iters| hammer(&breaker, threads, iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = closed, open, contended
}
criterion_main!(benches);
