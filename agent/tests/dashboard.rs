//! The Grafana dashboards' queries against a real Prometheus: `callguard
//! simulate` serves `/metrics`, this machine's Prometheus (Debian's
//! `prometheus` package; `scripts/test.sh` installs it) scrapes it four times
//! a second, and every `expr` of `deploy/grafana/dashboards/*.json` must
//! return data once the run is over and scraped.
//!
//! Grafana's own interval variables (`$__rate_interval`, …) are given the
//! fixed window Grafana would choose for a short range; any other `$` in a
//! query is a dashboard variable this test does not know, and fails it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use callguard_testkit::{free_addr, temp_dir};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep};

/// How long the run and the scrapes may take; reached only on failure.
const PATIENCE: Duration = Duration::from_secs(90);
/// Pause between two looks at a polled state.
const POLL: Duration = Duration::from_millis(100);
/// The window Grafana's interval variables stand for here: many scrapes.
const WINDOW: &str = "1m";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate is in the workspace")
}

/// The `expr` of every query of every dashboard, with the dashboard's name.
fn dashboard_queries() -> Vec<(String, String)> {
    fn collect(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    found.push(expr.clone());
                }
                map.values().for_each(|v| collect(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
            _ => {}
        }
    }
    let dir = repo().join("deploy/grafana/dashboards");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let dashboard: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut found = Vec::new();
        collect(&dashboard, &mut found);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!found.is_empty(), "{name} has no queries");
        queries.extend(found.into_iter().map(|expr| (name.clone(), expr)));
    }
    assert!(!queries.is_empty(), "no dashboards in {}", dir.display());
    queries
}

/// `expr` as Prometheus takes it: Grafana's interval variables replaced.
fn as_prometheus_query(expr: &str) -> String {
    let query = ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(expr.to_owned(), |query, var| query.replace(var, WINDOW));
    assert!(
        !query.contains('$'),
        "the dashboard query {expr:?} uses a variable this test does not fill in"
    );
    query
}

/// This machine's `prometheus`, or a failure saying how to get one.
fn prometheus_bin() -> PathBuf {
    let bin = PathBuf::from("prometheus");
    match std::process::Command::new(&bin).arg("--version").output() {
        Ok(output) if output.status.success() => bin,
        other => panic!(
            "cannot run prometheus ({other:?}); the dashboard test needs it on PATH: run the \
             tests with scripts/test.sh, which installs Debian's prometheus package, or \
             `apt-get install prometheus`"
        ),
    }
}

/// Prometheus scraping `target` every 250 ms as the compose stack's job
/// `callguard-agent`, its files and logs in `dir`.
fn start_prometheus(dir: &Path, target: std::net::SocketAddr) -> (Child, String) {
    let bin = prometheus_bin();
    let web = free_addr();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n\
             scrape_configs:\n  - job_name: callguard-agent\n    static_configs:\n      \
             - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    (child, format!("http://{web}"))
}

/// `callguard simulate` (the outage story, time scaled down) in `dir`,
/// serving `/metrics` on `listen` until killed.
fn start_simulate(dir: &Path, listen: std::net::SocketAddr) -> Child {
    let config = dir.join("callguard.toml");
    std::fs::write(
        &config,
        format!("[metrics]\nlisten = \"{listen}\"\nlinger = \"10m\"\n"),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("simulate.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_callguard"));
    command
        .args(["simulate", "--scenario", "outage", "--count", "20"])
        .args(["--time-scale", "0.05", "--summary-json", "summary.json"])
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("CALLGUARD_") {
            command.env_remove(key);
        }
    }
    command.spawn().expect("callguard simulate starts")
}

/// The samples of an instant query, or the error Prometheus answered.
async fn query(
    client: &reqwest::Client,
    prometheus: &str,
    query: &str,
) -> Result<Vec<Value>, String> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", query)])
            .map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match body["data"]["result"].as_array() {
        Some(result) if body["status"] == "success" => Ok(result.clone()),
        _ => Err(body.to_string()),
    }
}

/// The value of the first sample of an instant query, if it has one.
async fn first_value(client: reqwest::Client, prometheus: String, expr: &str) -> Option<f64> {
    let result = query(&client, &prometheus, expr).await.ok()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits for `done` (polled), failing with the logs in `dir` at the deadline.
async fn wait_for<F, Fut>(what: &str, dir: &Path, deadline: Instant, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !done().await {
        if Instant::now() > deadline {
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            panic!(
                "{what}: not within {PATIENCE:?}\n--- simulate.log\n{}\n--- prometheus.log\n{}",
                log("simulate.log"),
                log("prometheus.log")
            );
        }
        sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_a_scraped_simulate_run() {
    let queries: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .map(|(dashboard, expr)| (dashboard, as_prometheus_query(&expr)))
        .collect();
    let dir = temp_dir(env!("CARGO_CRATE_NAME"), "dashboard");
    let metrics = free_addr();
    let (mut prometheus, api) = start_prometheus(&dir, metrics);
    let mut simulate = start_simulate(&dir, metrics);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;

    // The run is over when its summary is written; /metrics lingers.
    let summary_file = dir.join("summary.json");
    let mut summary = Value::Null;
    wait_for("simulate writes its summary", &dir, deadline, || {
        let written = std::fs::read_to_string(&summary_file)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok());
        if let Some(written) = written {
            summary = written;
        }
        let written = !summary.is_null();
        let exited = simulate.try_wait().unwrap();
        assert!(written || exited.is_none(), "simulate exited: {exited:?}");
        async move { written }
    })
    .await;
    // Prometheus has scraped the end of the run when it counts the
    // summary's completed contacts, and a rate needs one scrape more.
    let completed = summary["completed"].as_f64().expect("summary.completed");
    assert!(completed > 0.0, "{summary}");
    let value = |expr: &'static str| first_value(client.clone(), api.clone(), expr);
    wait_for("Prometheus scrapes the run's end", &dir, deadline, || {
        let scraped = value("callguard_contacts{state=\"completed\"}");
        async move { scraped.await == Some(completed) }
    })
    .await;
    let scrapes = "count_over_time(callguard_build_info[1h])";
    let end_scraped = value(scrapes).await.unwrap_or(0.0);
    wait_for("Prometheus scrapes once more", &dir, deadline, || {
        let now = value(scrapes);
        async move { now.await.unwrap_or(0.0) > end_scraped }
    })
    .await;

    let mut empty = Vec::new();
    for (dashboard, expr) in &queries {
        match query(&client, &api, expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("{dashboard}: {expr}: no data")),
            Err(error) => empty.push(format!("{dashboard}: {expr}: {error}")),
        }
    }
    simulate.kill().await.unwrap();
    prometheus.kill().await.unwrap();
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned nothing:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
