//! The same suite against every backend: in memory, SQLite in a temporary
//! file, and PostgreSQL in the database `CALLGUARD_TEST_POSTGRES_URL` names
//! (`scripts/test.sh` starts one; the PostgreSQL cases fail without it). Beside the suite, a case only a
//! shared queue has: another agent's transaction holding a row.
//!
//! Memory and SQLite run on a paused clock (stored times come from the store's
//! clock, which follows `tokio::time`), with one time unit a second. A paused
//! clock jumps ahead whenever the runtime waits on a socket, so PostgreSQL runs
//! on the real clock instead, with one unit 100 ms.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callguard_store::{
    CallStore, ContactState, Deferral, Leased, NewContact, StoreError, StoreLocation, StoreSettings,
};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

/// One backend's store for one test; `second` opens another agent's view of
/// the same contacts (the same store, for memory).
struct Fixture {
    location: StoreLocation,
    table: String,
    dir: Option<PathBuf>,
    first: Option<Arc<CallStore>>,
    /// What the tests call a second.
    unit: Duration,
    /// How late a timed wake-up may be.
    slack: Duration,
}

impl Fixture {
    async fn new(kind: Kind, test: &str) -> Self {
        let table = format!("conformance_{test}");
        let (location, dir) = match kind {
            Kind::Memory => (StoreLocation::Memory, None),
            Kind::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("callguard-store-{test}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                (StoreLocation::Sqlite(dir.join("calls.db")), Some(dir))
            }
            Kind::Postgres => {
                let url = callguard_testkit::postgres_url();
                drop_table(&url, &table).await;
                (StoreLocation::parse(&url).unwrap(), None)
            }
        };
        let (unit, slack) = match kind {
            Kind::Postgres => (Duration::from_millis(100), Duration::from_millis(300)),
            Kind::Memory | Kind::Sqlite => (Duration::from_secs(1), Duration::from_millis(50)),
        };
        Self {
            location,
            table,
            dir,
            first: None,
            unit,
            slack,
        }
    }

    fn settings(&self) -> StoreSettings {
        StoreSettings {
            table: self.table.clone(),
            lease: self.units(10),
            poll_interval: self.unit,
            max_deferrals: 2,
            lease_batch: 1,
            settle_wait: Duration::ZERO,
            ..StoreSettings::default()
        }
    }

    fn units(&self, n: u32) -> Duration {
        self.unit * n
    }

    async fn open_with(&mut self, settings: StoreSettings) -> Arc<CallStore> {
        let store = Arc::new(
            CallStore::open(self.location.clone(), settings)
                .await
                .unwrap()
                .with_owner("agent-1"),
        );
        self.first = Some(store.clone());
        store
    }

    async fn open(&mut self) -> Arc<CallStore> {
        self.open_with(self.settings()).await
    }

    /// The store with the usual settings, leasing `lease_batch` contacts
    /// per look at the queue.
    async fn open_batched(&mut self, lease_batch: usize) -> Arc<CallStore> {
        self.open_with(StoreSettings {
            lease_batch,
            ..self.settings()
        })
        .await
    }

    /// The store with final states waiting for one another, so that those
    /// sent at once go together (completions as one statement).
    async fn open_settling(&mut self) -> Arc<CallStore> {
        self.open_with(StoreSettings {
            settle_wait: Duration::from_millis(50),
            ..self.settings()
        })
        .await
    }

