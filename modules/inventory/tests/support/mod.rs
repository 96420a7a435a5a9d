//! What the batch tests share: an inventory database, stock written with fixed ids (so that
//! two databases can be given the same products), orders events in envelopes, and the state
//! to compare.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use inventory::OrderEvents;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, PlacedLine};
use orders_api::{OrderId, Reason};
use shared_kernel::clock;
use shared_kernel::messaging::{
    Envelope, IntegrationEvent, outbox, run_handler, run_handler_batch,
};
use shared_kernel::storage::ModuleDb;
use shared_kernel::storage::testing::{PublishedEvent, TestBackend, TestDatabase, fresh_config};
use shared_kernel::with_tx;
use tempfile::TempDir;
use uuid::Uuid;

pub const SUBSCRIPTION: &str = "inventory<-orders";

/// The inventory module's database, fresh.
pub struct Db {
    pub db: ModuleDb,
    _dir: TempDir,
    /// Dropped last: drops the Postgres test database.
    _database: Option<TestDatabase>,
}

impl Db {
    pub async fn open(backend: TestBackend, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (config, database) = fresh_config(backend, test, dir.path()).await?;
        let db = ModuleDb::open(inventory::NAME, &inventory::MIGRATIONS, &config)
            .await
            .unwrap();
        Some(Self {
            db,
            _dir: dir,
            _database: database,
        })
    }

    /// Creates product `id` with `on_hand` units in each named warehouse.
    pub async fn product(&self, id: Uuid, stock: &[(&str, i64)]) {
        let now = clock::now();
        let mut tx = self.db.begin().await.unwrap();
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO products (id, sku, name, price_cents, created_at, updated_at) \
                 VALUES ($1, $2, $3, 100, $4, $4)",
            )
            .bind(id)
            .bind(format!("SKU-{id}"))
            .bind(format!("Product {id}"))
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(drop)
        })
        .unwrap();
        for (warehouse, on_hand) in stock {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "INSERT INTO stock_levels (product_id, warehouse, on_hand, reserved, updated_at) \
                     VALUES ($1, $2, $3, 0, $4)",
                )
                .bind(id)
                .bind(*warehouse)
                .bind(*on_hand)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(drop)
            })
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    /// Applies each event through `handle`, in its own transaction.
    pub async fn apply_each(&self, events: &[Envelope]) {
        for event in events {
            let mut tx = self.db.begin().await.unwrap();
            run_handler(&mut tx, SUBSCRIPTION, &OrderEvents, event)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }

    /// Applies the events through one `handle_batch`, in one transaction.
    pub async fn apply_batch(&self, events: &[Envelope]) {
        let events: Vec<&Envelope> = events.iter().collect();
        let mut tx = self.db.begin().await.unwrap();
        let applied = run_handler_batch(&mut tx, SUBSCRIPTION, &OrderEvents, &events).await;
        if let Err(error) = applied {
            panic!("batch failed at {:?}: {:#}", error.event, error.error);
        }
        tx.commit().await.unwrap();
    }

    /// Everything the handler writes.
    pub async fn state(&self) -> State {
        let mut tx = self.db.begin().await.unwrap();
        let mut levels: Vec<(Uuid, String, i64, i64)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT product_id, warehouse, on_hand, reserved FROM stock_levels")
                .fetch_all(conn)
                .await
        })
        .unwrap();
        levels.sort();
        let mut reservations: Vec<(Uuid, String)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT order_id, status FROM reservations")
                .fetch_all(conn)
                .await
        })
        .unwrap();
        reservations.sort();
        let mut lines: Vec<(Uuid, Uuid, String, i64)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT order_id, product_id, warehouse, quantity FROM reservation_lines",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        lines.sort();
        tx.commit().await.unwrap();
        let events = outbox::read_after(&self.db, 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.aggregate_type == "reservation")
            .map(PublishedEvent::from)
            .collect();
        State {
            levels,
            reservations,
            lines,
            events,
        }
    }
}

/// Stock levels, reservations, lines (sorted) and the published events (in seq order).
#[derive(Debug, PartialEq)]
pub struct State {
    pub levels: Vec<(Uuid, String, i64, i64)>,
    pub reservations: Vec<(Uuid, String)>,
    pub lines: Vec<(Uuid, Uuid, String, i64)>,
    pub events: Vec<PublishedEvent>,
}

/// An orders event in its envelope, with a fresh id and the given seq.
pub fn envelope<E: IntegrationEvent>(event: &E, seq: i64) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: "orders".into(),
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

pub fn placed(order: OrderId, lines: &[(Uuid, i64)], seq: i64) -> Envelope {
    envelope(
        &OrderPlaced {
            order_id: order,
            customer_id: Uuid::from_u128(7),
            lines: lines
                .iter()
                .map(|&(product_id, quantity)| PlacedLine {
                    product_id,
                    quantity,
                    unit_price_cents: 100,
                })
                .collect(),
            total_cents: lines.iter().map(|(_, q)| q * 100).sum(),
        },
        seq,
    )
}

pub fn confirmed(order: OrderId, seq: i64) -> Envelope {
    envelope(&OrderConfirmed { order_id: order }, seq)
}

pub fn rejected(order: OrderId, seq: i64) -> Envelope {
    envelope(
        &OrderRejected {
            order_id: order,
            reason: Reason::PaymentDeclined,
        },
        seq,
    )
}

pub fn cancelled(order: OrderId, seq: i64) -> Envelope {
    envelope(&OrderCancelled { order_id: order }, seq)
}
