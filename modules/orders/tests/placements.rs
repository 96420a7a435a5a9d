//! Placement's set-based group write: a group of placed orders written at once has exactly
//! the rows and the events of the same orders written one by one with the statements
//! placement ran before (`placing::write_one_by_one`), on SQLite and on Postgres.

#![allow(clippy::unwrap_used)]

mod placing;
mod support;

use placing::{Rows, placements, write_group, write_one_by_one};
use shared_kernel::storage::testing::Rng;
use support::{Db, Pair};

shared_kernel::both_backends! {
    // Groups of 1, 2, 20 and 64 orders (the group commit's largest): the same orders, lines,
    // sagas, steps and events — payloads, aggregates, types and each order's own context — as
    // one by one, and the events in group order.
    async fn a_group_writes_what_its_orders_write_one_by_one(pair: Pair) {
        let mut rng = Rng(0x5EED_0000_0000_91AC);
        for size in [1, 2, 20, 64] {
            let group = placements(&mut rng, size);
            write_one_by_one(&pair.each.db, &group).await;
            write_group(&pair.batched.db, &group).await;
        }
        let each = Rows::read(&pair.each.db).await;
        let grouped = Rows::read(&pair.batched.db).await;
        assert_eq!(each, grouped);
        assert_eq!(grouped.orders.len(), 87);
        assert!(grouped.lines.len() > grouped.orders.len(), "some orders have several lines");
    }

    // Spelled out for one group, against the orders themselves: lines numbered from 0 in each
    // order, the saga waiting for both with its deadline and step 1 `placed` at the order's
    // creation, and one `OrderPlaced` per order in group order with that order's context.
    async fn a_group_writes_each_order_as_placed(db: Db) {
        let group = placements(&mut Rng(0x5EED_0000_0000_91AD), 5);
        write_group(&db.db, &group).await;
        let rows = Rows::read(&db.db).await;
        for p in &group {
            let id = p.order.id.0;
            let numbers: Vec<i32> = rows.lines.iter().filter(|l| l.0 == id).map(|l| l.1).collect();
            assert_eq!(numbers, (0..).take(p.order.items.len()).collect::<Vec<i32>>());
            let saga = rows.sagas.iter().find(|s| s.0 == id).unwrap();
            assert_eq!(
                (saga.1.as_str(), saga.2.as_str(), saga.3, saga.4, saga.5),
                ("waiting", "waiting", p.deadline_us, None, 1)
            );
            let steps: Vec<_> = rows.steps.iter().filter(|s| s.0 == id).collect();
            assert_eq!(steps.len(), 1);
            assert_eq!(
                (steps[0].1, steps[0].2.as_str(), steps[0].3.as_deref(), steps[0].4),
                (1, "placed", None, p.order.created_at)
            );
        }
        // Type, aggregate, cause and trace headers, then payloads: each order's, in group order.
        let events: Vec<_> = rows
            .events
            .iter()
            .map(|(e, _, _, headers)| {
                let causes = (e.correlation_id, e.causation_id, headers.clone());
                (e.event_type.as_str(), e.aggregate_id.clone(), causes)
            })
            .collect();
        let expected: Vec<_> = group
            .iter()
            .map(|p| {
                let c = &p.context;
                let causes = (c.correlation_id, c.causation_id, c.headers.clone());
                ("orders.OrderPlaced", p.order.id.0.to_string(), causes)
            })
            .collect();
        assert_eq!(events, expected);
        let payloads: Vec<_> = rows.events.iter().map(|(e, ..)| e.payload.clone()).collect();
        let expected: Vec<_> = group.iter().map(|p| placing::placed_payload(&p.order)).collect();
        assert_eq!(payloads, expected);
    }

    // A group whose write fails (one of its order ids was placed before) fails as a whole: the
    // error comes back and, its transaction rolled back, nothing of the group is left (the
    // kernel's group commit then writes each order alone).
    async fn a_failing_group_writes_nothing(db: Db) {
        let group = placements(&mut Rng(0x5EED_0000_0000_91AE), 3);
        write_group(&db.db, &group[..1]).await;
        let before = Rows::read(&db.db).await;
        let placed: Vec<_> = group.iter().map(placing::Placement::placed).collect();
        let mut tx = db.db.begin().await.unwrap();
        let written = orders::test_support::write_placements(&mut tx, &placed).await;
        assert!(written.is_err(), "the first order exists already");
        drop(tx);
        assert_eq!(Rows::read(&db.db).await, before);
    }
}
