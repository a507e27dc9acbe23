//! A TCP fault proxy for tests and demos: put it between a client and a real
//! server (PostgreSQL, a gRPC health server) and break the link on demand —
//! cut every open connection, refuse new ones for a while, blackhole (accept,
//! then never pass a byte), add latency — then heal it.
//!
//! Driven in-process through [`FaultProxy`]'s methods, or over HTTP on a mock
//! server it is attached to ([`MockServer::attach_proxy`](crate::MockServer::attach_proxy),
//! `callguard mocks --proxy NAME=LISTEN=UPSTREAM`), under
//! `/_control/proxies/NAME`. Refusing closes the listening socket, so clients
//! see a real `connection refused`; the same port is bound again when the
//! refusal ends. All timing uses `tokio::time`.

mod conditions;
pub(crate) mod control;
mod relay;

use std::fmt;
use std::future::{Future, pending};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callguard_core::ValidationError;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use conditions::Controls;
pub use conditions::{ConditionState, LatencyState, ProxyConditions};
use relay::relay;

/// Pause before binding the listening socket again after a failed attempt.
const REBIND_PAUSE: Duration = Duration::from_millis(50);

/// A proxy's address, upstream, connection counts and conditions, as
/// `GET /_control/proxies/NAME` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyState {
    /// Where the proxy listens (while it does not refuse).
    pub listen: SocketAddr,
    /// Where it connects, `HOST:PORT`.
    pub upstream: String,
    /// Connections open now.
    pub open: u64,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections ended by a cut so far.
    pub cut: u64,
    /// What is done to the traffic now.
    #[serde(flatten)]
    pub conditions: ProxyConditions,
}

/// What the proxy task and its controllers share.
#[derive(Debug)]
pub(crate) struct ProxyShared {
    listen: SocketAddr,
    upstream: String,
    controls: Controls,
    open: AtomicU64,
    accepted: AtomicU64,
    cut: AtomicU64,
}

impl ProxyShared {
    pub(crate) fn cut(&self, refuse_for: Option<Duration>) {
        if let Some(duration) = refuse_for {
            self.controls.refuse(Some(duration));
        }
        self.controls.cut();
    }

    pub(crate) fn refuse(&self, duration: Option<Duration>) {
        self.controls.refuse(duration);
    }

    pub(crate) fn blackhole(&self, duration: Option<Duration>) {
        self.controls.blackhole(duration);
    }

    pub(crate) fn set_latency(&self, latency: Duration, duration: Option<Duration>) {
        self.controls.set_latency(latency, duration);
    }

    pub(crate) fn heal(&self) {
        self.controls.heal();
    }

    fn count_cut(&self) {
        self.cut.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> ProxyState {
        ProxyState {
            listen: self.listen,
            upstream: self.upstream.clone(),
            open: self.open.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
            conditions: self.controls.state(),
        }
    }
}

/// Checks an upstream address: `HOST:PORT` (the host may be a name, looked up
/// at each connection).
fn validate_upstream(upstream: &str) -> Result<(), ValidationError> {
    let valid = upstream.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    });
    if valid {
        Ok(())
    } else {
        Err(ValidationError::new(
            "upstream",
            upstream,
            "a HOST:PORT address",
        ))
    }
}

