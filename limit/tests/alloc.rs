//! Admission under the limit and completing the permit allocate nothing,
//! in every mode, counted by a global allocator that counts this thread's
//! allocations (the limiter runs on a current-thread runtime).

use std::hint::black_box;
use std::time::Duration;

use callguard_alloc_counter::{Count, CountingAllocator};
use callguard_core::{ConfigDuration, ServiceName};
use callguard_limit::{LimitConfig, Limiter, Outcome, ProviderHeaders, RateConfig};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const CALLS: u32 = 10_000;
const SUCCESS: Outcome = Outcome::Success {
    latency: Duration::from_millis(100),
};

async fn allocations_over_calls(limiter: &Limiter) -> usize {
    // Warm-up: lazily initialised statics (tracing's callsite interest) settle.
    for _ in 0..100 {
        limiter
            .acquire()
            .await
            .unwrap()
            .complete(SUCCESS, &ProviderHeaders::NONE);
    }
    let count = Count::start();
    for i in 0..CALLS {
        let permit = limiter.acquire().await.unwrap();
        black_box(&permit);
        if i % 2 == 0 {
            permit.complete(SUCCESS, &ProviderHeaders::NONE);
        } else {
            drop(permit);
        }
        drop(black_box(limiter.try_acquire()));
    }
    count.allocations()
}

#[test]
fn admission_under_the_limit_does_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let configs = [
        ("off", LimitConfig::default()),
        ("static", LimitConfig::fixed(8)),
        ("adaptive", LimitConfig::adaptive(8, 1, 100)),
        (
            "static with a rate",
            LimitConfig {
                rate: Some(RateConfig {
                    requests: 1_000_000,
                    per: ConfigDuration::from_millis(1),
                }),
                ..LimitConfig::fixed(8)
            },
        ),
    ];
    runtime.block_on(async {
        for (name, config) in configs {
            let limiter = Limiter::new(ServiceName::new("elevenlabs").unwrap(), config).unwrap();
            let n = allocations_over_calls(&limiter).await;
            assert_eq!(n, 0, "{name}: {CALLS} admissions allocated {n} times");
            assert_eq!(limiter.snapshot().in_flight, 0, "{name}");
        }
        // The counter itself works.
        let count = Count::start();
        drop(black_box(Box::new(1u8)));
        assert!(
            count.allocations() > 0,
            "the allocation counter saw nothing"
        );
    });
}
