//! Stock reservations driven by the orders module's events, on SQLite and on Postgres.
//!
//! Events are built here and applied with [`OrderEvents`] inside a module transaction,
//! as the subscription `inventory<-orders` would (without its inbox, so that the handler's own
//! idempotency is what is tested).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use inventory::{Inventory, OrderEvents};
use inventory_api::{
    InventoryApi, InventoryError, NewProduct, ProductId, ReservationLine, ReservationStatus,
    SetStock,
};
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, PlacedLine};
use orders_api::{OrderId, Reason};
use serde_json::{Value, json};
use shared_kernel::clock;
use shared_kernel::messaging::{Envelope, IntegrationEvent, outbox, run_handler};
use shared_kernel::storage::testing::{TestDatabase, postgres_url};
use shared_kernel::storage::{ModuleDb, StorageConfig};
use tempfile::TempDir;
use tower::ServiceExt as _;
use uuid::Uuid;

impl shared_kernel::storage::testing::OnBackend for Fixture {
    async fn on_backend(
        backend: shared_kernel::storage::testing::TestBackend,
        test: &'static str,
    ) -> Option<Self> {
        match backend {
            shared_kernel::storage::testing::TestBackend::Sqlite => Some(Fixture::sqlite().await),
            shared_kernel::storage::testing::TestBackend::Postgres => Fixture::postgres(test).await,
        }
    }
}

/// The inventory module on a fresh database.
struct Fixture {
    db: ModuleDb,
    inventory: Inventory,
    _dir: TempDir,
    /// Dropped last: drops the Postgres test database.
    _database: Option<TestDatabase>,
}

impl Fixture {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::sqlite(dir.path());
        Self::open(config, dir, None).await
    }

    async fn postgres(test: &str) -> Option<Self> {
        let database = TestDatabase::create(&postgres_url(test)?).await;
        let config = StorageConfig::postgres(database.url());
        let dir = tempfile::tempdir().unwrap();
        Some(Self::open(config, dir, Some(database)).await)
    }

    async fn open(config: StorageConfig, dir: TempDir, database: Option<TestDatabase>) -> Self {
        let db = ModuleDb::open(inventory::NAME, &inventory::MIGRATIONS, &config)
            .await
            .unwrap();
        Self {
            inventory: Inventory::new(db.clone()),
            db,
            _dir: dir,
            _database: database,
        }
    }

    async fn product(&self, sku: &str) -> ProductId {
        let product = NewProduct {
            sku: sku.into(),
            name: format!("Product {sku}"),
            price_cents: 100,
        };
        self.inventory
            .create_product(product, None)
            .await
            .unwrap()
            .id
    }

    async fn stock(&self, product: ProductId, warehouse: &str, on_hand: i64) {
        self.inventory
            .set_stock(product, warehouse.into(), SetStock { on_hand })
            .await
            .unwrap();
    }

    /// `(warehouse, on_hand, reserved)` of every warehouse, by name; checks the totals.
    async fn levels(&self, product: ProductId) -> Vec<(String, i64, i64)> {
        let availability = self.inventory.availability(product).await.unwrap();
        let levels: Vec<_> = availability
            .warehouses
            .iter()
            .map(|w| (w.warehouse.clone(), w.on_hand, w.reserved))
            .collect();
        for w in &availability.warehouses {
            assert!(w.reserved <= w.on_hand, "oversold: {w:?}");
            assert_eq!(w.available, w.on_hand - w.reserved);
        }
        let sum = |f: fn(&(String, i64, i64)) -> i64| levels.iter().map(f).sum::<i64>();
        assert_eq!(availability.on_hand, sum(|l| l.1));
        assert_eq!(availability.reserved, sum(|l| l.2));
        assert_eq!(
            availability.available,
            availability.on_hand - availability.reserved
        );
        levels
    }

    /// Applies one event in its own transaction, as one batch of the subscription would.
    async fn apply(&self, event: &Envelope) {
        apply(&self.db, event).await.unwrap();
    }

    /// The reservation events published so far, as `(type, payload)`.
    async fn published(&self) -> Vec<(String, Value)> {
        outbox::read_after(&self.db, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.aggregate_type == "reservation")
            .map(|e| (e.event_type, e.payload))
            .collect()
    }

    async fn status(&self, order: OrderId) -> Option<ReservationStatus> {
        let reservation = self.inventory.reservation(order.0).await.unwrap();
        reservation.map(|r| r.status)
    }
}