    /// Another agent on the same contacts.
    async fn second(&self) -> Arc<CallStore> {
        let first = self.first.clone().expect("open first");
        if matches!(self.location, StoreLocation::Memory) {
            return first;
        }
        Arc::new(
            CallStore::open(self.location.clone(), first.settings().clone())
                .await
                .unwrap()
                .with_owner("agent-2"),
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A connection to the test database of its own, beside the store's.
async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Runs `sql` on the test database, bypassing the store.
async fn postgres_execute(
    url: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> u64 {
    postgres_client(url)
        .await
        .execute(sql, params)
        .await
        .unwrap()
}

async fn drop_table(url: &str, table: &str) {
    postgres_execute(url, &format!("DROP TABLE IF EXISTS {table}"), &[]).await;
}

fn contacts(ids: &[&str]) -> Vec<NewContact> {
    ids.iter()
        .map(|id| NewContact {
            id: (*id).to_owned(),
            data: format!(r#"{{"id":"{id}","name":"Name {id}"}}"#),
        })
        .collect()
}

fn numbered(n: usize) -> Vec<NewContact> {
    let ids: Vec<String> = (0..n).map(|i| format!("c-{i:04}")).collect();
    contacts(&ids.iter().map(String::as_str).collect::<Vec<_>>())
}

async fn import_twice_adds_nothing(kind: Kind) {
    let mut fixture = Fixture::new(kind, "import_twice").await;
    let store = fixture.open().await;
    let first = store.import(&contacts(&["a", "b", "c"])).await.unwrap();
    assert_eq!((first.added, first.existing), (3, 0));
    let again = store
        .import(&contacts(&["a", "b", "c", "d"]))
        .await
        .unwrap();
    assert_eq!((again.added, again.existing), (1, 3));
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.pending, counts.total()), (4, 4));
}

async fn leases_in_import_order_and_ends_when_all_finished(kind: Kind) {
    let mut fixture = Fixture::new(kind, "order").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b", "c"])).await.unwrap();
    let mut held = Vec::new();
    while let Some(leased) = store.try_lease().await.unwrap() {
        assert_eq!(leased.lease.attempt(), 1);
        assert!(leased.data.contains(leased.lease.contact_id()));
        held.push(leased);
    }
    let ids: Vec<&str> = held.iter().map(|l| l.lease.contact_id()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(store.counts().await.unwrap().in_flight, 3);
    for leased in &held {
        store.complete(&leased.lease).await.unwrap();
    }
    assert!(store.next().await.unwrap().is_none());
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.completed, counts.unfinished()), (3, 0));
}

async fn a_failure_keeps_service_and_reason(kind: Kind) {
    let mut fixture = Fixture::new(kind, "fail").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let a = store.next().await.unwrap().unwrap();
    store
        .fail(&a.lease, "crm", "permanent (400): bad record")
        .await
        .unwrap();
    let failed = store.list(ContactState::Failed).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, "a");
    assert_eq!(failed[0].service.as_deref(), Some("crm"));
    assert_eq!(
        failed[0].last_error.as_deref(),
        Some("permanent (400): bad record")
    );
    assert_eq!(
        (failed[0].attempts, failed[0].lease_owner.as_deref()),
        (1, None)
    );
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.failed, counts.pending), (1, 1));
}

async fn every_contact_is_listed_once_with_its_state(kind: Kind) {
    let mut fixture = Fixture::new(kind, "list_all").await;
    let store = fixture.open().await;
    store
        .import(&contacts(&["a", "b", "c", "d"]))
        .await
        .unwrap();
    let a = store.next().await.unwrap().unwrap();
    store.complete(&a.lease).await.unwrap();
    let b = store.next().await.unwrap().unwrap();
    store.fail(&b.lease, "crm", "permanent").await.unwrap();
    let _c = store.next().await.unwrap().unwrap();
    let listed: Vec<(String, ContactState)> = store
        .list_all()
        .await
        .unwrap()
        .into_iter()
        .map(|contact| (contact.id, contact.state))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".to_owned(), ContactState::Completed),
            ("b".to_owned(), ContactState::Failed),
            ("c".to_owned(), ContactState::InFlight),
            ("d".to_owned(), ContactState::Pending),
        ]
    );
}

async fn a_deferred_contact_returns_at_its_time_with_its_progress(kind: Kind) {
    let mut fixture = Fixture::new(kind, "defer").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let start = Instant::now();
    let a = store.next().await.unwrap().unwrap();
    // The holder's own text, kept as it is: the store never reads it.
    let progress = r#"{"script":"Hello Ada — ça va?","audio_bytes":4242} and not JSON"#;
    let deferral = store
        .defer(
            &a.lease,
            "elevenlabs",
            "elevenlabs unavailable",
            fixture.units(10),
            progress,
        )
        .await
        .unwrap();
    assert_eq!(deferral, Deferral::Requeued);
    assert_eq!(store.counts().await.unwrap().deferred, 1);
    let b = store.next().await.unwrap().unwrap();
    assert_eq!(b.lease.contact_id(), "b", "the worker moves on");
    store.complete(&b.lease).await.unwrap();
    let again = store.next().await.unwrap().unwrap();
    assert_eq!(again.lease.contact_id(), "a");
    let waited = Instant::now() - start;
    assert!(
        waited >= fixture.units(10) && waited < fixture.units(10) + fixture.slack,
        "{waited:?}"
    );
    assert_eq!((again.deferrals, again.lease.attempt()), (1, 2));
    assert_eq!(again.progress, progress);
}

