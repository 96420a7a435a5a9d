//! A payments module over a fresh database of either backend, a customers double, and helpers
//! that deliver orders events to the module's handler the way a subscription would.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use customers_api::{
    Customer, CustomerId, CustomerPatch, CustomersApi, CustomersError, NewCustomer,
};
use orders_api::OrderId;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected};
use payments::{Payments, PaymentsConfig};
use payments_api::{Account, Payment, PaymentFilter, PaymentsApi, PointInTime};
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::messaging::{Envelope, Handler, IntegrationEvent, outbox, run_handler};
use shared_kernel::storage::idempotency::IdempotencyKey;
use shared_kernel::storage::testing::{TestDatabase, postgres_url};
use shared_kernel::storage::{ModuleDb, StorageConfig};
use tempfile::TempDir;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// The customers module as payments sees it: knows the ids it is told, or is down.
#[derive(Debug, Default)]
pub struct FakeCustomers {
    known: Mutex<HashSet<Uuid>>,
    pub down: AtomicBool,
}

impl FakeCustomers {
    pub fn add(&self, id: Uuid) {
        self.known.lock().unwrap().insert(id);
    }
}

#[async_trait]
impl CustomersApi for FakeCustomers {
    async fn register(
        &self,
        _: NewCustomer,
        _: Option<IdempotencyKey>,
    ) -> Result<Customer, CustomersError> {
        Err(CustomersError::Unavailable)
    }

