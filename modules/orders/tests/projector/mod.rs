//! What the read-model batch tests share: a fresh read store with the projector's three
//! handlers, events of the three sources in envelopes (with the seq and time the test gives),
//! and the tables to compare.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use customers_api::CustomerId;
use customers_api::events::{CustomerRegistered, CustomerUpdated};
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, PlacedLine};
use orders_api::{OrderId, Reason};
use payments_api::PaymentId;
use payments_api::events::{
    PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRefunded, PaymentVoided,
};
use shared_kernel::messaging::{
    Envelope, Handler, IntegrationEvent, Subscription, run_handler, run_handler_batch,
};
use shared_kernel::storage::testing::{OnBackend, TestBackend, TestDatabase, fresh_config};
use shared_kernel::storage::{ModuleDb, Tx};
use shared_kernel::with_tx;
use tempfile::TempDir;
use time::OffsetDateTime;
use uuid::Uuid;

/// A fresh orders read store and the projector's subscriptions on it.
pub struct Store {
    pub db: ModuleDb,
    subscriptions: Vec<Subscription>,
    _dir: TempDir,
    /// Dropped last: drops the Postgres test database.
    _database: Option<TestDatabase>,
}

impl OnBackend for Store {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        Store::open(backend, test).await
    }
}

impl Store {
    pub async fn open(backend: TestBackend, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (config, database) = fresh_config(backend, test, dir.path()).await?;
        let db = ModuleDb::open(orders::READ_STORE, &orders::READ_MIGRATIONS, &config)
            .await
            .unwrap();
        let subscriptions = orders::ReadModel::new(db.clone()).subscriptions();
        Some(Self {
            db,
            subscriptions,
            _dir: dir,
            _database: database,
        })
    }

    /// The projector's subscription of `source`.
    pub fn subscription(&self, source: &str) -> &Subscription {
        self.subscriptions
            .iter()
            .find(|s| s.source == source)
            .unwrap_or_else(|| panic!("no subscription of {source}"))
    }

    /// Applies each event through `handle`, in its own transaction.
    pub async fn apply_each(&self, events: &[Envelope]) {
        for event in events {
            let subscription = self.subscription(&event.source);
            let mut tx = self.db.begin().await.unwrap();
            run_handler(
                &mut tx,
                &subscription.name,
                subscription.handler.as_ref(),
                event,
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    }

    /// Applies the events (of one source) through one `handle_batch`, in one transaction.
    pub async fn apply_batch(&self, events: &[Envelope]) {
        let subscription = self.subscription(&events[0].source);
        let mut tx = self.db.begin().await.unwrap();
        batch(&mut tx, subscription, subscription.handler.as_ref(), events).await;
        tx.commit().await.unwrap();
    }

    /// Applies the events (of one source) the way a batch did before `handle_batch`: one by
    /// one through `handle`, in one transaction.
    pub async fn apply_batch_one_by_one(&self, events: &[Envelope]) {
        let subscription = self.subscription(&events[0].source);
        let handler = OneByOne(Arc::clone(&subscription.handler));
        let mut tx = self.db.begin().await.unwrap();
        batch(&mut tx, subscription, &handler, events).await;
        tx.commit().await.unwrap();
    }

    /// Both tables, every column, sorted by key.
    pub async fn tables(&self) -> Tables {
        let mut tx = self.db.begin().await.unwrap();
        let summaries: Vec<SummaryRow> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT generation, order_id, customer_id, status, item_count, total_cents, \
                        created_at, order_changed_at, order_seq, customer_name, customer_email, \
                        customer_seq, customer_changed_at, payment_status, payment_seq, \
                        payment_changed_at \
                 FROM order_summaries ORDER BY generation, order_id",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        let customers: Vec<CustomerRow> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT generation, customer_id, name, email, source_seq, changed_at \
                 FROM summary_customers ORDER BY generation, customer_id",
            )
            .fetch_all(conn)
            .await
        })
        .unwrap();
        tx.commit().await.unwrap();
        Tables {
            summaries,
            customers,
        }
    }
}

async fn batch(
    tx: &mut Tx,
    subscription: &Subscription,
    handler: &dyn Handler,
    events: &[Envelope],
) {
    assert!(events.iter().all(|e| e.source == subscription.source));
    let events: Vec<&Envelope> = events.iter().collect();
    let applied = run_handler_batch(tx, &subscription.name, handler, &events).await;
    if let Err(error) = applied {
        panic!("batch failed at {:?}: {:#}", error.event, error.error);
    }
}

/// A handler applying a batch through another's `handle`, one event at a time: the kernel's
/// default `handle_batch`.
struct OneByOne(Arc<dyn Handler>);

#[async_trait]
impl Handler for OneByOne {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        self.0.handle(tx, event).await
    }

    fn serialized(&self) -> bool {
        self.0.serialized()
    }
}