async fn a_closing_breaker_wakes_its_deferred_contacts_early(kind: Kind) {
    let mut fixture = Fixture::new(kind, "wake").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a"])).await.unwrap();
    let start = Instant::now();
    let a = store.next().await.unwrap().unwrap();
    store
        .defer(&a.lease, "elevenlabs", "down", fixture.units(60), "")
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .next()
                .await
                .unwrap()
                .map(|l| l.lease.contact_id().to_owned())
        }
    });
    tokio::time::sleep(fixture.units(3)).await;
    assert_eq!(store.wake_service("llm").await.unwrap(), 0);
    assert_eq!(store.wake_service("elevenlabs").await.unwrap(), 1);
    assert_eq!(waiter.await.unwrap().as_deref(), Some("a"));
    let waited = Instant::now() - start;
    assert!(waited < fixture.units(3) + fixture.slack, "{waited:?}");
}

async fn a_reopened_breaker_postpones_its_deferred_contacts(kind: Kind) {
    let mut fixture = Fixture::new(kind, "postpone").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let start = Instant::now();
    for wait in [2, 20] {
        let leased = store.next().await.unwrap().unwrap();
        store
            .defer(&leased.lease, "elevenlabs", "down", fixture.units(wait), "")
            .await
            .unwrap();
    }
    // Only "a" (due at 2) is earlier than the reopened breaker's 10.
    assert_eq!(
        store
            .postpone_service("elevenlabs", fixture.units(10))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .postpone_service("llm", fixture.units(10))
            .await
            .unwrap(),
        0
    );
    let a = store.next().await.unwrap().unwrap();
    assert_eq!(a.lease.contact_id(), "a");
    let waited = Instant::now() - start;
    assert!(
        waited >= fixture.units(10) && waited < fixture.units(10) + fixture.slack,
        "{waited:?}"
    );
    assert_eq!(a.deferrals, 1, "moving a contact is not another deferral");
}

/// A store (`max_deferrals = 2`) holding one contact, `a`, with its
/// fixture (which removes the store's files when dropped).
async fn one_contact(kind: Kind, name: &str) -> (Fixture, Arc<CallStore>) {
    let mut fixture = Fixture::new(kind, name).await;
    let store = fixture.open().await;
    store.import(&contacts(&["a"])).await.unwrap();
    (fixture, store)
}

/// Defers the store's contacts, each time one is leased, as `service`
/// unavailable, until none is left: for each deferral, the deferrals the
/// contact had when leased and what became of it.
async fn defer_until_none_left(store: &Arc<CallStore>, service: &str) -> Vec<(u32, Deferral)> {
    let reason = format!("{service} unavailable");
    let mut outcomes = Vec::new();
    while let Some(leased) = store.next().await.unwrap() {
        let deferral = store
            .defer(&leased.lease, service, &reason, Duration::ZERO, "")
            .await
            .unwrap();
        outcomes.push((leased.deferrals, deferral));
    }
    outcomes
}

async fn too_many_deferrals_expire(kind: Kind) {
    let (_fixture, store) = one_contact(kind, "expire").await;
    let outcomes: Vec<_> = defer_until_none_left(&store, "llm")
        .await
        .into_iter()
        .map(|(_, deferral)| deferral)
        .collect();
    assert_eq!(
        outcomes,
        [Deferral::Requeued, Deferral::Requeued, Deferral::Expired]
    );
    let expired = store.list(ContactState::Expired).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].deferrals, expired[0].service.as_deref()),
        (3, Some("llm"))
    );
}

