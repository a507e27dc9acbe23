//! `grpc.health.v1.Health/Check` throughput and latency against
//! [`callguard_health::serve`] on 127.0.0.1, with nothing else running (the
//! agent idle): 64 concurrent tonic clients over 8 HTTP/2 connections for a
//! few seconds, first paced (each client sending one Check every 10 ms, then
//! every 1 ms, as periodic health checkers do; latency from the scheduled send
//! time), then flat out (saturation), then one client alone for the unloaded
//! latency. Printed with `println!` (`harness = false`).
//!
//! `cargo bench -p callguard-health --bench check`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callguard_breaker::{BreakerConfig, BreakerRegistry};
use callguard_core::ServiceName;
use callguard_health::GrpcOptions;
use callguard_testkit::{Load, Pace, check_load, load_average};

/// Concurrent callers of the loaded run.
const CLIENTS: usize = 64;
/// HTTP/2 connections they share.
const CONNECTIONS: usize = 8;
/// Length of each measured run.
const DURATION: Duration = Duration::from_secs(4);
/// Each paced client's interval between Checks, one paced run per entry.
const INTERVALS: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(1)];
/// Longest p99 the design allows with the agent idle.
const MAX_P99: Duration = Duration::from_millis(1);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let registry = Arc::new(BreakerRegistry::new(BreakerConfig::default()));
        for service in ["crm", "elevenlabs", "llm"] {
            registry.get_or_default(&ServiceName::new(service).expect("a valid name"));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(callguard_health::serve(
            listener,
            registry,
            GrpcOptions::default(),
            std::future::pending(),
        ));
        println!(
            "callguard-health Check benchmark: server at {addr}, {} worker threads (server and \
             clients share them), load average {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_average()
        );
        // Warm-up: connections, allocations, the first requests.
        check_load_for(
            addr,
            CLIENTS,
            CONNECTIONS,
            Pace::Flat,
            Duration::from_secs(1),
        )
        .await;

        for interval in INTERVALS {
            let attempted = CLIENTS as f64 / interval.as_secs_f64();
            let paced =
                check_load_for(addr, CLIENTS, CONNECTIONS, Pace::Every(interval), DURATION).await;
            println!(
                "\n## Check, {CLIENTS} clients over {CONNECTIONS} HTTP/2 connections, one every \
                 {interval:?} per client ({attempted:.0}/s attempted), {DURATION:?}"
            );
            println!("{}", paced.summary());
            print_p99_verdict(&paced);
        }

        let flat = check_load_for(addr, CLIENTS, CONNECTIONS, Pace::Flat, DURATION).await;
        println!(
            "\n## Check, {CLIENTS} clients over {CONNECTIONS} HTTP/2 connections, closed loop \
             (saturation), {DURATION:?}"
        );
        println!("{}", flat.summary());
        print_p99_verdict(&flat);

        let alone = check_load_for(addr, 1, 1, Pace::Flat, DURATION).await;
        println!("\n## Check, 1 client, 1 connection, {DURATION:?}");
        println!("{}", alone.summary());
    });
}

/// `p99 … (target < 1ms: met|MISSED)`.
fn print_p99_verdict(load: &Load) {
    let p99 = load.percentile(0.99);
    println!(
        "p99 {p99:.1?} (target < {MAX_P99:?}: {})",
        if p99 < MAX_P99 { "met" } else { "MISSED" }
    );
}

/// Runs [`check_load`] on `elevenlabs` at `pace` for `duration`.
async fn check_load_for(
    addr: SocketAddr,
    clients: usize,
    connections: usize,
    pace: Pace,
    duration: Duration,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(check_load(
        addr,
        "elevenlabs",
        clients,
        connections,
        pace,
        stop.clone(),
    ));
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load task completes")
}
