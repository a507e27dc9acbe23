//! OTLP trace receivers standing in for a collector, over gRPC or HTTP
//! (`POST /v1/traces`, protobuf): each keeps every span it is sent, in
//! plaintext or over TLS with a certificate the test made.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use prost::Message as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use parking_lot::Mutex;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::tls::ServerCert;

/// The spans an OTLP receiver got. Clones share them.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ResourceSpans>>>);

impl Received {
    /// Keeps the spans of one export request.
    pub fn add(&self, request: ExportTraceServiceRequest) {
        self.0.lock().extend(request.resource_spans);
    }

    /// What every export request carried, in order.
    pub fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.0.lock().clone()
    }

    /// Every span, with its resource's `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        let mut all = Vec::new();
        for resource_spans in self.0.lock().iter() {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    all.push((service.clone(), span.clone()));
                }
            }
        }
        all
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC trace receiver serving on `listener` until the runtime ends:
/// plaintext, or TLS with `tls`'s certificate and key.
pub fn otlp_grpc_receiver(listener: TcpListener, tls: Option<&ServerCert>) -> Received {
    let received = Received::default();
    let mut server = Server::builder();
    if let Some(cert) = tls {
        server = server
            .tls_config(
                ServerTlsConfig::new().identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem)),
            )
            .expect("the receiver's TLS settings");
    }
    tokio::spawn(
        server
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    received
}

/// [`otlp_grpc_receiver`] on a fresh 127.0.0.1 port, and that address.
pub async fn start_otlp_grpc_receiver(tls: Option<&ServerCert>) -> (SocketAddr, Received) {
    let (listener, addr) = loopback().await;
    (addr, otlp_grpc_receiver(listener, tls))
}

/// A listener on a fresh 127.0.0.1 port, and its address.
async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("the receiver's address");
    (listener, addr)
}

/// An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf bodies, HTTP/1.1)
/// serving on `listener` until the runtime ends: plaintext, or TLS with
/// `tls`'s certificate and key.
pub fn otlp_http_receiver(listener: TcpListener, tls: Option<&ServerCert>) -> Received {
    let received = Received::default();
    let state = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let state = state.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                state.add(request);
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    match tls {
        None => tokio::spawn(async move { axum::serve(listener, app).await }),
        Some(cert) => {
            let listener = TlsListener {
                tcp: listener,
                acceptor: tls_acceptor(cert),
            };
            tokio::spawn(async move { axum::serve(listener, app).await })
        }
    };
    received
}

/// [`otlp_http_receiver`] on a fresh 127.0.0.1 port, and that address.
pub async fn start_otlp_http_receiver(tls: Option<&ServerCert>) -> (SocketAddr, Received) {
    let (listener, addr) = loopback().await;
    (addr, otlp_http_receiver(listener, tls))
}

/// Connections that complete a TLS handshake; those that do not (a client
/// that does not trust the certificate) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// TLS 1.2/1.3 with `cert` (aws-lc-rs), offering HTTP/1.1.
fn tls_acceptor(cert: &ServerCert) -> TlsAcceptor {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the certificate, PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("the key, PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the receiver's certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// An attribute's value as text (strings, integers, booleans, doubles).
pub fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .and_then(|v| match v {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            any_value::Value::BoolValue(b) => Some(b.to_string()),
            any_value::Value::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        })
}
