//! The `callguard` command line: `simulate`, `run`, `mocks`, and the gRPC
//! health tools `health-server`, `status` and `healthcheck`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[cfg(feature = "mocks")]
use callguard_agent::simulate::Scenario;
use callguard_telemetry::Verbosity;
use clap::{Parser, Subcommand};

/// An AI call agent that keeps working while the services it depends on fail.
#[derive(Parser)]
#[command(name = "callguard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The console shows a line per call event too (deferrals, rejected first
    /// attempts), not only what a person should notice.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// The console shows only warnings, errors and the summary: no progress.
    #[arg(short, long, global = true)]
    quiet: bool,
}

impl Cli {
    fn verbosity(&self) -> Verbosity {
        match (self.verbose, self.quiet) {
            (true, _) => Verbosity::Verbose,
            (_, true) => Verbosity::Quiet,
            _ => Verbosity::Normal,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a campaign against in-process mocks with a scenario of injected faults.
    #[cfg(feature = "mocks")]
    Simulate {
        /// The story to tell.
        #[arg(long, value_enum, default_value = "outage")]
        scenario: Scenario,
        /// How many made-up contacts to call.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// The former spelling of `--count`, refused with a message: in
        /// `run`, `--contacts` names a contacts file.
        #[arg(long, hide = true)]
        contacts: Option<String>,
        /// Seed of the mocks' random choices (flaky faults).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Multiplies every duration: 0.1 runs the same story ten times faster.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// A config file layered over the simulation's own settings: its
        /// `[alerts.CHANNEL]` and `[sheets]` sections, and `[services.NAME]`
        /// sections naming an endpoint, replace the simulation's (the mocks')
        /// whole.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run (or resume) the campaign in the call store against the services a
    /// config file names.
    Run {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Contacts to add to the store: CSV with a header (id,name,phone,…)
        /// or JSON Lines. Ids the store holds already are left as they are.
        #[arg(long)]
        contacts: Option<PathBuf>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Print the call store's contacts by state, and the failed and expired ones.
    Report {
        /// The config file whose `[queue]` names the store (default: `sqlite:callguard.db`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the counts as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Put the failed or expired contacts of the call store back in the queue.
    Requeue {
        /// Which contacts.
        #[arg(long, value_enum)]
        state: commands::store::RequeueState,
        /// The config file whose `[queue]` names the store.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve the mock services (ElevenLabs, LLM, CRM) with their fault-injection API.
    #[cfg(feature = "mocks")]
    Mocks {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Seed of the mocks' random choices.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Faults to inject at start-up: a JSON list of fault objects in the
        /// control API's format, timed from start-up (`after`, `for`).
        #[arg(long)]
        faults: Option<PathBuf>,
        /// A TCP fault proxy to run beside the mocks (repeatable), driven under
        /// `/_control/proxies/NAME`: cut, refuse, blackhole, latency, heal.
        #[arg(long = "proxy", value_name = "NAME=LISTEN=UPSTREAM")]
        proxies: Vec<callguard_mocks::ProxySpec>,
    },
    /// Probe the configured services and serve their health over gRPC, for any
    /// number of agents (`health_check.remote`), until Ctrl-C or SIGTERM.
    HealthServer {
        /// The config file (TOML): `[services.NAME] base_url`, `[health_check]`, `[grpc]`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the breakers of a running callguard (`callguard.v1.Breakers/ListBreakers`).
    Status {
        /// The callguard gRPC server: http://HOST:PORT, or https://HOST:PORT
        /// checked against the system's root certificates or `--tls-ca`.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the breakers as one JSON object (`{"breakers":[…]}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 only if the process (or `--service`) is SERVING; 1 with a
    /// one-line reason otherwise. For container health checks.
    Healthcheck {
        /// The callguard gRPC server: http://HOST:PORT, or https://HOST:PORT
        /// checked against the system's root certificates or `--tls-ca`.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        tls: TlsArgs,
        /// A service to check instead of the process as a whole.
        #[arg(long, default_value = "")]
        service: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// How an `https://` server's certificate is checked.
#[derive(clap::Args)]
struct TlsArgs {
    /// PEM file of the CA that signed the server's certificate, trusted
    /// instead of the system's root certificates.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// address's host.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    fn client_tls(self) -> callguard_health::ClientTls {
        callguard_health::ClientTls {
            ca: self.tls_ca,
            server_name: self.tls_server_name,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = cli.verbosity();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "mocks")]
            Command::Simulate {
                scenario,
                count,
                contacts,
                seed,
                time_scale,
                summary_json,
                config,
            } => {
                if let Some(value) = contacts {
                    return Err(format!(
                        "simulate takes --count {value} for how many contacts to call \
                         (--contacts names a contacts file, in `callguard run`)"
                    ));
                }
                commands::simulate::simulate(
                    scenario,
                    count,
                    seed,
                    time_scale,
                    summary_json.as_deref(),
                    config.as_deref(),
                    verbosity,
                )
                .await
            }
            Command::Run {
                config,
                contacts,
                summary_json,
            } => {
                commands::run::run(
                    &config,
                    contacts.as_deref(),
                    summary_json.as_deref(),
                    verbosity,
                )
                .await
            }
            Command::Report { config, json } => {
                commands::store::report(config.as_deref(), json).await
            }
            Command::Requeue { state, config } => {
                commands::store::requeue(config.as_deref(), state).await
            }
            #[cfg(feature = "mocks")]
            Command::Mocks {
                listen,
                seed,
                faults,
                proxies,
            } => commands::mocks::mocks(listen, seed, faults.as_deref(), proxies).await,
            Command::HealthServer { config } => {
                commands::health::health_server(&config, verbosity).await
            }
            Command::Status {
                addr,
                tls,
                timeout,
                json,
            } => commands::health::status(&addr, &tls.client_tls(), timeout, json).await,
            Command::Healthcheck {
                addr,
                tls,
                service,
                timeout,
            } => Ok(
                commands::health::healthcheck(&addr, &tls.client_tls(), &service, timeout).await,
            ),
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
