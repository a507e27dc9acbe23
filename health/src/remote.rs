//! Following another process's health server: a [`RemoteWatcher`] watches each
//! service on a remote `grpc.health.v1.Health` and applies what it hears to the
//! local breakers.
//!
//! * NOT_SERVING forces the breaker open on the remote's behalf
//!   ([`ForcedBy::Remote`], note [`REMOTE_NOTE`]); calls still go through the
//!   local breaker, which now rejects them.
//! * SERVING releases only a forced-open the remote holds: a breaker the agent
//!   opened through its own failures recovers by its own rules (recovery
//!   timeout, local probes), and one an operator forced open — before the
//!   remote did or after, which takes it over — stays so until closed by hand.
//! * When the stream breaks, the remote server stops or it does not know the
//!   service, every forced-open the remote made is released at once, so no
//!   breaker stays open on stale news; the local health checks (which keep
//!   running, but cannot move a FORCED_OPEN breaker) take over until the
//!   watcher reconnects, after a capped exponential backoff
//!   ([`ReconnectBackoff`]). Streams share one HTTP/2 connection, whose
//!   keepalive pings ([`KeepAlive`]) notice a server gone silent.
//!
//! Who holds a forced-open is checked and changed under the breaker's lock
//! ([`CircuitBreaker::release`]), so an operator's `ForceOpen` racing a
//! release is never undone.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use callguard_breaker::{CircuitBreaker, ForcedBy};
use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use futures_util::future::join_all;
use tonic::transport::Channel;

use crate::client::{KeepAlive, RemoteServer, RemoteUrl};

/// The note of the transitions a [`RemoteWatcher`] makes.
pub const REMOTE_NOTE: &str = "remote";

/// Delays between reconnection attempts: `initial`, doubling up to `max`; back
/// to `initial` once a stream delivers a status again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectBackoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Default for ReconnectBackoff {
    /// 100 ms, doubling up to 10 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl ReconnectBackoff {
    /// Starts at `initial` (at least 1 ms) and never exceeds `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt; the one after is twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// The remote answered: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Watches services on a remote health server and drives the local breakers
/// from what it reports: NOT_SERVING forces a breaker open on the remote's
/// behalf; SERVING, a service the remote does not know or a lost server
/// releases only what the remote holds forced open.
pub struct RemoteWatcher {
    remote: RemoteServer,
    breakers: Vec<Arc<CircuitBreaker>>,
    backoff: ReconnectBackoff,
    keep_alive: KeepAlive,
}

impl fmt::Debug for RemoteWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteWatcher")
            .field("remote", &self.remote)
            .field(
                "services",
                &self
                    .breakers
                    .iter()
                    .map(|b| b.service())
                    .collect::<Vec<_>>(),
            )
            .field("backoff", &self.backoff)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl RemoteWatcher {
    /// A watcher of `remote` with no services yet.
    pub fn new(remote: RemoteServer) -> Self {
        Self {
            remote,
            breakers: Vec::new(),
            backoff: ReconnectBackoff::default(),
            keep_alive: KeepAlive::default(),
        }
    }

    /// Also watches the breaker's service (by its name) on the remote server.
    #[must_use]
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breakers.push(breaker);
        self
    }

    /// Reconnects with `backoff` instead of the default.
    #[must_use]
    pub fn with_backoff(mut self, backoff: ReconnectBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Notices a silent server with `keep_alive` instead of the default.
    #[must_use]
    pub fn with_keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Watches every service until `shutdown` completes, then releases what
    /// the remote forced open.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let url = self.remote.url();
        tracing::info!(
            remote = %url,
            tls = url.is_https(),
            services = ?self.breakers.iter().map(|b| b.service()).collect::<Vec<_>>(),
            "remote health watcher started"
        );
        let channel = self.remote.channel_keeping_alive(self.keep_alive);
        let following = async {
            join_all(
                self.breakers
                    .iter()
                    .map(|breaker| follow(url, channel.clone(), breaker, self.backoff)),
            )
            .await;
            // Only reached without services: wait for shutdown like the rest.
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = following => {}
            () = shutdown => {}
        }
        for breaker in &self.breakers {
            release(breaker);
        }
        tracing::info!(remote = %url, "remote health watcher stopped");
    }
}