async fn busy_deferrals_never_expire(kind: Kind) {
    let (_fixture, store) = one_contact(kind, "busy").await;
    for _ in 0..5 {
        let leased = store
            .next()
            .await
            .unwrap()
            .expect("back after each busy deferral");
        let deferral = store
            .defer_busy(
                &leased.lease,
                "elevenlabs",
                "elevenlabs busy",
                Duration::ZERO,
                "",
            )
            .await
            .unwrap();
        assert_eq!(deferral, Deferral::Requeued);
    }
    let (counted, outcomes): (Vec<u32>, Vec<Deferral>) =
        defer_until_none_left(&store, "elevenlabs")
            .await
            .into_iter()
            .unzip();
    assert_eq!(counted, [0, 1, 2], "busy ones not counted");
    assert_eq!(
        outcomes,
        [Deferral::Requeued, Deferral::Requeued, Deferral::Expired],
        "the unavailable ones still count"
    );
}

async fn an_expired_lease_returns_the_contact(kind: Kind) {
    let mut fixture = Fixture::new(kind, "lease_expiry").await;
    let dead = fixture.open().await; // lease = 10 s
    dead.import(&contacts(&["a"])).await.unwrap();
    let held = dead.try_lease().await.unwrap().unwrap();
    let other = fixture.second().await;
    tokio::time::sleep(fixture.units(9)).await;
    assert!(other.try_lease().await.unwrap().is_none(), "still leased");
    let start = Instant::now();
    // Bounded, so that a contact that never comes back fails the test
    // instead of leaving `next` waiting for ever.
    let taken = tokio::time::timeout(fixture.units(10), other.next())
        .await
        .expect("the contact returns once its lease expired")
        .unwrap()
        .unwrap();
    let waited = Instant::now() - start;
    assert!(waited <= fixture.units(1) + fixture.slack, "{waited:?}");
    assert_eq!((taken.lease.contact_id(), taken.lease.attempt()), ("a", 2));
    assert!(matches!(
        dead.complete(&held.lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
    other.complete(&taken.lease).await.unwrap();
    let counts = other.counts().await.unwrap();
    assert_eq!((counts.completed, counts.total()), (1, 1));
}

async fn keep_alive_holds_the_lease_while_the_call_runs(kind: Kind) {
    let mut fixture = Fixture::new(kind, "keep_alive").await;
    let holder = fixture.open().await;
    holder.import(&contacts(&["a"])).await.unwrap();
    let held = holder.try_lease().await.unwrap().unwrap();
    let renewing = tokio::spawn({
        let (holder, lease) = (holder.clone(), held.lease.clone());
        async move { holder.keep_alive(&lease, &mut holder.renewals()).await }
    });
    let other = fixture.second().await;
    tokio::time::sleep(fixture.units(35)).await;
    assert!(other.try_lease().await.unwrap().is_none(), "renewed");
    renewing.abort();
    tokio::time::sleep(fixture.units(11)).await;
    let taken = other.try_lease().await.unwrap().unwrap();
    assert_eq!(taken.lease.attempt(), 2, "taken once renewal stopped");
}

async fn a_second_terminal_state_is_refused(kind: Kind) {
    let mut fixture = Fixture::new(kind, "twice").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a"])).await.unwrap();
    let a = store.try_lease().await.unwrap().unwrap();
    store.complete(&a.lease).await.unwrap();
    for second in [
        store.complete(&a.lease).await,
        store.fail(&a.lease, "crm", "late").await,
        store.save_progress(&a.lease, "").await,
    ] {
        assert!(
            matches!(second, Err(StoreError::LeaseLost { .. })),
            "{second:?}"
        );
    }
    assert!(matches!(
        store
            .defer(&a.lease, "crm", "late", Duration::ZERO, "")
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.completed, counts.total()), (1, 1));
}

async fn completions_at_once_are_each_judged_by_their_own_lease(kind: Kind) {
    let mut fixture = Fixture::new(kind, "completions").await;
    let store = fixture.open_settling().await;
    store.import(&numbered(7)).await.unwrap();
    let stale = store.try_lease().await.unwrap().unwrap().lease;
    store.complete(&stale).await.unwrap();
    let mut held = Vec::new();
    while let Some(leased) = store.try_lease().await.unwrap() {
        held.push(leased.lease);
    }
    assert_eq!(held.len(), 6);
    // Sent at once: the held six, the last of them twice in a row, and the
    // lease already settled.
    let mut leases = held.clone();
    leases.extend([held[5].clone(), stale.clone()]);
    let mut completions = tokio::task::JoinSet::new();
    for lease in leases {
        let store = store.clone();
        completions.spawn(async move {
            let result = store.complete(&lease).await;
            (lease.contact_id().to_owned(), result)
        });
    }
    let (mut completed, mut lost) = (Vec::new(), Vec::new());
    while let Some(joined) = completions.join_next().await {
        match joined.unwrap() {
            (id, Ok(())) => completed.push(id),
            (id, Err(StoreError::LeaseLost { contact_id })) => {
                assert_eq!(contact_id, id);
                lost.push(id);
            }
            (id, Err(other)) => panic!("{id}: {other}"),
        }
    }
    completed.sort();
    lost.sort();
    let mut expected: Vec<String> = held.iter().map(|l| l.contact_id().to_owned()).collect();
    expected.sort();
    assert_eq!(completed, expected);
    let mut expected_lost = vec![
        held[5].contact_id().to_owned(),
        stale.contact_id().to_owned(),
    ];
    expected_lost.sort();
    assert_eq!(lost, expected_lost);
    assert_eq!(store.counts().await.unwrap().completed, 7);
}

async fn concurrent_leasers_never_get_the_same_contact(kind: Kind) {
    let mut fixture = Fixture::new(kind, "concurrent").await;
    let first = fixture.open().await;
    first.import(&numbered(300)).await.unwrap();
    let second = fixture.second().await;
    let mut workers = tokio::task::JoinSet::new();
    for store in [
        first.clone(),
        first.clone(),
        first.clone(),
        second.clone(),
        second.clone(),
        second,
    ] {
        workers.spawn(async move {
            let mut taken = Vec::new();
            while let Some(leased) = store.try_lease().await.unwrap() {
                store.complete(&leased.lease).await.unwrap();
                taken.push(leased.lease.contact_id().to_owned());
            }
            taken
        });
    }
    let mut all = Vec::new();
    while let Some(taken) = workers.join_next().await {
        all.extend(taken.unwrap());
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 300, "each contact leased once");
    assert_eq!(distinct.len(), 300);
    assert_eq!(first.counts().await.unwrap().completed, 300);
}

async fn failed_and_expired_contacts_requeue(kind: Kind) {
    let mut fixture = Fixture::new(kind, "requeue").await;
    let store = fixture
        .open_with(StoreSettings {
            max_deferrals: 0,
            ..fixture.settings()
        })
        .await;
    store.import(&contacts(&["a", "b", "c"])).await.unwrap();
    let a = store.try_lease().await.unwrap().unwrap();
    store.fail(&a.lease, "crm", "rejected").await.unwrap();
    let b = store.try_lease().await.unwrap().unwrap();
    let expired = store
        .defer(&b.lease, "llm", "down", Duration::ZERO, "")
        .await
        .unwrap();
    assert_eq!(expired, Deferral::Expired);
    assert!(matches!(
        store.requeue(ContactState::Pending).await,
        Err(StoreError::Unsupported(_))
    ));
    assert_eq!(store.requeue(ContactState::Failed).await.unwrap(), 1);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.pending, counts.failed, counts.expired), (2, 0, 1));
    assert_eq!(store.requeue(ContactState::Expired).await.unwrap(), 1);
    let pending = store.list(ContactState::Pending).await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(pending.iter().all(|c| c.deferrals == 0));
    assert_eq!(pending[0].last_error.as_deref(), Some("rejected"));
}

async fn progress_and_held_contacts_come_back_after_release(kind: Kind) {
    let mut fixture = Fixture::new(kind, "release").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let a = store.try_lease().await.unwrap().unwrap();
    let _b = store.try_lease().await.unwrap().unwrap();
    let progress = "script written";
    store.save_progress(&a.lease, progress).await.unwrap();
    assert_eq!(store.release_all().await.unwrap(), 2);
    assert_eq!(store.counts().await.unwrap().pending, 2);
    let again = store.try_lease().await.unwrap().unwrap();
    assert_eq!(again.lease.contact_id(), "a");
    assert_eq!(again.progress, progress);
    store.release(&again.lease).await.unwrap();
    store.close();
    assert!(store.next().await.unwrap().is_none(), "closed");
}

async fn contacts_outlive_the_store(kind: Kind) {
    let mut fixture = Fixture::new(kind, "reopen").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let a = store.try_lease().await.unwrap().unwrap();
    store.complete(&a.lease).await.unwrap();
    let before = store.counts().await.unwrap();
    drop(store);
    fixture.first = None;
    let reopened = fixture.open().await;
    let after = reopened.counts().await.unwrap();
    if matches!(kind, Kind::Memory) {
        assert_eq!(after.total(), 0, "memory is not kept");
    } else {
        assert_eq!(after, before);
        assert_eq!(
            reopened.import(&contacts(&["a", "b"])).await.unwrap().added,
            0
        );
    }
}

async fn a_batch_is_leased_ahead_in_order_renewed_and_released(kind: Kind) {
    let mut fixture = Fixture::new(kind, "lease_batch").await;
    let store = fixture.open_batched(3).await; // lease = 10 units
    let other = fixture.second().await;
    store
        .import(&contacts(&["a", "b", "c", "d"]))
        .await
        .unwrap();
    let id = |leased: Leased| leased.lease.contact_id().to_owned();
    let a = store.next().await.unwrap().unwrap();
    assert_eq!(a.lease.contact_id(), "a");
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.in_flight, counts.pending),
        (3, 1),
        "a, b and c leased"
    );
    store.complete(&a.lease).await.unwrap();
    // b waited past a third of its lease, so it is renewed as it is taken;
    // taking it leaves fewer than a batch leased ahead, so d is leased too.
    tokio::time::sleep(fixture.units(8)).await;
    assert_eq!(id(store.next().await.unwrap().unwrap()), "b");
    tokio::time::sleep(fixture.units(5)).await;
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.in_flight, counts.pending), (3, 0), "b, c and d");
    if matches!(kind, Kind::Memory) {
        assert_eq!(id(store.next().await.unwrap().unwrap()), "c");
    } else {
        // c's lease ran out while it waited: another agent takes it, and
        // this store skips it for d (renewed as it is taken).
        let c = other.try_lease().await.unwrap().unwrap();
        assert_eq!((c.lease.contact_id(), c.lease.attempt()), ("c", 2));
        assert_eq!(id(store.try_lease().await.unwrap().unwrap()), "d");
        assert!(store.try_lease().await.unwrap().is_none(), "none left");
    }
    // Leased ahead but not handed out: given back at shutdown too.
    store.close();
    assert!(store.next().await.unwrap().is_none());
    let held = store
        .list(ContactState::InFlight)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.lease_owner.as_deref() == Some("agent-1"))
        .count();
    assert_eq!(store.release_all().await.unwrap(), held);
    assert!(
        store.try_lease().await.unwrap().is_some(),
        "released, due now"
    );
}

