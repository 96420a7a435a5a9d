//! What the saga batch and placement tests share: an orders database (and a pair of them),
//! orders and sagas written with fixed ids (so that two databases can be given the same
//! orders), participants' replies and product events in envelopes, and the state to compare.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use inventory_api::ProductId;
use inventory_api::events::{ProductUpdated, ReservedLine, StockReservationFailed, StockReserved};
use orders_api::{OrderStatus, Reason};
use payments_api::PaymentId;
use payments_api::events::{PaymentAuthorized, PaymentDeclined};
use shared_kernel::clock;
use shared_kernel::messaging::{
    Envelope, Handler, IntegrationEvent, outbox, run_handler, run_handler_batch,
};
use shared_kernel::storage::ModuleDb;
use shared_kernel::storage::testing::{
    OnBackend, PublishedEvent, TestBackend, TestDatabase, fresh_config,
};
use shared_kernel::with_tx;
use tempfile::TempDir;
use uuid::Uuid;

/// A participant whose replies orders subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Inventory,
    Payments,
}

impl Source {
    /// The subscription's name, `orders<-<source>`.
    pub fn subscription(self) -> &'static str {
        match self {
            Source::Inventory => "orders<-inventory",
            Source::Payments => "orders<-payments",
        }
    }

    fn module(self) -> &'static str {
        match self {
            Source::Inventory => "inventory",
            Source::Payments => "payments",
        }
    }
}

/// The module's handler of `source`'s events, as the app subscribes it.
fn handler(source: Source) -> std::sync::Arc<dyn Handler> {
    orders::subscriptions()
        .into_iter()
        .find(|s| s.name == source.subscription())
        .unwrap()
        .handler
}

/// The orders module's database, fresh.
pub struct Db {
    pub db: ModuleDb,
    _dir: TempDir,
    /// Dropped last: drops the Postgres test database.
    _database: Option<TestDatabase>,
}

impl OnBackend for Db {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Db::open(backend, test).await
    }
}

/// Two fresh databases given the same work: one applies it one by one, the other in batches
/// (or groups).
pub struct Pair {
    pub each: Db,
    pub batched: Db,
}

impl OnBackend for Pair {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Some(Self {
            each: Db::open(backend, test).await?,
            batched: Db::open(backend, test).await?,
        })
    }
}

impl Db {
    pub async fn open(backend: TestBackend, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (config, database) = fresh_config(backend, test, dir.path()).await?;
        let db = ModuleDb::open(orders::NAME, &orders::MIGRATIONS, &config)
            .await
            .unwrap();
        Some(Self {
            db,
            _dir: dir,
            _database: database,
        })
    }

    /// Writes order `id` as placed (saga waiting for both, step 1 `placed`) and, unless
    /// `status` is `PENDING`, settled with `reason` before any reply (step 2, settled).
    pub async fn order(&self, id: Uuid, status: OrderStatus, reason: Option<Reason>) {
        let now = clock::now();
        let pending = status == OrderStatus::Pending;
        let mut tx = self.db.begin().await.unwrap();
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO orders (id, customer_id, status, reason, total_cents, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 100, $5, $5)",
            )
            .bind(id)
            .bind(Uuid::from_u128(7))
            .bind(status.as_str())
            .bind(reason.map(Reason::as_str))
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(drop)
        })
        .unwrap();
        let settled_at = (!pending).then_some(now);
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO sagas (order_id, stock, payment, deadline_us, settled_at, steps) \
                 VALUES ($1, 'waiting', 'waiting', 0, $2, $3)",
            )
            .bind(id)
            .bind(settled_at)
            .bind(if pending { 1_i32 } else { 2 })
            .execute(&mut *conn)
            .await
            .map(drop)
        })
        .unwrap();
        let mut steps = vec![(1_i32, "placed", None)];
        if !pending {
            let step = if status == OrderStatus::Cancelled {
                "cancelled"
            } else {
                "timed_out"
            };
            steps.push((2, step, reason.map(Reason::as_str)));
        }
        for (n, step, detail) in steps {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO saga_steps (order_id, n, step, detail, at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(n)
                .bind(step)
                .bind(detail)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(drop)
            })
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Applies each event through its source's `handle`, in its own transaction.
    pub async fn apply_each(&self, source: Source, events: &[Envelope]) {
        let handler = handler(source);
        for event in events {
            let mut tx = self.db.begin().await.unwrap();
            run_handler(&mut tx, source.subscription(), handler.as_ref(), event)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    /// Applies the events one by one through `handle`, in one transaction: what a batch cost
    /// before `handle_batch` was set-based (and what an isolated batch costs).
    pub async fn apply_one_by_one(&self, source: Source, events: &[Envelope]) {
        let handler = handler(source);
        let mut tx = self.db.begin().await.unwrap();
        for event in events {
            run_handler(&mut tx, source.subscription(), handler.as_ref(), event)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Applies the events through one `handle_batch`, in one transaction.
    pub async fn apply_batch(&self, source: Source, events: &[Envelope]) {
        let handler = handler(source);
        let events: Vec<&Envelope> = events.iter().collect();
        let mut tx = self.db.begin().await.unwrap();
        let applied =
            run_handler_batch(&mut tx, source.subscription(), handler.as_ref(), &events).await;
        if let Err(error) = applied {
            panic!("batch failed at {:?}: {:#}", error.event, error.error);
        }
        tx.commit().await.unwrap();
    }

    /// Everything the handlers write.
    pub async fn state(&self) -> State {
        let mut tx = self.db.begin().await.unwrap();
        let mut orders: Vec<(Uuid, String, Option<String>)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT id, status, reason FROM orders")
                .fetch_all(conn)
                .await
        })
        .unwrap();
        orders.sort();
        let sagas: Vec<(Uuid, String, String, i32, Option<time::OffsetDateTime>)> =
            with_tx!(&mut tx, |conn| {
                sqlx::query_as("SELECT order_id, stock, payment, steps, settled_at FROM sagas")
                    .fetch_all(conn)
                    .await
            })
            .unwrap();
        let mut sagas: Vec<(Uuid, String, String, i32, bool)> = sagas
            .into_iter()
            .map(|(id, stock, payment, steps, settled_at)| {
                (id, stock, payment, steps, settled_at.is_some())
            })
            .collect();
        sagas.sort();
        let mut steps: Vec<(Uuid, i32, String, Option<String>)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT order_id, n, step, detail FROM saga_steps")
                .fetch_all(conn)
                .await
        })
        .unwrap();
        steps.sort();
        let mut products: Vec<(Uuid, String, String, i64, i64)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT product_id, sku, name, price_cents, source_seq FROM product_replicas",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        products.sort();
        tx.commit().await.unwrap();
        let events = outbox::read_after(&self.db, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(PublishedEvent::from)
            .collect();
        State {
            orders,
            sagas,
            steps,
            products,
            events,
        }
    }
}

