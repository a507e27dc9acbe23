//! Health probes: the [`Probe`] trait and [`HttpProbe`], a `GET {base}/health`.

use std::future::Future;
use std::pin::Pin;

use callguard_core::http::{classify_response, transport_error};
use callguard_core::{ServiceError, ServiceName};

/// The future a [`Probe`] returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send + 'a>>;

/// Checks whether a service is healthy.
///
/// The checker bounds every probe by `health_check.timeout`, so a probe need not
/// time itself out.
pub trait Probe: Send + Sync {
    /// `Ok(())` when the service is healthy, its error otherwise.
    fn check(&self) -> ProbeFuture<'_>;
}

/// What one probe found, as the checker applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeResult {
    /// The service answered healthy.
    Healthy,
    /// The probe failed and was recorded as a breaker failure.
    Unhealthy,
    /// The probe got a request error (a wrong health URL): logged, not counted.
    NotCounted,
}

impl ProbeResult {
    /// `healthy`, `unhealthy` or `not_counted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::NotCounted => "not_counted",
        }
    }
}

/// Told of every probe's result (metrics, say); called on the checker's task,
/// so it must be quick.
pub trait ProbeListener: Send + Sync {
    /// `service` was probed and found `result`.
    fn on_probe(&self, service: &ServiceName, result: ProbeResult);
}

impl<F> ProbeListener for F
where
    F: Fn(&ServiceName, ProbeResult) + Send + Sync,
{
    fn on_probe(&self, service: &ServiceName, result: ProbeResult) {
        self(service, result);
    }
}

/// The URL given to [`HttpProbe::new`] cannot take a path (such as `mailto:`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a health probe needs an http(s) base URL that can take a path")]
pub struct NotABaseUrl;

/// `GET {base}/health`; any 2xx is healthy, anything else is classified like a
/// call's response (status, `Retry-After`, transport failure).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl HttpProbe {
    /// A probe of `{base}/health` using `client` (share one client between
    /// probes). `base` may end in a path (`http://host/v1` probes
    /// `http://host/v1/health`), with or without a trailing slash.
    pub fn new(client: reqwest::Client, base: &reqwest::Url) -> Result<Self, NotABaseUrl> {
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| NotABaseUrl)?
            .pop_if_empty()
            .push("health");
        url.set_query(None);
        url.set_fragment(None);
        Ok(Self { client, url })
    }

    /// A probe of exactly `url`, for services whose health endpoint is not
    /// `{base}/health`.
    pub fn at(client: reqwest::Client, url: reqwest::Url) -> Self {
        Self { client, url }
    }

    /// The URL probed.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    async fn get(&self) -> Result<(), ServiceError> {
        let response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(transport_error)?;
        match classify_response(&response) {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }
}

impl Probe for HttpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.get())
    }
}