async fn a_batch_leased_ahead_in_the_background_is_given_back_at_shutdown(kind: Kind) {
    let mut fixture = Fixture::new(kind, "lease_ahead").await;
    let store = fixture.open_batched(4).await;
    store.import(&numbered(10)).await.unwrap();
    let taken = [
        store.try_lease().await.unwrap().unwrap(),
        store.try_lease().await.unwrap().unwrap(),
    ];
    // Fewer than a batch left: the next is being leased in the background.
    tokio::task::yield_now().await;
    store.close();
    store.release_all().await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.in_flight, counts.pending),
        (0, 10),
        "nothing left leased, not even a batch that landed during the release"
    );
    // Whatever is handed out next is really held: no stale copy of a
    // released contact stayed behind in the store's buffer.
    for _ in 0..taken.len() {
        let next = store.try_lease().await.unwrap().unwrap();
        store.complete(&next.lease).await.unwrap();
    }
}

async fn workers_finding_none_left_share_one_lease(kind: Kind) {
    let mut fixture = Fixture::new(kind, "shared_lease").await;
    let store = fixture.open_batched(4).await;
    store.import(&numbered(20)).await.unwrap();
    let id = |leased: Option<Leased>| leased.unwrap().lease.contact_id().to_owned();
    // Four workers look at once with nothing leased ahead: one batch is
    // leased and shared, not four.
    let (a, b, c, d) = tokio::join!(
        store.try_lease(),
        store.try_lease(),
        store.try_lease(),
        store.try_lease()
    );
    let mut first: Vec<String> = [a, b, c, d]
        .into_iter()
        .map(|leased| id(leased.unwrap()))
        .collect();
    first.sort();
    assert_eq!(first, ["c-0000", "c-0001", "c-0002", "c-0003"]);
    // The batch leased ahead meanwhile comes next, in order.
    for expected in ["c-0004", "c-0005", "c-0006", "c-0007"] {
        assert_eq!(id(store.try_lease().await.unwrap()), expected);
    }
}

