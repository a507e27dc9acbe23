//! The durable call store end to end, with real `callguard run` processes
//! against the mocks: an agent killed with SIGKILL mid-campaign and started
//! again finishes the campaign (SQLite), keeping the CRM record a killed
//! pass wrote; several agents share one PostgreSQL queue and finish a killed
//! agent's contacts once its leases expire, and get through a 5 s network cut
//! to the database (through a fault proxy); a chaos run of 2000 contacts,
//! while the alert sinks flap, keeps every contact in exactly one state,
//! moves breakers only along legal edges, and ends every alert delivered or
//! counted failed — one agent on SQLite, and two agents sharing a PostgreSQL
//! queue. The same run as a soak of 20 000 contacts is left to `--ignored`.
//!
//! The PostgreSQL tests need `CALLGUARD_TEST_POSTGRES_URL` (`scripts/test.sh`
//! starts a private cluster and sets it) and fail without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use callguard_agent::contacts::Contact;
use callguard_clients::{CallOutcome, CallRecord, CrmClient, HttpServiceConfig, RequestContext};
use callguard_mocks::{
    EndpointKind, Fault, FaultMode, FaultProxy, MockConfig, MockServer, OUTCOME_TIMEOUT, Service,
    SinkFailure, SmtpFlap, SmtpSink, TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID,
};
use callguard_store::{CallStore, StoreLocation, StoreSettings};
use serde_json::Value;

mod support;
use support::{Running, exit_within, temp_dir};

const SERVICES: [(&str, Service); 3] = [
    ("llm", Service::Llm),
    ("elevenlabs", Service::Elevenlabs),
    ("crm", Service::Crm),
];

/// An agent config for the mocks: fast retries and breakers, `queue` on top,
/// and `extra` (whole sections) after it.
fn write_config(dir: &Path, mocks: &MockServer, queue: &str, request_timeout: &str, extra: &str) {
    let mut config = format!(
        "[retry]\ninitial_delay = \"20ms\"\nmax_delay = \"200ms\"\n\
         [circuit_breaker]\nrecovery_timeout = \"300ms\"\n\
         [health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         [logging]\nconsole_level = \"error\"\n\
         [queue]\n{queue}\n"
    );
    let keys = &mocks.config().keys;
    for (name, service) in SERVICES {
        config.push_str(&format!(
            "[services.{name}]\nbase_url = \"{}\"\napi_key = \"{}\"\nrequest_timeout = \"{request_timeout}\"\n",
            mocks.base_url(service),
            keys.get(service),
        ));
    }
    config.push_str(extra);
    std::fs::write(dir.join("agent.toml"), config).unwrap();
}

fn write_contacts(dir: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (1..=n).map(|i| format!("c-{i:04}")).collect();
    let mut csv = String::from("id,name,phone\n");
    for (i, id) in ids.iter().enumerate() {
        csv.push_str(&format!("{id},Ada Lovelace {i},+1-555-{:04}\n", i % 10_000));
    }
    std::fs::write(dir.join("contacts.csv"), csv).unwrap();
    ids
}

