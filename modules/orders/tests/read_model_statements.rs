//! A batch of the read-model projector costs a number of statements that does not grow with
//! its events: 1 or 20 customer events, placements, status changes or payment events, the same
//! count. Its own test binary: the statement counter is a global `tracing` layer on
//! `sqlx::query` events (as the app's `--count-statements`), so nothing else may run in the
//! process while it counts.

#![allow(clippy::unwrap_used)]

mod projector;

use std::sync::atomic::{AtomicUsize, Ordering};

use projector::{Store, at, confirmed, payment, placed, registered, updated};
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::{TestBackend, count_statements};
use time::OffsetDateTime;
use uuid::Uuid;

/// Makes the `i`-th event of a kind, with its seq and time.
type Make<'a> = &'a dyn Fn(usize, i64, OffsetDateTime) -> Envelope;

/// The statements of applying `batch` set-based, and one by one (as before `handle_batch`,
/// on a copy of the store in the same state).
async fn statements(
    count: &AtomicUsize,
    stores: &(Store, Store),
    batch: &[Envelope],
) -> (usize, usize) {
    let before = count.load(Ordering::SeqCst);
    stores.0.apply_batch(batch).await;
    let set_based = count.load(Ordering::SeqCst) - before;
    let before = count.load(Ordering::SeqCst);
    stores.1.apply_batch_one_by_one(batch).await;
    (set_based, count.load(Ordering::SeqCst) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_the_same_statements_for_1_and_for_20_events() {
    let count = count_statements();
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let (Some(a), Some(b)) = (
            Store::open(backend, "read_model_statements").await,
            Store::open(backend, "read_model_statements").await,
        ) else {
            continue;
        };
        let stores = (a, b);
        let customers: Vec<Uuid> = (0..21).map(|_| Uuid::now_v7()).collect();
        let orders: Vec<Uuid> = (0..21).map(|_| Uuid::now_v7()).collect();
        let mut seq = [0_i64; 3];
        let mut next = |source: usize| {
            seq[source] += 1;
            (seq[source], at(seq.iter().sum()))
        };

        let kinds: [(&str, Make<'_>, usize); 5] = [
            (
                "registrations",
                &|i, s, t| registered(customers[i], "Ann", s, t),
                0,
            ),
            (
                "placements",
                &|i, s, t| placed(orders[i], customers[i], &[1, 2], s, t),
                1,
            ),
            ("status changes", &|i, s, t| confirmed(orders[i], s, t), 1),
            ("payment events", &|i, s, t| payment(orders[i], 2, s, t), 2),
            // Renames of customers with an order each: their summaries follow.
            ("renames", &|i, s, t| updated(customers[i], "Bea", s, t), 0),
        ];
        for (kind, event, source) in kinds {
            let mut events = |range: std::ops::Range<usize>| -> Vec<Envelope> {
                range
                    .map(|i| {
                        let (s, t) = next(source);
                        event(i, s, t)
                    })
                    .collect()
            };
            let one = events(0..1);
            let twenty = events(1..21);
            let (one, one_by_one) = statements(&count, &stores, &one).await;
            let (twenty, twenty_one_by_one) = statements(&count, &stores, &twenty).await;
            assert_eq!(one, twenty, "{backend:?}: {kind}");
            assert_eq!(one, one_by_one, "{backend:?}: one of the {kind}");
            assert!(twenty < twenty_one_by_one, "{backend:?}: {kind}");
            eprintln!(
                "{backend:?}: {kind}: {one} statements per batch of 1 or 20 \
                 (one by one: {one_by_one} and {twenty_one_by_one})"
            );
        }

        // An order's events mixed in one batch: placed, then confirmed.
        let mixed = |range: std::ops::Range<usize>, seq: &mut i64| -> Vec<Envelope> {
            let orders: Vec<Uuid> = range.map(|_| Uuid::now_v7()).collect();
            let mut events = Vec::new();
            for order in orders {
                *seq += 1;
                events.push(placed(order, customers[0], &[1], *seq, at(*seq)));
                *seq += 1;
                events.push(confirmed(order, *seq, at(*seq)));
            }
            events
        };
        let mut order_seq = seq[1];
        let (one, _) = statements(&count, &stores, &mixed(0..1, &mut order_seq)).await;
        let (ten, _) = statements(&count, &stores, &mixed(0..10, &mut order_seq)).await;
        assert_eq!(one, ten, "{backend:?}: placed and confirmed");
        eprintln!("{backend:?}: placed and confirmed: {one} statements per batch of 2 or 20");
        assert_eq!(stores.0.tables().await, stores.1.tables().await);
    }
}