async fn a_contact_the_same_agent_leased_again_refuses_the_earlier_lease(kind: Kind) {
    let mut fixture = Fixture::new(kind, "same_owner").await;
    let store = fixture.open_settling().await;
    store.import(&contacts(&["a"])).await.unwrap();
    let earlier = store.try_lease().await.unwrap().unwrap().lease;
    // The lease runs out (a call that outlived it), and this same agent —
    // same owner — takes the contact again.
    tokio::time::sleep(fixture.units(11)).await;
    store.import(&contacts(&["b"])).await.unwrap();
    let mut held = Vec::new();
    while let Some(leased) = store.try_lease().await.unwrap() {
        held.push(leased.lease);
    }
    held.sort_by(|x, y| x.contact_id().cmp(y.contact_id()));
    let [again, b] = <[_; 2]>::try_from(held).unwrap();
    assert_eq!(
        (again.contact_id(), again.attempt(), b.contact_id()),
        ("a", 2, "b")
    );
    let lost = |result: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(result, Err(StoreError::LeaseLost { .. })),
            "{what} under the earlier lease: {result:?}"
        );
    };
    lost(store.renew(&earlier).await, "renew");
    lost(store.save_progress(&earlier, "").await, "save_progress");
    lost(store.fail(&earlier, "crm", "late").await, "fail");
    lost(
        store
            .defer(&earlier, "crm", "late", Duration::ZERO, "")
            .await
            .map(drop),
        "defer",
    );
    lost(store.release(&earlier).await, "release");
    lost(store.complete(&earlier).await, "complete alone");
    // With another completion in the same statement.
    let (earlier_done, b_done) = tokio::join!(store.complete(&earlier), store.complete(&b));
    lost(earlier_done, "complete with another");
    b_done.unwrap();
    let in_flight = store.list(ContactState::InFlight).await.unwrap();
    assert_eq!(
        (
            in_flight.len(),
            in_flight[0].id.as_str(),
            in_flight[0].attempts
        ),
        (1, "a", 2),
        "a is still held under its second lease"
    );
    store.renew(&again).await.unwrap();
    store.complete(&again).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.completed, counts.total()), (2, 2));
}

