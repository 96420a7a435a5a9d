//! Placing an order: the shape check, the customer and product lookups through their modules'
//! contracts, and storing the placed order — the order and its lines, the saga with its first
//! step, and `OrderPlaced` in the outbox, in one transaction.
//!
//! With an `Idempotency-Key`, the replay check and the placement are one transaction of their
//! own. Without one, concurrent placements share one transaction through the kernel's group
//! commit ([`GroupCommit`]): one commit serves them all, and each is answered after it. Both
//! store through one set-based write ([`write_placements`], a lone order as a group of one), so
//! a group costs the statements of one order, not one order's statements per order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use customers_api::{CustomerId, CustomersApi, CustomersError};
use inventory_api::{InventoryApi, InventoryError, Product, ProductId};
use orders_api::events::{OrderPlaced, PlacedLine};
use orders_api::{NewOrder, Order, OrderId, OrderLine, OrderStatus, OrdersError};
use shared_kernel::clock;
use shared_kernel::http::FieldError;
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::group_commit::{GroupCommit, GroupCommitError, GroupWrite};
use shared_kernel::storage::idempotency::{self, IdempotencyError, IdempotencyKey};
use shared_kernel::storage::{ModuleDb, Tx, TxConn};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain;
use crate::saga;

/// Scope of `Idempotency-Key`s of order placement.
const SCOPE_PLACE_ORDER: &str = "orders.place";

/// The histogram of how many placements one group commit holds.
const GROUP_SIZE_METRIC: &str = "bounded_order_placement_group_size";

/// Places orders: checks them against customers and inventory and stores them as placed.
#[derive(Clone)]
pub(crate) struct Placements {
    db: ModuleDb,
    customers: Arc<dyn CustomersApi>,
    inventory: Arc<dyn InventoryApi>,
    saga_timeout: Duration,
    /// Placements without a key waiting for their group commit.
    queue: GroupCommit<WritePlacements>,
}

impl std::fmt::Debug for Placements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placements")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// An order to store as placed, with its saga's deadline and the context of the request that
/// placed it (which its `OrderPlaced` carries).
#[derive(Debug)]
pub struct Placed {
    order: Order,
    deadline_us: i64,
    context: EventContext,
}

impl Placed {
    /// `order`, whose saga expires at `deadline_us`, placed by the request of `context`.
    pub fn new(order: Order, deadline_us: i64, context: EventContext) -> Self {
        Self {
            order,
            deadline_us,
            context,
        }
    }
}

/// The group commit's write: every placement of the group in its transaction.
#[derive(Debug)]
struct WritePlacements {
    db: ModuleDb,
}

#[async_trait]
impl GroupWrite for WritePlacements {
    type Item = Placed;
    type Error = OrdersError;

    async fn write(&self, tx: &mut Tx, group: &[Placed]) -> Result<(), OrdersError> {
        write_placements(tx, group)
            .await
            .map_err(|e| self.db.classify(e))?;
        Ok(())
    }
}

impl Placements {
    pub(crate) fn new(
        db: ModuleDb,
        customers: Arc<dyn CustomersApi>,
        inventory: Arc<dyn InventoryApi>,
        saga_timeout: Duration,
    ) -> Self {
        let queue = GroupCommit::new(
            db.clone(),
            WritePlacements { db: db.clone() },
            GROUP_SIZE_METRIC,
        );
        Self {
            db,
            customers,
            inventory,
            saga_timeout,
            queue,
        }
    }

    fn storage(&self, error: sqlx::Error) -> OrdersError {
        self.db.classify(error).into()
    }

