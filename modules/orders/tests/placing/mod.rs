//! What the placement tests share: placed orders with fixed ids, times and contexts (so that
//! two databases can be given the same ones), their set-based group write, the reference it
//! must match — each order written alone with the statements placement ran before the write
//! was set-based — and every row both write.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use orders::test_support::{Placed, write_placements};
use orders_api::events::OrderPlaced;
use orders_api::{Order, OrderId, OrderLine, OrderStatus};
use serde_json::json;
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::testing::{PublishedEvent, Rng};
use shared_kernel::storage::{ModuleDb, Tx};
use shared_kernel::with_tx;
use time::OffsetDateTime;
use uuid::Uuid;

/// An order to place, with its saga's deadline and its request's context.
#[derive(Debug, Clone)]
pub struct Placement {
    pub order: Order,
    pub deadline_us: i64,
    pub context: EventContext,
}

impl Placement {
    pub fn placed(&self) -> Placed {
        Placed::new(self.order.clone(), self.deadline_us, self.context.clone())
    }
}

/// `count` pending orders of 1 to 3 lines, each created a second after the one before and
/// placed by a request of its own: its correlation id, cause and trace header (the first has
/// an empty context, as outside any request).
pub fn placements(rng: &mut Rng, count: usize) -> Vec<Placement> {
    (0..count)
        .map(|i| {
            let lines = 1 + rng.index(3);
            let items: Vec<OrderLine> = (0..lines)
                .map(|_| {
                    let unit_price_cents = i64::try_from(rng.below(10_000)).unwrap();
                    let quantity = 1 + i64::try_from(rng.below(5)).unwrap();
                    let product_id = rng.uuid();
                    OrderLine {
                        product_id,
                        sku: format!("SKU-{product_id}"),
                        name: format!("product {}", rng.below(1_000)),
                        unit_price_cents,
                        quantity,
                        line_total_cents: unit_price_cents * quantity,
                    }
                })
                .collect();
            let created_at =
                OffsetDateTime::from_unix_timestamp(1_700_000_000 + i64::try_from(i).unwrap())
                    .unwrap();
            let context = if i == 0 {
                EventContext::default()
            } else {
                EventContext {
                    correlation_id: Some(rng.uuid()),
                    causation_id: Some(rng.uuid()),
                    headers: BTreeMap::from([(
                        "traceparent".to_owned(),
                        format!("00-{:032x}-{:016x}-01", rng.below(u64::MAX), i + 1),
                    )]),
                }
            };
            Placement {
                order: Order {
                    id: OrderId(rng.uuid()),
                    customer_id: rng.uuid(),
                    status: OrderStatus::Pending,
                    reason: None,
                    total_cents: items.iter().map(|l| l.line_total_cents).sum(),
                    items,
                    created_at,
                    updated_at: created_at,
                },
                deadline_us: 1_700_000_030_000_000 + i64::try_from(i).unwrap(),
                context,
            }
        })
        .collect()
}

/// A context that is none of the placements': the writes run inside it, so an event that took
/// the task's current context instead of its order's would show.
fn decoy() -> EventContext {
    EventContext {
        correlation_id: Some(Uuid::from_u128(0xDEC0)),
        causation_id: Some(Uuid::from_u128(0xDEC1)),
        headers: BTreeMap::from([("decoy".to_owned(), "yes".to_owned())]),
    }
}

/// Writes `placements` as one group, set-based, in one transaction.
pub async fn write_group(db: &ModuleDb, placements: &[Placement]) {
    let group: Vec<Placed> = placements.iter().map(Placement::placed).collect();
    decoy()
        .scope(async {
            let mut tx = db.begin().await.unwrap();
            write_placements(&mut tx, &group).await.unwrap();
            tx.commit().await.unwrap();
        })
        .await;
}

/// Writes `placements` one by one, in one transaction, with the statements placement ran for
/// each order before its group write was set-based.
pub async fn write_one_by_one(db: &ModuleDb, placements: &[Placement]) {
    decoy()
        .scope(async {
            let mut tx = db.begin().await.unwrap();
            for placement in placements {
                write_alone(&mut tx, placement).await.unwrap();
            }
            tx.commit().await.unwrap();
        })
        .await;
}

