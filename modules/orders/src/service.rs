//! [`Orders`]: the module's implementation of [`OrdersApi`] over its own database, calling
//! customers and inventory through their contracts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use customers_api::{CustomerId, CustomersApi, CustomersError};
use futures::future::join_all;
use inventory_api::{InventoryApi, InventoryError, Product, ProductId};
use orders_api::{
    NewOrder, Order, OrderFilter, OrderId, OrderLine, OrderStatus, OrdersApi, OrdersError,
    Participant, Reason, Saga, SagaStep,
};
use shared_kernel::clock;
use shared_kernel::http::{FieldError, Page, PageRequest};
use shared_kernel::messaging::EventContext;
use shared_kernel::storage::idempotency::{self, IdempotencyError, IdempotencyKey};
use shared_kernel::storage::{IdSet, ModuleDb, Tx, equal_filters};
use shared_kernel::{with_reader, with_tx};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::domain;
use crate::group_commit::{PlacementQueue, write_placement};
use crate::saga;

/// Scope of `Idempotency-Key`s of order placement.
const SCOPE_PLACE_ORDER: &str = "orders.place";
/// How often a long poll looks again without a wake-up (another process may have settled the
/// order; its commit does not wake this one).
const LONG_POLL_RECHECK: Duration = Duration::from_millis(500);

/// Settings of the orders module.
#[derive(Debug, Clone, Copy)]
pub struct OrdersConfig {
    /// How long a saga waits for stock and payment before rejecting with `timeout`.
    pub saga_timeout: Duration,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            saga_timeout: Duration::from_secs(30),
        }
    }
}

/// The orders module over its database handle and the contracts it calls.
#[derive(Clone)]
pub struct Orders {
    pub(crate) db: ModuleDb,
    customers: Arc<dyn CustomersApi>,
    inventory: Arc<dyn InventoryApi>,
    config: OrdersConfig,
    /// Placements waiting for their group commit (see [`crate::group_commit`]).
    pub(crate) placements: Arc<PlacementQueue>,
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("db", &self.db)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One order line as read, joined with its order.
#[derive(Debug, sqlx::FromRow)]
struct OrderLineRow {
    id: Uuid,
    customer_id: Uuid,
    status: String,
    reason: Option<String>,
    total_cents: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    product_id: Uuid,
    sku: String,
    name: String,
    unit_price_cents: i64,
    quantity: i64,
    line_total_cents: i64,
}

/// Columns of [`OrderLineRow`], for queries over `orders o JOIN order_lines l`.
macro_rules! order_columns {
    () => {
        "o.id, o.customer_id, o.status, o.reason, o.total_cents, o.created_at, o.updated_at, \
         l.product_id, l.sku, l.name, l.unit_price_cents, l.quantity, l.line_total_cents"
    };
}

/// Groups rows ordered by order id and line number into orders.
fn orders_from_rows(rows: Vec<OrderLineRow>) -> Result<Vec<Order>, OrdersError> {
    let mut orders: Vec<Order> = Vec::new();
    for row in rows {
        let line = OrderLine {
            product_id: row.product_id,
            sku: row.sku,
            name: row.name,
            unit_price_cents: row.unit_price_cents,
            quantity: row.quantity,
            line_total_cents: row.line_total_cents,
        };
        match orders.last_mut() {
            Some(order) if order.id.0 == row.id => order.items.push(line),
            _ => {
                let status = OrderStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?;
                let reason = match row.reason.as_deref() {
                    None => None,
                    Some(r) => Some(Reason::parse(r).ok_or_else(|| corrupt("reason"))?),
                };
                orders.push(Order {
                    id: OrderId(row.id),
                    customer_id: row.customer_id,
                    status,
                    reason,
                    items: vec![line],
                    total_cents: row.total_cents,
                    created_at: row.created_at,
                    updated_at: row.updated_at,
                });
            }
        }
    }
    Ok(orders)
}

/// One step of a saga as read, joined with its saga and order.
#[derive(Debug, sqlx::FromRow)]
struct SagaStepRow {
    id: Uuid,
    status: String,
    stock: String,
    payment: String,
    deadline_us: i64,
    n: i32,
    step: String,
    detail: Option<String>,
    at: OffsetDateTime,
}

/// Columns of [`SagaStepRow`], for queries over `orders o`, `sagas s`, `saga_steps st`.
macro_rules! saga_columns {
    () => {
        "o.id, o.status, s.stock, s.payment, s.deadline_us, st.n, st.step, st.detail, st.at"
    };
}

/// Groups rows ordered by order id and step number into sagas.
fn sagas_from_rows(rows: Vec<SagaStepRow>) -> Result<Vec<Saga>, OrdersError> {
    let participant = |value: &str| match value {
        "succeeded" => Ok(Participant::Succeeded),
        "failed" => Ok(Participant::Failed),
        "waiting" => Ok(Participant::Waiting),
        _ => Err(corrupt("saga participant")),
    };
    let mut sagas: Vec<Saga> = Vec::new();
    for row in rows {
        let step = SagaStep {
            n: i64::from(row.n),
            step: row.step,
            detail: row.detail,
            at: row.at,
        };
        match sagas.last_mut() {
            Some(saga) if saga.order_id.0 == row.id => saga.steps.push(step),
            _ => sagas.push(Saga {
                order_id: OrderId(row.id),
                status: OrderStatus::parse(&row.status).ok_or_else(|| corrupt("status"))?,
                stock: participant(&row.stock)?,
                payment: participant(&row.payment)?,
                deadline: saga::from_unix_micros(row.deadline_us),
                steps: vec![step],
            }),
        }
    }
    Ok(sagas)
}

fn corrupt(column: &str) -> OrdersError {
    OrdersError::Unexpected(format!("stored order has an unknown {column}").into())
}

impl Orders {
    pub fn new(
        db: ModuleDb,
        customers: Arc<dyn CustomersApi>,
        inventory: Arc<dyn InventoryApi>,
        config: OrdersConfig,
    ) -> Self {
        Self {
            db,
            customers,
            inventory,
            config,
            placements: Arc::default(),
        }
    }

