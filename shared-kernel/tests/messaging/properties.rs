//! A property of the messaging runtime: whatever the interleaving of appends, handler failures,
//! crashes (workers aborted mid-batch) and restarts, every event's effect is applied exactly
//! once, in per-aggregate order, and no event is lost — with a handler applying events one by
//! one and with a set-based one (`Handler::handle_batch`), whose injected failures sometimes
//! name their event and sometimes do not (the batch is then isolated).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use shared_kernel::messaging::{
    Batch, BatchError, Bus, DeliveryConfig, Envelope, EventContext, Handler, IntegrationEvent,
    Subscription, outbox,
};
use shared_kernel::storage::testing::{TestDatabase, postgres_url};
use shared_kernel::storage::{StorageConfig, Tx};
use shared_kernel::{with_reader, with_tx};
use uuid::Uuid;

use crate::scratch;

/// The n-th event of aggregate `aggregate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    aggregate: u8,
    n: i64,
}

impl IntegrationEvent for Step {
    const TYPE: &'static str = "source.PropertyStep";
    const VERSION: i32 = 1;
    const AGGREGATE_TYPE: &'static str = "property";
    fn aggregate_id(&self) -> String {
        self.aggregate.to_string()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Append events of one aggregate in one transaction, each failing its first `failures`
    /// handler attempts.
    Append { aggregate: u8, failures: Vec<u32> },
    /// Abort every worker wherever it is, then start new ones.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, proptest::collection::vec(prop_oneof![6 => Just(0u32), 1 => 1u32..3], 1..4))
            .prop_map(|(aggregate, failures)| Op::Append { aggregate, failures }),
        1 => Just(Op::Crash),
    ]
}

/// Records each application in the consumer's database: the marker row's primary key is the
/// event id (a second application would fail the batch) and its name is the number of events
/// of the aggregate applied before it.
struct Ledger {
    /// Remaining injected failures per event id.
    failures: Arc<Mutex<HashMap<Uuid, u32>>>,
    /// Whether batches are applied set-based (one read and one insert per batch).
    set_based: bool,
}

impl Ledger {
    /// Takes one injected failure of `event` if it has any left.
    fn fails(&self, event: &Envelope) -> bool {
        let mut failures = self.failures.lock().unwrap();
        let left = failures.get_mut(&event.id).filter(|left| **left > 0);
        left.map(|left| *left -= 1).is_some()
    }

