//! A batch of `payments<-orders` costs a number of statements that does not grow with its
//! events: 1 or 20 authorizations, 1 or 20 captures, the same count. Its own test binary: the
//! statement counter is a global `tracing` layer on `sqlx::query` events (as the app's
//! `--count-statements`), so nothing else may run in the process while it counts.

#![allow(clippy::unwrap_used)]

#[path = "it/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use orders_api::OrderId;
use orders_api::events::OrderConfirmed;
use shared_kernel::messaging::{Envelope, run_handler, run_handler_batch};
use shared_kernel::storage::testing::{OnBackend, TestBackend, count_statements};
use support::{Env, Kind, envelope, placed};
use uuid::Uuid;

/// Statements of one transaction applying `events` as one batch.
async fn batched(count: &AtomicUsize, env: &Env, events: &[Envelope]) -> usize {
    let handler = env.payments.order_events();
    let events: Vec<&Envelope> = events.iter().collect();
    let before = count.load(Ordering::SeqCst);
    let mut tx = env.db.begin().await.unwrap();
    run_handler_batch(&mut tx, "payments<-orders", &handler, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    count.load(Ordering::SeqCst) - before
}

/// Statements of one transaction applying `events` one by one.
async fn each(count: &AtomicUsize, env: &Env, events: &[Envelope]) -> usize {
    let handler = env.payments.order_events();
    let before = count.load(Ordering::SeqCst);
    let mut tx = env.db.begin().await.unwrap();
    for event in events {
        run_handler(&mut tx, "payments<-orders", &handler, event)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    count.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_the_same_statements_for_1_and_for_20_orders() {
    let count = count_statements();
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let Some(kind) = Kind::on_backend(backend, "payments_batch_statements").await else {
            continue;
        };
        let env = Env::new(kind, "payments_batch_statements").await;
        let orders: Vec<Uuid> = (0..41).map(|_| Uuid::now_v7()).collect();
        let place = |orders: &[Uuid]| -> Vec<Envelope> {
            orders
                .iter()
                .map(|o| envelope(&placed(*o, Uuid::now_v7(), 100)))
                .collect()
        };
        let confirm = |orders: &[Uuid]| -> Vec<Envelope> {
            orders
                .iter()
                .map(|o| {
                    envelope(&OrderConfirmed {
                        order_id: OrderId(*o),
                    })
                })
                .collect()
        };

        let one = batched(&count, &env, &place(&orders[..1])).await;
        let twenty = batched(&count, &env, &place(&orders[1..21])).await;
        assert_eq!(one, twenty, "{backend:?}: authorizations");
        if matches!(backend, TestBackend::Sqlite) {
            // The reads (views, snapshots, events), the events, the views, the outbox: the
            // single writer needs no savepoint around them.
            assert_eq!(twenty, 6, "SQLite: authorizations");
        }
        let one_by_one = each(&count, &env, &place(&orders[21..])).await;
        eprintln!(
            "{backend:?}: 20 authorizations: {twenty} statements as a batch, {one_by_one} one by one"
        );
        assert!(
            one_by_one > 20 * 5,
            "{backend:?}: one by one pays per event"
        );

        let one = batched(&count, &env, &confirm(&orders[..1])).await;
        let twenty = batched(&count, &env, &confirm(&orders[1..21])).await;
        assert_eq!(one, twenty, "{backend:?}: captures");
        let one_by_one = each(&count, &env, &confirm(&orders[21..])).await;
        eprintln!(
            "{backend:?}: 20 captures: {twenty} statements as a batch, {one_by_one} one by one"
        );
    }
}
