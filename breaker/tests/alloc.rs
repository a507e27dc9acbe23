//! The hot path allocates nothing: CLOSED admission with a recorded success,
//! and rejection while OPEN (with its recovery timer running, and read off
//! the clock when the breaker opened outside a runtime), counted by a global
//! allocator that counts the test thread's allocations.

use callguard_alloc_counter::{Count, CountingAllocator};
use callguard_breaker::{BreakerConfig, CircuitBreaker, FailureRateConfig};
use callguard_core::ServiceName;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let count = Count::start();
    f();
    count.allocations()
}

#[test]
fn hot_paths_do_not_allocate() {
    let name = ServiceName::new("llm").unwrap();
    let open_without_runtime = CircuitBreaker::new(name.clone(), BreakerConfig::default());
    open_without_runtime.record_failure();
    open_without_runtime.record_failure();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let plain = CircuitBreaker::new(name.clone(), BreakerConfig::default());
    let windowed = CircuitBreaker::new(
        name.clone(),
        BreakerConfig {
            failure_rate: Some(FailureRateConfig {
                threshold: 0.5,
                window_size: 100,
                minimum_calls: 10,
            }),
            ..BreakerConfig::default()
        },
    );
    for breaker in [&plain, &windowed] {
        let n = allocations_during(|| {
            for _ in 0..10_000 {
                breaker.try_acquire().unwrap().success();
            }
        });
        assert_eq!(n, 0, "CLOSED admit + success allocated {n} times");
    }

    let open_in_runtime = CircuitBreaker::new(name, BreakerConfig::default());
    runtime.block_on(async {
        open_in_runtime.record_failure();
        open_in_runtime.record_failure();
        tokio::task::yield_now().await; // the recovery timer starts
    });
    for open in [&open_in_runtime, &open_without_runtime] {
        let n = allocations_during(|| {
            for _ in 0..10_000 {
                let rejection = open.try_acquire().unwrap_err();
                assert!(rejection.retry_after().is_some());
            }
        });
        assert_eq!(n, 0, "OPEN rejection allocated {n} times");
    }

    // The counter itself works: a transition allocates (its event and log).
    let n = allocations_during(|| plain.force_open("check the counter"));
    assert!(n > 0, "the allocation counter saw nothing");
}
