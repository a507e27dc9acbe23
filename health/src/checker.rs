//! The background health checker: probes every service each `interval` and
//! feeds the result into its breaker.
//!
//! A healthy probe of an OPEN breaker closes it (or, with
//! `on_recovery = "half_open"`, moves it to HALF_OPEN); a failed probe is
//! recorded as a failure, so an outage opens the breaker even while no calls
//! are made, unless its error does not count toward the breaker (a 404 says
//! the health URL is wrong: it is logged and changes nothing). A failed probe
//! counts toward the consecutive-failure streak, not the failure-rate window,
//! and a healthy probe of a CLOSED breaker records nothing: the window is the
//! share of calls that failed (DESIGN.md, "Health", says why). Services are
//! probed independently: a slow probe delays only its own service, and never
//! by more than `timeout`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use callguard_breaker::CircuitBreaker;
use callguard_core::{ServiceError, ServiceName, TransportFailure, ValidationError};
use futures_util::future::join_all;
use tokio::time::MissedTickBehavior;

use crate::config::{HealthCheckConfig, OnRecovery};
use crate::probe::{Probe, ProbeListener, ProbeResult};

/// Probes services in the background and drives their breakers.
pub struct HealthChecker {
    config: HealthCheckConfig,
    targets: Vec<Target>,
    listener: Option<Arc<dyn ProbeListener>>,
}

struct Target {
    breaker: Arc<CircuitBreaker>,
    probe: Box<dyn Probe>,
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("config", &self.config)
            .field("services", &self.services().collect::<Vec<_>>())
            .finish()
    }
}

impl HealthChecker {
    /// A checker with no services yet; fails if `config` breaks a rule (keys
    /// reported as `health_check.*`).
    pub fn new(config: HealthCheckConfig) -> Result<Self, ValidationError> {
        config
            .validate()
            .map_err(|e| e.in_section("health_check"))?;
        Ok(Self {
            config,
            targets: Vec::new(),
            listener: None,
        })
    }

    /// Tells `listener` of every probe's result.
    #[must_use]
    pub fn with_listener(mut self, listener: Arc<dyn ProbeListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Probes the breaker's service with `probe`.
    #[must_use]
    pub fn with_probe(mut self, breaker: Arc<CircuitBreaker>, probe: impl Probe + 'static) -> Self {
        self.targets.push(Target {
            breaker,
            probe: Box::new(probe),
        });
        self
    }

    /// The services probed, in the order they were added.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.targets.iter().map(|t| t.breaker.service())
    }

    /// Probes every service at once, then every `interval`, until `shutdown`
    /// completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            services = ?self.services().collect::<Vec<_>>(),
            interval = %self.config.interval,
            timeout = %self.config.timeout,
            on_recovery = ?self.config.on_recovery,
            "health checker started"
        );
        let probing = async {
            join_all(
                self.targets
                    .iter()
                    .map(|t| t.watch_over(&self.config, self.listener.as_deref())),
            )
            .await;
            // Only reached without services: wait for shutdown like the rest.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = probing => {}
            () = shutdown => {}
        }
        tracing::info!("health checker stopped");
    }
}

impl Target {
    async fn watch_over(&self, config: &HealthCheckConfig, listener: Option<&dyn ProbeListener>) {
        let mut ticks = tokio::time::interval(config.interval.get());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut was_healthy = None;
        loop {
            ticks.tick().await;
            let outcome = tokio::time::timeout(config.timeout.get(), self.probe.check())
                .await
                .unwrap_or_else(|_| {
                    Err(TransportFailure::Timeout
                        .into_error(format!("health probe took longer than {}", config.timeout)))
                });
            let healthy = outcome.is_ok();
            let result = self.apply(outcome, config.on_recovery, was_healthy);
            if let Some(listener) = listener {
                listener.on_probe(self.breaker.service(), result);
            }
            was_healthy = Some(healthy);
        }
    }

    fn apply(
        &self,
        outcome: Result<(), ServiceError>,
        on_recovery: OnRecovery,
        was_healthy: Option<bool>,
    ) -> ProbeResult {
        let service = self.breaker.service();
        let before = self.breaker.state();
        match outcome {
            Ok(()) => {
                let recovered = match on_recovery {
                    OnRecovery::HalfOpen => self.breaker.half_open_on_recovery(),
                    OnRecovery::Close => self.breaker.close_on_recovery(),
                };
                if recovered {
                    tracing::info!(
                        %service,
                        from = %before,
                        to = %self.breaker.state(),
                        "health probe succeeded; breaker moved toward recovery"
                    );
                } else if was_healthy == Some(false) {
                    tracing::info!(%service, circuit_state = %before, "health probe succeeded again");
                } else {
                    tracing::debug!(%service, circuit_state = %before, "health probe succeeded");
                }
                ProbeResult::Healthy
            }
            Err(error) if !error.counts_toward_breaker() => {
                // A 404 or 400 says the health URL is wrong, not that the
                // service is down: it neither opens nor closes the breaker.
                tracing::warn!(
                    %service,
                    circuit_state = %before,
                    error_category = %error.category(),
                    %error,
                    "health probe answered with a request error; check the service's health URL (not counted)"
                );
                ProbeResult::NotCounted
            }
            Err(error) => {
                self.breaker.record_failure();
                let after = self.breaker.state();
                if was_healthy == Some(false) && before == after {
                    tracing::debug!(%service, circuit_state = %after, %error, "health probe failed");
                } else {
                    tracing::warn!(
                        %service,
                        from = %before,
                        to = %after,
                        error_category = %error.category(),
                        %error,
                        "health probe failed; recorded as a breaker failure"
                    );
                }
                ProbeResult::Unhealthy
            }
        }
    }
}
