//! Store throughput: contacts imported, and leased then completed, per second,
//! for each backend (memory, SQLite in a temporary file, PostgreSQL when
//! `CALLGUARD_TEST_POSTGRES_URL` is set), with several workers at once.
//!
//! `cargo bench -p callguard-store --bench throughput [-- CONTACTS WORKERS]`

// A bench measures wall-clock time: std's Instant is what it needs.
#![allow(clippy::disallowed_types)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use callguard_store::{CallStore, NewContact, StoreLocation, StoreSettings};

struct Figures {
    import_per_sec: f64,
    lease_complete_per_sec: f64,
}

async fn measure(location: StoreLocation, contacts: usize, workers: usize) -> Figures {
    let settings = StoreSettings {
        table: "bench_throughput".into(),
        ..StoreSettings::default()
    };
    let store = Arc::new(CallStore::open(location, settings).await.expect("open"));
    let batch: Vec<NewContact> = (0..contacts)
        .map(|i| NewContact {
            id: format!("bench-{}-{i:07}", store.owner()),
            data: format!(r#"{{"id":"c-{i}","name":"Ada Lovelace","phone":"+1-555-0100"}}"#),
        })
        .collect();
    let started = Instant::now();
    let report = store.import(&batch).await.expect("import");
    let import = started.elapsed();
    assert_eq!(report.added, contacts);

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut done = 0_usize;
            while let Some(leased) = store.try_lease().await.expect("lease") {
                store.complete(&leased.lease).await.expect("complete");
                done += 1;
            }
            done
        });
    }
    let mut done = 0;
    while let Some(n) = tasks.join_next().await {
        done += n.expect("worker");
    }
    let processed = started.elapsed();
    assert_eq!(done, contacts);
    let per_sec = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    Figures {
        import_per_sec: per_sec(contacts, import),
        lease_complete_per_sec: per_sec(contacts, processed),
    }
}

/// Starts PostgreSQL's figures from an empty table.
async fn drop_table(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let task = tokio::spawn(connection);
    client
        .batch_execute("DROP TABLE IF EXISTS bench_throughput")
        .await
        .expect("drop");
    drop(client);
    let _ = task.await;
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let contacts = args.first().copied().unwrap_or(20_000);
    let workers = args.get(1).copied().unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("callguard-store-bench-{}", std::process::id()));
    let mut locations = vec![
        ("memory", StoreLocation::Memory),
        ("sqlite", StoreLocation::Sqlite(dir.join("bench.db"))),
    ];
    match std::env::var("CALLGUARD_TEST_POSTGRES_URL") {
        Ok(url) => {
            runtime.block_on(drop_table(&url));
            locations.push(("postgres", StoreLocation::parse(&url).expect("url")));
        }
        Err(_) => eprintln!("postgres: skipped (CALLGUARD_TEST_POSTGRES_URL is not set)"),
    }
    println!("{contacts} contacts, {workers} workers");
    println!(
        "{:<10} {:>14} {:>24}",
        "backend", "import/s", "lease+complete/s"
    );
    for (name, location) in locations {
        let figures = runtime.block_on(measure(location, contacts, workers));
        println!(
            "{name:<10} {:>14.0} {:>24.0}",
            figures.import_per_sec, figures.lease_complete_per_sec
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