/// The order, each of its lines, its saga, its first step and its event: a statement each.
async fn write_alone(tx: &mut Tx, placement: &Placement) -> Result<(), sqlx::Error> {
    let order = &placement.order;
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, status, reason, total_cents, created_at, updated_at) \
             VALUES ($1, $2, $3, NULL, $4, $5, $5)",
        )
        .bind(order.id.0)
        .bind(order.customer_id)
        .bind(order.status.as_str())
        .bind(order.total_cents)
        .bind(order.created_at)
        .execute(&mut *conn)
        .await?;
        for (n, line) in (0_i32..).zip(&order.items) {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, \
                   unit_price_cents, quantity, line_total_cents) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(order.id.0)
            .bind(n)
            .bind(line.product_id)
            .bind(&line.sku)
            .bind(&line.name)
            .bind(line.unit_price_cents)
            .bind(line.quantity)
            .bind(line.line_total_cents)
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(
            "INSERT INTO sagas (order_id, stock, payment, deadline_us, settled_at, steps) \
             VALUES ($1, 'waiting', 'waiting', $2, NULL, 1)",
        )
        .bind(order.id.0)
        .bind(placement.deadline_us)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO saga_steps (order_id, n, step, detail, at) \
             VALUES ($1, 1, 'placed', NULL, $2)",
        )
        .bind(order.id.0)
        .bind(order.created_at)
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    let event: OrderPlaced = serde_json::from_value(placed_payload(order)).unwrap();
    outbox::append(tx, &event, &placement.context)?;
    Ok(())
}

/// The payload of `order`'s `OrderPlaced`, as the event's contract spells it.
pub fn placed_payload(order: &Order) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = order
        .items
        .iter()
        .map(|line| {
            json!({
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
            })
        })
        .collect();
    json!({
        "order_id": order.id.0,
        "customer_id": order.customer_id,
        "lines": lines,
        "total_cents": order.total_cents,
    })
}

type OrderRow = (
    Uuid,
    Uuid,
    String,
    Option<String>,
    i64,
    OffsetDateTime,
    OffsetDateTime,
);
type LineRow = (Uuid, i32, Uuid, String, String, i64, i64, i64);
type SagaRow = (Uuid, String, String, i64, Option<OffsetDateTime>, i32);
type StepRow = (Uuid, i32, String, Option<String>, OffsetDateTime);

/// Every column of every row a placement writes, by primary key; the published events in seq
/// order, with what they carry besides [`PublishedEvent`]: aggregate type, version, headers.
#[derive(Debug, PartialEq)]
pub struct Rows {
    pub orders: Vec<OrderRow>,
    pub lines: Vec<LineRow>,
    pub sagas: Vec<SagaRow>,
    pub steps: Vec<StepRow>,
    pub events: Vec<(PublishedEvent, String, i32, BTreeMap<String, String>)>,
}

impl Rows {
    pub async fn read(db: &ModuleDb) -> Self {
        let mut tx = db.begin().await.unwrap();
        let orders = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT id, customer_id, status, reason, total_cents, created_at, updated_at \
                 FROM orders ORDER BY id",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        let lines = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT order_id, line_no, product_id, sku, name, unit_price_cents, quantity, \
                   line_total_cents FROM order_lines ORDER BY order_id, line_no",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        let sagas = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT order_id, stock, payment, deadline_us, settled_at, steps FROM sagas \
                 ORDER BY order_id",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        let steps = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT order_id, n, step, detail, at FROM saga_steps ORDER BY order_id, n",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        tx.commit().await.unwrap();
        let events = outbox::read_after(db, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                let (aggregate_type, version, headers) =
                    (e.aggregate_type.clone(), e.event_version, e.headers.clone());
                (PublishedEvent::from(e), aggregate_type, version, headers)
            })
            .collect();
        Self {
            orders,
            lines,
            sagas,
            steps,
            events,
        }
    }
}
