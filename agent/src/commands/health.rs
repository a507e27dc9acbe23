//! Breaker states across processes: the gRPC server next to a campaign, the
//! remote health watcher, and the `health-server`, `status` and `healthcheck`
//! subcommands.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_agent::app::health_checker;
use callguard_agent::config::AgentConfig;
use callguard_agent::serve::GrpcServer;
use callguard_breaker::BreakerRegistry;
use callguard_health::{HealthCheckConfig, OnRecovery, RemoteUrl};
use callguard_proto::callguard::v1::breakers_client::BreakersClient;
use callguard_proto::callguard::v1::{Breaker, ListBreakersRequest, breaker::State};
use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use callguard_telemetry::Verbosity;

use super::shutdown_signal;
use super::status_json::breakers_json;
use super::table::aligned;

/// `callguard health-server`: probes every configured service and serves
/// their health over gRPC until Ctrl-C or SIGTERM.
pub(crate) async fn health_server(
    config_file: &Path,
    verbosity: Verbosity,
) -> Result<ExitCode, String> {
    let config =
        AgentConfig::load("", Some(config_file), std::env::vars()).map_err(|e| e.to_string())?;
    let _telemetry = callguard_telemetry::init(&config.logging, config.sheets.as_ref(), verbosity)
        .map_err(|e| e.to_string())?;
    // No calls go through this process's breakers, so a HALF_OPEN one would
    // never be confirmed: here a healthy probe closes, whatever the file says
    // for the agents that share it.
    if config.health_check.on_recovery != OnRecovery::Close {
        tracing::warn!("health-server ignores health_check.on_recovery: a healthy probe closes");
    }
    let checks = HealthCheckConfig {
        on_recovery: OnRecovery::Close,
        ..config.health_check.clone()
    };
    if config.health_check.remote.is_some() {
        tracing::warn!("health-server ignores health_check.remote: its own probes decide");
    }
    let registry = Arc::new(BreakerRegistry::new(config.circuit_breaker.clone()));
    let probed: Vec<_> = config
        .services
        .keys()
        .map(|name| {
            registry.register(name.clone(), config.breaker_config(name));
            name.clone()
        })
        .collect();
    let checker =
        health_checker(&config, &checks, &registry, &probed).map_err(|e| e.to_string())?;
    let server = GrpcServer::start(&config.grpc, registry).await?;
    tracing::info!(
        "Health server: probing {} every {} and serving their health on {}",
        probed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        config.health_check.interval,
        server.local_addr()
    );
    checker.run(shutdown_signal()).await;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `--addr` as a [`RemoteUrl`]; `HOST:PORT` alone means `http://HOST:PORT`.
fn remote_url(addr: &str) -> Result<RemoteUrl, String> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    RemoteUrl::new(url).map_err(|_| format!("--addr must be http://HOST:PORT, got {addr:?}"))
}

