//! Placing an order: the shape check, the customer and product lookups through their modules'
//! contracts, and storing the placed order — the order and its lines, the saga with its first
//! step, and `OrderPlaced` in the outbox, in one transaction.
//!
//! With an `Idempotency-Key`, the replay check and the placement are one transaction of their
//! own. Without one, concurrent placements share one transaction through the kernel's group
//! commit ([`GroupCommit`]): one commit serves them all, and each is answered after it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use customers_api::{CustomerId, CustomersApi, CustomersError};
use futures::future::join_all;
use inventory_api::{InventoryApi, InventoryError, Product, ProductId};
use orders_api::events::{OrderPlaced, PlacedLine};
use orders_api::{NewOrder, Order, OrderId, OrderLine, OrderStatus, OrdersError};
use shared_kernel::clock;
use shared_kernel::http::FieldError;
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::group_commit::{GroupCommit, GroupCommitError, GroupWrite};
use shared_kernel::storage::idempotency::{self, IdempotencyError, IdempotencyKey};
use shared_kernel::storage::{ModuleDb, Tx};
use shared_kernel::with_tx;

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

/// An order to store as placed, with the context of the request that placed it.
#[derive(Debug)]
struct Placed {
    order: Order,
    deadline_us: i64,
    context: EventContext,
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
        for placed in group {
            write_placement(tx, &placed.order, placed.deadline_us, &placed.context)
                .await
                .map_err(|e| self.db.classify(e))?;
        }
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
            let placed = Placed {
                order: order.clone(),
                deadline_us,
                context: EventContext::current(),
            };
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
        write_placement(&mut tx, &order, deadline_us, &EventContext::current())
            .await
            .map_err(|e| self.storage(e))?;
        idempotency::remember(&mut tx, SCOPE_PLACE_ORDER, &key, &fingerprint, &order)
            .await
            .map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))?;
        metrics::counter!("bounded_orders_placed_total").increment(1);
        Ok(order)
    }

    /// Checks the customer and reads every product, concurrently; unknown ones are field
    /// errors, an unreachable module is [`OrdersError::Unavailable`].
    async fn look_up(&self, input: &NewOrder) -> Result<Vec<Product>, OrdersError> {
        let customer = self.customers.get(CustomerId(input.customer_id));
        let products = join_all(
            input
                .items
                .iter()
                .map(|item| self.inventory.get_product(ProductId(item.product_id))),
        );
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
        let mut found = Vec::with_capacity(products.len());
        for (i, product) in products.into_iter().enumerate() {
            match product {
                Ok(product) => found.push(product),
                Err(InventoryError::ProductNotFound(_)) => errors.push(FieldError::new(
                    format!("items[{i}].product_id"),
                    "no product with this id",
                )),
                Err(InventoryError::Unavailable) => {
                    return Err(OrdersError::Unavailable("inventory"));
                }
                Err(e) => return Err(OrdersError::Unexpected(Box::new(e))),
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

/// Writes a placed order: the order and its lines, the saga with its first step, and
/// `OrderPlaced` in the outbox.
async fn write_placement(
    tx: &mut Tx,
    order: &Order,
    deadline_us: i64,
    context: &EventContext,
) -> Result<(), sqlx::Error> {
    insert_order(tx, order, deadline_us).await?;
    saga::record_step(
        tx,
        order.id.0,
        1,
        saga::Step::Placed,
        None,
        order.created_at,
    )
    .await?;
    outbox::append(tx, &placed_event(order), context).await?;
    Ok(())
}

/// Inserts the order, its lines and its waiting saga.
async fn insert_order(tx: &mut Tx, order: &Order, deadline_us: i64) -> Result<(), sqlx::Error> {
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
        for (n, line) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, \
                   unit_price_cents, quantity, line_total_cents) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(order.id.0)
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
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
             VALUES ($1, $2, $2, $3, NULL, 1)",
        )
        .bind(order.id.0)
        .bind(orders_api::Participant::Waiting.as_str())
        .bind(deadline_us)
        .execute(&mut *conn)
        .await
        .map(drop)
    })
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
