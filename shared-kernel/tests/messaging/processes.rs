//! Several processes on one Postgres database (the multi-instance case, Postgres only: on
//! SQLite one process owns the files).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shared_kernel::storage::StorageConfig;
use shared_kernel::storage::testing::{OnBackend, TestBackend};
use shared_kernel::with_reader;

use crate::failures::Marker;
use crate::fixture::Scratch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_handle_every_event_exactly_once() {
    let Some(mut first) = Scratch::on_backend(TestBackend::Postgres, "two_processes").await else {
        return;
    };
    // A second "process" on the same database: its own pools, bus and workers.
    let url = first.database.as_ref().unwrap().url().to_owned();
    let mut second = Scratch::open(
        &StorageConfig::postgres(url),
        tempfile::tempdir().unwrap(),
        None,
    )
    .await;

    let calls = Arc::new(AtomicUsize::new(0));
    for scratch in [&mut first, &mut second] {
        let handler = Marker {
            tag: "counted",
            calls: calls.clone(),
            fails_once: false,
        };
        scratch
            .subscribe("consumer<-source:count", Arc::new(handler))
            .await;
    }
    let registrations = (0..40).map(|i| {
        let scratch = if i % 2 == 0 { &first } else { &second };
        async move {
            scratch
                .register(&format!("C{i}"), &format!("c{i}@example.com"))
                .await
        }
    });
    futures::future::join_all(registrations).await;
    first.settled().await;
    second.settled().await;

    assert_eq!(
        calls.load(Ordering::SeqCst),
        40,
        "each event handled exactly once"
    );
    let (count,): (i64,) = with_reader!(first.consumer.reader().unwrap(), |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM member_replicas WHERE email = 'counted'")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    assert_eq!(count, 40);
    assert_eq!(first.tallies().await, (1..=40).collect::<Vec<i64>>());
    assert_eq!(
        first.replicas().await.len(),
        80,
        "40 replicas and 40 markers"
    );
    second.stop_delivery().await;
}
