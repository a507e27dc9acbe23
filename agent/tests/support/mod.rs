//! Helpers shared by the agent's integration tests: temporary directories,
//! the `callguard` binary and other commands, grpcurl, and an OTLP receiver
//! standing in for a trace collector.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// A fresh, empty directory for one test, named after the test binary.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), name)
}

/// The `callguard` binary, run in `dir`, without the test's own `RUST_LOG` or
/// `CALLGUARD_*` variables (its config comes from the test alone), serving
/// `/metrics` on a free port so that agents of tests running at once do not
/// collide on the default one.
pub(crate) fn callguard(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callguard"));
    command.current_dir(dir).env_remove("RUST_LOG");
    for (var, _) in std::env::vars() {
        if var.starts_with("CALLGUARD_") && !var.starts_with("CALLGUARD_TEST_") {
            command.env_remove(var);
        }
    }
    command.env("CALLGUARD_METRICS__LISTEN", "127.0.0.1:0");
    command
}

/// Runs `command` to its end off the async runtime.
pub(crate) async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the command runs")
}

/// A child process killed when the test ends, pass or fail.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exit status of `child` once it exits on its own, or `None` if it is
/// still running after `limit`.
pub(crate) async fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a command printed, stdout then stderr.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The spans an OTLP receiver got.
#[derive(Clone, Default)]
pub(crate) struct Received(Arc<Mutex<Vec<ResourceSpans>>>);

impl Received {
    /// Keeps the spans of one export request.
    pub(crate) fn add(&self, request: ExportTraceServiceRequest) {
        self.0.lock().extend(request.resource_spans);
    }

    /// What every export request carried, in order.
    pub(crate) fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.0.lock().clone()
    }

    /// Every span, with its resource's `service.name`.
    pub(crate) fn spans(&self) -> Vec<(String, Span)> {
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

/// An OTLP/gRPC trace receiver serving on `listener`.
pub(crate) fn otlp_grpc_receiver(listener: tokio::net::TcpListener) -> Received {
    let received = Received::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    received
}

/// An attribute's value as text (strings, integers, booleans, doubles).
pub(crate) fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
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
