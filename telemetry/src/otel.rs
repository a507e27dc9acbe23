//! OpenTelemetry spans: ids for every span, exported over OTLP when the
//! standard `OTEL_*` variables ask for it, with the exports that fail counted.
//!
//! Spans always get OpenTelemetry ids, exported or not: the JSON lines carry
//! those of their innermost span, and the [`traceparent`] sent to a service
//! is that of the attempt span, so logs, traces and the services' own records
//! correlate whether or not a collector is configured. Without
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! nothing is exported and nothing is said about it.
//!
//! An `https://` collector is checked against the system's root certificates
//! (rustls-native-certs: `SSL_CERT_FILE`, `SSL_CERT_DIR`, the distribution's
//! bundle), or, when `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` names a PEM file, against its
//! certificates alone, as the reference SDKs do with a private CA, over either
//! protocol: tonic's TLS takes the CA over gRPC; over `http/protobuf` the
//! exporter is handed a reqwest client (rustls, aws-lc-rs) trusting that CA
//! alone, with the export timeout the exporter's own client would have had.
//! An unreadable file stops start-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use callguard_core::telemetry::TRACEPARENT_HEADER;
use opentelemetry::Key;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{
    OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, SpanExporter, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::error::TelemetryError;

/// The service name spans are exported under when neither `OTEL_SERVICE_NAME`
/// nor `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names one: the agent's.
pub const AGENT_SERVICE_NAME: &str = "callguard";
/// The same for the `callguard mocks` process.
pub const MOCKS_SERVICE_NAME: &str = "callguard-mocks";

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP over gRPC (the default; port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies, `POST /v1/traces` (port 4318).
    HttpProtobuf,
}

/// Reads the standard variables: `Ok(None)` when no OTLP endpoint is set (or
/// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`), else the
/// protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, gRPC when neither is set. The exporter
/// itself reads the endpoint, headers, timeout and the resource variables.
pub fn otlp_protocol(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpProtocol>, TelemetryError> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let endpoint =
        set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if endpoint.is_none() || disabled || no_exporter {
        return Ok(None);
    }
    let (variable, value) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
        None => match set("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_PROTOCOL", value),
            None => return Ok(Some(OtlpProtocol::Grpc)),
        },
    };
    match value.trim() {
        "grpc" => Ok(Some(OtlpProtocol::Grpc)),
        "http/protobuf" => Ok(Some(OtlpProtocol::HttpProtobuf)),
        _ => Err(TelemetryError::Protocol { variable, value }),
    }
}

/// The CA variables, the signal's own first.
const CERTIFICATE_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];

/// The certificate variable that is set (the signal's own first), and its value.
fn certificate_var(var: &impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    CERTIFICATE_VARS.into_iter().find_map(|name| {
        var(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name, v.trim().to_owned()))
    })
}

/// The CA a certificate variable names: the only roots an `https://`
/// collector's certificate is checked against.
struct PrivateCa {
    pem: Vec<u8>,
    certificates: Vec<CertificateDer<'static>>,
}

