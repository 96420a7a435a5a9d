//! A property of the messaging runtime: whatever the interleaving of appends, handler failures,
//! crashes (workers aborted mid-batch) and restarts, every event's effect is applied exactly
//! once, in per-aggregate order, and no event is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use shared_kernel::messaging::{
    Bus, DeliveryConfig, Envelope, EventContext, Handler, IntegrationEvent, Subscription, outbox,
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
        let mut failures = self.failures.lock().unwrap();
        if let Some(left) = failures.get_mut(&event.id).filter(|left| **left > 0) {
            *left -= 1;
            anyhow::bail!("injected failure");
        }
        Ok(())
    }
}

async fn run_case(ops: Vec<Op>, config: StorageConfig) -> Result<(), TestCaseError> {
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
                    let (id, _) = outbox::append(&mut tx, &step, &EventContext::default())
                        .await
                        .unwrap();
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
        runtime().block_on(run_case(ops, StorageConfig::sqlite(dir.path())))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn postgres_applies_every_event_once_in_aggregate_order(ops in proptest::collection::vec(op(), 1..25)) {
        let Some(url) = postgres_url("postgres_applies_every_event_once_in_aggregate_order") else {
            return Ok(());
        };
        let runtime = runtime();
        let database = runtime.block_on(TestDatabase::create(&url));
        runtime.block_on(run_case(ops, StorageConfig::postgres(database.url())))?;
        drop(database);
    }
}