async fn apply(db: &ModuleDb, event: &Envelope) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    run_handler(&mut tx, "inventory<-orders", &OrderEvents, event).await?;
    tx.commit().await?;
    Ok(())
}

/// An orders event in its envelope, with a fresh id.
fn envelope<E: IntegrationEvent>(event: &E) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: "orders".into(),
        seq: 1,
        aggregate_type: E::AGGREGATE_TYPE.into(),
        aggregate_id: event.aggregate_id(),
        event_type: E::TYPE.into(),
        event_version: E::VERSION,
        occurred_at: clock::now(),
        correlation_id: None,
        causation_id: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(event).unwrap(),
    }
}

fn placed(order: OrderId, lines: &[(ProductId, i64)]) -> Envelope {
    envelope(&OrderPlaced {
        order_id: order,
        customer_id: Uuid::now_v7(),
        lines: lines
            .iter()
            .map(|&(product, quantity)| PlacedLine {
                product_id: product.0,
                quantity,
                unit_price_cents: 100,
            })
            .collect(),
        total_cents: lines.iter().map(|(_, q)| q * 100).sum(),
    })
}

fn confirmed(order: OrderId) -> Envelope {
    envelope(&OrderConfirmed { order_id: order })
}

fn rejected(order: OrderId) -> Envelope {
    envelope(&OrderRejected {
        order_id: order,
        reason: Reason::PaymentDeclined,
    })
}

fn cancelled(order: OrderId) -> Envelope {
    envelope(&OrderCancelled { order_id: order })
}

fn levels(expected: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    expected
        .iter()
        .map(|&(w, on_hand, reserved)| (w.to_owned(), on_hand, reserved))
        .collect()
}

fn reserved_event(order: OrderId, lines: &[(ProductId, &str, i64)]) -> (String, Value) {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(p, w, q)| json!({"product_id": p, "warehouse": w, "quantity": q}))
        .collect();
    (
        "inventory.StockReserved".into(),
        json!({"order_id": order, "lines": lines}),
    )
}

fn order_event(kind: &str, order: OrderId) -> (String, Value) {
    (format!("inventory.{kind}"), json!({"order_id": order}))
}