/// The CA of the certificate variable that is set, if any; a file that
/// cannot be read or holds no certificate is an error naming the variable.
fn private_ca(var: &impl Fn(&str) -> Option<String>) -> Result<Option<PrivateCa>, TelemetryError> {
    let Some((variable, path)) = certificate_var(var) else {
        return Ok(None);
    };
    let unusable = |reason: String| TelemetryError::Certificate {
        variable,
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read(&path).map_err(|e| unusable(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no certificate in it".into()));
    }
    Ok(Some(PrivateCa { pem, certificates }))
}

/// How the gRPC exporter checks an `https://` collector: against the CA a
/// certificate variable names, or the system's roots. (Plaintext endpoints
/// ignore it.)
fn grpc_tls(var: &impl Fn(&str) -> Option<String>) -> Result<ClientTlsConfig, TelemetryError> {
    Ok(match private_ca(var)? {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}

/// The timeout of one export: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s — as the
/// exporter reads them for the client it builds itself.
fn export_timeout(var: &impl Fn(&str) -> Option<String>) -> Duration {
    [
        OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
        OTEL_EXPORTER_OTLP_TIMEOUT,
    ]
    .into_iter()
    .find_map(|name| var(name)?.trim().parse().ok())
    .map_or(OTEL_EXPORTER_OTLP_TIMEOUT_DEFAULT, Duration::from_millis)
}

/// The client the `http/protobuf` exporter sends with when a certificate
/// variable names a CA: one trusting that CA alone, with the export
/// timeout. `None` leaves the exporter its own client, which checks an
/// `https://` collector against the system's roots.
fn http_client(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Option<reqwest::Client>, TelemetryError> {
    let Some(ca) = private_ca(var)? else {
        return Ok(None);
    };
    let exporter = |e: reqwest::Error| TelemetryError::Exporter(e.to_string());
    let roots = ca
        .certificates
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(exporter)?;
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .timeout(export_timeout(var))
        .build()
        .map(Some)
        .map_err(exporter)
}

/// The resource spans are exported with: the `OTEL_SERVICE_NAME` /
/// `OTEL_RESOURCE_ATTRIBUTES` ones, with `default_service` as `service.name`
/// when they name none.
fn resource(default_service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(default_service.to_owned())
            .build()
    }
}

/// Counts the span batches the OTLP exporter could not send (each failed
/// export is one batch; its spans are lost). Clones share the count.
#[derive(Debug, Clone, Default)]
pub struct ExportFailures(Arc<AtomicU64>);

impl ExportFailures {
    /// Failed exports so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A span exporter counting the exports of `inner` that fail.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    failures: ExportFailures,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for CountingExporter<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.failures.0.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The tracer provider: ids for every span, and a batch exporter on the
/// tokio runtime, counting its failures in `failures`, when `protocol` is
/// set; `var` reads the certificate variables. Must be called within the
/// runtime.
pub(crate) fn tracer_provider(
    protocol: Option<OtlpProtocol>,
    var: impl Fn(&str) -> Option<String>,
    default_service: &str,
    failures: &ExportFailures,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(default_service));
    if let Some(protocol) = protocol {
        let exporter = match protocol {
            OtlpProtocol::Grpc => SpanExporter::builder()
                .with_tonic()
                .with_tls_config(grpc_tls(&var)?)
                .build(),
            OtlpProtocol::HttpProtobuf => {
                let exporter = SpanExporter::builder().with_http();
                match http_client(&var)? {
                    Some(client) => exporter.with_http_client(client).build(),
                    None => exporter.build(),
                }
            }
        }
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let exporter = CountingExporter {
            inner: exporter,
            failures: failures.clone(),
        };
        builder = builder.with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
        );
    }
    Ok(builder.build())
}

/// The W3C `traceparent` of `span`, to send with a request made in it; `None`
/// when the span has no OpenTelemetry context (no subscriber, or one without
/// the OpenTelemetry layer).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None; // no subscriber records it: no context to send
    }
    let cx = span.context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&cx, &mut carrier);
    });
    carrier.remove(TRACEPARENT_HEADER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_file::JsonFileLayer;
    use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_carry_the_spans_otel_ids_and_traceparent_matches() {
        let dir = std::env::temp_dir().join(format!("callguard-otel-log-{}", std::process::id()));
        let path = dir.join("test.jsonl");
        let _ = std::fs::remove_file(&path);
        let provider = tracer_provider(
            None,
            |_: &str| None,
            AGENT_SERVICE_NAME,
            &ExportFailures::default(),
        )
        .unwrap();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let subscriber = tracing_subscriber::registry()
            .with(JsonFileLayer::open(&path, &crate::RotationConfig::default()).unwrap())
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (call_ids, attempt_ids, header) = tracing::subscriber::with_default(subscriber, || {
            let call = tracing::info_span!("call", contact_id = "c-1");
            let attempt = call.in_scope(|| tracing::info_span!("attempt", retry_count = 0u32));
            attempt.in_scope(|| tracing::info!("inside the attempt"));
            call.in_scope(|| tracing::info!("inside the call"));
            tracing::info!("outside");
            let ids = |span: &tracing::Span| {
                let cx = span.context();
                let s = cx.span();
                let c = s.span_context();
                (c.trace_id().to_string(), c.span_id().to_string())
            };
            (ids(&call), ids(&attempt), traceparent(&attempt))
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(call_ids.0, attempt_ids.0, "one trace per call");
        assert_ne!(call_ids.1, attempt_ids.1);
        assert_eq!(lines[0]["trace_id"], attempt_ids.0.as_str());
        assert_eq!(lines[0]["span_id"], attempt_ids.1.as_str());
        assert_eq!(lines[0]["contact_id"], "c-1");
        assert_eq!(lines[1]["span_id"], call_ids.1.as_str());
        assert_eq!(lines[2]["trace_id"], Value::Null);
        assert_eq!(lines[2]["span_id"], Value::Null);
        assert_eq!(
            header.as_deref(),
            Some(format!("00-{}-{}-01", attempt_ids.0, attempt_ids.1).as_str())
        );
        assert_eq!(call_ids.0.len(), 32);
        assert_ne!(call_ids.0, "0".repeat(32));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// An exporter whose exports fail every other time.
    #[derive(Debug, Default)]
    struct Flaky(AtomicU64);

    impl opentelemetry_sdk::trace::SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            if self.0.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "collector unreachable".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn failed_exports_are_counted() {
        use opentelemetry_sdk::trace::SpanExporter as _;
        let failures = ExportFailures::default();
        let exporter = CountingExporter {
            inner: Flaky::default(),
            failures: failures.clone(),
        };
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(exporter.export(Vec::new()).await.is_ok());
        }
        assert_eq!(results, [true, false, true, false, true]);
        assert_eq!(failures.get(), 2);
    }

    #[test]
    fn no_traceparent_without_the_otel_layer() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("attempt");
            assert_eq!(traceparent(&span), None);
        });
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn an_unusable_certificate_file_is_named_with_its_variable() {
        let missing = "/nonexistent/collector-ca.pem";
        let err = grpc_tls(&env(&[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/elsewhere.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", missing),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=\"{missing}\" must be a readable PEM file \
                 with at least one CERTIFICATE ("
            )),
            "{err}"
        );
        let err = http_client(&env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", missing)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "OTEL_EXPORTER_OTLP_CERTIFICATE=\"{missing}\" must be a readable PEM file"
            )),
            "{err}"
        );
    }

    #[test]
    fn http_protobuf_gets_a_client_of_its_own_only_for_a_private_ca() {
        let dir = std::env::temp_dir().join(format!("callguard-otel-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = callguard_testkit::tls::TestCa::new("collector CA").write_cert(&dir);
        let ca = ca.to_str().unwrap();
        assert!(http_client(&env(&[])).unwrap().is_none());
        assert!(
            http_client(&env(&[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", ca)]))
                .unwrap()
                .is_some()
        );
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "no certificate here").unwrap();
        let err = http_client(&env(&[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            not_pem.to_str().unwrap(),
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.ends_with("(no certificate in it)"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_export_timeout_is_the_signals_then_the_generals_then_ten_seconds() {
        let traces = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500");
        let general = ("OTEL_EXPORTER_OTLP_TIMEOUT", "4000");
        assert_eq!(
            export_timeout(&env(&[general, traces])),
            Duration::from_millis(2500)
        );
        assert_eq!(export_timeout(&env(&[general])), Duration::from_secs(4));
        assert_eq!(
            export_timeout(&env(&[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "soon")])),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn exporting_needs_an_endpoint_and_defaults_to_grpc() {
        assert_eq!(otlp_protocol(env(&[])).unwrap(), None);
        // Without an endpoint even a bad protocol is not looked at.
        assert_eq!(
            otlp_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")])).unwrap(),
            None
        );
        assert_eq!(
            otlp_protocol(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(
            otlp_protocol(env(&[endpoint])).unwrap(),
            Some(OtlpProtocol::Grpc)
        );
        assert_eq!(
            otlp_protocol(env(&[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://127.0.0.1:4318/v1/traces"
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap(),
            Some(OtlpProtocol::HttpProtobuf)
        );
        assert_eq!(
            otlp_protocol(env(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ]))
            .unwrap(),
            Some(OtlpProtocol::Grpc)
        );
        assert_eq!(
            otlp_protocol(env(&[endpoint, ("OTEL_SDK_DISABLED", "true")])).unwrap(),
            None
        );
        assert_eq!(
            otlp_protocol(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).unwrap(),
            None
        );
        let error = otlp_protocol(env(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && error.contains("http/json"),
            "{error}"
        );
    }
}