/// PostgreSQL only (SQLite and memory take one writer at a time): a
/// contact another agent is leasing — its transaction holds the row — is
/// skipped, neither waited for nor leased a second time.
#[tokio::test]
async fn postgres_skips_a_contact_another_agent_is_leasing() {
    let mut fixture = Fixture::new(Kind::Postgres, "skip_locked").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a", "b"])).await.unwrap();
    let StoreLocation::Postgres(url) = &fixture.location else {
        unreachable!("a PostgreSQL fixture");
    };
    // Another agent's lease of a, not committed yet.
    let other = postgres_client(url).await;
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE {} SET state = 'in_flight', lease_owner = 'agent-x', \
             attempts = attempts + 1, due_at = 9223372036854775807 WHERE id = 'a'",
            fixture.table
        ))
        .await
        .unwrap();
    let mut leasing = tokio::spawn({
        let store = store.clone();
        async move { store.try_lease().await }
    });
    let in_time = tokio::time::timeout(fixture.units(20), &mut leasing)
        .await
        .ok();
    other.batch_execute("COMMIT").await.unwrap();
    let without_waiting = in_time.is_some();
    let leased = match in_time {
        Some(joined) => joined,
        None => leasing.await,
    };
    let leased = leased
        .unwrap()
        .unwrap()
        .map(|l| l.lease.contact_id().to_owned());
    let held: Vec<(String, Option<String>, u32)> = store
        .list(ContactState::InFlight)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.lease_owner, c.attempts))
        .collect();
    assert_eq!(
        (without_waiting, leased.as_deref(), held.as_slice()),
        (
            true,
            Some("b"),
            [
                ("a".to_owned(), Some("agent-x".to_owned()), 1),
                ("b".to_owned(), Some("agent-1".to_owned()), 1)
            ]
            .as_slice()
        ),
        "(leased without waiting for the other agent's transaction, what, each held once)"
    );
}

