//! [`Orders`]: the module's implementation of [`OrdersApi`] over its own database: reads,
//! lists, the long poll and cancellation here; placing an order in [`crate::placement`], saga
//! transitions and the deadline timer in [`crate::saga`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use customers_api::CustomersApi;
use inventory_api::InventoryApi;
use orders_api::{
    NewOrder, Order, OrderFilter, OrderId, OrderLine, OrderStatus, OrdersApi, OrdersError,
    Participant, Reason, Saga, SagaStep,
};
use shared_kernel::clock;
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::storage::idempotency::IdempotencyKey;
use shared_kernel::storage::{IdSet, ModuleDb, equal_filters};
use shared_kernel::with_reader;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::OrdersConfig;
use crate::placement::Placements;
use crate::saga;
/// How often a long poll looks again without a wake-up (another process may have settled the
/// order; its commit does not wake this one).
const LONG_POLL_RECHECK: Duration = Duration::from_millis(500);

/// The orders module over its database handle and the contracts it calls.
#[derive(Clone)]
pub struct Orders {
    pub(crate) db: ModuleDb,
    config: OrdersConfig,
    /// Places orders, calling customers and inventory (see [`crate::placement`]).
    placements: Placements,
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
    let participant =
        |value: &str| Participant::parse(value).ok_or_else(|| corrupt("saga participant"));
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
        let placements = Placements::new(db.clone(), customers, inventory, config.saga_timeout);
        Self {
            db,
            config,
            placements,
        }
    }

    fn storage(&self, error: sqlx::Error) -> OrdersError {
        self.db.classify(error).into()
    }

    /// The durable saga timer: rejects open sagas at their deadline until `stop` turns true
    /// (the crate-private `saga::Deadlines`).
    pub async fn run_deadlines(&self, stop: tokio::sync::watch::Receiver<bool>) {
        saga::Deadlines {
            db: self.db.clone(),
        }
        .run(stop)
        .await;
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

#[async_trait]
impl OrdersApi for Orders {
    async fn place(
        &self,
        input: NewOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order, OrdersError> {
        self.placements.place(input, key).await
    }

    async fn get(&self, id: OrderId) -> Result<Order, OrdersError> {
        self.read(id).await
    }

    async fn get_many(&self, ids: &[OrderId]) -> Result<Vec<Order>, OrdersError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = IdSet(ids.iter().map(|id| id.0).collect());
        let rows: Vec<OrderLineRow> = ids.read(&self.db, get_many_sql).await?;
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
            .map_err(|e| saga::transition_error(&self.db, e))?;
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