    async fn get(&self, id: CustomerId) -> Result<Customer, CustomersError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CustomersError::Unavailable);
        }
        if !self.known.lock().unwrap().contains(&id.0) {
            return Err(CustomersError::NotFound(id));
        }
        let now = shared_kernel::clock::now();
        Ok(Customer {
            id,
            name: "Ada".into(),
            email: "ada@example.com".into(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn update(&self, id: CustomerId, _: CustomerPatch) -> Result<Customer, CustomersError> {
        Err(CustomersError::NotFound(id))
    }

    async fn list(&self, _: PageRequest) -> Result<Page<Customer>, CustomersError> {
        Err(CustomersError::Unavailable)
    }
}

/// A payments module over its own fresh database.
#[derive(Debug)]
pub struct Env {
    pub payments: Payments,
    pub db: ModuleDb,
    pub customers: Arc<FakeCustomers>,
    _dir: TempDir,
    _database: Option<TestDatabase>,
}

pub const DEFAULT_LIMIT: i64 = 1_000;

impl Env {
    pub async fn new(kind: Kind, test: &str) -> Self {
        Self::with_config(
            kind,
            test,
            PaymentsConfig {
                default_credit_limit_cents: DEFAULT_LIMIT,
                snapshot_every: 20,
            },
        )
        .await
    }

    pub async fn with_config(kind: Kind, test: &str, config: PaymentsConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (storage, database) = match kind {
            Kind::Sqlite => (StorageConfig::sqlite(dir.path()), None),
            Kind::Postgres => {
                let url = postgres_url(test).expect("Postgres tests are configured");
                let database = TestDatabase::create(&url).await;
                (StorageConfig::postgres(database.url()), Some(database))
            }
        };
        let db = ModuleDb::open(payments::NAME, &payments::MIGRATIONS, &storage)
            .await
            .unwrap();
        let customers = Arc::new(FakeCustomers::default());
        let payments = Payments::new(db.clone(), customers.clone(), config);
        Self {
            payments,
            db,
            customers,
            _dir: dir,
            _database: database,
        }
    }

    /// A customer the customers double knows.
    pub fn customer(&self) -> Uuid {
        let id = Uuid::now_v7();
        self.customers.add(id);
        id
    }

    /// Delivers one event to a handler in its own transaction, as a subscription batch would.
    pub async fn deliver<E: IntegrationEvent>(&self, handler: &dyn Handler, event: &E) {
        deliver(&self.db, handler, event).await.unwrap();
    }

    pub async fn place(&self, order_id: Uuid, customer_id: Uuid, total_cents: i64) {
        let event = placed(order_id, customer_id, total_cents);
        self.deliver(&self.payments.order_events(), &event).await;
    }

    pub async fn confirm(&self, order_id: Uuid) {
        let event = OrderConfirmed {
            order_id: OrderId(order_id),
        };
        self.deliver(&self.payments.order_events(), &event).await;
    }

    pub async fn reject(&self, order_id: Uuid) {
        let event = OrderRejected {
            order_id: OrderId(order_id),
            reason: orders_api::Reason::OutOfStock,
        };
        self.deliver(&self.payments.order_events(), &event).await;
    }

    pub async fn cancel(&self, order_id: Uuid) {
        let event = OrderCancelled {
            order_id: OrderId(order_id),
        };
        self.deliver(&self.payments.order_events(), &event).await;
    }

    /// Every event in payments' outbox, oldest first.
    pub async fn published(&self) -> Vec<Envelope> {
        outbox::read_after(&self.db, 0, 10_000).await.unwrap()
    }

    pub async fn account(&self, customer_id: Uuid) -> Account {
        self.payments.account(customer_id).await.unwrap()
    }

    /// The one payment of an order.
    pub async fn payment_of(&self, order_id: Uuid) -> Payment {
        let page = self
            .payments
            .list_payments(
                PaymentFilter {
                    order_id: Some(order_id),
                    customer_id: None,
                },
                page(500),
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "payments of order {order_id}");
        let listed = page.items.into_iter().next().unwrap();
        // The list (projection) and the stream (fold) agree.
        let folded = self
            .payments
            .payment(listed.id, PointInTime::Latest)
            .await
            .unwrap();
        assert_eq!(listed, folded);
        listed
    }

    /// Every payment of a customer.
    pub async fn payments_of(&self, customer_id: Uuid) -> Vec<Payment> {
        self.payments
            .list_payments(
                PaymentFilter {
                    order_id: None,
                    customer_id: Some(customer_id),
                },
                page(500),
            )
            .await
            .unwrap()
            .items
    }

    /// Asserts that the account's stream versions run 1, 2, … without gap and returns them.
    pub async fn account_versions(&self, customer_id: Uuid) -> Vec<i64> {
        let events = self.payments.account_events(customer_id).await.unwrap();
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected);
        versions
    }
}

pub fn page(limit: u32) -> PageRequest {
    PageRequest { limit, after: None }
}

pub fn placed(order_id: Uuid, customer_id: Uuid, total_cents: i64) -> OrderPlaced {
    OrderPlaced {
        order_id: OrderId(order_id),
        customer_id,
        lines: vec![orders_api::events::PlacedLine {
            product_id: Uuid::now_v7(),
            quantity: 1,
            unit_price_cents: total_cents,
        }],
        total_cents,
    }
}

pub fn envelope<E: IntegrationEvent>(event: &E) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        source: E::TYPE.split('.').next().unwrap_or_default().to_owned(),
        seq: 1,
        aggregate_type: E::AGGREGATE_TYPE.into(),
        aggregate_id: event.aggregate_id(),
        event_type: E::TYPE.into(),
        event_version: E::VERSION,
        occurred_at: shared_kernel::clock::now(),
        correlation_id: None,
        causation_id: None,
        headers: BTreeMap::new(),
        payload: serde_json::to_value(event).unwrap(),
    }
}

/// Runs `handler` on `event` in a transaction of its own, as a batch of a subscription would,
/// and commits it.
pub async fn deliver<E: IntegrationEvent>(
    db: &ModuleDb,
    handler: &dyn Handler,
    event: &E,
) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    run_handler(&mut tx, "payments<-test", handler, &envelope(event)).await?;
    tx.commit().await?;
    Ok(())
}

/// The types of published events, in order.
pub fn types(events: &[Envelope]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

impl shared_kernel::storage::testing::OnBackend for Kind {
    async fn on_backend(
        backend: shared_kernel::storage::testing::TestBackend,
        test: &'static str,
    ) -> Option<Self> {
        match backend {
            shared_kernel::storage::testing::TestBackend::Sqlite => Some(Kind::Sqlite),
            shared_kernel::storage::testing::TestBackend::Postgres => {
                shared_kernel::storage::testing::postgres_url(test).map(|_| Kind::Postgres)
            }
        }
    }
}
