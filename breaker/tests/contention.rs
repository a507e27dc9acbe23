//! HALF_OPEN under contention: many tasks on a multi-thread runtime race for the
//! probe slots, round after round; never more are admitted than allowed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{CircuitState, ServiceName};
use tokio::sync::Barrier;

const TASKS: usize = 32;
const ROUNDS: usize = 300;

async fn race_round(breaker: &Arc<CircuitBreaker>) -> usize {
    // Put the breaker into HALF_OPEN without waiting on the clock.
    for _ in 0..breaker.config().failure_threshold {
        breaker.record_failure();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker.half_open_on_recovery();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);

    let start = Arc::new(Barrier::new(TASKS));
    let all_tried = Arc::new(Barrier::new(TASKS));
    let admitted = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (breaker, start, all_tried, admitted) = (
                breaker.clone(),
                start.clone(),
                all_tried.clone(),
                admitted.clone(),
            );
            tokio::spawn(async move {
                start.wait().await;
                let permit = breaker.try_acquire().ok();
                if permit.is_some() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
                // Hold every permit until all tasks have tried, so a finished
                // probe cannot free its slot for another task mid-round.
                all_tried.wait().await;
                if let Some(permit) = permit {
                    permit.ignore();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    breaker.reset("next round");
    admitted.load(Ordering::SeqCst)
}

async fn assert_never_over(max_probes: u32) {
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("tts").unwrap(),
        BreakerConfig {
            half_open_max_calls: max_probes,
            ..BreakerConfig::default()
        },
    ));
    for round in 0..ROUNDS {
        let admitted = race_round(&breaker).await;
        assert_eq!(
            admitted, max_probes as usize,
            "round {round}: {admitted} probes admitted, {max_probes} allowed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_probe_however_many_race() {
    assert_never_over(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_three_probes_however_many_race() {
    assert_never_over(3).await;
}