shared_kernel::both_backends! {
    async fn products_are_read_many_at_once_in_id_order_without_the_unknown(fx: Fixture) {
        let mut made = Vec::new();
        for sku in ["P-1", "P-2", "P-3"] {
            made.push(fx.inventory.get_product(fx.product(sku).await).await.unwrap());
        }
        let unknown = ProductId(Uuid::now_v7());
        let asked = [made[2].id, unknown, made[0].id, made[2].id];
        let found = fx.inventory.get_products(&asked).await.unwrap();
        let mut expected = vec![made[0].clone(), made[2].clone()];
        expected.sort_by_key(|p| p.id.0);
        assert_eq!(found, expected);
        assert_eq!(fx.inventory.get_products(&[]).await.unwrap(), []);
        assert_eq!(fx.inventory.get_products(&[unknown]).await.unwrap(), []);
    }

    async fn draws_from_the_warehouses_with_most_available_first(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "north", 2).await;
        fx.stock(p, "south", 5).await;
        fx.stock(p, "west", 4).await;

        // Fits in the fullest warehouse alone.
        let first = OrderId::generate();
        fx.apply(&placed(first, &[(p, 4)])).await;
        assert_eq!(
            fx.levels(p).await,
            levels(&[("north", 2, 0), ("south", 5, 4), ("west", 4, 0)])
        );

        // Now west (4) leads, then north (2), then south (1): the line spans all three.
        let second = OrderId::generate();
        fx.apply(&placed(second, &[(p, 7)])).await;
        assert_eq!(
            fx.levels(p).await,
            levels(&[("north", 2, 2), ("south", 5, 5), ("west", 4, 4)])
        );
        assert_eq!(
            fx.published().await,
            [
                reserved_event(first, &[(p, "south", 4)]),
                reserved_event(second, &[(p, "west", 4), (p, "north", 2), (p, "south", 1)]),
            ]
        );

        let reservation = fx.inventory.reservation(second.0).await.unwrap().unwrap();
        assert_eq!(reservation.order_id, second.0);
        assert_eq!(reservation.status, ReservationStatus::Reserved);
        let line = |w: &str, quantity| ReservationLine { product_id: p, warehouse: w.into(), quantity };
        assert_eq!(reservation.lines, [line("north", 2), line("south", 1), line("west", 4)]);
        assert!(fx.inventory.reservation(Uuid::now_v7()).await.unwrap().is_none());
    }

    async fn ties_go_to_the_warehouse_name_first_byte_wise(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "b", 3).await;
        fx.stock(p, "a", 3).await;
        // Byte-wise "Z" < "a"; a locale-aware collation on Postgres would put it last.
        fx.stock(p, "Z", 3).await;

        let order = OrderId::generate();
        fx.apply(&placed(order, &[(p, 3)])).await;
        let order2 = OrderId::generate();
        fx.apply(&placed(order2, &[(p, 4)])).await;
        assert_eq!(
            fx.published().await,
            [
                reserved_event(order, &[(p, "Z", 3)]),
                reserved_event(order2, &[(p, "a", 3), (p, "b", 1)]),
            ]
        );
        assert_eq!(
            fx.levels(p).await,
            levels(&[("Z", 3, 3), ("a", 3, 3), ("b", 3, 1)])
        );
    }

    async fn an_order_is_reserved_whole_or_not_at_all(fx: Fixture) {
        let p = fx.product("P-1").await;
        let q = fx.product("Q-1").await;
        fx.stock(p, "a", 5).await;
        fx.stock(q, "a", 1).await;
        fx.stock(q, "b", 2).await;

        let order = OrderId::generate();
        fx.apply(&placed(order, &[(p, 5), (q, 4)])).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 5, 0)]));
        assert_eq!(fx.levels(q).await, levels(&[("a", 1, 0), ("b", 2, 0)]));
        assert_eq!(
            fx.published().await,
            [(
                "inventory.StockReservationFailed".into(),
                json!({"order_id": order, "product_id": q, "requested": 4, "available": 3})
            )]
        );
        let reservation = fx.inventory.reservation(order.0).await.unwrap().unwrap();
        assert_eq!(reservation.status, ReservationStatus::Failed);
        assert!(reservation.lines.is_empty());

        // The failed order's outcome events find nothing to give back.
        fx.apply(&rejected(order)).await;
        fx.apply(&cancelled(order)).await;
        fx.apply(&confirmed(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 5, 0)]));
        assert_eq!(fx.published().await.len(), 1);
        assert_eq!(fx.status(order).await, Some(ReservationStatus::Failed));

        // The stock it could not take is still there for the next order.
        let next = OrderId::generate();
        fx.apply(&placed(next, &[(p, 5), (q, 3)])).await;
        assert_eq!(fx.status(next).await, Some(ReservationStatus::Reserved));
        assert_eq!(fx.levels(q).await, levels(&[("a", 1, 1), ("b", 2, 2)]));
    }

    async fn unknown_products_and_products_without_stock_fail(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 5).await;
        let bare = fx.product("BARE").await;
        let unknown = ProductId(Uuid::now_v7());

        let first = OrderId::generate();
        fx.apply(&placed(first, &[(p, 1), (unknown, 2)])).await;
        let second = OrderId::generate();
        fx.apply(&placed(second, &[(bare, 1)])).await;
        assert_eq!(
            fx.published().await,
            [
                (
                    "inventory.StockReservationFailed".into(),
                    json!({"order_id": first, "product_id": unknown, "requested": 2, "available": 0})
                ),
                (
                    "inventory.StockReservationFailed".into(),
                    json!({"order_id": second, "product_id": bare, "requested": 1, "available": 0})
                ),
            ]
        );
        assert_eq!(fx.levels(p).await, levels(&[("a", 5, 0)]));
    }

    async fn commit_takes_the_units_and_cancel_restocks_the_same_warehouses(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 4).await;
        fx.stock(p, "b", 3).await;
        let order = OrderId::generate();
        fx.apply(&placed(order, &[(p, 6)])).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 4, 4), ("b", 3, 2)]));

        fx.apply(&confirmed(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 0, 0), ("b", 1, 0)]));
        assert_eq!(fx.status(order).await, Some(ReservationStatus::Committed));

        fx.apply(&cancelled(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 4, 0), ("b", 3, 0)]));
        assert_eq!(fx.status(order).await, Some(ReservationStatus::Restocked));

        assert_eq!(
            fx.published().await,
            [
                reserved_event(order, &[(p, "a", 4), (p, "b", 2)]),
                order_event("StockCommitted", order),
                order_event("StockRestocked", order),
            ]
        );
    }

    async fn rejection_and_cancellation_release_held_units(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 10).await;
        let rejected_order = OrderId::generate();
        let cancelled_order = OrderId::generate();
        fx.apply(&placed(rejected_order, &[(p, 3)])).await;
        fx.apply(&placed(cancelled_order, &[(p, 4)])).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 7)]));

        fx.apply(&rejected(rejected_order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 4)]));
        fx.apply(&cancelled(cancelled_order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 0)]));
        assert_eq!(fx.status(rejected_order).await, Some(ReservationStatus::Released));
        assert_eq!(fx.status(cancelled_order).await, Some(ReservationStatus::Released));

        // Released is final: a late confirmation or cancellation moves nothing.
        fx.apply(&confirmed(rejected_order)).await;
        fx.apply(&cancelled(rejected_order)).await;
        fx.apply(&confirmed(cancelled_order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 0)]));
        assert_eq!(fx.status(rejected_order).await, Some(ReservationStatus::Released));
        assert_eq!(
            fx.published().await,
            [
                reserved_event(rejected_order, &[(p, "a", 3)]),
                reserved_event(cancelled_order, &[(p, "a", 4)]),
                order_event("StockReleased", rejected_order),
                order_event("StockReleased", cancelled_order),
            ]
        );
    }

    async fn duplicates_and_events_for_unknown_orders_change_nothing(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 10).await;
        let order = OrderId::generate();
        let place = placed(order, &[(p, 3)]);
        fx.apply(&place).await;
        // The same event again, and a second OrderPlaced (another event id, other lines).
        fx.apply(&place).await;
        fx.apply(&placed(order, &[(p, 5)])).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 3)]));

        let confirm = confirmed(order);
        fx.apply(&confirm).await;
        fx.apply(&confirm).await;
        fx.apply(&confirmed(order)).await;
        // Rejected after confirmation (out of order) does not release committed units.
        fx.apply(&rejected(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 7, 0)]));

        let cancel = cancelled(order);
        fx.apply(&cancel).await;
        fx.apply(&cancel).await;
        fx.apply(&cancelled(order)).await;
        fx.apply(&confirmed(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 0)]));

        // Orders inventory never saw: nothing happened, nothing to undo, no reservation left
        // behind.
        let never = OrderId::generate();
        fx.apply(&confirmed(never)).await;
        fx.apply(&rejected(never)).await;
        fx.apply(&cancelled(never)).await;
        assert_eq!(fx.status(never).await, None);
        assert_eq!(fx.levels(p).await, levels(&[("a", 10, 0)]));

        // Events of other types are ignored.
        let mut other = confirmed(order);
        other.event_type = "orders.OrderShipped".into();
        fx.apply(&other).await;

        assert_eq!(
            fx.published().await,
            [
                reserved_event(order, &[(p, "a", 3)]),
                order_event("StockCommitted", order),
                order_event("StockRestocked", order),
            ]
        );
    }

    async fn stock_cannot_be_set_below_what_is_reserved(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 8).await;
        fx.stock(p, "b", 2).await;
        let order = OrderId::generate();
        fx.apply(&placed(order, &[(p, 9)])).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 8, 8), ("b", 2, 1)]));

        let below = fx
            .inventory
            .set_stock(p, "a".into(), SetStock { on_hand: 7 })
            .await;
        assert!(
            matches!(
                &below,
                Err(InventoryError::BelowReserved { warehouse, requested: 7, reserved: 8 })
                    if warehouse == "a"
            ),
            "{below:?}"
        );
        let at = fx.inventory.set_stock(p, "b".into(), SetStock { on_hand: 1 }).await.unwrap();
        assert_eq!((at.on_hand, at.reserved, at.available), (1, 1, 0));
        fx.stock(p, "a", 12).await;

        let availability = fx.inventory.availability(p).await.unwrap();
        assert_eq!(
            (availability.on_hand, availability.reserved, availability.available),
            (13, 9, 4)
        );
        assert_eq!(fx.levels(p).await, levels(&[("a", 12, 8), ("b", 1, 1)]));

        // Committing takes exactly the reserved units out of what is on hand now.
        fx.apply(&confirmed(order)).await;
        assert_eq!(fx.levels(p).await, levels(&[("a", 4, 0), ("b", 0, 0)]));
    }

    async fn reservations_are_served_over_http(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 5).await;
        let order = OrderId::generate();
        fx.apply(&placed(order, &[(p, 2)])).await;

        let (router, _) = inventory::router(std::sync::Arc::new(fx.inventory.clone()))
            .split_for_parts();
        let get = |uri: String| {
            let router = router.clone();
            async move {
                let request = Request::get(uri).body(Body::empty()).unwrap();
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&body).unwrap())
            }
        };
        let (status, body) = get(format!("/reservations/{order}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["order_id"], json!(order));
        assert_eq!(body["status"], "reserved");
        assert_eq!(
            body["lines"],
            json!([{"product_id": p, "warehouse": "a", "quantity": 2}])
        );
        assert!(body["created_at"].is_string() && body["updated_at"].is_string());

        let (status, _) = get(format!("/reservations/{}", Uuid::now_v7())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get("/reservations/not-a-uuid".into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["status"], 404);
    }

    async fn concurrent_twins_of_one_event_reserve_once(fx: Fixture) {
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 100).await;
        let order = OrderId::generate();
        // Redeliveries of one OrderPlaced under different event ids, and of its confirmation,
        // all at once.
        let placing = (0..8).map(|_| {
            let db = fx.db.clone();
            tokio::spawn(async move { apply(&db, &placed(order, &[(p, 3)])).await })
        });
        for result in futures::future::join_all(placing).await {
            result.unwrap().unwrap();
        }
        assert_eq!(fx.levels(p).await, levels(&[("a", 100, 3)]));
        let confirming = (0..8).map(|_| {
            let db = fx.db.clone();
            tokio::spawn(async move { apply(&db, &confirmed(order)).await })
        });
        for result in futures::future::join_all(confirming).await {
            result.unwrap().unwrap();
        }
        assert_eq!(fx.levels(p).await, levels(&[("a", 97, 0)]));
        assert_eq!(
            fx.published().await,
            [
                reserved_event(order, &[(p, "a", 3)]),
                order_event("StockCommitted", order),
            ]
        );
    }

    async fn concurrent_orders_and_stock_changes_never_oversell(fx: Fixture) {
        const ORDERS: usize = 60;
        let p = fx.product("P-1").await;
        fx.stock(p, "a", 12).await;
        fx.stock(p, "b", 9).await;
        fx.stock(p, "c", 4).await;

        // Orders of one unit each, applied from concurrent transactions, while stock levels
        // are lowered concurrently (each PUT either wins or is refused below what is reserved).
        let orders: Vec<OrderId> = (0..ORDERS).map(|_| OrderId::generate()).collect();
        let reservations = orders.iter().map(|&order| {
            let db = fx.db.clone();
            tokio::spawn(async move { apply(&db, &placed(order, &[(p, 1)])).await })
        });
        // One task per warehouse, each lowering its warehouse step by step: stock only
        // shrinks, whatever the interleaving.
        let stock_changes = [("a", vec![10, 7, 5]), ("b", vec![6, 3]), ("c", vec![1])]
            .into_iter()
            .map(|(warehouse, steps)| {
                let inventory = fx.inventory.clone();
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    for on_hand in steps {
                        let set = inventory.set_stock(p, warehouse.into(), SetStock { on_hand });
                        results.push(set.await);
                    }
                    results
                })
            });
        let (reservations, stock_changes) = futures::future::join(
            futures::future::join_all(reservations),
            futures::future::join_all(stock_changes),
        )
        .await;
        for result in reservations {
            result.unwrap().unwrap();
        }
        for result in stock_changes.into_iter().flat_map(Result::unwrap) {
            match result {
                Ok(_) | Err(InventoryError::BelowReserved { .. }) => {}
                Err(e) => panic!("set_stock failed: {e:?}"),
            }
        }

        // Reserved never exceeds on hand (checked per warehouse by `levels`)…
        let levels = fx.levels(p).await;
        let on_hand: i64 = levels.iter().map(|l| l.1).sum();
        let reserved: i64 = levels.iter().map(|l| l.2).sum();
        // …and nothing was refused while stock was there: stock only shrank, so once an order
        // failed nothing was left, and every unit reserved belongs to one reserved order.
        let demand = i64::try_from(ORDERS).unwrap();
        assert_eq!(reserved, demand.min(on_hand), "{levels:?}");
        let mut held = 0;
        let mut failed = 0;
        for order in &orders {
            match fx.status(*order).await {
                Some(ReservationStatus::Reserved) => held += 1,
                Some(ReservationStatus::Failed) => failed += 1,
                other => panic!("order {order} has reservation {other:?}"),
            }
        }
        assert_eq!(held, reserved);
        assert_eq!(held + failed, demand);
        let published = fx.published().await;
        let count = |kind: &str| {
            i64::try_from(published.iter().filter(|(t, _)| t.ends_with(kind)).count()).unwrap()
        };
        assert_eq!((count(".StockReserved"), count(".StockReservationFailed")), (held, failed));

        // Settling concurrently gives every unit back exactly once.
        let settling = orders.iter().enumerate().map(|(i, &order)| {
            let db = fx.db.clone();
            tokio::spawn(async move {
                let event = if i % 2 == 0 { confirmed(order) } else { rejected(order) };
                apply(&db, &event).await
            })
        });
        for result in futures::future::join_all(settling).await {
            result.unwrap().unwrap();
        }
        let after = fx.levels(p).await;
        assert!(after.iter().all(|l| l.2 == 0), "{after:?}");
        let committed = orders
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .count();
        let mut taken = 0;
        for order in orders.iter().step_by(2) {
            if fx.status(*order).await == Some(ReservationStatus::Committed) {
                taken += 1;
            }
        }
        assert!(taken <= i64::try_from(committed).unwrap());
        assert_eq!(after.iter().map(|l| l.1).sum::<i64>(), on_hand - taken);
    }
}
