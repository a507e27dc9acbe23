//! `callguard mocks`: the fake services on their own, optionally with a
//! schedule of faults injected at start-up (`--faults FILE`) and TCP fault
//! proxies to real servers (`--proxy NAME=LISTEN=UPSTREAM`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use callguard_mocks::{Fault, FaultProxy, MockConfig, MockServer, ProxySpec};

use super::shutdown_signal;

pub(crate) async fn mocks(
    listen: SocketAddr,
    seed: u64,
    faults_file: Option<&Path>,
    proxies: Vec<ProxySpec>,
) -> Result<ExitCode, String> {
    let _telemetry = callguard_telemetry::init_mocks("info").map_err(|e| e.to_string())?;
    // Read before binding: a bad schedule stops start-up before anyone connects.
    let faults = match faults_file {
        Some(path) => read_faults(path)?,
        None => Vec::new(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let config = MockConfig {
        seed,
        ..MockConfig::default()
    };
    let server = MockServer::start_on(listener, config).map_err(|e| e.to_string())?;
    if let Some(path) = faults_file {
        let schedule: Vec<String> = faults
            .iter()
            .map(|f| serde_json::to_string(f).unwrap_or_default())
            .collect();
        server
            .inject_all(faults)
            .map_err(|e| format!("invalid fault schedule in {}: {e}", path.display()))?;
        for fault in schedule {
            tracing::info!("Fault scheduled: {fault}");
        }
    }
    let mut running = Vec::with_capacity(proxies.len());
    for spec in proxies {
        let listener = tokio::net::TcpListener::bind(spec.listen)
            .await
            .map_err(|e| format!("proxy {}: cannot listen on {}: {e}", spec.name, spec.listen))?;
        let proxy = FaultProxy::start_on(listener, spec.upstream.as_str())
            .map_err(|e| format!("proxy {}: {e}", spec.name))?;
        server
            .attach_proxy(&spec.name, &proxy)
            .map_err(|e| format!("proxy {}: {e}", spec.name))?;
        eprintln!(
            "fault proxy {} on {} to {} (control API: /_control/proxies/{})",
            spec.name, spec.listen, spec.upstream, spec.name
        );
        running.push(proxy);
    }
    eprintln!("callguard mocks listening on http://{listen} (control API: /_control/faults)");
    shutdown_signal().await;
    for proxy in running {
        proxy.shutdown().await;
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Reads a JSON list of faults in the control API's format (`[{"service":
/// "elevenlabs","mode":"unavailable","after":"20s","for":"30s"}, …]`); errors
/// name the file, the entry and the field.
fn read_faults(path: &Path) -> Result<Vec<Fault>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the fault schedule {}: {e}", path.display()))?;
    parse_faults(&text).map_err(|e| format!("fault schedule {}: {e}", path.display()))
}

/// The faults of a schedule, each checked as the control API checks it.
fn parse_faults(text: &str) -> Result<Vec<Fault>, String> {
    let faults = deserialize_faults(text)?;
    for (i, fault) in faults.iter().enumerate() {
        fault.validate().map_err(|e| format!("[{i}]: {e}"))?;
    }
    Ok(faults)
}

fn deserialize_faults(text: &str) -> Result<Vec<Fault>, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Vec<Fault>>(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => e.into_inner().to_string(),
            _ => format!("{path}: {}", e.into_inner()),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use callguard_mocks::{FaultMode, Service};

    use super::*;

    #[test]
    fn a_schedule_is_a_list_of_control_api_faults() {
        let faults = parse_faults(
            r#"[{"service":"llm","mode":"slow","latency":"1s"},
                {"service":"elevenlabs","mode":"unavailable","after":"20s","for":"30s"}]"#,
        )
        .unwrap();
        assert_eq!(
            faults,
            [
                Fault::new(Service::Llm, FaultMode::Slow).with_latency(Duration::from_secs(1)),
                Fault::new(Service::Elevenlabs, FaultMode::Unavailable)
                    .starting_after(Duration::from_secs(20))
                    .lasting(Duration::from_secs(30)),
            ]
        );
        assert_eq!(parse_faults("[]").unwrap(), []);
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        let err = parse_faults(r#"[{"service":"crm","mode":"ok"},{"service":"crm"}]"#).unwrap_err();
        assert!(err.starts_with("[1]: missing field `mode`"), "{err}");
        let err = parse_faults(r#"[{"service":"crm","mode":"ok","for":"soon"}]"#).unwrap_err();
        assert!(err.starts_with("[0].for: invalid duration"), "{err}");
        let err = parse_faults(r#"{"service":"crm","mode":"ok"}"#).unwrap_err();
        assert!(err.contains("expected a sequence"), "{err}");
        let err = parse_faults(r#"[{"service":"llm","mode":"slow"}]"#).unwrap_err();
        assert!(err.starts_with("[0]: ") && err.contains("latency"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read_faults(Path::new("/nonexistent/faults.json")).unwrap_err();
        assert!(
            err.starts_with("cannot read the fault schedule /nonexistent/faults.json"),
            "{err}"
        );
    }
}