/// Follows one service forever: watch, apply, and on any break release and
/// reconnect.
async fn follow(
    remote: &RemoteUrl,
    channel: Channel,
    breaker: &CircuitBreaker,
    mut backoff: ReconnectBackoff,
) {
    let service = breaker.service();
    let mut client = HealthClient::new(channel);
    // Whether the last attempt was heard from, so a lost server is reported
    // once and not at every failed reconnection.
    let mut was_connected = true;
    loop {
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        let ended = match client.watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if !was_connected {
                                tracing::info!(%service, %remote, "remote health server reachable again");
                            }
                            was_connected = true;
                            backoff.reset();
                            apply(breaker, message.status());
                        }
                        Ok(None) => break "the remote server ended the stream".to_owned(),
                        Err(status) => break status_text(&status),
                    }
                }
            }
            Err(status) => status_text(&status),
        };
        let released = release(breaker);
        if was_connected {
            tracing::warn!(
                %service,
                %remote,
                reason = %ended,
                released_forced_open = released,
                "lost the remote health server; local health checks decide until it is back"
            );
        } else {
            tracing::debug!(%service, %remote, reason = %ended, "remote health server still unreachable");
        }
        was_connected = false;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn status_text(status: &tonic::Status) -> String {
    format!(
        "{:?}: {}",
        status.code(),
        crate::client::status_reason(status)
    )
}

/// Applies one status from the remote to `breaker`.
fn apply(breaker: &CircuitBreaker, status: ServingStatus) {
    let service = breaker.service();
    match status {
        ServingStatus::NotServing => {
            if breaker.force_open_by(ForcedBy::Remote, REMOTE_NOTE) {
                tracing::info!(%service, "remote reports NOT_SERVING; forced the breaker open");
            }
        }
        ServingStatus::Serving => {
            if release(breaker) {
                tracing::info!(%service, "remote reports SERVING; released the breaker");
            } else if breaker.snapshot().forced_by == Some(ForcedBy::Operator) {
                tracing::info!(%service, "remote reports SERVING; the breaker stays forced open by the operator");
            }
        }
        ServingStatus::ServiceUnknown | ServingStatus::Unknown => {
            release(breaker);
            tracing::warn!(%service, status = status.as_str_name(), "remote does not know the service; local health checks decide");
        }
    }
}

/// Closes `breaker` if the remote holds it forced open; `true` if it did.
fn release(breaker: &CircuitBreaker) -> bool {
    breaker.release(ForcedBy::Remote, REMOTE_NOTE)
}

#[cfg(test)]
mod tests {
    use callguard_breaker::BreakerConfig;
    use callguard_core::{CircuitState, ConfigDuration, ServiceName};

    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(
            ServiceName::new("tts").unwrap(),
            BreakerConfig {
                recovery_timeout: ConfigDuration::from_secs(3600),
                ..BreakerConfig::default()
            },
        )
    }

    fn last_reason(breaker: &CircuitBreaker) -> String {
        breaker
            .snapshot()
            .last_transition
            .map(|t| t.reason.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn not_serving_forces_open_and_serving_releases() {
        let breaker = breaker();
        apply(&breaker, ServingStatus::NotServing);
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        assert_eq!(last_reason(&breaker), "manual force_open: remote");
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(last_reason(&breaker), "manual force_close: remote");
    }

    #[test]
    fn serving_leaves_an_operators_force_open_alone() {
        let breaker = breaker();
        breaker.force_open("maintenance");
        apply(&breaker, ServingStatus::NotServing);
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        assert_eq!(last_reason(&breaker), "manual force_open: maintenance");
        assert!(!release(&breaker));
    }

    #[test]
    fn an_operators_force_open_over_the_remotes_outlasts_serving() {
        let breaker = breaker();
        apply(&breaker, ServingStatus::NotServing);
        breaker.force_open("maintenance");
        assert_eq!(breaker.snapshot().forced_by, Some(ForcedBy::Operator));
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        assert!(!release(&breaker), "a lost stream leaves it too");
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        breaker.force_close("maintenance over");
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn an_operator_note_that_reads_remote_is_still_the_operators() {
        let breaker = breaker();
        breaker.force_open(REMOTE_NOTE);
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        assert!(!release(&breaker));
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
    }

    #[test]
    fn serving_leaves_a_locally_opened_breaker_to_its_own_recovery() {
        let breaker = breaker();
        for _ in 0..breaker.config().failure_threshold {
            breaker.record_failure();
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::Open);
        // NOT_SERVING overrides it, and SERVING then closes what the remote forced.
        apply(&breaker, ServingStatus::NotServing);
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        apply(&breaker, ServingStatus::Serving);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn an_unknown_service_releases_the_remotes_force_open() {
        let breaker = breaker();
        apply(&breaker, ServingStatus::NotServing);
        apply(&breaker, ServingStatus::ServiceUnknown);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff =
            ReconnectBackoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
