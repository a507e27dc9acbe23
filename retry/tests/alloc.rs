//! A first-try success through the executor allocates nothing, counted by a
//! global allocator that counts the test thread's allocations (the executor
//! runs on a current-thread runtime, so all its work is on that thread).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use callguard_alloc_counter::{Count, CountingAllocator};
use callguard_breaker::{BreakerConfig, CircuitBreaker};
use callguard_core::{ResilienceEvent, ServiceError, ServiceName};
use callguard_retry::{Executor, RetryPolicy};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CALLS: u64 = 10_000;

async fn allocations_over_calls(exec: &Executor) -> usize {
    // Warm-up: lazily initialised statics (tracing's callsite interest) settle.
    for _ in 0..100 {
        let _ = exec.call(|_| async { Ok::<_, ServiceError>(1) }).await;
    }
    let count = Count::start();
    for i in 0..CALLS {
        let value =
            exec.call(|ctx| async move {
                Ok::<_, ServiceError>(black_box(i) + u64::from(ctx.retry_count))
            })
            .await;
        assert_eq!(value, Ok(i));
    }
    count.allocations()
}

#[test]
fn a_first_try_success_does_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let breaker = Arc::new(CircuitBreaker::new(
        ServiceName::new("elevenlabs").unwrap(),
        BreakerConfig::default(),
    ));
    let plain = Executor::new(Arc::clone(&breaker), RetryPolicy::default()).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counted = {
        let seen = Arc::clone(&seen);
        Executor::new(Arc::clone(&breaker), RetryPolicy::default())
            .unwrap()
            .with_sink(Arc::new(move |e: &ResilienceEvent| {
                if matches!(e, ResilienceEvent::AttemptSucceeded(_)) {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }))
    };

    runtime.block_on(async {
        let n = allocations_over_calls(&plain).await;
        assert_eq!(n, 0, "{CALLS} first-try successes allocated {n} times");

        let n = allocations_over_calls(&counted).await;
        assert_eq!(
            n, 0,
            "with an event sink, {CALLS} successes allocated {n} times"
        );
        assert_eq!(
            seen.load(Ordering::Relaxed),
            CALLS + 100,
            "every success was published"
        );

        // The counter itself works.
        let count = Count::start();
        drop(black_box(Box::new(1u8)));
        assert!(
            count.allocations() > 0,
            "the allocation counter saw nothing"
        );
    });
}