    pub(crate) fn storage(&self, error: sqlx::Error) -> OrdersError {
        self.db.classify(error).into()
    }

    /// A saga transition's failure: a storage error is classified as such (unavailable or
    /// unexpected), anything else is unexpected.
    pub(crate) fn saga_error(&self, error: anyhow::Error) -> OrdersError {
        match error.downcast::<sqlx::Error>() {
            Ok(e) => self.storage(e),
            Err(other) => OrdersError::Unexpected(other.into()),
        }
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

    async fn read(&self, id: OrderId) -> Result<Order, OrdersError> {
        let rows: Vec<OrderLineRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                order_columns!(),
                " FROM orders o JOIN order_lines l ON l.order_id = o.id \
                 WHERE o.id = $1 ORDER BY l.line_no"
            ))
            .bind(id.0)
            .fetch_all(pool)
            .await
        })
        .map_err(|e| self.storage(e))?;
        orders_from_rows(rows)?
            .pop()
            .ok_or(OrdersError::NotFound(id))
    }
}

/// [`OrdersApi::get_many`]: binds the ids as one [`IdSet`].
fn get_many_sql(postgres: bool) -> String {
    format!(
        concat!(
            "SELECT ",
            order_columns!(),
            " FROM orders o JOIN order_lines l ON l.order_id = o.id \
             WHERE {} ORDER BY o.id, l.line_no"
        ),
        IdSet::matches("o.id", 1, postgres)
    )
}

pub(crate) async fn insert_order(
    tx: &mut Tx,
    order: &Order,
    deadline_us: i64,
) -> Result<(), sqlx::Error> {
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
             VALUES ($1, 'waiting', 'waiting', $2, NULL, 1)",
        )
        .bind(order.id.0)
        .bind(deadline_us)
        .execute(&mut *conn)
        .await
        .map(drop)
    })
}

