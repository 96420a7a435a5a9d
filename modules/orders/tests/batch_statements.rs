//! A batch of replies (`orders<-inventory`, `orders<-payments`) costs a number of statements
//! that does not grow with its events: 1 or 20 stock replies, 1 or 20 payment replies that
//! settle their orders, the same count. Its own test binary: the statement counter is a
//! global `tracing` layer on `sqlx::query` events (as the app's `--count-statements`), so
//! nothing else may run in the process while it counts.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use orders_api::OrderStatus;
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::{TestBackend, count_statements};
use support::{Db, Source, authorized, stock_reserved};
use uuid::Uuid;

/// The statements `apply` runs.
async fn statements(count: &AtomicUsize, apply: impl Future<Output = ()>) -> usize {
    let before = count.load(Ordering::SeqCst);
    apply.await;
    count.load(Ordering::SeqCst) - before
}

fn replies(orders: &[Uuid], reply: fn(Uuid, i64) -> Envelope) -> Vec<Envelope> {
    orders
        .iter()
        .zip(1..)
        .map(|(o, seq)| reply(*o, seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_the_same_statements_for_1_and_for_20_replies() {
    let count = count_statements();
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let Some(db) = Db::open(backend, "batch_statements").await else {
            continue;
        };
        let orders: Vec<Uuid> = (0..41).map(|_| Uuid::now_v7()).collect();
        for order in &orders {
            db.order(*order, OrderStatus::Pending, None).await;
        }
        let (batched, each) = orders.split_at(21);

        // Stock replies: a step and the saga each.
        let stock = |orders| replies(orders, stock_reserved);
        let one = statements(
            &count,
            db.apply_batch(Source::Inventory, &stock(&batched[..1])),
        )
        .await;
        let twenty = statements(
            &count,
            db.apply_batch(Source::Inventory, &stock(&batched[1..])),
        )
        .await;
        assert_eq!(one, twenty, "{backend:?}: stock replies");
        let before = statements(&count, db.apply_one_by_one(Source::Inventory, &stock(each))).await;
        eprintln!(
            "{backend:?}: 20 stock replies: {one} statements in a batch, {before} one by one"
        );

        // Payment replies settle: the orders too, and their events.
        let paid = |orders| replies(orders, authorized);
        let one = statements(
            &count,
            db.apply_batch(Source::Payments, &paid(&batched[..1])),
        )
        .await;
        let twenty = statements(
            &count,
            db.apply_batch(Source::Payments, &paid(&batched[1..])),
        )
        .await;
        assert_eq!(one, twenty, "{backend:?}: settling replies");
        let before = statements(&count, db.apply_one_by_one(Source::Payments, &paid(each))).await;
        eprintln!(
            "{backend:?}: 20 settling replies: {one} statements in a batch, {before} one by one"
        );

        let confirmed = db
            .state()
            .await
            .orders
            .iter()
            .filter(|o| o.1 == "CONFIRMED")
            .count();
        assert_eq!(confirmed, 41, "{backend:?}");
    }
}
