//! Model checks with `loom`: every interleaving (no preemption bound) of a
//! few threads on one breaker — the state word and its generation, the
//! HALF_OPEN probe slots, the failure streak and the failure-rate window.
//!
//! Built only with `--cfg loom`, in release mode (loom runs each model
//! thousands of times; the file takes about 11 s on 2 cores):
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p callguard-breaker --test loom --release
//! ```
//!
//! Time stands still in these models: tokio's clock is not modelled, so an
//! OPEN breaker is moved on by `half_open_on_recovery`, never by its timeout.
#![cfg(loom)]

use callguard_breaker::{BreakerConfig, CircuitBreaker, FailureRateConfig};
use callguard_core::{CircuitState, ServiceName};
use loom::sync::Arc;
use loom::thread;

fn breaker(config: BreakerConfig) -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(
        ServiceName::new("tts").unwrap(),
        config,
    ))
}

/// A window of 4 calls that opens at half of them failing; a streak never opens it.
fn windowed() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 100,
        failure_rate: Some(FailureRateConfig {
            threshold: 0.5,
            window_size: 4,
            minimum_calls: 4,
        }),
        ..BreakerConfig::default()
    }
}

fn spawn(breaker: &Arc<CircuitBreaker>, f: fn(&CircuitBreaker)) -> thread::JoinHandle<()> {
    let breaker = Arc::clone(breaker);
    thread::spawn(move || f(&breaker))
}

/// How many of `threads` returned `true`.
fn count_true(threads: impl IntoIterator<Item = thread::JoinHandle<bool>>) -> usize {
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&yes| yes)
        .count()
}

fn half_open(breaker: &CircuitBreaker) {
    for _ in 0..breaker.config().failure_threshold {
        breaker.record_failure();
    }
    assert!(breaker.half_open_on_recovery());
}

#[test]
fn racing_failures_open_the_breaker_once() {
    loom::model(|| {
        let b = breaker(BreakerConfig::default());
        let fail = |b: &CircuitBreaker| b.try_acquire().unwrap().failure();
        let threads = [spawn(&b, fail), spawn(&b, fail)];
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.snapshot().generation, 1, "exactly one transition");
    });
}

#[test]
fn half_open_admits_one_probe_however_two_race() {
    loom::model(|| {
        let b = breaker(BreakerConfig::default());
        half_open(&b);
        let probe = |b: &Arc<CircuitBreaker>| {
            let b = Arc::clone(b);
            thread::spawn(move || match b.try_acquire() {
                Ok(permit) => {
                    let probed = permit.state() == CircuitState::HalfOpen;
                    permit.success();
                    probed
                }
                Err(_) => false,
            })
        };
        let threads = [probe(&b), probe(&b)];
        assert_eq!(count_true(threads), 1);
        assert_eq!(b.state(), CircuitState::Closed);
    });
}

#[test]
fn half_open_never_admits_more_than_its_slots() {
    loom::model(|| {
        let b = breaker(BreakerConfig {
            half_open_max_calls: 2,
            ..BreakerConfig::default()
        });
        half_open(&b);
        // Each thread holds its permit to the end, so no slot is freed.
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let b = Arc::clone(&b);
                thread::spawn(move || {
                    let permit = b.try_acquire();
                    let admitted = permit.is_ok();
                    std::mem::forget(permit);
                    admitted
                })
            })
            .collect();
        assert_eq!(count_true(threads), 2);
    });
}

/// A failure admitted in one CLOSED generation, reported while the breaker
/// opens and closes again, never counts in the new generation — neither in
/// the streak nor in the window.
#[test]
fn a_late_failure_never_counts_in_a_later_generation() {
    loom::model(|| {
        let b = breaker(BreakerConfig {
            failure_threshold: 2,
            ..windowed()
        });
        let late = {
            let b = Arc::clone(&b);
            thread::spawn(move || {
                b.try_acquire().ok().map(|permit| {
                    let generation = permit.generation();
                    permit.failure();
                    generation
                })
            })
        };
        let trip_and_close = spawn(&b, |b| {
            b.record_failure();
            b.record_failure();
            b.close_on_recovery();
        });
        let admitted_in = late.join().unwrap();
        trip_and_close.join().unwrap();
        let snapshot = b.snapshot();
        assert_eq!(snapshot.state, CircuitState::Closed);
        let counts = admitted_in == Some(snapshot.generation);
        assert_eq!(snapshot.consecutive_failures, u32::from(counts));
        assert_eq!(snapshot.failure_rate, counts.then_some(1.0));
    });
}

/// A reset or force-close of a CLOSED breaker racing a recorded failure
/// leaves the window exact: afterwards three successes and a failure are a
/// rate of 1/4, never the threshold's 2/4.
fn a_manual_close_racing_a_failure_leaves_the_window_exact(close: fn(&CircuitBreaker)) {
    loom::model(move || {
        let b = breaker(windowed());
        let fail = spawn(&b, |b| b.try_acquire().unwrap().failure());
        let closing = {
            let b = Arc::clone(&b);
            thread::spawn(move || close(&b))
        };
        fail.join().unwrap();
        closing.join().unwrap();
        for _ in 0..3 {
            b.try_acquire().unwrap().success();
        }
        b.try_acquire().unwrap().failure();
        let snapshot = b.snapshot();
        assert_eq!(snapshot.state, CircuitState::Closed);
        assert_eq!(snapshot.failure_rate, Some(0.25));
    });
}

#[test]
fn a_reset_racing_a_failure_leaves_the_window_exact() {
    a_manual_close_racing_a_failure_leaves_the_window_exact(|b| b.reset("loom"));
}

#[test]
fn a_force_close_racing_a_failure_leaves_the_window_exact() {
    a_manual_close_racing_a_failure_leaves_the_window_exact(|b| b.force_close("loom"));
}

/// A success admitted before a reset and written after it never overwrites
/// the slot the new generation wrote meanwhile: the new generation's
/// failure there is still taken out when the window slides over it, so four
/// later successes are a rate of 0, not 1/4.
#[test]
fn a_late_record_never_overwrites_a_later_generations_slot() {
    loom::model(|| {
        let b = breaker(windowed());
        let late = spawn(&b, |b| b.try_acquire().unwrap().success());
        let reset_then_fail = spawn(&b, |b| {
            b.reset("loom");
            b.try_acquire().unwrap().failure();
        });
        late.join().unwrap();
        reset_then_fail.join().unwrap();
        for _ in 0..4 {
            b.try_acquire().unwrap().success();
        }
        let snapshot = b.snapshot();
        assert_eq!(snapshot.state, CircuitState::Closed);
        assert_eq!(snapshot.failure_rate, Some(0.0));
    });
}