#[async_trait]
impl OrdersApi for Orders {
    async fn place(
        &self,
        input: NewOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order, OrdersError> {
        domain::check_shape(&input).map_err(OrdersError::Invalid)?;
        let products = self.look_up(&input).await?;
        let mut items = Vec::with_capacity(products.len());
        let mut total_cents: i64 = 0;
        for (item, product) in input.items.iter().zip(products) {
            // At most 10^12 × 10^4 per line and 100 lines: far below i64::MAX, checked anyway.
            let line_total_cents =
                product
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
        let order = Order {
            id: OrderId::generate(),
            customer_id: input.customer_id,
            status: OrderStatus::Pending,
            reason: None,
            items,
            total_cents,
            created_at: now,
            updated_at: now,
        };
        let deadline_us = saga::unix_micros(now + self.config.saga_timeout);
        let Some(key) = key else {
            // Without a key, concurrent placements share one commit.
            self.commit_placement(order.clone(), deadline_us, EventContext::current())
                .await?;
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

    async fn get(&self, id: OrderId) -> Result<Order, OrdersError> {
        self.read(id).await
    }

    async fn get_many(&self, ids: &[OrderId]) -> Result<Vec<Order>, OrdersError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reader = self.db.reader()?;
        let sql = get_many_sql(reader.is_postgres());
        let ids = IdSet(ids.iter().map(|id| id.0).collect());
        let rows: Vec<OrderLineRow> = with_reader!(reader, |pool| {
            // Only the placeholder is generated; the ids are bound.
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .map_err(|e| self.storage(e))?;
        orders_from_rows(rows)
    }

    async fn wait_terminal(&self, id: OrderId, timeout: Duration) -> Result<Order, OrdersError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Every transition appends an event about the order to the outbox. This process's
        // commits announce what they appended, so a waiter re-reads its order only when an
        // event about it committed, not on every commit; commits of other processes (Postgres
        // NOTIFY) say nothing about what they appended, so they wake every waiter.
        let mut committed = self.db.committed_events();
        let mut remote = self.db.remote_outbox_commits();
        let aggregate_id = id.to_string();
        loop {
            remote.mark_unchanged();
            let order = self.read(id).await?;
            if order.status.is_terminal() {
                return Ok(order);
            }
            let recheck = tokio::time::Instant::now() + LONG_POLL_RECHECK;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return self.read(id).await,
                    () = tokio::time::sleep_until(recheck.min(deadline)) => break,
                    _ = remote.changed() => break,
                    announced = committed.recv() => match announced {
                        Ok(events) if !events.iter().any(|e| e.aggregate_id == aggregate_id) => {}
                        // About this order, or fallen behind: look.
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        // The handle is gone; the recheck still comes.
                        Err(RecvError::Closed) => {
                            tokio::time::sleep_until(recheck.min(deadline)).await;
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn list(
        &self,
        filter: OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, OrdersError> {
        let (filters, limit) = equal_filters(
            2,
            &[
                ("customer_id", filter.customer_id.is_some()),
                ("status", filter.status.is_some()),
            ],
        );
        let sql = format!(
            concat!(
                "SELECT ",
                order_columns!(),
                " FROM (SELECT * FROM orders WHERE id > $1{} ORDER BY id LIMIT ${}) o \
                 JOIN order_lines l ON l.order_id = o.id ORDER BY o.id, l.line_no"
            ),
            filters, limit
        );
        let rows: Vec<OrderLineRow> = with_reader!(self.db.reader()?, |pool| {
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(page.after.unwrap_or(Uuid::nil()));
            if let Some(customer_id) = filter.customer_id {
                query = query.bind(customer_id);
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            query.bind(i64::from(page.limit) + 1).fetch_all(pool).await
        })
        .map_err(|e| self.storage(e))?;
        Ok(Page::from_rows(orders_from_rows(rows)?, page, |o| o.id.0))
    }

    async fn cancel(&self, id: OrderId) -> Result<Order, OrdersError> {
        let mut tx = self.db.begin().await?;
        let outcome = saga::cancel(&mut tx, id.0, clock::now())
            .await
            .map_err(|e| self.saga_error(e))?;
        match outcome {
            saga::Cancel::NotFound => return Err(OrdersError::NotFound(id)),
            saga::Cancel::Rejected => {
                return Err(OrdersError::Conflict {
                    id,
                    status: OrderStatus::Rejected,
                    action: "cancelled",
                });
            }
            saga::Cancel::AlreadyCancelled => drop(tx),
            saga::Cancel::Cancelled => tx.commit().await.map_err(|e| self.storage(e))?,
        }
        self.read(id).await
    }

    async fn saga(&self, id: OrderId) -> Result<Saga, OrdersError> {
        let rows: Vec<SagaStepRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                saga_columns!(),
                " FROM orders o JOIN sagas s ON s.order_id = o.id \
                 JOIN saga_steps st ON st.order_id = o.id WHERE o.id = $1 ORDER BY st.n"
            ))
            .bind(id.0)
            .fetch_all(pool)
            .await
        })
        .map_err(|e| self.storage(e))?;
        sagas_from_rows(rows)?
            .pop()
            .ok_or(OrdersError::NotFound(id))
    }

    async fn list_sagas(
        &self,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> Result<Page<Saga>, OrdersError> {
        let (filters, limit) = equal_filters(2, &[("status", status.is_some())]);
        let sql = format!(
            concat!(
                "SELECT ",
                saga_columns!(),
                " FROM (SELECT id, status FROM orders WHERE id > $1{} ORDER BY id LIMIT ${}) o \
                 JOIN sagas s ON s.order_id = o.id \
                 JOIN saga_steps st ON st.order_id = o.id ORDER BY o.id, st.n"
            ),
            filters, limit
        );
        let rows: Vec<SagaStepRow> = with_reader!(self.db.reader()?, |pool| {
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(page.after.unwrap_or(Uuid::nil()));
            if let Some(status) = status {
                query = query.bind(status.as_str());
            }
            query.bind(i64::from(page.limit) + 1).fetch_all(pool).await
        })
        .map_err(|e| self.storage(e))?;
        Ok(Page::from_rows(sagas_from_rows(rows)?, page, |s| {
            s.order_id.0
        }))
    }
}

#[cfg(test)]
mod plan_tests {
    use shared_kernel::storage::testing::assert_batch_read_plan;

    use super::*;

    /// The batch read of orders seeks the orders' and the lines' keys.
    #[tokio::test]
    async fn batch_read_uses_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_batch_read_plan(
            crate::NAME,
            &crate::MIGRATIONS,
            dir.path(),
            get_many_sql,
            &[
                "SEARCH o USING INDEX sqlite_autoindex_orders_1 (id=?)",
                "SEARCH l USING INDEX sqlite_autoindex_order_lines_1 (order_id=?)",
            ],
            &[
                "Index Cond: (id = ANY ($1))",
                "Index Cond: (order_id = o.id)",
            ],
        )
        .await;
    }
}
