//! The `/metrics` server: the text exposition of [`Metrics`], with the
//! breaker and (for a campaign) contact gauges read at each scrape; the
//! agent's and `callguard health-server`'s alike.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use callguard_breaker::BreakerRegistry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::{ContactGauge, Metrics};

/// The OpenMetrics text content type `/metrics` answers with.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct Scrape {
    metrics: Arc<Metrics>,
    breakers: Arc<BreakerRegistry>,
    contacts: Option<Arc<dyn ContactGauge>>,
}

async fn scrape(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    let text = scrape
        .metrics
        .render(Some(&scrape.breakers), scrape.contacts.as_deref());
    ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text)
}

/// The `/metrics` server.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `/metrics` on `listen` until [`stop`](Self::stop), reading
    /// the breaker states from `breakers` and the contacts by state from
    /// `contacts` (a campaign's; none in a process without one) at each scrape.
    pub async fn start(
        listen: SocketAddr,
        metrics: Arc<Metrics>,
        breakers: Arc<BreakerRegistry>,
        contacts: Option<Arc<dyn ContactGauge>>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(scrape))
            .with_state(Arc::new(Scrape {
                metrics,
                breakers,
                contacts,
            }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!("Metrics served on http://{addr}/metrics");
        Ok(Self { addr, stop, server })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callguard_breaker::BreakerConfig;
    use callguard_core::ServiceName;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A gauge whose `ready` count the test sets.
    #[derive(Default)]
    struct Ready(AtomicUsize);

    impl ContactGauge for Ready {
        fn contacts_by_state(&self) -> Vec<(&'static str, usize)> {
            vec![("ready", self.0.load(Ordering::Relaxed)), ("failed", 0)]
        }
    }

    async fn get_metrics(addr: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn scrapes_read_the_gauges_when_they_happen() {
        let breakers = Arc::new(BreakerRegistry::new(BreakerConfig::default()));
        breakers.register(ServiceName::new("crm").unwrap(), BreakerConfig::default());
        let contacts = Arc::new(Ready::default());
        contacts.0.store(3, Ordering::Relaxed);
        let server = MetricsServer::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Metrics::new()),
            breakers,
            Some(contacts.clone()),
        )
        .await
        .unwrap();
        let first = get_metrics(server.local_addr()).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(
            first.contains(&format!("content-type: {CONTENT_TYPE_OPENMETRICS}")),
            "{first}"
        );
        assert!(
            first.contains("callguard_contacts{state=\"ready\"} 3"),
            "{first}"
        );
        assert!(
            first.contains("callguard_contacts{state=\"failed\"} 0"),
            "{first}"
        );
        assert!(
            first.contains("callguard_breaker_state{service=\"crm\",state=\"CLOSED\"} 1"),
            "{first}"
        );
        contacts.0.store(1, Ordering::Relaxed);
        let second = get_metrics(server.local_addr()).await;
        assert!(
            second.contains("callguard_contacts{state=\"ready\"} 1"),
            "{second}"
        );
        server.stop().await;
    }
}
