//! A batch of `inventory<-orders` costs a number of statements that does not grow with its
//! events: 1 or 20 placements, 1 or 20 settlements, the same count. Its own test binary: the
//! statement counter is a global `tracing` layer on `sqlx::query` events (as the app's
//! `--count-statements`), so nothing else may run in the process while it counts.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use orders_api::OrderId;
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::{TestBackend, count_statements};
use support::{Db, confirmed, placed};
use uuid::Uuid;

async fn statements(count: &AtomicUsize, db: &Db, batch: &[Envelope]) -> usize {
    let before = count.load(Ordering::SeqCst);
    db.apply_batch(batch).await;
    count.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_the_same_statements_for_1_and_for_20_orders() {
    let count = count_statements();
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let Some(db) = Db::open(backend, "batch_statements").await else {
            continue;
        };
        let (p, q) = (Uuid::now_v7(), Uuid::now_v7());
        db.product(p, &[("a", 100), ("b", 100)]).await;
        db.product(q, &[("a", 100)]).await;
        let orders: Vec<OrderId> = (0..21).map(|_| OrderId::generate()).collect();
        let place = |orders: &[OrderId]| -> Vec<Envelope> {
            orders
                .iter()
                .zip(1..)
                .map(|(o, seq)| placed(*o, &[(p, 3), (q, 2)], seq))
                .collect()
        };
        let confirm = |orders: &[OrderId]| -> Vec<Envelope> {
            orders
                .iter()
                .zip(1..)
                .map(|(o, seq)| confirmed(*o, seq))
                .collect()
        };

        let one = statements(&count, &db, &place(&orders[..1])).await;
        let twenty = statements(&count, &db, &place(&orders[1..])).await;
        assert_eq!(one, twenty, "{backend:?}: placements");
        let one = statements(&count, &db, &confirm(&orders[..1])).await;
        let twenty = statements(&count, &db, &confirm(&orders[1..])).await;
        assert_eq!(one, twenty, "{backend:?}: confirmations");
        eprintln!("{backend:?}: {one} statements per batch of confirmations");
    }
}