/// A row of `order_summaries`, every column.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SummaryRow {
    pub generation: i64,
    pub order_id: Uuid,
    pub customer_id: Option<Uuid>,
    pub status: Option<String>,
    pub item_count: Option<i64>,
    pub total_cents: Option<i64>,
    pub created_at: Option<OffsetDateTime>,
    pub order_changed_at: Option<OffsetDateTime>,
    pub order_seq: Option<i64>,
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub customer_seq: Option<i64>,
    pub customer_changed_at: Option<OffsetDateTime>,
    pub payment_status: Option<String>,
    pub payment_seq: Option<i64>,
    pub payment_changed_at: Option<OffsetDateTime>,
}

/// A row of `summary_customers`, every column.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerRow {
    pub generation: i64,
    pub customer_id: Uuid,
    pub name: Option<String>,
    pub email: Option<String>,
    pub source_seq: i64,
    pub changed_at: Option<OffsetDateTime>,
}

/// Everything the projector writes.
#[derive(Debug, PartialEq, Eq)]
pub struct Tables {
    pub summaries: Vec<SummaryRow>,
    pub customers: Vec<CustomerRow>,
}

/// `event` of `source` in its envelope, with a fresh id, the given seq and time.
pub fn envelope<E: IntegrationEvent>(
    source: &str,
    event: &E,
    seq: i64,
    occurred_at: OffsetDateTime,
) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: source.into(),
        seq,
        aggregate_type: E::AGGREGATE_TYPE.into(),
        aggregate_id: event.aggregate_id(),
        event_type: E::TYPE.into(),
        event_version: E::VERSION,
        occurred_at,
        correlation_id: Some(Uuid::now_v7()),
        causation_id: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(event).unwrap(),
    }
}

/// A time `n` milliseconds after a fixed instant.
pub fn at(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + time::Duration::milliseconds(n)
}

pub fn registered(customer: Uuid, name: &str, seq: i64, time: OffsetDateTime) -> Envelope {
    let event = CustomerRegistered {
        customer_id: CustomerId(customer),
        name: name.into(),
        email: format!("{}@example.com", name.replace(' ', ".")),
    };
    envelope("customers", &event, seq, time)
}

pub fn updated(customer: Uuid, name: &str, seq: i64, time: OffsetDateTime) -> Envelope {
    let event = CustomerUpdated {
        customer_id: CustomerId(customer),
        name: name.into(),
        email: format!("{}@example.com", name.replace(' ', ".")),
    };
    envelope("customers", &event, seq, time)
}

/// An order of `customer` placed with lines of the given quantities (100 cents a unit).
pub fn placed(
    order: Uuid,
    customer: Uuid,
    quantities: &[i64],
    seq: i64,
    time: OffsetDateTime,
) -> Envelope {
    let event = OrderPlaced {
        order_id: OrderId(order),
        customer_id: customer,
        lines: quantities
            .iter()
            .map(|&quantity| PlacedLine {
                product_id: Uuid::from_u128(42),
                quantity,
                unit_price_cents: 100,
            })
            .collect(),
        total_cents: quantities.iter().sum::<i64>() * 100,
    };
    envelope("orders", &event, seq, time)
}

pub fn confirmed(order: Uuid, seq: i64, time: OffsetDateTime) -> Envelope {
    let event = OrderConfirmed {
        order_id: OrderId(order),
    };
    envelope("orders", &event, seq, time)
}

pub fn rejected(order: Uuid, seq: i64, time: OffsetDateTime) -> Envelope {
    let event = OrderRejected {
        order_id: OrderId(order),
        reason: Reason::OutOfStock,
    };
    envelope("orders", &event, seq, time)
}

pub fn cancelled(order: Uuid, seq: i64, time: OffsetDateTime) -> Envelope {
    let event = OrderCancelled {
        order_id: OrderId(order),
    };
    envelope("orders", &event, seq, time)
}

/// A payment event of `order`: `kind` 0 authorized, 1 declined, 2 captured, 3 voided,
/// 4 refunded.
pub fn payment(order: Uuid, kind: u64, seq: i64, time: OffsetDateTime) -> Envelope {
    let payment_id = PaymentId(Uuid::from_u64_pair(0, order.as_u64_pair().1));
    let customer_id = Uuid::from_u128(7);
    let amount_cents = 100;
    match kind % 5 {
        0 => envelope(
            "payments",
            &PaymentAuthorized {
                payment_id,
                order_id: order,
                customer_id,
                amount_cents,
            },
            seq,
            time,
        ),
        1 => envelope(
            "payments",
            &PaymentDeclined {
                payment_id,
                order_id: order,
                customer_id,
                amount_cents,
                reason: "insufficient_credit".into(),
            },
            seq,
            time,
        ),
        2 => envelope(
            "payments",
            &PaymentCaptured {
                payment_id,
                order_id: order,
                amount_cents,
            },
            seq,
            time,
        ),
        3 => envelope(
            "payments",
            &PaymentVoided {
                payment_id,
                order_id: order,
                amount_cents,
            },
            seq,
            time,
        ),
        _ => envelope(
            "payments",
            &PaymentRefunded {
                payment_id,
                order_id: order,
                amount_cents,
            },
            seq,
            time,
        ),
    }
}