/// A fault proxy running in this process, on the current tokio runtime.
///
/// Dropping it stops it too (open connections are closed);
/// [`shutdown`](Self::shutdown) also waits for it to finish.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use callguard_mocks::FaultProxy;
///
/// let proxy = FaultProxy::start("127.0.0.1:5432").await?;
/// let database = format!("postgres://callguard@{}/calls", proxy.addr());
/// // ... point the client at `database` ...
/// proxy.cut_for(Duration::from_secs(5)); // every connection reset, none taken for 5 s
/// proxy.blackhole(None);                 // everything stalls until healed
/// proxy.heal();
/// # Ok(()) }
/// ```
pub struct FaultProxy {
    shared: Arc<ProxyShared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`HOST:PORT`) on `127.0.0.1` at a free port.
    pub async fn start(upstream: impl Into<String>) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener, upstream)
    }

    /// Starts a proxy to `upstream` on an already bound listener.
    pub fn start_on(
        listener: TcpListener,
        upstream: impl Into<String>,
    ) -> Result<Self, ProxyError> {
        let upstream = upstream.into();
        validate_upstream(&upstream)?;
        let shared = Arc::new(ProxyShared {
            listen: listener.local_addr()?,
            upstream,
            controls: Controls::new(),
            open: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, Arc::clone(&shared), async move {
            // A dropped sender stops the proxy as well.
            let _ = stopped.await;
        }));
        Ok(Self {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the proxy listens on: point clients here.
    pub fn addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Resets every open connection, both sides; new ones are taken at once.
    pub fn cut(&self) {
        self.shared.cut(None);
    }

    /// Resets every open connection and refuses new ones for `duration`: a
    /// network cut that lasts.
    pub fn cut_for(&self, duration: Duration) {
        self.shared.cut(Some(duration));
    }

    /// Refuses new connections for `duration`, or until healed if `None`;
    /// open connections go on.
    pub fn refuse(&self, duration: Option<Duration>) {
        self.shared.refuse(duration);
    }

    /// Stops every byte, each way, on open and new connections (which are
    /// accepted, then stall) for `duration`, or until healed if `None`.
    pub fn blackhole(&self, duration: Option<Duration>) {
        self.shared.blackhole(duration);
    }

    /// Delays data each way by `latency` (zero removes it) for `duration`,
    /// or until healed if `None`.
    pub fn set_latency(&self, latency: Duration, duration: Option<Duration>) {
        self.shared.set_latency(latency, duration);
    }

    /// Ends every condition: connections are taken, data flows without delay.
    pub fn heal(&self) {
        self.shared.heal();
    }

    /// Counts and conditions now.
    pub fn state(&self) -> ProxyState {
        self.shared.state()
    }

    pub(crate) fn shared(&self) -> Arc<ProxyShared> {
        Arc::clone(&self.shared)
    }

    /// Stops listening, closes every open connection and waits for the proxy
    /// to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "fault proxy task failed");
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen", &self.shared.listen)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

/// Why a fault proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream address is not `HOST:PORT`.
    #[error("invalid fault proxy: {0}")]
    Config(#[from] ValidationError),
    /// The listening socket could not be bound or inspected.
    #[error("fault proxy socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Accepts connections and relays each until `shutdown`; closes the listening
/// socket while refusing and binds the same address again after.
async fn run(listener: TcpListener, shared: Arc<ProxyShared>, shutdown: impl Future<Output = ()>) {
    let mut listener = Some(listener);
    let mut changes = shared.controls.changes();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let refusing = shared.controls.refusing();
        if refusing && listener.take().is_some() {
            tracing::info!(listen = %shared.listen, "fault proxy refuses new connections");
        } else if !refusing && listener.is_none() {
            match TcpListener::bind(shared.listen).await {
                Ok(bound) => {
                    tracing::info!(listen = %shared.listen, "fault proxy takes connections again");
                    listener = Some(bound);
                }
                Err(e) => {
                    tracing::warn!(listen = %shared.listen, error = %e, "fault proxy cannot listen again; retrying");
                    tokio::time::sleep(REBIND_PAUSE).await;
                    continue;
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(client) => {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    shared.open.fetch_add(1, Ordering::Relaxed);
                    // Subscribed now, so a cut from here on ends this connection.
                    let cuts = shared.controls.cuts();
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        relay(client, &shared, cuts).await;
                        shared.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fault proxy could not accept a connection");
                    tokio::time::sleep(REBIND_PAUSE).await;
                }
            },
            () = shared.controls.until_accepting(), if listener.is_none() => {}
            _ = changes.changed() => {}
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => pending().await,
    }
}

/// A proxy to start beside the mocks: `NAME=LISTEN=UPSTREAM`, e.g.
/// `postgres=127.0.0.1:15432=127.0.0.1:5432` (`callguard mocks --proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// The name its control API goes by (`/_control/proxies/NAME`).
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where it connects, `HOST:PORT`.
    pub upstream: String,
}

/// Checks a proxy name: letters, digits, `-` and `_`, so it fits a URL path.
pub(crate) fn validate_name(name: &str) -> Result<(), ValidationError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(ValidationError::new(
            "proxy name",
            format!("{name:?}"),
            "letters, digits, '-' and '_'",
        ))
    }
}

impl FromStr for ProxySpec {
    type Err = ValidationError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut parts = spec.splitn(3, '=');
        let (Some(name), Some(listen), Some(upstream)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ValidationError::new(
                "proxy",
                spec,
                "NAME=LISTEN=UPSTREAM, e.g. postgres=127.0.0.1:15432=127.0.0.1:5432",
            ));
        };
        validate_name(name)?;
        let listen = listen
            .parse()
            .map_err(|_| ValidationError::new("listen", listen, "an IP:PORT address"))?;
        validate_upstream(upstream)?;
        Ok(Self {
            name: name.to_owned(),
            listen,
            upstream: upstream.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_listen_and_upstream() {
        let spec: ProxySpec = "postgres=127.0.0.1:15432=db:5432".parse().unwrap();
        assert_eq!(spec.name, "postgres");
        assert_eq!(spec.listen, "127.0.0.1:15432".parse().unwrap());
        assert_eq!(spec.upstream, "db:5432");
        let spec: ProxySpec = "v6=[::1]:1=[::1]:2".parse().unwrap();
        assert_eq!(spec.upstream, "[::1]:2");
    }

    #[test]
    fn bad_specs_name_the_part_and_the_rule() {
        let err = "postgres=127.0.0.1:15432".parse::<ProxySpec>().unwrap_err();
        assert_eq!(err.key, "proxy");
        let err = "pg sql=127.0.0.1:1=db:5432"
            .parse::<ProxySpec>()
            .unwrap_err();
        assert_eq!(err.key, "proxy name");
        let err = "pg=localhost:1=db:5432".parse::<ProxySpec>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "listen must be an IP:PORT address, got localhost:1"
        );
        for upstream in ["db", "db:", ":5432", "db:99999"] {
            let err = format!("pg=127.0.0.1:1={upstream}")
                .parse::<ProxySpec>()
                .unwrap_err();
            assert_eq!(err.key, "upstream", "{upstream}");
            assert_eq!(err.rule, "a HOST:PORT address", "{upstream}");
        }
    }
}