/// PostgreSQL only: lease times come from the database's clock, so an
/// agent whose clock runs an hour ahead neither takes a lease that is still
/// live nor sets one that outlives its length; the lease it takes once the
/// first has expired lasts a lease from the database's now.
#[tokio::test]
async fn postgres_an_agent_whose_clock_runs_ahead_takes_no_live_lease() {
    let mut fixture = Fixture::new(Kind::Postgres, "clock_ahead").await;
    let store = fixture.open().await;
    store.import(&contacts(&["a"])).await.unwrap();
    let held = store.try_lease().await.unwrap().expect("a is due");
    let ahead = Arc::new(
        CallStore::open(fixture.location.clone(), fixture.settings())
            .await
            .unwrap()
            .with_owner("agent-fast")
            .with_clock_ahead(Duration::from_secs(3600)),
    );
    assert!(
        ahead.try_lease().await.unwrap().is_none(),
        "a lease still live by the database's clock was taken"
    );
    // The first lease (10 units) runs out; the fast agent takes a, for one
    // lease from the database's now — not from its own clock, an hour on.
    tokio::time::sleep(fixture.units(11)).await;
    let taken = ahead.try_lease().await.unwrap().expect("a's lease expired");
    assert!(matches!(
        store.complete(&held.lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
    tokio::time::sleep(fixture.units(11)).await;
    let again = store.try_lease().await.unwrap();
    assert_eq!(
        again.map(|l| l.lease.contact_id().to_owned()).as_deref(),
        Some("a"),
        "the fast agent's lease outlived its length"
    );
    assert!(matches!(
        ahead.complete(&taken.lease).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

/// The suite, on every backend.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(start_paused = true)]
            async fn $test() { super::$test(super::Kind::Memory).await })*
        }
        mod sqlite {
            $(#[tokio::test(start_paused = true)]
            async fn $test() { super::$test(super::Kind::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() { super::$test(super::Kind::Postgres).await })*
        }
    };
}

conformance!(
    import_twice_adds_nothing,
    leases_in_import_order_and_ends_when_all_finished,
    a_failure_keeps_service_and_reason,
    every_contact_is_listed_once_with_its_state,
    a_deferred_contact_returns_at_its_time_with_its_progress,
    a_closing_breaker_wakes_its_deferred_contacts_early,
    a_reopened_breaker_postpones_its_deferred_contacts,
    too_many_deferrals_expire,
    busy_deferrals_never_expire,
    an_expired_lease_returns_the_contact,
    keep_alive_holds_the_lease_while_the_call_runs,
    a_second_terminal_state_is_refused,
    completions_at_once_are_each_judged_by_their_own_lease,
    concurrent_leasers_never_get_the_same_contact,
    failed_and_expired_contacts_requeue,
    progress_and_held_contacts_come_back_after_release,
    contacts_outlive_the_store,
    a_batch_is_leased_ahead_in_order_renewed_and_released,
    a_batch_leased_ahead_in_the_background_is_given_back_at_shutdown,
    workers_finding_none_left_share_one_lease,
    a_contact_the_same_agent_leased_again_refuses_the_earlier_lease,
);