    /// [`orders_api::OrdersApi::place`].
    pub(crate) async fn place(
        &self,
        input: NewOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order, OrdersError> {
        domain::check_shape(&input).map_err(OrdersError::Invalid)?;
        let products = self.look_up(&input).await?;
        let order = priced_order(&input, products)?;
        let deadline_us = saga::unix_micros(order.created_at + self.saga_timeout);
        let Some(key) = key else {
            // Without a key, concurrent placements share one commit.
            let placed = Placed::new(order.clone(), deadline_us, EventContext::current());
            self.queue
                .submit(placed)
                .await
                .map_err(|error| match error {
                    GroupCommitError::Write(e) => e,
                    GroupCommitError::Storage(e) => e.into(),
                    GroupCommitError::Stopped => {
                        OrdersError::Unexpected("the placement committer stopped".into())
                    }
                })?;
            metrics::counter!("bounded_orders_placed_total").increment(1);
            return Ok(order);
        };
        // With a key, the replay check and the placement are one transaction of their own.
        let fingerprint = idempotency::fingerprint(&input);
        let mut tx = self.db.begin().await?;
        let stored = idempotency::replay(&mut tx, SCOPE_PLACE_ORDER, &key, &fingerprint).await;
        match stored {
            Ok(Some(order)) => return Ok(order),
            Ok(None) => {}
            Err(IdempotencyError::Reused(e)) => return Err(e.into()),
            Err(IdempotencyError::Storage(e)) => return Err(self.storage(e)),
        }
        let placed = Placed::new(order, deadline_us, EventContext::current());
        write_placements(&mut tx, std::slice::from_ref(&placed))
            .await
            .map_err(|e| self.storage(e))?;
        idempotency::remember(
            &mut tx,
            SCOPE_PLACE_ORDER,
            &key,
            &fingerprint,
            &placed.order,
        )
        .await
        .map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))?;
        metrics::counter!("bounded_orders_placed_total").increment(1);
        Ok(placed.order)
    }

    /// Checks the customer and reads every product (one read for all lines), concurrently;
    /// unknown ones are field errors, an unreachable module is [`OrdersError::Unavailable`].
    async fn look_up(&self, input: &NewOrder) -> Result<Vec<Product>, OrdersError> {
        let ids: Vec<ProductId> = input
            .items
            .iter()
            .map(|item| ProductId(item.product_id))
            .collect();
        let customer = self.customers.get(CustomerId(input.customer_id));
        let products = self.inventory.get_products(&ids);
        let (customer, products) = futures::join!(customer, products);
        let mut errors = Vec::new();
        match customer {
            Ok(_) => {}
            Err(CustomersError::NotFound(_)) => {
                errors.push(FieldError::new("customer_id", "no customer with this id"));
            }
            Err(CustomersError::Unavailable) => return Err(OrdersError::Unavailable("customers")),
            Err(e) => return Err(OrdersError::Unexpected(Box::new(e))),
        }
        let products = match products {
            Ok(products) => products,
            Err(InventoryError::Unavailable) => return Err(OrdersError::Unavailable("inventory")),
            Err(e) => return Err(OrdersError::Unexpected(Box::new(e))),
        };
        let by_id: HashMap<ProductId, Product> = products.into_iter().map(|p| (p.id, p)).collect();
        let mut found = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            match by_id.get(id) {
                Some(product) => found.push(product.clone()),
                None => errors.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "no product with this id",
                )),
            }
        }
        if errors.is_empty() {
            Ok(found)
        } else {
            Err(OrdersError::Invalid(errors))
        }
    }
}

/// The new `PENDING` order: `input`'s lines priced from the catalog's `products` (in line
/// order).
fn priced_order(input: &NewOrder, products: Vec<Product>) -> Result<Order, OrdersError> {
    let mut items = Vec::with_capacity(products.len());
    let mut total_cents: i64 = 0;
    for (item, product) in input.items.iter().zip(products) {
        // At most 10^12 × 10^4 per line and 100 lines: far below i64::MAX, checked anyway.
        let line_total_cents = product
            .price_cents
            .checked_mul(item.quantity)
            .ok_or_else(|| {
                OrdersError::Invalid(vec![FieldError::new("items", "total too large")])
            })?;
        total_cents = total_cents.checked_add(line_total_cents).ok_or_else(|| {
            OrdersError::Invalid(vec![FieldError::new("items", "total too large")])
        })?;
        items.push(OrderLine {
            product_id: product.id.0,
            sku: product.sku,
            name: product.name,
            unit_price_cents: product.price_cents,
            quantity: item.quantity,
            line_total_cents,
        });
    }
    let now = clock::now();
    Ok(Order {
        id: OrderId::generate(),
        customer_id: input.customer_id,
        status: OrderStatus::Pending,
        reason: None,
        items,
        total_cents,
        created_at: now,
        updated_at: now,
    })
}

/// The inserts of placed orders up to their rows, in the order of both dialects' binds: each
/// statement's table and columns are written once, for Postgres' `UNNEST` and SQLite's
/// multi-row `VALUES` alike.
macro_rules! insert_orders_into {
    () => {
        "INSERT INTO orders (id, customer_id, status, reason, total_cents, created_at, updated_at)"
    };
}
macro_rules! insert_lines_into {
    () => {
        "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price_cents, \
           quantity, line_total_cents)"
    };
}
macro_rules! insert_sagas_into {
    () => {
        "INSERT INTO sagas (order_id, stock, payment, deadline_us, settled_at, steps)"
    };
}

/// Writes placed orders set-based — each order and its lines, its saga waiting for both
/// participants with step 1 `placed` at the order's creation, and its `OrderPlaced` (carrying
/// its own request's context) in the outbox, in group order — with a number of statements
/// that does not grow with the group: one insert per table and one [`outbox::append_many`].
/// The one write path of placement: a group commit's group, or one order with an
/// `Idempotency-Key` as a group of one.
///
/// Postgres binds one array per column (`UNNEST`), so one SQL text serves every group size;
/// SQLite gets multi-row `VALUES`, split only beyond
/// [`shared_kernel::storage::bulk::MAX_BINDS`] parameters in one statement (3 750 lines).
///
/// # Errors
/// The storage error, or the encoding error of an event; the transaction must then be rolled
/// back (the group commit retries each order alone).
pub async fn write_placements(tx: &mut Tx, group: &[Placed]) -> Result<(), sqlx::Error> {
    if group.is_empty() {
        return Ok(());
    }
    let orders: Vec<&Order> = group.iter().map(|placed| &placed.order).collect();
    insert_orders(tx, &orders).await?;
    insert_lines(tx, &orders).await?;
    insert_sagas(tx, group).await?;
    let steps: Vec<saga::NewStep> = orders
        .iter()
        .map(|order| (order.id.0, 1, saga::Step::Placed, None, order.created_at))
        .collect();
    saga::insert_steps(tx, &steps).await?;
    let events = group
        .iter()
        .map(|placed| outbox::Outgoing::new(&placed_event(&placed.order), &placed.context))
        .collect::<Result<Vec<_>, _>>()?;
    outbox::append_many(tx, events);
    Ok(())
}

