//! Breaker states across processes: the gRPC server next to a campaign, the
//! remote health watcher, and the `health-server`, `status` and `healthcheck`
//! subcommands.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use callguard_agent::app::health_checker;
use callguard_agent::config::AgentConfig;
use callguard_agent::serve::{GrpcServer, serve_metrics};
use callguard_breaker::BreakerRegistry;
use callguard_health::{
    ClientTls, HealthCheckConfig, OnRecovery, RemoteServer, RemoteUrl, TlsKeys, status_reason,
};
use callguard_proto::callguard::v1::breakers_client::BreakersClient;
use callguard_proto::callguard::v1::{Breaker, Limiter, ListBreakersRequest, breaker::State};
use callguard_proto::grpc::health::v1::HealthCheckRequest;
use callguard_proto::grpc::health::v1::health_check_response::ServingStatus;
use callguard_proto::grpc::health::v1::health_client::HealthClient;
use callguard_telemetry::{Metrics, Verbosity};

use super::shutdown_signal;
use super::status_json::breakers_json;
use super::table::aligned;

/// `callguard health-server`: probes every configured service and serves
/// their health over gRPC, and `/metrics` (breaker states and transitions,
/// probe results) as `[metrics]` asks, until Ctrl-C or SIGTERM.
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
    let metrics = Arc::new(Metrics::new());
    metrics.count_transitions(&registry);
    let checker = health_checker(&config, &checks, &registry, &metrics, &probed)
        .map_err(|e| e.to_string())?;
    let metrics_server = serve_metrics(&config.metrics, metrics, registry.clone(), None).await?;
    // It makes no calls: no limiter to show.
    let server = GrpcServer::start(&config.grpc, registry, Vec::new()).await?;
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
    if let Some(metrics_server) = metrics_server {
        metrics_server.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags errors about the server's address and TLS name.
const FLAGS: TlsKeys = TlsKeys {
    url: "--addr",
    ca: "--tls-ca",
    server_name: "--tls-server-name",
};

/// The server at `--addr` (`HOST:PORT` alone means `http://HOST:PORT`),
/// checked with `--tls-ca` and `--tls-server-name` when it is `https://`.
pub(crate) fn remote_server(addr: &str, tls: &ClientTls) -> Result<RemoteServer, String> {
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let url = RemoteUrl::new(url)
        .map_err(|_| format!("--addr must be {}, got {addr:?}", RemoteUrl::RULE))?;
    RemoteServer::with_tls(url, tls, FLAGS).map_err(|e| e.to_string())
}

/// `callguard status`: a table of the breakers of the server at `addr`, each
/// with its service's limiter.
pub(crate) async fn status(
    addr: &str,
    tls: &ClientTls,
    timeout: Duration,
    json: bool,
) -> Result<ExitCode, String> {
    let server = remote_server(addr, tls)?;
    let url = server.url();
    let mut client = BreakersClient::new(server.channel());
    let breakers = tokio::time::timeout(timeout, client.list_breakers(ListBreakersRequest {}))
        .await
        .map_err(|_| {
            format!(
                "{url} did not answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|status| format!("cannot list breakers at {url}: {}", status_reason(&status)))?
        .into_inner()
        .breakers;
    if json {
        println!("{}", breakers_json(&breakers));
    } else {
        print!("{}", breakers_table(&breakers, SystemTime::now()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Formats breakers (and their limiters) as an aligned table, one line each.
fn breakers_table(breakers: &[Breaker], now: SystemTime) -> String {
    const HEADER: [&str; 10] = [
        "SERVICE",
        "STATE",
        "FAILURES",
        "FAILURE RATE",
        "RETRY AFTER",
        "LIMIT",
        "IN FLIGHT",
        "WAITING",
        "LAST TRANSITION",
        "REASON",
    ];
    let rows: Vec<[String; 10]> = breakers
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
            let [limit, in_flight, waiting] = limiter_cells(b.limiter.as_ref());
            [
                b.name.clone(),
                state.as_str_name().to_owned(),
                b.consecutive_failures.to_string(),
                b.failure_rate
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                retry_after.unwrap_or_else(|| "-".to_owned()),
                limit,
                in_flight,
                waiting,
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

/// The LIMIT, IN FLIGHT and WAITING cells of a service's limiter; `-` for a
/// server that runs none. LIMIT is `none` without a limit, and says when the
/// provider announced another limit than ours (`4 (provider 5)`) and while
/// the provider's rate pauses admission (`5, paused 1s 200ms`).
fn limiter_cells(limiter: Option<&Limiter>) -> [String; 3] {
    let Some(limiter) = limiter else {
        return ["-", "-", "-"].map(str::to_owned);
    };
    let mut limit = limiter
        .limit
        .map_or_else(|| "none".to_owned(), |limit| limit.to_string());
    if let Some(provider) = limiter.provider_limit.filter(|&p| Some(p) != limiter.limit) {
        let _ = write!(limit, " (provider {provider})");
    }
    if let Some(paused) = limiter.paused_for.and_then(|d| Duration::try_from(d).ok()) {
        let _ = write!(
            limit,
            ", paused {}",
            humantime::format_duration(round_to_millis(paused))
        );
    }
    [
        limit,
        limiter.in_flight.to_string(),
        limiter.waiting.to_string(),
    ]
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `callguard healthcheck`: exits 0 only if `service` (`""`: the process) is
/// SERVING at `addr`; otherwise 1 with a one-line reason on stderr.
pub(crate) async fn healthcheck(
    addr: &str,
    tls: &ClientTls,
    service: &str,
    timeout: Duration,
) -> ExitCode {
    match check(addr, tls, service, timeout).await {
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

async fn check(
    addr: &str,
    tls: &ClientTls,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let server = remote_server(addr, tls)?;
    let url = server.url();
    let subject = if service.is_empty() {
        "the process".to_owned()
    } else {
        format!("service {service:?}")
    };
    let mut client = HealthClient::new(server.channel());
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
            Err(format!("unreachable: {url} ({})", status_reason(&status)))
        }
        Err(status) => Err(format!(
            "{url} answered {:?}: {}",
            status.code(),
            status_reason(&status)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(addr: &str, tls: &ClientTls) -> Result<String, String> {
        remote_server(addr, tls).map(|s| s.url().to_string())
    }

    #[test]
    fn addr_takes_a_url_or_host_and_port() {
        let plain = ClientTls::default();
        assert_eq!(
            url("127.0.0.1:50051", &plain).unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            url("http://localhost:7000", &plain).unwrap(),
            "http://localhost:7000"
        );
        let err = url("ftp://localhost:7000", &plain).unwrap_err();
        assert_eq!(
            err,
            "--addr must be an http://HOST:PORT or https://HOST:PORT URL, got \"ftp://localhost:7000\""
        );
    }

    #[test]
    fn tls_flags_need_an_https_addr_and_name_what_is_wrong() {
        let ca = ClientTls {
            ca: Some("ca.pem".into()),
            server_name: None,
        };
        assert_eq!(
            url("127.0.0.1:50051", &ca).unwrap_err(),
            "--tls-ca must be unset unless --addr is an https:// URL \
             (got http://127.0.0.1:50051), got ca.pem"
        );
        let missing = ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            server_name: None,
        };
        let err = url("https://localhost:7000", &missing).unwrap_err();
        assert!(
            err.starts_with("--tls-ca must be a readable PEM file (")
                && err.ends_with("got /nonexistent/ca.pem"),
            "{err}"
        );
        let name = ClientTls {
            ca: None,
            server_name: Some("two words".into()),
        };
        assert_eq!(
            url("https://localhost:7000", &name).unwrap_err(),
            "--tls-server-name must be a DNS name or an IP address, got two words"
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
                limiter: Some(Limiter {
                    mode: "off".into(),
                    limit: Some(4),
                    provider_limit: Some(5),
                    in_flight: 4,
                    waiting: 27,
                    paused_for: None,
                }),
            },
            Breaker {
                name: "llm".into(),
                state: State::Closed.into(),
                limiter: Some(Limiter {
                    mode: "off".into(),
                    limit: None,
                    paused_for: Some(Duration::from_millis(1_200).try_into().unwrap()),
                    ..Limiter::default()
                }),
                ..Breaker::default()
            },
            Breaker {
                name: "crm".into(),
                state: State::Closed.into(),
                ..Breaker::default()
            },
        ];
        let table = breakers_table(&breakers, now);
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        for column in [
            "SERVICE",
            "STATE",
            "FAILURES",
            "FAILURE RATE",
            "RETRY AFTER",
            "LIMIT",
            "IN FLIGHT",
            "WAITING",
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
                "4 (provider 5)",
                "4",
                "27",
                "2023-11-14T22:13:17Z (3s ago)",
                "2 consecutive failures"
            ],
            "{table}"
        );
        let paused: Vec<_> = lines[2]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            paused,
            [
                "llm",
                "CLOSED",
                "0",
                "-",
                "-",
                "none, paused 1s 200ms",
                "0",
                "0",
                "-",
                "-"
            ],
            "{table}"
        );
        let without_limiter: Vec<_> = lines[3].split_whitespace().collect();
        assert_eq!(
            without_limiter,
            ["crm", "CLOSED", "0", "-", "-", "-", "-", "-", "-", "-"],
            "{table}"
        );
        // Columns line up.
        assert_eq!(lines[0].find("STATE"), lines[1].find("OPEN"));
        assert_eq!(lines[0].find("STATE"), lines[2].find("CLOSED"));
        assert_eq!(lines[0].find("WAITING"), lines[1].find("27"));
    }
}