/// `callguard status`: a table of the breakers of the server at `addr`.
pub(crate) async fn status(addr: &str, timeout: Duration, json: bool) -> Result<ExitCode, String> {
    let url = remote_url(addr)?;
    let mut client = BreakersClient::new(url.channel());
    let breakers = tokio::time::timeout(timeout, client.list_breakers(ListBreakersRequest {}))
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|status| format!("cannot list breakers at {url}: {}", status.message()))?
        .into_inner()
        .breakers;
    if json {
        println!("{}", breakers_json(&breakers));
    } else {
        print!("{}", breakers_table(&breakers, SystemTime::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Formats breakers as an aligned table, one line each.
fn breakers_table(breakers: &[Breaker], now: SystemTime) -> String {
    const HEADER: [&str; 7] = [
        "SERVICE",
        "STATE",
        "FAILURES",
        "FAILURE RATE",
        "RETRY AFTER",
        "LAST TRANSITION",
        "REASON",
    ];
    let rows: Vec<[String; 7]> = breakers
        .iter()
        .map(|b| {
            let state = State::try_from(b.state).unwrap_or(State::Unspecified);
            let retry_after = b
                .retry_after
                .and_then(|d| Duration::try_from(d).ok())
                .map(|d| humantime::format_duration(round_to_millis(d)).to_string());
            let last = b
                .last_transition_time
                .and_then(|t| SystemTime::try_from(t).ok())
                .map(|t| {
                    let ago = now.duration_since(t).unwrap_or_default();
                    format!(
                        "{} ({} ago)",
                        humantime::format_rfc3339_seconds(t),
                        humantime::format_duration(Duration::from_secs(ago.as_secs()))
                    )
                });
            [
                b.name.clone(),
                state.as_str_name().to_owned(),
                b.consecutive_failures.to_string(),
                b.failure_rate
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                retry_after.unwrap_or_else(|| "-".to_owned()),
                last.unwrap_or_else(|| "-".to_owned()),
                if b.last_transition_reason.is_empty() {
                    "-".to_owned()
                } else {
                    b.last_transition_reason.clone()
                },
            ]
        })
        .collect();
    let mut table = aligned(HEADER, &rows);
    if rows.is_empty() {
        table.push_str("(no breakers)\n");
    }
    table
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `callguard healthcheck`: exits 0 only if `service` (`""`: the process) is
/// SERVING at `addr`; otherwise 1 with a one-line reason on stderr.
pub(crate) async fn healthcheck(addr: &str, service: &str, timeout: Duration) -> ExitCode {
    match check(addr, service, timeout).await {
        Ok(()) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("{reason}");
            ExitCode::FAILURE
        }
    }
}

async fn check(addr: &str, service: &str, timeout: Duration) -> Result<(), String> {
    let url = remote_url(addr)?;
    let subject = if service.is_empty() {
        "the process".to_owned()
    } else {
        format!("service {service:?}")
    };
    let mut client = HealthClient::new(url.channel());
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    let answer = tokio::time::timeout(timeout, client.check(request))
        .await
        .map_err(|_| {
            format!(
                "unreachable: {url} did not answer within {}",
                humantime::format_duration(timeout)
            )
        })?;
    match answer {
        Ok(response) => match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            status => Err(format!("{}: {subject} at {url}", status.as_str_name())),
        },
        Err(status) if status.code() == tonic::Code::NotFound => {
            Err(format!("unknown service {service:?} at {url}"))
        }
        Err(status) if status.code() == tonic::Code::Unavailable => {
            Err(format!("unreachable: {url} ({})", status.message()))
        }
        Err(status) => Err(format!(
            "{url} answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_takes_a_url_or_host_and_port() {
        assert_eq!(
            remote_url("127.0.0.1:50051").unwrap().as_str(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            remote_url("http://localhost:7000").unwrap().as_str(),
            "http://localhost:7000"
        );
        let err = remote_url("https://localhost:7000").unwrap_err();
        assert!(
            err.contains("--addr") && err.contains("https://localhost:7000"),
            "{err}"
        );
    }

    #[test]
    fn breakers_table_shows_every_column() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let breakers = [
            Breaker {
                name: "elevenlabs".into(),
                state: State::Open.into(),
                consecutive_failures: 2,
                failure_rate: Some(0.25),
                last_transition_time: Some((now - Duration::from_secs(3)).into()),
                last_transition_reason: "2 consecutive failures".into(),
                retry_after: Some(Duration::from_micros(6_999_600).try_into().unwrap()),
                generation: 1,
            },
            Breaker {
                name: "llm".into(),
                state: State::Closed.into(),
                ..Breaker::default()
            },
        ];
        let table = breakers_table(&breakers, now);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        for column in [
            "SERVICE",
            "STATE",
            "FAILURES",
            "FAILURE RATE",
            "RETRY AFTER",
            "LAST TRANSITION",
            "REASON",
        ] {
            assert!(lines[0].contains(column), "{table}");
        }
        let open: Vec<_> = lines[1]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            open,
            [
                "elevenlabs",
                "OPEN",
                "2",
                "25.0%",
                "6s 999ms",
                "2023-11-14T22:13:17Z (3s ago)",
                "2 consecutive failures"
            ],
            "{table}"
        );
        let closed: Vec<_> = lines[2].split_whitespace().collect();
        assert_eq!(
            closed,
            ["llm", "CLOSED", "0", "-", "-", "-", "-"],
            "{table}"
        );
        // Columns line up.
        assert_eq!(lines[0].find("STATE"), lines[1].find("OPEN"));
        assert_eq!(lines[0].find("STATE"), lines[2].find("CLOSED"));
    }
}
