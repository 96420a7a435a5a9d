//! `inventory<-orders` set-based: a batch applied through `handle_batch` has exactly the
//! effects of its events applied one by one through `handle`, on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

mod support;

use orders_api::OrderId;
use serde_json::json;
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::{OnBackend, Rng, TestBackend};
use support::{Db, State, cancelled, confirmed, placed, rejected};
use uuid::Uuid;

/// Two fresh databases: one applies events one by one, the other in batches.
struct Pair {
    each: Db,
    batched: Db,
}

impl OnBackend for Pair {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Some(Self {
            each: Db::open(backend, test).await?,
            batched: Db::open(backend, test).await?,
        })
    }
}

impl OnBackend for Db {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Db::open(backend, test).await
    }
}

/// A quantity below `max`.
fn quantity(rng: &mut Rng, max: u64) -> i64 {
    i64::try_from(rng.below(max)).unwrap()
}

/// A product and its units on hand by warehouse.
type Product = (Uuid, Vec<(&'static str, i64)>);

const WAREHOUSES: [&str; 3] = ["a", "b", "Z"];

/// Products with scarce stock in one to three warehouses, and a sequence of orders events
/// over a few orders: placements of one to three lines (products may repeat), confirmations,
/// rejections, cancellations (of held, committed, failed or unknown reservations), and
/// duplicates of earlier events under new ids.
fn scenario(rng: &mut Rng) -> (Vec<Product>, Vec<Envelope>) {
    let products: Vec<Product> = (0..4)
        .map(|_| {
            let id = rng.uuid();
            let warehouses = 1 + rng.below(3);
            let stock = WAREHOUSES
                .iter()
                .take(usize::try_from(warehouses).unwrap())
                .map(|w| (*w, quantity(rng, 7)))
                .collect();
            (id, stock)
        })
        .collect();
    let orders: Vec<OrderId> = (0..10).map(|_| OrderId(rng.uuid())).collect();
    let mut events: Vec<Envelope> = Vec::new();
    for seq in 1..=60 {
        let order = orders[usize::try_from(rng.below(10)).unwrap()];
        let event = match rng.below(100) {
            0..40 => {
                let lines: Vec<(Uuid, i64)> = (0..=rng.below(3))
                    .map(|_| {
                        let product = products[usize::try_from(rng.below(4)).unwrap()].0;
                        (product, 1 + quantity(rng, 4))
                    })
                    .collect();
                placed(order, &lines, seq)
            }
            40..55 => confirmed(order, seq),
            55..67 => rejected(order, seq),
            67..85 => cancelled(order, seq),
            _ if events.is_empty() => cancelled(order, seq),
            _ => {
                let earlier = &events[usize::try_from(rng.below(events.len() as u64)).unwrap()];
                Envelope {
                    id: Uuid::now_v7(),
                    seq,
                    ..earlier.clone()
                }
            }
        };
        events.push(event);
    }
    (products, events)
}

fn product_levels(state: &State, product: Uuid) -> Vec<(String, i64, i64)> {
    state
        .levels
        .iter()
        .filter(|l| l.0 == product)
        .map(|l| (l.1.clone(), l.2, l.3))
        .collect()
}

fn levels(expected: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    expected
        .iter()
        .map(|&(w, on_hand, reserved)| (w.to_owned(), on_hand, reserved))
        .collect()
}

fn types(state: &State) -> Vec<&str> {
    state.events.iter().map(|e| e.event_type.as_str()).collect()
}

shared_kernel::both_backends! {
    // The main proof: random sequences, applied one by one on one database and in random
    // batches on the other, end in identical state — stock, reservations, lines and the
    // published events with their payloads, order and causes.
    async fn batches_have_the_effects_of_events_one_by_one(pair: Pair) {
        let mut rng = Rng(0x5EED_0000_0000_0013);
        let mut batches = 0;
        for round in 0..12 {
            let (products, events) = scenario(&mut rng);
            for (id, stock) in &products {
                pair.each.product(*id, stock).await;
                pair.batched.product(*id, stock).await;
            }
            pair.each.apply_each(&events).await;
            let mut rest: &[Envelope] = &events;
            while !rest.is_empty() {
                let size = usize::try_from(1 + rng.below(16)).unwrap().min(rest.len());
                let (batch, after) = rest.split_at(size);
                pair.batched.apply_batch(batch).await;
                batches += 1;
                rest = after;
            }
            let (each, batched) = (pair.each.state().await, pair.batched.state().await);
            assert_eq!(each, batched, "round {round}");
        }
        // The scenarios did exercise every outcome.
        let state = pair.each.state().await;
        for kind in ["StockReserved", "StockReservationFailed", "StockCommitted", "StockReleased", "StockRestocked"] {
            assert!(
                types(&state).contains(&format!("inventory.{kind}").as_str()),
                "no {kind} in {batches} batches"
            );
        }
    }

    // Placements in one batch share the stock: a later order sees what earlier ones took
    // (no oversell within a batch), in seq order, and the units an earlier release or
    // cancellation frees are there for a later placement, not for an earlier one.
    async fn a_batch_never_oversells_and_keeps_seq_order(db: Db) {
        let p = Uuid::now_v7();
        db.product(p, &[("a", 3), ("b", 2)]).await;
        let (o1, o2, o3, o4, o5) = (
            OrderId::generate(),
            OrderId::generate(),
            OrderId::generate(),
            OrderId::generate(),
            OrderId::generate(),
        );
        db.apply_batch(&[
            placed(o1, &[(p, 3)], 1),
            placed(o2, &[(p, 3)], 2),
            placed(o3, &[(p, 2)], 3),
        ])
        .await;
        let state = db.state().await;
        assert_eq!(product_levels(&state, p), levels(&[("a", 3, 3), ("b", 2, 2)]));
        assert_eq!(
            state.events[1].payload,
            json!({"order_id": o2, "product_id": p, "requested": 3, "available": 2})
        );

        // o4 comes before o3's release and finds nothing; o5 comes after and gets its units.
        db.apply_batch(&[
            placed(o4, &[(p, 2)], 4),
            rejected(o3, 5),
            placed(o5, &[(p, 2)], 6),
        ])
        .await;
        let state = db.state().await;
        assert_eq!(product_levels(&state, p), levels(&[("a", 3, 3), ("b", 2, 2)]));
        assert_eq!(
            types(&state)[3..],
            ["inventory.StockReservationFailed", "inventory.StockReleased", "inventory.StockReserved"]
        );
    }

    // An order's own events in one batch: placed then confirmed ends committed; a
    // confirmation before the placement finds nothing; a cancellation of what was just
    // committed restocks it.
    async fn an_orders_own_events_in_one_batch_follow_each_other(db: Db) {
        let p = Uuid::now_v7();
        db.product(p, &[("a", 5)]).await;
        let (o1, o2, o3) = (OrderId::generate(), OrderId::generate(), OrderId::generate());
        db.apply_batch(&[
            placed(o1, &[(p, 2)], 1),
            confirmed(o1, 2),
            confirmed(o2, 3),
            placed(o2, &[(p, 1)], 4),
            placed(o3, &[(p, 2)], 5),
            confirmed(o3, 6),
            cancelled(o3, 7),
            placed(o3, &[(p, 5)], 8),
        ])
        .await;
        let state = db.state().await;
        let status = |o: OrderId| {
            state.reservations.iter().find(|r| r.0 == o.0).map(|r| r.1.as_str())
        };
        assert_eq!(status(o1), Some("committed"));
        assert_eq!(status(o2), Some("reserved"));
        assert_eq!(status(o3), Some("restocked"));
        // 5 - 2 committed (o1) = 3 on hand; o2 holds 1; o3 came and went.
        assert_eq!(product_levels(&state, p), levels(&[("a", 3, 1)]));
        assert_eq!(
            types(&state),
            [
                "inventory.StockReserved",
                "inventory.StockCommitted",
                "inventory.StockReserved",
                "inventory.StockReserved",
                "inventory.StockCommitted",
                "inventory.StockRestocked",
            ]
        );
    }
}
