//! `orders<-inventory` and `orders<-payments` set-based: a batch of replies applied through
//! `handle_batch` has exactly the effects of its events applied one by one through `handle`,
//! on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

mod support;

use orders_api::{OrderStatus, Reason};
use serde_json::json;
use shared_kernel::messaging::Envelope;
use shared_kernel::storage::testing::Rng;
use support::{
    Db, Pair, Source, State, authorized, declined, product, stock_failed, stock_reserved,
};
use uuid::Uuid;

/// An order as written before the replies: its status and reason.
type Order = (Uuid, OrderStatus, Option<Reason>);

/// The orders of one round, and its batches in the order the subscriptions apply them.
struct Scenario {
    orders: Vec<Order>,
    batches: Vec<(Source, Vec<Envelope>)>,
}

/// Nineteen order ids, sixteen of them written (most `PENDING`, some cancelled or timed out
/// before any reply) and three unknown; three products; then batches of one to sixteen events of one
/// source at a time: stock reserved or failed and product updates from inventory, payments
/// authorized or declined — so that replies come twice (duplicates), after their order
/// settled (late), and for unknown orders.
fn scenario(rng: &mut Rng, seqs: &mut [i64; 2], products: &[Uuid]) -> Scenario {
    let ids: Vec<Uuid> = (0..19).map(|_| rng.uuid()).collect();
    let orders: Vec<Order> = ids[..16]
        .iter()
        .map(|id| match rng.below(10) {
            0 => (*id, OrderStatus::Cancelled, Some(Reason::Cancelled)),
            1 => (*id, OrderStatus::Rejected, Some(Reason::Timeout)),
            _ => (*id, OrderStatus::Pending, None),
        })
        .collect();
    let mut batches = Vec::new();
    for _ in 0..6 {
        let source = if rng.below(2) == 0 {
            Source::Inventory
        } else {
            Source::Payments
        };
        let size = 1 + rng.below(16);
        let events = (0..size)
            .map(|_| {
                let order = ids[rng.index(ids.len())];
                let pick = rng.below(100);
                match source {
                    Source::Inventory => {
                        seqs[0] += 1;
                        match pick {
                            0..55 => stock_reserved(order, seqs[0]),
                            55..85 => stock_failed(order, seqs[0]),
                            _ => {
                                let id = products[rng.index(products.len())];
                                let price = i64::try_from(rng.below(1_000)).unwrap();
                                product(id, &format!("name {}", seqs[0]), price, seqs[0])
                            }
                        }
                    }
                    Source::Payments => {
                        seqs[1] += 1;
                        if pick < 65 {
                            authorized(order, seqs[1])
                        } else {
                            declined(order, seqs[1])
                        }
                    }
                }
            })
            .collect();
        batches.push((source, events));
    }
    Scenario { orders, batches }
}

fn details(state: &State) -> Vec<&str> {
    state.steps.iter().filter_map(|s| s.3.as_deref()).collect()
}