/// Orders (status, reason), sagas (participants, steps, settled or not), steps (n, step,
/// detail), product replicas (sorted), and the published events (in seq order).
#[derive(Debug, PartialEq)]
pub struct State {
    pub orders: Vec<(Uuid, String, Option<String>)>,
    pub sagas: Vec<(Uuid, String, String, i32, bool)>,
    pub steps: Vec<(Uuid, i32, String, Option<String>)>,
    pub products: Vec<(Uuid, String, String, i64, i64)>,
    pub events: Vec<PublishedEvent>,
}

/// An event of `source` in its envelope, with a fresh id and correlation id and the given seq.
pub fn envelope<E: IntegrationEvent>(source: Source, event: &E, seq: i64) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: source.module().into(),
        seq,
        aggregate_type: E::AGGREGATE_TYPE.into(),
        aggregate_id: event.aggregate_id(),
        event_type: E::TYPE.into(),
        event_version: E::VERSION,
        occurred_at: clock::now(),
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(event).unwrap(),
    }
}

pub fn stock_reserved(order: Uuid, seq: i64) -> Envelope {
    let lines = vec![ReservedLine {
        product_id: ProductId(Uuid::from_u128(1)),
        warehouse: "a".into(),
        quantity: 2,
    }];
    envelope(
        Source::Inventory,
        &StockReserved {
            order_id: order,
            lines,
        },
        seq,
    )
}

pub fn stock_failed(order: Uuid, seq: i64) -> Envelope {
    envelope(
        Source::Inventory,
        &StockReservationFailed {
            order_id: order,
            product_id: ProductId(Uuid::from_u128(1)),
            requested: 3,
            available: 1,
        },
        seq,
    )
}

pub fn authorized(order: Uuid, seq: i64) -> Envelope {
    envelope(
        Source::Payments,
        &PaymentAuthorized {
            payment_id: PaymentId(Uuid::from_u64_pair(seq.unsigned_abs(), 1)),
            order_id: order,
            customer_id: Uuid::from_u128(7),
            amount_cents: 100,
        },
        seq,
    )
}

pub fn declined(order: Uuid, seq: i64) -> Envelope {
    envelope(
        Source::Payments,
        &PaymentDeclined {
            payment_id: PaymentId(Uuid::from_u64_pair(seq.unsigned_abs(), 2)),
            order_id: order,
            customer_id: Uuid::from_u128(7),
            amount_cents: 100,
            reason: "insufficient_credit".into(),
        },
        seq,
    )
}

/// A product's new data (name and price) at `seq` of inventory's log.
pub fn product(id: Uuid, name: &str, price_cents: i64, seq: i64) -> Envelope {
    envelope(
        Source::Inventory,
        &ProductUpdated {
            product_id: ProductId(id),
            sku: format!("SKU-{id}"),
            name: name.into(),
            price_cents,
        },
        seq,
    )
}
