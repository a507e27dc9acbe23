//! A `grpc.health.v1.Health/Check` load for the benchmarks: concurrent
//! tonic clients over a few HTTP/2 connections on loopback, each sending its
//! next request as soon as the last one is answered. Shared by
//! `callguard-health`'s `check` bench and `callguard-agent`'s `pipeline` bench.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use tokio::task::JoinSet;
use tonic::transport::Endpoint;

/// What a load measured: every request's latency (sorted) and how long it ran.
pub(crate) struct Load {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) elapsed: Duration,
}

impl Load {
    /// Requests answered per second.
    pub(crate) fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile of the latencies (nearest rank).
    pub(crate) fn percentile(&self, q: f64) -> Duration {
        let rank = (q * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// `N req/s, p50 …, p99 …, max …`.
    pub(crate) fn summary(&self) -> String {
        format!(
            "{} requests in {:.2?}: {:.0} req/s, p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
            self.latencies.len(),
            self.elapsed,
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.latencies.last().copied().unwrap_or_default()
        )
    }
}

/// Checks `service` at `addr` from `clients` callers spread over
/// `connections` HTTP/2 connections until `stop` is set. Every answer must be
/// a success.
pub(crate) async fn check_load(
    addr: SocketAddr,
    service: &str,
    clients: usize,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> Load {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a valid URI")
            .connect()
            .await
            .expect("the gRPC server accepts a connection");
        channels.push(channel);
    }
    let started = Instant::now();
    let mut callers = JoinSet::new();
    for i in 0..clients {
        let mut client = HealthClient::new(channels[i % connections].clone());
        let stop = stop.clone();
        let service = service.to_owned();
        callers.spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = HealthCheckRequest {
                    service: service.clone(),
                };
                let sent = Instant::now();
                client.check(request).await.expect("Check answers");
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies: Vec<Duration> = callers.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    assert!(!latencies.is_empty(), "the load made no request");
    Load { latencies, elapsed }
}

/// The 1-minute load average (`/proc/loadavg`), or `?`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