shared_kernel::both_backends! {
    // The main proof: random sequences of replies, applied one by one on one database and in
    // random batches on the other, end in identical state — orders, sagas, steps, product
    // replicas and the published events with their payloads, order and causes.
    async fn batches_have_the_effects_of_replies_one_by_one(pair: Pair) {
        let mut rng = Rng(0x5EED_0000_0000_5A6A);
        let products: Vec<Uuid> = (0..3).map(|_| rng.uuid()).collect();
        let mut seqs = [0, 0];
        for round in 0..12 {
            let scenario = scenario(&mut rng, &mut seqs, &products);
            for (id, status, reason) in &scenario.orders {
                pair.each.order(*id, *status, *reason).await;
                pair.batched.order(*id, *status, *reason).await;
            }
            for (source, events) in &scenario.batches {
                pair.each.apply_each(*source, events).await;
                pair.batched.apply_batch(*source, events).await;
            }
            let (each, batched) = (pair.each.state().await, pair.batched.state().await);
            assert_eq!(each, batched, "round {round}");
        }
        // The scenarios did exercise every outcome.
        let state = pair.each.state().await;
        let reasons: Vec<Option<&str>> = state.orders.iter().map(|o| o.2.as_deref()).collect();
        for reason in [None, Some("out_of_stock"), Some("payment_declined")] {
            let settled = state
                .orders
                .iter()
                .zip(&reasons)
                .any(|(o, r)| *r == reason && o.1 != "PENDING");
            assert!(settled, "no order settled with {reason:?}");
        }
        for kind in ["OrderConfirmed", "OrderRejected"] {
            let published = state.events.iter().any(|e| e.event_type == format!("orders.{kind}"));
            assert!(published, "no {kind}");
        }
        let details = details(&state);
        assert!(details.contains(&"duplicate reply ignored"));
        assert!(details.contains(&"late reply ignored: order is CONFIRMED"));
        assert!(details.contains(&"late reply ignored: order is CANCELLED"));
        assert_eq!(state.products.len(), 3);
    }

    // One batch of each source, spelled out: a reply after the settling one is late, a second
    // reply of a participant is a duplicate, a reply for an unknown order changes nothing, and
    // each published event is caused by the reply that settled its order.
    async fn a_batch_records_duplicates_late_replies_and_settlements_in_seq_order(db: Db) {
        let (o1, o2, o3, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for order in [o1, o2, o3] {
            db.order(order, OrderStatus::Pending, None).await;
        }
        db.apply_batch(Source::Inventory, &[
            stock_reserved(o1, 1),
            stock_failed(o2, 2),
            stock_reserved(o2, 3),
            stock_reserved(unknown, 4),
            stock_reserved(o3, 5),
            stock_failed(o3, 6),
        ])
        .await;
        let payments = [authorized(o1, 1), declined(o1, 2), authorized(o3, 3)];
        db.apply_batch(Source::Payments, &payments).await;

        let state = db.state().await;
        let status = |o: Uuid| {
            let order = state.orders.iter().find(|r| r.0 == o).unwrap();
            (order.1.as_str(), order.2.as_deref())
        };
        assert_eq!(status(o1), ("CONFIRMED", None));
        assert_eq!(status(o2), ("REJECTED", Some("out_of_stock")));
        assert_eq!(status(o3), ("CONFIRMED", None));
        let steps = |o: Uuid| -> Vec<(i32, &str, Option<&str>)> {
            state
                .steps
                .iter()
                .filter(|s| s.0 == o)
                .map(|s| (s.1, s.2.as_str(), s.3.as_deref()))
                .collect()
        };
        assert_eq!(steps(o1), [
            (1, "placed", None),
            (2, "stock_reserved", Some("2 units in 1 allocations")),
            (3, "payment_authorized", Some(format!("payment {}", Uuid::from_u64_pair(1, 1)).as_str())),
            (4, "confirmed", None),
            (5, "payment_declined", Some("late reply ignored: order is CONFIRMED")),
        ]);
        assert_eq!(steps(o2), [
            (1, "placed", None),
            (2, "stock_reservation_failed", Some(format!("product {} requested 3 available 1", Uuid::from_u128(1)).as_str())),
            (3, "rejected", Some("out_of_stock")),
            (4, "stock_reserved", Some("late reply ignored: order is REJECTED")),
        ]);
        assert_eq!(steps(o3)[2], (3, "stock_reservation_failed", Some("duplicate reply ignored")));
        assert!(steps(unknown).is_empty());
        let sagas: Vec<_> = state.sagas.iter().map(|s| (s.0, s.1.as_str(), s.2.as_str(), s.3, s.4)).collect();
        assert!(sagas.contains(&(o1, "succeeded", "succeeded", 5, true)));
        assert!(sagas.contains(&(o2, "failed", "waiting", 4, true)));
        assert!(sagas.contains(&(o3, "succeeded", "succeeded", 5, true)));

        // In seq order of their causes: o2 (inventory #2), then o1 and o3 (payments #1, #3).
        let published: Vec<(&str, &serde_json::Value)> =
            state.events.iter().map(|e| (e.event_type.as_str(), &e.payload)).collect();
        assert_eq!(published, [
            ("orders.OrderRejected", &json!({"order_id": o2, "reason": "out_of_stock"})),
            ("orders.OrderConfirmed", &json!({"order_id": o1})),
            ("orders.OrderConfirmed", &json!({"order_id": o3})),
        ]);
        for (event, cause) in state.events[1..].iter().zip([&payments[0], &payments[2]]) {
            assert_eq!(event.causation_id, Some(cause.id));
            assert_eq!(event.correlation_id, cause.correlation_id);
        }
    }
}