/// Inserts the orders, in their status without a reason, updated when created.
async fn insert_orders(tx: &mut Tx, orders: &[&Order]) -> Result<(), sqlx::Error> {
    match &mut tx.conn {
        TxConn::Postgres(conn) => sqlx::query(concat!(
            insert_orders_into!(),
            " SELECT v.id, v.customer_id, v.status, NULL, v.total_cents, v.created_at, \
               v.created_at \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::timestamptz[]) \
               AS v(id, customer_id, status, total_cents, created_at)"
        ))
        .bind(column(orders, |o| o.id.0))
        .bind(column(orders, |o| o.customer_id))
        .bind(column(orders, |o| o.status.as_str()))
        .bind(column(orders, |o| o.total_cents))
        .bind(column(orders, |o| o.created_at))
        .execute(&mut **conn)
        .await
        .map(drop),
        TxConn::Sqlite(_) => {
            shared_kernel::bulk_insert!(tx, insert_orders_into!(), 7, orders, |q, o| q
                .bind(o.id.0)
                .bind(o.customer_id)
                .bind(o.status.as_str())
                .bind(None::<&str>)
                .bind(o.total_cents)
                .bind(o.created_at)
                .bind(o.created_at))
        }
    }
}

/// Inserts the lines of all the orders, numbered from 0 in each order.
async fn insert_lines(tx: &mut Tx, orders: &[&Order]) -> Result<(), sqlx::Error> {
    let lines: Vec<(Uuid, i32, &OrderLine)> = orders
        .iter()
        .flat_map(|order| {
            (0..)
                .zip(&order.items)
                .map(|(n, line)| (order.id.0, n, line))
        })
        .collect();
    match &mut tx.conn {
        TxConn::Postgres(conn) => sqlx::query(concat!(
            insert_lines_into!(),
            " SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::uuid[], $4::text[], $5::text[], \
               $6::int8[], $7::int8[], $8::int8[])"
        ))
        .bind(column(&lines, |l| l.0))
        .bind(column(&lines, |l| l.1))
        .bind(column(&lines, |l| l.2.product_id))
        .bind(column(&lines, |l| l.2.sku.as_str()))
        .bind(column(&lines, |l| l.2.name.as_str()))
        .bind(column(&lines, |l| l.2.unit_price_cents))
        .bind(column(&lines, |l| l.2.quantity))
        .bind(column(&lines, |l| l.2.line_total_cents))
        .execute(&mut **conn)
        .await
        .map(drop),
        TxConn::Sqlite(_) => {
            shared_kernel::bulk_insert!(tx, insert_lines_into!(), 8, lines, |q, row| q
                .bind(row.0)
                .bind(row.1)
                .bind(row.2.product_id)
                .bind(&row.2.sku)
                .bind(&row.2.name)
                .bind(row.2.unit_price_cents)
                .bind(row.2.quantity)
                .bind(row.2.line_total_cents))
        }
    }
}

/// Inserts the orders' sagas: both participants waiting, open until `deadline_us`, one step.
async fn insert_sagas(tx: &mut Tx, group: &[Placed]) -> Result<(), sqlx::Error> {
    let waiting = orders_api::Participant::Waiting.as_str();
    match &mut tx.conn {
        TxConn::Postgres(conn) => sqlx::query(concat!(
            insert_sagas_into!(),
            " SELECT v.order_id, $3, $3, v.deadline_us, NULL, 1 \
             FROM UNNEST($1::uuid[], $2::int8[]) AS v(order_id, deadline_us)"
        ))
        .bind(column(group, |p| p.order.id.0))
        .bind(column(group, |p| p.deadline_us))
        .bind(waiting)
        .execute(&mut **conn)
        .await
        .map(drop),
        TxConn::Sqlite(_) => {
            shared_kernel::bulk_insert!(tx, insert_sagas_into!(), 6, group, |q, p| q
                .bind(p.order.id.0)
                .bind(waiting)
                .bind(waiting)
                .bind(p.deadline_us)
                .bind(None::<OffsetDateTime>)
                .bind(1_i32))
        }
    }
}

/// One column of `rows`, as the array Postgres' `UNNEST` takes.
fn column<R, T>(rows: &[R], value: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

/// The `OrderPlaced` event of a new order.
fn placed_event(order: &Order) -> OrderPlaced {
    OrderPlaced {
        order_id: order.id,
        customer_id: order.customer_id,
        lines: order
            .items
            .iter()
            .map(|line| PlacedLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        total_cents: order.total_cents,
    }
}