    /// The set-based application: the counts of every aggregate with one statement, the marker
    /// rows of the whole batch with another, then the injected failure of the first event
    /// that has one left — naming it when its `n` is even, naming none otherwise.
    async fn apply_set(&self, tx: &mut Tx, events: &[&Envelope]) -> Result<(), BatchError> {
        let counts: Vec<(String, i64)> = with_tx!(tx, |conn| {
            sqlx::query_as("SELECT email, COUNT(*) FROM member_replicas GROUP BY email")
                .fetch_all(conn)
                .await
        })?;
        let mut applied: HashMap<String, i64> = counts.into_iter().collect();
        let mut rows = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let Some(step) = event.decode::<Step>() else {
                continue;
            };
            let step = step.map_err(|e| BatchError::at(i, e))?;
            let email = format!("aggregate-{}", step.aggregate);
            let at = applied.entry(email.clone()).or_default();
            rows.push((event.id, at.to_string(), email, step.n));
            *at += 1;
        }
        if !rows.is_empty() {
            let sql = format!(
                "INSERT INTO member_replicas (member_id, name, email, source_seq, updated_at) \
                 VALUES {}",
                scratch::replica_rows(rows.len())
            );
            with_tx!(tx, |conn| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(shared_kernel::clock::now());
                for (id, at, email, n) in &rows {
                    query = query.bind(id).bind(at).bind(email).bind(n);
                }
                query.execute(conn).await.map(drop)
            })?;
        }
        // Fail after writing: the batch's rollback must take the writes back.
        for (i, event) in events.iter().enumerate() {
            if self.fails(event) {
                let error = anyhow::anyhow!("injected failure");
                let even = event
                    .decode::<Step>()
                    .and_then(Result::ok)
                    .is_some_and(|s| s.n % 2 == 0);
                return Err(if even {
                    BatchError::at(i, error)
                } else {
                    error.into()
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for Ledger {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(step) = event.decode::<Step>() else {
            return Ok(());
        };
        let step = step?;
        let email = format!("aggregate-{}", step.aggregate);
        let (applied,): (i64,) = with_tx!(tx, |conn| {
            sqlx::query_as("SELECT COUNT(*) FROM member_replicas WHERE email = $1")
                .bind(&email)
                .fetch_one(&mut *conn)
                .await
        })?;
        // Record the position at which the event was applied; the check at the end compares it
        // with the event's place in its aggregate.
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO member_replicas (member_id, name, email, source_seq, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(event.id)
            .bind(applied.to_string())
            .bind(&email)
            .bind(step.n)
            .bind(shared_kernel::clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
        // Fail after writing: the batch's rollback must take the write back.
        if self.fails(event) {
            anyhow::bail!("injected failure");
        }
        Ok(())
    }

    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        if self.set_based {
            self.apply_set(tx, batch.events()).await
        } else {
            batch.apply_each(self, tx).await
        }
    }
}

async fn run_case(
    ops: Vec<Op>,
    config: StorageConfig,
    set_based: bool,
) -> Result<(), TestCaseError> {
    let (source, consumer) = scratch::open(&config).await.unwrap();
    let failures = Arc::new(Mutex::new(HashMap::new()));
    let bus = Bus::new(DeliveryConfig {
        batch_size: 4,
        min_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(5),
        ..DeliveryConfig::default()
    });
    bus.add_module(source.clone());
    bus.add_module(consumer.clone());
    bus.subscribe(Subscription::named(
        "property",
        scratch::CONSUMER,
        scratch::SOURCE,
        Arc::new(Ledger {
            failures: failures.clone(),
            set_based,
        }),
    ));
    let mut workers = bus.start();
    let mut next = [0i64; 3];
    let mut appended = 0;
    for op in ops {
        match op {
            Op::Append {
                aggregate,
                failures: plan,
            } => {
                let mut tx = source.begin().await.unwrap();
                for fail in plan {
                    let step = Step {
                        aggregate,
                        n: next[usize::from(aggregate)],
                    };
                    next[usize::from(aggregate)] += 1;
                    let id = outbox::append(&mut tx, &step, &EventContext::default()).unwrap();
                    failures.lock().unwrap().insert(id, fail);
                    appended += 1;
                }
                tx.commit().await.unwrap();
            }
            Op::Crash => {
                // Dropping the join set aborts the workers mid-flight, like a killed process.
                drop(workers);
                workers = bus.start();
            }
        }
        tokio::task::yield_now().await;
    }
    prop_assert!(
        bus.settled(std::time::Duration::from_secs(60)).await,
        "not settled: {:?}",
        bus.status().await
    );
    workers.stop().await;

    let reader = consumer.reader().unwrap();
    let rows: Vec<(String, i64, String)> = with_reader!(reader, |pool| {
        sqlx::query_as(
            "SELECT email, source_seq, name FROM member_replicas ORDER BY email, source_seq",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap();
    prop_assert_eq!(rows.len(), appended, "every event applied exactly once");
    for aggregate in 0..3u8 {
        let rows: Vec<_> = rows
            .iter()
            .filter(|(email, _, _)| *email == format!("aggregate-{aggregate}"))
            .collect();
        let expected: Vec<i64> = (0..next[usize::from(aggregate)]).collect();
        // No event lost or doubled…
        prop_assert_eq!(
            rows.iter().map(|(_, n, _)| *n).collect::<Vec<_>>(),
            expected.clone()
        );
        // …and the n-th event was the n-th applied.
        let positions: Vec<i64> = rows.iter().map(|(_, _, at)| at.parse().unwrap()).collect();
        prop_assert_eq!(positions, expected);
    }
    source.close().await;
    consumer.close().await;
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_applies_every_event_once_in_aggregate_order(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(run_case(ops, StorageConfig::sqlite(dir.path()), false))?;
    }

    #[test]
    fn sqlite_set_based_applies_every_event_once_in_aggregate_order(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(run_case(ops, StorageConfig::sqlite(dir.path()), true))?;
    }
}

/// One case on a throwaway Postgres database (none when Postgres is not configured).
fn on_postgres(test: &str, ops: Vec<Op>, set_based: bool) -> Result<(), TestCaseError> {
    let Some(url) = postgres_url(test) else {
        return Ok(());
    };
    let runtime = runtime();
    let database = runtime.block_on(TestDatabase::create(&url));
    runtime.block_on(run_case(
        ops,
        StorageConfig::postgres(database.url()),
        set_based,
    ))?;
    drop(database);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn postgres_applies_every_event_once_in_aggregate_order(ops in proptest::collection::vec(op(), 1..25)) {
        on_postgres("postgres_applies_every_event_once_in_aggregate_order", ops, false)?;
    }

    #[test]
    fn postgres_set_based_applies_every_event_once_in_aggregate_order(ops in proptest::collection::vec(op(), 1..25)) {
        on_postgres("postgres_set_based_applies_every_event_once_in_aggregate_order", ops, true)?;
    }
}
