//! `grpc.health.v1.Health`: `Check`, `Watch` and `List`, one service per
//! breaker plus `""` for the process itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use callguard_breaker::BreakerRegistry;
use callguard_core::CircuitState;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_server::Health;
use callguard_proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::Shared;
use super::convert::{serving, serving_status, unknown_service};

/// How often a `Watch` of an unknown service looks whether it has appeared
/// (the registry announces transitions, not registrations).
const UNKNOWN_SERVICE_POLL: Duration = Duration::from_secs(1);

pub(crate) struct HealthService {
    shared: Shared,
}

impl HealthService {
    pub(crate) fn new(shared: Shared) -> Self {
        Self { shared }
    }

    fn status_of(&self, service: &str) -> Option<ServingStatus> {
        if service.is_empty() {
            Some(serving(self.shared.process.is_serving()))
        } else {
            let breaker = self.shared.registry.get(service)?;
            Some(serving_status(breaker.state()))
        }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        let status = self
            .status_of(service)
            .ok_or_else(|| unknown_service(service))?;
        Ok(Response::new(response(status)))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let mut statuses: std::collections::HashMap<_, _> = self
            .shared
            .registry
            .all()
            .iter()
            .map(|b| (b.service().to_string(), response(serving_status(b.state()))))
            .collect();
        statuses.insert(
            String::new(),
            response(serving(self.shared.process.is_serving())),
        );
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let service = request.into_inner().service;
        let subject = if service.is_empty() {
            Subject::Process(self.shared.process.subscribe())
        } else {
            Subject::Pending(service)
        };
        let watch = HealthWatch {
            registry: Arc::clone(&self.shared.registry),
            subject,
            last_sent: None,
            closing: self.shared.closing.clone(),
        };
        let stream = futures_util::stream::unfold(watch, HealthWatch::next);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// What one `Watch` call follows.
enum Subject {
    /// The process itself (`""`).
    Process(watch::Receiver<bool>),
    /// A breaker's state.
    Breaker(watch::Receiver<CircuitState>),
    /// A service without a breaker (yet).
    Pending(String),
}

/// One `Watch` call: sends the status at once, then each change, until the
/// client goes away or the server shuts down.
struct HealthWatch {
    registry: Arc<BreakerRegistry>,
    subject: Subject,
    last_sent: Option<ServingStatus>,
    closing: watch::Receiver<bool>,
}

impl HealthWatch {
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Self)> {
        loop {
            let status = self.current();
            if self.last_sent != Some(status) {
                self.last_sent = Some(status);
                return Some((Ok(response(status)), self));
            }
            if !self.changed().await {
                return None;
            }
        }
    }

    fn current(&mut self) -> ServingStatus {
        if let Subject::Pending(name) = &self.subject {
            if let Some(breaker) = self.registry.get(name) {
                self.subject = Subject::Breaker(breaker.subscribe());
            }
        }
        match &mut self.subject {
            Subject::Process(rx) => serving(*rx.borrow_and_update()),
            Subject::Breaker(rx) => serving_status(*rx.borrow_and_update()),
            Subject::Pending(_) => ServingStatus::ServiceUnknown,
        }
    }

    /// Waits until the subject may have changed; `false` ends the stream.
    async fn changed(&mut self) -> bool {
        let change = async {
            match &mut self.subject {
                Subject::Process(rx) => rx.changed().await.is_ok(),
                Subject::Breaker(rx) => rx.changed().await.is_ok(),
                Subject::Pending(_) => {
                    tokio::time::sleep(UNKNOWN_SERVICE_POLL).await;
                    true
                }
            }
        };
        tokio::select! {
            // A change that came with the shutdown (the process going
            // NOT_SERVING) is still sent before the stream ends.
            biased;
            changed = change => changed,
            _ = self.closing.wait_for(|closing| *closing) => false,
        }
    }
}
