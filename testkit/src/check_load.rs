//! A `grpc.health.v1.Health/Check` load for the benchmarks: concurrent
//! tonic clients over a few HTTP/2 connections on loopback, either flat out
//! (each sending its next request as soon as the last one is answered) or
//! paced (each sending one request every interval, as periodic health
//! checkers do). Shared by `callguard-health`'s `check` bench and
//! `callguard-agent`'s `pipeline` bench.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Endpoint;

/// How each client of a load spaces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Closed loop: the next request leaves as soon as the last is answered,
    /// so the load takes all the CPU it can (saturation).
    Flat,
    /// One request every interval per client, the clients' schedules
    /// staggered evenly over the interval. A request's latency runs from its
    /// scheduled send time whenever the previous answer came too late to send
    /// it on time (no coordinated omission); otherwise from when the client's
    /// timer woke it (tokio's timer ticks in milliseconds, so waking up to
    /// 1 ms after the schedule is the client's slack, not the server's).
    Every(Duration),
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Flat => f.write_str("closed loop"),
            Pace::Every(interval) => write!(f, "one Check every {interval:?} per client"),
        }
    }
}

/// What a load measured: every request's latency (sorted), how long it ran,
/// and for a paced load how often a client could not send on schedule.
pub struct Load {
    /// Every request's latency, sorted.
    pub latencies: Vec<Duration>,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Paced requests sent late because the previous answer had not come yet.
    pub held_back: usize,
    /// How late the clients' timers woke them after a paced request's
    /// scheduled time (sorted; empty for a flat load).
    pub timer_lag: Vec<Duration>,
}

impl Load {
    /// Requests answered per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile of the latencies (nearest rank).
    pub fn percentile(&self, q: f64) -> Duration {
        nearest_rank(&self.latencies, q)
    }

    /// `N req/s, p50 …, p99 …, max …`, and for a paced load the requests
    /// held back and the timer's lag.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} requests in {:.2?}: {:.0} req/s, p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}",
            self.latencies.len(),
            self.elapsed,
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.90),
            self.percentile(0.99),
            self.latencies.last().copied().unwrap_or_default()
        );
        if !self.timer_lag.is_empty() || self.held_back > 0 {
            line.push_str(&format!(
                "; {} held back by a late answer; timer lag p50 {:.1?}, p99 {:.1?}",
                self.held_back,
                nearest_rank(&self.timer_lag, 0.50),
                nearest_rank(&self.timer_lag, 0.99),
            ));
        }
        line
    }
}

/// The `q` quantile of sorted `samples` (nearest rank), zero if there are none.
pub fn nearest_rank(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// What one client measured.
#[derive(Default)]
struct ClientLoad {
    latencies: Vec<Duration>,
    held_back: usize,
    timer_lag: Vec<Duration>,
}

/// Checks `service` at `addr` from `clients` callers spread over
/// `connections` HTTP/2 connections, spacing each caller's requests by
/// `pace`, until `stop` is set. Every answer must be a success.
pub async fn check_load(
    addr: SocketAddr,
    service: &str,
    clients: usize,
    connections: usize,
    pace: Pace,
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
            let mut measured = ClientLoad::default();
            let mut next = match pace {
                Pace::Flat => started,
                Pace::Every(interval) => started + interval * i as u32 / clients as u32,
            };
            while !stop.load(Ordering::Relaxed) {
                let origin = match pace {
                    Pace::Flat => Instant::now(),
                    Pace::Every(interval) => {
                        let scheduled = next;
                        next += interval;
                        let now = Instant::now();
                        if now < scheduled {
                            tokio::time::sleep_until(scheduled).await;
                            let woke = Instant::now();
                            measured.timer_lag.push(woke - scheduled);
                            woke
                        } else if measured.latencies.is_empty() {
                            // The first request, due before this task ran.
                            now
                        } else {
                            measured.held_back += 1;
                            scheduled
                        }
                    }
                };
                let request = HealthCheckRequest {
                    service: service.clone(),
                };
                client.check(request).await.expect("Check answers");
                measured.latencies.push(origin.elapsed());
            }
            measured
        });
    }
    let mut load = Load {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        held_back: 0,
        timer_lag: Vec::new(),
    };
    for measured in callers.join_all().await {
        load.latencies.extend(measured.latencies);
        load.held_back += measured.held_back;
        load.timer_lag.extend(measured.timer_lag);
    }
    load.elapsed = started.elapsed();
    load.latencies.sort_unstable();
    load.timer_lag.sort_unstable();
    assert!(!load.latencies.is_empty(), "the load made no request");
    load
}

/// The 1-minute load average (`/proc/loadavg`), or `?`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