/// `callguard ARGS` in `dir`, serving gRPC on any free port (several agents
/// run at once).
fn agent(dir: &Path, args: &[&str]) -> Command {
    let mut command = support::callguard(dir);
    command
        .args(args)
        .env("CALLGUARD_GRPC__LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    command
}

fn spawn_run(dir: &Path, name: &str) -> Child {
    agent(
        dir,
        &[
            "run",
            "--config",
            "agent.toml",
            "--contacts",
            "contacts.csv",
            "--summary-json",
            &format!("summary-{name}.json"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
    .spawn()
    .unwrap()
}

/// Waits for `child` to exit on its own, at most `limit`.
async fn wait_exit(child: &mut Child, limit: Duration, dir: &Path, name: &str) {
    let Some(status) = exit_within(child, limit).await else {
        panic!("{name} still running after {limit:?}");
    };
    let err = std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default();
    assert!(status.success(), "{name} exited with {status}: {err}");
}

/// Waits until the CRM holds at least `n` records.
async fn wait_records(mocks: &MockServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mocks.crm_records().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The summary the run named `name` wrote (`--summary-json`).
fn summary(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(format!("summary-{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `callguard report --json`.
fn report(dir: &Path) -> BTreeMap<String, u64> {
    let output = agent(dir, &["report", "--config", "agent.toml", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Every contact in exactly one terminal state, and as many CRM records as
/// completed contacts, one per contact; returns the counts.
fn assert_every_contact_ended_once(
    dir: &Path,
    mocks: &MockServer,
    ids: &[String],
) -> BTreeMap<String, u64> {
    let counts = report(dir);
    let total: u64 = counts.values().sum();
    assert_eq!(
        total,
        ids.len() as u64,
        "no contact lost or added: {counts:?}"
    );
    for unfinished in ["pending", "in_flight", "deferred"] {
        assert_eq!(counts[unfinished], 0, "{counts:?}");
    }
    let records: Vec<String> = mocks
        .crm_records()
        .iter()
        .map(|r| r.contact_id().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = records.iter().collect();
    assert_eq!(distinct.len(), records.len(), "a CRM record was duplicated");
    assert_eq!(
        records.len() as u64,
        counts["completed"],
        "one record per completed contact: {counts:?}"
    );
    let known: BTreeSet<&String> = ids.iter().collect();
    assert!(distinct.is_subset(&known));
    counts
}

async fn slow_mocks() -> MockServer {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    mocks
        .inject_all(
            SERVICES
                .map(|(_, service)| {
                    Fault::new(service, FaultMode::Slow).with_latency(Duration::from_millis(40))
                })
                .to_vec(),
        )
        .unwrap();
    mocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_started_again_finishes_the_campaign() {
    let mocks = slow_mocks().await;
    let dir = temp_dir("crash");
    write_config(
        &dir,
        &mocks,
        "url = \"sqlite:calls.db\"\nworkers = 4\nlease = \"1s\"",
        "5s",
        "",
    );
    let ids = write_contacts(&dir, 60);

    let mut first = spawn_run(&dir, "first");
    wait_records(&mocks, 12).await;
    first.kill().unwrap(); // SIGKILL: no shutdown, leases left behind
    first.wait().unwrap();
    let after_kill = report(&dir);
    // A record the CRM took just before the kill may belong to a contact not
    // yet marked completed: it is still held in flight, to be resent.
    assert!(
        after_kill["completed"] + after_kill["in_flight"] >= 12,
        "{after_kill:?}"
    );
    assert!(
        after_kill["completed"] < 60,
        "killed mid-run: {after_kill:?}"
    );

    // Started again with the same contacts file: the import adds nothing and
    // the campaign resumes where the store says it is.
    let mut second = spawn_run(&dir, "second");
    wait_exit(&mut second, Duration::from_secs(60), &dir, "second").await;
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], 60, "{counts:?}");
    assert_eq!(mocks.crm_records().len(), 60);
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_record_an_earlier_pass_wrote_ends_completed_with_that_record() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = temp_dir("earlier-record");
    write_config(&dir, &mocks, "url = \"sqlite:calls.db\"", "5s", "");
    let ids = write_contacts(&dir, 5);
    // What a pass killed between its CRM write and saving the contact's state
    // leaves behind: the CRM holds a record under the contact's key, with a
    // script and times the next pass will not reproduce.
    let crm = CrmClient::new(&HttpServiceConfig::new(
        mocks.base_url(Service::Crm),
        mocks.config().keys.get(Service::Crm),
    ))
    .unwrap();
    let contact = Contact {
        id: ids[2].clone(),
        name: "Ada Lovelace 2".into(),
        phone: "+1-555-0002".into(),
        extra: BTreeMap::new(),
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let earlier = CallRecord::new(&contact, CallOutcome::Completed, at, at)
        .with_script("The script of the pass that crashed.");
    crm.record_call(RequestContext::new(&contact.id), &earlier)
        .await
        .result
        .unwrap();

    let mut run = spawn_run(&dir, "run");
    wait_exit(&mut run, Duration::from_secs(60), &dir, "run").await;
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], 5, "{counts:?}");
    let records = mocks.crm_records();
    assert_eq!(records.len(), 5);
    let kept = records.iter().find(|r| r.contact_id() == ids[2]).unwrap();
    assert_eq!(
        kept.fields["script_excerpt"],
        "The script of the pass that crashed."
    );
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_sharing_a_postgres_queue_take_over_a_killed_agents_contacts() {
    let url = callguard_testkit::postgres_url();
    let mocks = slow_mocks().await;
    let dir = temp_dir("shared");
    let table = format!("agents_{}", std::process::id());
    write_config(
        &dir,
        &mocks,
        &format!(
            "url = \"{url}\"\ntable = \"{table}\"\nworkers = 3\nlease = \"1s\"\npoll_interval = \"100ms\""
        ),
        "5s",
        "",
    );
    let ids = write_contacts(&dir, 90);

    let mut agents: Vec<Child> = ["a", "b", "c"]
        .iter()
        .map(|name| spawn_run(&dir, name))
        .collect();
    wait_records(&mocks, 15).await;
    agents[0].kill().unwrap();
    agents[0].wait().unwrap();
    for (agent, name) in agents.iter_mut().zip(["a", "b", "c"]).skip(1) {
        wait_exit(agent, Duration::from_secs(60), &dir, name).await;
    }
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], 90, "{counts:?}");
    assert_eq!(mocks.crm_records().len(), 90, "one record per contact");
    let summaries: Vec<Value> = ["b", "c"].iter().map(|name| summary(&dir, name)).collect();
    for summary in &summaries {
        assert_eq!(summary["duplicated"], 0, "{summary}");
    }
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// `HOST:PORT` of a `postgres://[USER@]HOST:PORT/DB` URL.
fn postgres_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Two agents reach their PostgreSQL queue through a fault proxy; a third of
/// the way into 600 contacts every connection is reset and none is taken for
/// 5 s. Both agents finish, every contact ends once, and the CRM holds one
/// record per contact. How long the agents took to resume once the link was
/// back is printed (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_get_through_a_five_second_cut_to_their_postgres_queue() {
    const CONTACTS: usize = 600;
    const CUT: Duration = Duration::from_secs(5);
    let url = callguard_testkit::postgres_url();
    let database = postgres_authority(&url);
    let proxy = FaultProxy::start(database).await.unwrap();
    let proxied = url.replacen(database, &proxy.addr().to_string(), 1);
    let mocks = slow_mocks().await;
    let dir = temp_dir("postgres-cut");
    let table = format!("cut_{}", std::process::id());
    write_config(
        &dir,
        &mocks,
        &format!(
            "url = \"{proxied}\"\ntable = \"{table}\"\nworkers = 4\npoll_interval = \"100ms\""
        ),
        "5s",
        "",
    );
    let ids = write_contacts(&dir, CONTACTS);
    let names = ["a", "b"];
    // Killed if the test fails before they finish.
    let mut agents: Vec<Running> = names
        .iter()
        .map(|name| Running(spawn_run(&dir, name)))
        .collect();

    wait_records(&mocks, CONTACTS / 3).await;
    proxy.cut_for(CUT);
    let cut = tokio::time::Instant::now();
    tokio::time::sleep_until(cut + CUT).await;
    assert!(
        proxy.state().cut > 0,
        "the agents were connected through the proxy"
    );
    // Without the store, a worker finishes at most the contact it holds.
    let at_heal = mocks.crm_records().len();
    wait_records(&mocks, (at_heal + 16).min(CONTACTS)).await;
    let resumed = cut.elapsed() - CUT;

    for (agent, name) in agents.iter_mut().zip(names) {
        wait_exit(&mut agent.0, Duration::from_secs(120), &dir, name).await;
    }
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], CONTACTS as u64, "{counts:?}");
    assert_eq!(
        mocks.crm_records().len(),
        CONTACTS,
        "one record per contact"
    );
    for name in names {
        let summary = summary(&dir, name);
        assert_eq!(
            (summary["lost"].as_u64(), summary["duplicated"].as_u64()),
            (Some(0), Some(0)),
            "{summary}"
        );
    }
    eprintln!(
        "postgres cut: {CONTACTS} contacts, 2 agents; {} connections cut; work resumed \
         {:.2} s after the link came back",
        proxy.state().cut,
        resumed.as_secs_f64()
    );
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// How long after `since` the query `sql` (a count) on `client` first
/// exceeds `before`; `None` if not within 30 s.
async fn first_rise(
    client: &tokio_postgres::Client,
    sql: &str,
    before: i64,
    since: tokio::time::Instant,
) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(30) {
        if let Ok(row) = client.query_one(sql, &[]).await
            && row.get::<_, i64>(0) > before
        {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_finish_a_campaign_through_a_postgres_restart() {
    // A cluster of the test's own: restarting the shared one would cut
    // every other test's connections. The mocks' health probes time out on
    // a loaded machine and defer contacts; no contact may expire of that.
    let cluster = callguard_testkit::PostgresCluster::start("restart", "", None, |_| {});
    let url = cluster.url("");
    let mocks = slow_mocks().await;
    let dir = temp_dir("pg-restart");
    let table = "restart_campaign";
    write_config(
        &dir,
        &mocks,
        &format!(
            "url = \"{url}\"\ntable = \"{table}\"\nworkers = 8\nlease = \"30s\"\npoll_interval = \"1s\"\n\
             max_deferrals = 1000"
        ),
        "5s",
        "",
    );
    let ids = write_contacts(&dir, 600);
    let mut agents: Vec<Child> = ["a", "b"]
        .iter()
        .map(|name| spawn_run(&dir, name))
        .collect();
    wait_records(&mocks, 150).await;

    // pg_ctl returns once the server accepts connections again.
    cluster.restart();
    let back = tokio::time::Instant::now();
    let back_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (watcher, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let completed = format!("SELECT count(*) FROM {table} WHERE state = 'completed'");
    // A lease sets `updated_at` to the database's now.
    let leased_since_back = format!(
        "SELECT count(*) FROM {table} WHERE state = 'in_flight' AND updated_at >= {back_ms}"
    );
    let completed_then: i64 = watcher.query_one(&completed, &[]).await.unwrap().get(0);
    assert!(
        completed_then < 600,
        "restarted mid-campaign: {completed_then}"
    );
    let (saves, leases) = tokio::join!(
        first_rise(&watcher, &completed, completed_then, back),
        first_rise(&watcher, &leased_since_back, 0, back),
    );
    let (saves, leases) = (saves.expect("saves resume"), leases.expect("leases resume"));
    eprintln!(
        "PostgreSQL back: completions saved again after {saves:?}, contacts leased again after {leases:?}"
    );
    for waited in [saves, leases] {
        assert!(waited < Duration::from_secs(3), "resumed after {waited:?}");
    }

    for (agent, name) in agents.iter_mut().zip(["a", "b"]) {
        wait_exit(agent, Duration::from_secs(90), &dir, name).await;
    }
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], 600, "{counts:?}");
    for name in ["a", "b"] {
        let summary = summary(&dir, name);
        assert_eq!(
            (&summary["lost"], &summary["duplicated"]),
            (&0.into(), &0.into()),
            "{summary}"
        );
    }
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Polls `check` (the text of `/metrics`, or `Health/Check` of `""`) until
/// it holds, at most 20 s; the last answer if it never does.
async fn until(what: &str, mut check: impl AsyncFnMut() -> (bool, String)) {
    let polling = callguard_testkit::Polling {
        patience: Duration::from_secs(20),
        every: Duration::from_millis(100),
    };
    polling
        .until(what, async || match check().await {
            (true, _) => Ok(()),
            (false, answer) => Err(answer),
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_out_of_reach_past_its_grace_turns_the_process_not_serving() {
    let cluster = callguard_testkit::PostgresCluster::start("outage", "", None, |_| {});
    let mocks = slow_mocks().await;
    let dir = temp_dir("pg-outage");
    write_config(
        &dir,
        &mocks,
        &format!(
            "url = \"{}\"\ntable = \"outage\"\nworkers = 4\nunreachable_grace = \"1s\"\npoll_interval = \"200ms\"\n\
             max_deferrals = 1000",
            cluster.url("")
        ),
        "5s",
        "",
    );
    let ids = write_contacts(&dir, 300);
    let (grpc, metrics) = (
        callguard_testkit::free_addr(),
        callguard_testkit::free_addr(),
    );
    let mut run = agent(
        &dir,
        &[
            "run",
            "--config",
            "agent.toml",
            "--contacts",
            "contacts.csv",
        ],
    )
    .env("CALLGUARD_GRPC__LISTEN", grpc.to_string())
    .env("CALLGUARD_METRICS__LISTEN", metrics.to_string())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("run.err")).unwrap())
    .spawn()
    .unwrap();
    wait_records(&mocks, 30).await;
    let health = async || {
        let out = callguard_testkit::grpcurl(
            grpc,
            &["-d", r#"{"service":""}"#],
            &["grpc.health.v1.Health/Check"],
        )
        .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let scrape = async || {
        let url = format!("http://{metrics}/metrics");
        match reqwest::get(&url).await {
            Ok(answer) => answer.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    };
    let serving = async |expected: &str| {
        let answer = health().await;
        (answer.contains(&format!("\"{expected}\"")), answer)
    };
    until("SERVING", async || serving("SERVING").await).await;

    cluster.stop();
    until("NOT_SERVING", async || serving("NOT_SERVING").await).await;
    until("store_up 0", async || {
        let text = scrape().await;
        (text.contains("callguard_store_up 0"), text)
    })
    .await;
    let errors = scrape().await;
    assert!(
        !errors.contains("callguard_store_errors_total 0"),
        "failed statements counted: {errors}"
    );
    // A plain progress line every 10 s when stderr is not a terminal.
    until("said on the progress line", async || {
        let progress = std::fs::read_to_string(dir.join("run.err")).unwrap_or_default();
        (progress.contains("call store unreachable since"), progress)
    })
    .await;

    cluster.start_again();
    until("SERVING again", async || serving("SERVING").await).await;
    until("store_up 1", async || {
        let text = scrape().await;
        (text.contains("callguard_store_up 1"), text)
    })
    .await;
    wait_exit(&mut run, Duration::from_secs(90), &dir, "run").await;
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert_eq!(counts["completed"], 300, "{counts:?}");
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The SQLite store of `dir`, created as `callguard run` creates it, with
/// `sql` run on it behind the agent's back: a fault planted in the store.
async fn tamper_with_store(dir: &Path, sql: &str) {
    let path = dir.join("calls.db");
    let store = CallStore::open(
        StoreLocation::Sqlite(path.clone()),
        StoreSettings::default(),
    );
    drop(store.await.unwrap());
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// The figures of a summary that say whether every contact is accounted for.
fn accounted(summary: &Value) -> [u64; 5] {
    ["contacts", "completed", "lost", "duplicated", "taken_over"].map(|key| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}: {summary}"))
    })
}

/// `callguard run` over five contacts on a SQLite store with `sql` planted
/// in it ends with all five completed, `lost` and `duplicated` as given,
/// and fails.
async fn a_tampered_store_fails_the_run(name: &str, sql: &str, lost_duplicated: [u64; 2]) {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = temp_dir(name);
    write_config(&dir, &mocks, "url = \"sqlite:calls.db\"", "5s", "");
    write_contacts(&dir, 5);
    tamper_with_store(&dir, sql).await;
    let mut run = spawn_run(&dir, name);
    let status = exit_within(&mut run, Duration::from_secs(60))
        .await
        .expect("the run ends");
    let summary = summary(&dir, name);
    let [contacts, completed, lost, duplicated, _] = accounted(&summary);
    assert_eq!(
        [contacts, completed, lost, duplicated],
        [5, 5, lost_duplicated[0], lost_duplicated[1]],
        "{summary}"
    );
    assert!(!status.success(), "{name}: the run succeeded");
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_the_store_loses_is_counted_lost_and_fails_the_run() {
    // As c-0003 completes, the store holds a stranger in its place: as
    // many contacts as before, but not the same ones.
    a_tampered_store_fails_the_run(
        "lost",
        "CREATE TRIGGER lose_one AFTER UPDATE OF state ON callguard_contacts \
         WHEN NEW.id = 'c-0003' AND NEW.state = 'completed' \
         BEGIN UPDATE callguard_contacts SET id = 'stranger' WHERE id = NEW.id; END;",
        [1, 0],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_ended_twice_is_counted_duplicated_and_fails_the_run() {
    // The store takes c-0002's first completion, then puts it back in the
    // queue: the agent calls it and completes it a second time.
    a_tampered_store_fails_the_run(
        "duplicated",
        "CREATE TRIGGER end_twice AFTER UPDATE OF state ON callguard_contacts \
         WHEN NEW.id = 'c-0002' AND NEW.state = 'completed' AND NEW.attempts = 1 \
         BEGIN UPDATE callguard_contacts SET state = 'pending', due_at = 0, lease_owner = NULL \
         WHERE id = NEW.id; END;",
        [0, 1],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_taken_over_mid_call_is_neither_lost_nor_duplicated() {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    // c-0002's CRM write hangs until the fault is cleared.
    mocks
        .inject(Fault::new(Service::Crm, FaultMode::Timeout).for_contacts(["c-0002"]))
        .unwrap();
    let dir = temp_dir("taken-over");
    write_config(
        &dir,
        &mocks,
        "url = \"sqlite:calls.db\"\nlease = \"600ms\"",
        "5s",
        "",
    );
    write_contacts(&dir, 5);
    let mut run = spawn_run(&dir, "run");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mocks
        .stats()
        .count(Service::Crm, EndpointKind::Api, OUTCOME_TIMEOUT)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "c-0002 never reached the CRM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While its call waits, another agent takes the contact, as it would
    // once the lease expired (and then dies, leaving it to this one).
    let connection = rusqlite::Connection::open(dir.join("calls.db")).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    let taken = connection
        .execute(
            "UPDATE callguard_contacts SET lease_owner = 'another-agent', attempts = attempts + 1 \
             WHERE id = 'c-0002' AND state = 'in_flight'",
            [],
        )
        .unwrap();
    assert_eq!(taken, 1);
    drop(connection);
    mocks.clear_faults();
    wait_exit(&mut run, Duration::from_secs(60), &dir, "run").await;
    let summary = summary(&dir, "run");
    assert_eq!(accounted(&summary), [5, 5, 0, 0, 1], "{summary}");
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The login the chaos run's SMTP server requires.
const SMTP_LOGIN: (&str, &str) = ("chaos-alerts", "chaos-smtp-password");

/// `[alerts]` to the mocks' Telegram and webhook sinks and to `smtp`, each
/// retried twice quickly behind a breaker that opens after three failures,
/// so a flapping sink ends some alerts delivered and some failed in the run.
fn alert_sections(mocks: &MockServer, smtp: &SmtpSink) -> String {
    // The default timeout (10 s): a sink that accepted an alert must not
    // see it counted failed because a busy machine answered late.
    let quick = "retry = { max_retries = 2, initial_delay = \"20ms\", max_delay = \"50ms\" }\n\
                 circuit_breaker = { failure_threshold = 3, recovery_timeout = \"200ms\" }\n";
    format!(
        "[alerts]\ncooldown = \"100ms\"\n\
         [alerts.telegram]\napi_base = \"{}\"\nbot_token = \"{TELEGRAM_BOT_TOKEN}\"\n\
         chat_id = \"{TELEGRAM_CHAT_ID}\"\n{quick}\
         [alerts.webhook]\nurl = \"{}\"\nsecret = \"chaos-webhook-secret-0123456789\"\n{quick}\
         [alerts.email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n\
         username = \"{}\"\npassword = \"{}\"\nfrom = \"callguard@example.com\"\n\
         to = [\"oncall@example.com\"]\n{quick}",
        mocks.telegram_api_base(),
        mocks.webhook_url("/chaos"),
        smtp.port(),
        SMTP_LOGIN.0,
        SMTP_LOGIN.1,
    )
}

/// How many alerts each channel's sink accepted: answered 200, or saved.
fn accepted_by_sinks(mocks: &MockServer, smtp: &SmtpSink) -> [(&'static str, u64); 3] {
    let telegram = mocks
        .telegram_requests()
        .iter()
        .filter(|r| r.status == 200)
        .count();
    let webhook = mocks
        .webhook_requests()
        .iter()
        .filter(|r| r.status == 200)
        .count();
    [
        ("telegram", telegram as u64),
        ("webhook", webhook as u64),
        ("email", smtp.messages().len() as u64),
    ]
}

/// Each service's breaker moved only along legal edges, starting CLOSED,
/// each transition leaving the state the one before entered.
fn assert_breaker_transitions_legal(summary: &Value) {
    let legal = [
        ("CLOSED", "OPEN"),
        ("OPEN", "HALF_OPEN"),
        ("OPEN", "CLOSED"),
        ("HALF_OPEN", "CLOSED"),
        ("HALF_OPEN", "OPEN"),
    ];
    let services = summary["breaker_transitions"].as_object().unwrap();
    for (service, transitions) in services {
        let mut state = "CLOSED";
        for transition in transitions.as_array().unwrap() {
            let edge = (
                transition["from"].as_str().unwrap(),
                transition["to"].as_str().unwrap(),
            );
            assert_eq!(edge.0, state, "{service}: {transitions}");
            assert!(legal.contains(&edge), "{service}: illegal {edge:?}");
            state = edge.1;
        }
    }
}

/// Every alert the agents of `summaries` raised reached each channel's end:
/// delivered (as often, between them, as its sink accepted one) or counted
/// failed or dropped, none left pending.
fn assert_every_alert_accounted_for(summaries: &[Value], mocks: &MockServer, smtp: &SmtpSink) {
    for (name, accepted) in accepted_by_sinks(mocks, smtp) {
        let (mut delivered, mut failed) = (0, 0);
        for summary in summaries {
            let alerts = &summary["alerts"];
            let counts = alerts["channels"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["channel"] == name)
                .unwrap_or_else(|| panic!("no counts for {name}: {alerts}"));
            let count = |key: &str| counts[key].as_u64().unwrap();
            assert_eq!(count("pending"), 0, "{name}: {counts}");
            assert_eq!(
                count("delivered") + count("failed") + count("dropped"),
                alerts["raised"].as_u64().unwrap(),
                "{name}: {alerts}"
            );
            delivered += count("delivered");
            failed += count("failed");
        }
        assert_eq!(delivered, accepted, "{name}: {summaries:?}");
        assert!(
            failed > 0 && accepted > 0,
            "{name} did not flap: {failed} failed, {accepted} accepted"
        );
    }
}

/// A chaos run of `contacts` contacts on the queue `queue` (its `[queue]`
/// keys), worked by one agent per name in `agents` at once: the mocks inject 503s,
/// timeouts, resets, slow answers, 429s and 401s while the three alert
/// sinks flap. Every contact ends in exactly one state with at most one CRM
/// record, no agent loses or repeats one, breakers move only along legal
/// edges, and every alert is delivered or counted.
async fn chaos_run(name: &str, queue: &str, agents: &[&str], contacts: usize) {
    let mocks = MockServer::start(MockConfig::default()).await.unwrap();
    let ms = Duration::from_millis;
    mocks
        .inject_all(vec![
            Fault::new(Service::Llm, FaultMode::Flaky).with_rate(0.08),
            Fault::new(Service::Llm, FaultMode::Timeout).with_rate(0.01),
            Fault::new(Service::Elevenlabs, FaultMode::Reset).with_rate(0.04),
            Fault::new(Service::Elevenlabs, FaultMode::Slow)
                .with_rate(0.2)
                .with_latency(ms(20)),
            Fault::new(Service::Crm, FaultMode::RateLimited)
                .with_rate(0.05)
                .with_retry_after(Duration::from_secs(1)),
            Fault::new(Service::Crm, FaultMode::Unauthorized).with_rate(0.005),
            Fault::new(Service::Crm, FaultMode::Unavailable).with_rate(0.03),
        ])
        .unwrap();
    let dir = temp_dir(name);
    // Each alert sink flaps: three requests fail — an alert's three
    // attempts, enough to open its channel's breaker — then three are
    // accepted, over again. The SMTP server accepts first.
    mocks
        .telegram_fail(SinkFailure::new(500, 3).then_ok(3))
        .unwrap();
    mocks
        .webhook_fail(SinkFailure::new(503, 3).then_ok(3))
        .unwrap();
    let flap = SmtpFlap {
        accepted: 3,
        refused: 3,
    };
    let smtp = SmtpSink::start_flapping(SMTP_LOGIN.0, SMTP_LOGIN.1, flap)
        .await
        .unwrap();
    write_config(&dir, &mocks, queue, "300ms", &alert_sections(&mocks, &smtp));
    let ids = write_contacts(&dir, contacts);
    // About 2.5 ms per contact here; the limit is only reached on a hang.
    let limit = Duration::from_millis(60 * contacts as u64);
    let started = tokio::time::Instant::now();
    let mut running: Vec<Child> = agents.iter().map(|agent| spawn_run(&dir, agent)).collect();
    for (child, agent) in running.iter_mut().zip(agents) {
        wait_exit(child, limit, &dir, agent).await;
    }
    let elapsed = started.elapsed();
    let counts = assert_every_contact_ended_once(&dir, &mocks, &ids);
    assert!(
        counts["completed"] > contacts as u64 * 3 / 4,
        "most contacts complete: {counts:?}"
    );
    let summaries: Vec<Value> = agents.iter().map(|agent| summary(&dir, agent)).collect();
    for summary in &summaries {
        assert_eq!(
            (summary["lost"].as_u64(), summary["duplicated"].as_u64()),
            (Some(0), Some(0)),
            "{summary}"
        );
        assert!(
            summary["attempts"].as_u64() > Some(0),
            "an agent idled: {summary}"
        );
        assert_breaker_transitions_legal(summary);
    }
    assert_every_alert_accounted_for(&summaries, &mocks, &smtp);
    // The figures, summed over the agents (seen with `--nocapture`).
    let sum = |path: &[&str]| -> u64 {
        summaries
            .iter()
            .map(|s| path.iter().fold(s, |v, key| &v[*key]).as_u64().unwrap())
            .sum()
    };
    let transitions: usize = summaries
        .iter()
        .flat_map(|s| s["breaker_transitions"].as_object().unwrap().values())
        .map(|list| list.as_array().unwrap().len())
        .sum();
    eprintln!(
        "{name}: {contacts} contacts, {} agent(s), {:.1} s ({:.0} contacts/s); {counts:?}; \
         attempts {}, retries {}, deferrals {}; breaker transitions {transitions}; \
         alerts raised {}, suppressed {}",
        agents.len(),
        elapsed.as_secs_f64(),
        contacts as f64 / elapsed.as_secs_f64(),
        sum(&["attempts"]),
        sum(&["retries"]),
        sum(&["deferrals"]),
        sum(&["alerts", "raised"]),
        sum(&["alerts", "suppressed"]),
    );
    smtp.stop().await;
    mocks.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The chaos run's queue on SQLite, for one agent of 16 workers.
const SQLITE_CHAOS_QUEUE: &str = "url = \"sqlite:calls.db\"\nworkers = 16\nmax_deferrals = 20";

/// The chaos run's queue in `table` of the PostgreSQL database at `url`,
/// for agents of 8 workers each.
fn postgres_chaos_queue(url: &str, table: &str) -> String {
    format!(
        "url = \"{url}\"\ntable = \"{table}\"\nworkers = 8\nmax_deferrals = 20\n\
         poll_interval = \"100ms\""
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_run_loses_no_contact_and_no_alert() {
    chaos_run("chaos", SQLITE_CHAOS_QUEUE, &["chaos"], 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_through_chaos_on_a_postgres_queue_lose_no_contact_and_no_alert() {
    let url = callguard_testkit::postgres_url();
    let queue = postgres_chaos_queue(&url, &format!("chaos_{}", std::process::id()));
    chaos_run("chaos-postgres", &queue, &["chaos-a", "chaos-b"], 2000).await;
}

/// The chaos run as a soak, left out of `cargo test`: three agents on the
/// PostgreSQL queue (SQLite and one agent without it), 20 000 contacts or
/// `CALLGUARD_SOAK_CONTACTS`:
///
/// `scripts/test.sh --release -p callguard-agent --test store -- --ignored soak`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of minutes; run it with --ignored"]
async fn soak_through_chaos() {
    let contacts = std::env::var("CALLGUARD_SOAK_CONTACTS").map_or(20_000, |n| {
        n.parse()
            .expect("CALLGUARD_SOAK_CONTACTS is a number of contacts")
    });
    match std::env::var(callguard_testkit::POSTGRES_URL_VAR) {
        Ok(url) => {
            let queue = postgres_chaos_queue(&url, &format!("soak_{}", std::process::id()));
            chaos_run("soak", &queue, &["soak-a", "soak-b", "soak-c"], contacts).await;
        }
        Err(_) => chaos_run("soak", SQLITE_CHAOS_QUEUE, &["soak"], contacts).await,
    }
}
