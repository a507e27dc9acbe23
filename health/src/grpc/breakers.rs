//! `callguard.v1.Breakers`: read, watch and (with the admin token) control the
//! circuit breakers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use callguard_breaker::CircuitBreaker;
use callguard_core::{ManualAction, ServiceName, Transition};
use callguard_proto::callguard::v1::breaker_event::Event;
use callguard_proto::callguard::v1::breakers_server::Breakers;
use callguard_proto::callguard::v1::{
    Breaker, BreakerEvent, ForceCloseRequest, ForceOpenRequest, GetBreakerRequest,
    ListBreakersRequest, ListBreakersResponse, ResetRequest, WatchBreakersRequest,
};
use futures_util::Stream;
use tokio::sync::{broadcast, watch};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::Shared;
use super::convert::{transition_message, unknown_service};
use crate::config::AdminToken;

/// Longest accepted `reason` of an admin command, in bytes.
const MAX_REASON_LEN: usize = 512;

pub(crate) struct BreakersService {
    shared: Shared,
    admin_token: Option<AdminToken>,
}

impl BreakersService {
    pub(crate) fn new(shared: Shared, admin_token: Option<AdminToken>) -> Self {
        Self {
            shared,
            admin_token,
        }
    }

    fn find(&self, name: &str) -> Result<Arc<CircuitBreaker>, Status> {
        self.shared
            .registry
            .get(name)
            .ok_or_else(|| unknown_service(name))
    }

    /// Admin RPCs need `authorization: Bearer <admin token>`. The token is
    /// compared in constant time and never logged or echoed.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.admin_token else {
            return Err(Status::permission_denied(
                "admin RPCs are disabled: no admin token is configured",
            ));
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| bearer_token(value.as_bytes()))
            .ok_or_else(|| {
                Status::unauthenticated("admin RPCs need `authorization: Bearer <token>` metadata")
            })?;
        if token.matches(presented) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid admin token"))
        }
    }

    fn manual<T>(
        &self,
        request: Request<T>,
        action: ManualAction,
        fields: impl FnOnce(T) -> (String, String),
    ) -> Result<Response<Breaker>, Status> {
        self.authorize(request.metadata())?;
        let peer = request.remote_addr();
        let (name, reason) = fields(request.into_inner());
        if reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
            return Err(Status::invalid_argument(format!(
                "reason must be at most {MAX_REASON_LEN} bytes without control characters"
            )));
        }
        let breaker = self.find(&name)?;
        tracing::info!(
            service = %breaker.service(),
            %action,
            reason,
            peer = ?peer,
            "admin command over gRPC"
        );
        match action {
            ManualAction::ForceOpen => breaker.force_open(&reason),
            ManualAction::ForceClose => breaker.force_close(&reason),
            ManualAction::Reset => breaker.reset(&reason),
        }
        Ok(Response::new(self.shared.breaker(&breaker)))
    }
}

/// The token of an `authorization` value `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, token) = value.split_at_checked(SCHEME.len())?;
    scheme.eq_ignore_ascii_case(SCHEME).then_some(token)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<BreakerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Breakers for BreakersService {
    async fn list_breakers(
        &self,
        _request: Request<ListBreakersRequest>,
    ) -> Result<Response<ListBreakersResponse>, Status> {
        let breakers = self
            .shared
            .registry
            .all()
            .iter()
            .map(|b| self.shared.breaker(b))
            .collect();
        Ok(Response::new(ListBreakersResponse { breakers }))
    }

    async fn get_breaker(
        &self,
        request: Request<GetBreakerRequest>,
    ) -> Result<Response<Breaker>, Status> {
        let breaker = self.find(&request.get_ref().name)?;
        Ok(Response::new(self.shared.breaker(&breaker)))
    }

    type WatchBreakersStream = EventStream;

    async fn watch_breakers(
        &self,
        request: Request<WatchBreakersRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let names = request
            .into_inner()
            .names
            .iter()
            .map(|name| ServiceName::new(name).map_err(|e| Status::invalid_argument(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        // Subscribe before the snapshot, so no transition falls between them; a
        // transition may then show in both, and its generation tells.
        let transitions = self.shared.registry.transitions();
        let mut watch = BreakersWatch {
            shared: self.shared.clone(),
            names,
            pending: VecDeque::new(),
            transitions,
            closing: self.shared.closing.clone(),
        };
        watch.queue_snapshots();
        let stream = futures_util::stream::unfold(watch, BreakersWatch::next);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn force_open(
        &self,
        request: Request<ForceOpenRequest>,
    ) -> Result<Response<Breaker>, Status> {
        self.manual(request, ManualAction::ForceOpen, |r| (r.name, r.reason))
    }

    async fn force_close(
        &self,
        request: Request<ForceCloseRequest>,
    ) -> Result<Response<Breaker>, Status> {
        self.manual(request, ManualAction::ForceClose, |r| (r.name, r.reason))
    }

    async fn reset(&self, request: Request<ResetRequest>) -> Result<Response<Breaker>, Status> {
        self.manual(request, ManualAction::Reset, |r| (r.name, r.reason))
    }
}

/// One `WatchBreakers` call: snapshots first, then transitions; fresh snapshots
/// again if it fell behind the transition stream.
struct BreakersWatch {
    shared: Shared,
    /// The breakers watched; empty means all.
    names: Vec<ServiceName>,
    pending: VecDeque<BreakerEvent>,
    transitions: broadcast::Receiver<Transition>,
    closing: watch::Receiver<bool>,
}

impl BreakersWatch {
    fn selected(&self, service: &ServiceName) -> bool {
        self.names.is_empty() || self.names.contains(service)
    }

    fn queue_snapshots(&mut self) {
        for breaker in self.shared.registry.all() {
            if self.selected(breaker.service()) {
                self.pending.push_back(BreakerEvent {
                    event: Some(Event::Snapshot(self.shared.breaker(&breaker))),
                });
            }
        }
    }

    async fn next(mut self) -> Option<(Result<BreakerEvent, Status>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            let received = tokio::select! {
                biased;
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.transitions.recv() => received,
            };
            match received {
                Ok(transition) => {
                    if self.selected(&transition.service) {
                        self.pending.push_back(BreakerEvent {
                            event: Some(Event::Transition(transition_message(&transition))),
                        });
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "breaker watcher fell behind; sending fresh snapshots"
                    );
                    self.queue_snapshots();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }
}
