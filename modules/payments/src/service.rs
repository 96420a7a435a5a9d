//! [`Payments`]: the module's implementation of [`PaymentsApi`] over its event store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use customers_api::{CustomerId, CustomersApi, CustomersError};
use payments_api::{
    Account, MAX_CREDIT_LIMIT_CENTS, Payment, PaymentEvent, PaymentFilter, PaymentId,
    PaymentStatus, PaymentsApi, PaymentsError, PointInTime, SetCreditLimit,
};
use shared_kernel::http::{FieldError, Page, PageRequest};
use shared_kernel::storage::{IdSet, ModuleDb, equal_filters};
use shared_kernel::{validate, with_reader};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::PaymentsConfig;
use crate::domain::{AccountState, Aggregate, PaymentState};
use crate::ledger::Ledger;
use crate::store::{self, Loaded, Source, StoreError, StoredEvent};

/// The payments module over its database handle.
#[derive(Clone)]
pub struct Payments {
    db: ModuleDb,
    customers: Arc<dyn CustomersApi>,
    pub(crate) ledger: Ledger,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("db", &self.db)
            .field("config", &self.ledger.config)
            .finish_non_exhaustive()
    }
}

/// The columns of a [`PaymentRow`].
const PAYMENT_COLUMNS: &str =
    "payment_id, order_id, customer_id, amount_cents, status, version, created_at, updated_at";

#[derive(Debug, sqlx::FromRow)]
struct PaymentRow {
    payment_id: Uuid,
    order_id: Uuid,
    customer_id: Uuid,
    amount_cents: i64,
    status: String,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl PaymentRow {
    fn into_payment(self) -> Result<Payment, PaymentsError> {
        let status = match self.status.as_str() {
            "AUTHORIZED" => PaymentStatus::Authorized,
            "CAPTURED" => PaymentStatus::Captured,
            "VOIDED" => PaymentStatus::Voided,
            "REFUNDED" => PaymentStatus::Refunded,
            "DECLINED" => PaymentStatus::Declined,
            other => {
                return Err(PaymentsError::Unexpected(
                    format!("payment {} has unknown status {other:?}", self.payment_id).into(),
                ));
            }
        };
        Ok(Payment {
            id: PaymentId(self.payment_id),
            order_id: self.order_id,
            customer_id: self.customer_id,
            amount_cents: self.amount_cents,
            status,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Payments {
    /// The module over `db`; `customers` vouches for customers whose limit is set.
    pub fn new(db: ModuleDb, customers: Arc<dyn CustomersApi>, config: PaymentsConfig) -> Self {
        Self {
            db,
            customers,
            ledger: Ledger::new(config),
        }
    }

    /// The module's settings.
    pub fn config(&self) -> PaymentsConfig {
        self.ledger.config
    }

    /// The module's database handle.
    pub fn db(&self) -> &ModuleDb {
        &self.db
    }

    /// How many event-store version conflicts this instance has retried since it started.
    pub fn conflicts_retried(&self) -> u64 {
        self.ledger.conflicts.load(Ordering::Relaxed)
    }

    fn store_error(&self, error: StoreError) -> PaymentsError {
        match error {
            StoreError::Database(e) => self.db.classify(e).into(),
            other => PaymentsError::Unexpected(Box::new(other)),
        }
    }

    async fn history(
        &self,
        stream_type: &str,
        stream_id: Uuid,
    ) -> Result<Vec<StoredEvent>, PaymentsError> {
        let mut source = Source::Reader(self.db.reader()?);
        store::read_events(&mut source, stream_type, stream_id, 0)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// The full history of a customer's account stream, oldest first.
    ///
    /// # Errors
    /// [`PaymentsError::AccountNotFound`] when the account has no events;
    /// [`PaymentsError::Unavailable`].
    pub async fn account_events(
        &self,
        customer_id: Uuid,
    ) -> Result<Vec<PaymentEvent>, PaymentsError> {
        let events = self.history(AccountState::STREAM_TYPE, customer_id).await?;
        if events.is_empty() {
            return Err(PaymentsError::AccountNotFound(customer_id));
        }
        Ok(events.into_iter().map(to_dto).collect())
    }

    /// The account replayed from its first event, ignoring snapshots: what a snapshot-based
    /// read must agree with.
    ///
    /// # Errors
    /// As [`PaymentsApi::account`].
    pub async fn account_replayed(&self, customer_id: Uuid) -> Result<Account, PaymentsError> {
        self.load_account(customer_id, false).await
    }

    /// The version of the account's latest snapshot, if one was taken.
    ///
    /// # Errors
    /// [`PaymentsError::Unavailable`].
    pub async fn account_snapshot_version(
        &self,
        customer_id: Uuid,
    ) -> Result<Option<i64>, PaymentsError> {
        store::snapshot_version(self.db.reader()?, AccountState::STREAM_TYPE, customer_id)
            .await
            .map_err(|e| self.store_error(e))
    }

    async fn load_account(
        &self,
        customer_id: Uuid,
        use_snapshot: bool,
    ) -> Result<Account, PaymentsError> {
        let account: Loaded<AccountState> =
            store::load(Source::Reader(self.db.reader()?), customer_id, use_snapshot)
                .await
                .map_err(|e| self.store_error(e))?;
        if !account.state.opened {
            return Err(PaymentsError::AccountNotFound(customer_id));
        }
        Ok(account.state.to_dto(customer_id, account.version))
    }

    async fn check_customer(&self, customer_id: Uuid) -> Result<(), PaymentsError> {
        match self.customers.get(CustomerId(customer_id)).await {
            Ok(_) => Ok(()),
            Err(CustomersError::NotFound(_)) => Err(PaymentsError::CustomerNotFound(customer_id)),
            Err(CustomersError::Unavailable) => Err(PaymentsError::Unavailable("customers")),
            Err(other) => Err(PaymentsError::Unexpected(Box::new(other))),
        }
    }
}

/// `GET /payments`: only the set filters are in the SQL (see [`equal_filters`]), so a lookup by
/// order or customer seeks its index. Binds the cursor, the set filters, then the limit.
fn list_sql(filter: PaymentFilter) -> String {
    let (filters, limit) = equal_filters(
        2,
        &[
            ("order_id", filter.order_id.is_some()),
            ("customer_id", filter.customer_id.is_some()),
        ],
    );
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payment_views \
         WHERE payment_id > $1{filters} ORDER BY payment_id LIMIT ${limit}"
    )
}

/// [`PaymentsApi::payments_of_orders`]: binds the order ids as one [`IdSet`].
fn of_orders_sql(postgres: bool) -> String {
    format!(
        "SELECT {PAYMENT_COLUMNS} FROM payment_views WHERE {} ORDER BY order_id",
        IdSet::matches("order_id", 1, postgres)
    )
}

fn to_dto(event: StoredEvent) -> PaymentEvent {
    PaymentEvent {
        version: event.version,
        event_type: event.event_type,
        occurred_at: event.recorded_at,
        data: event.payload,
    }
}

#[async_trait]
impl PaymentsApi for Payments {
    async fn set_credit_limit(
        &self,
        customer_id: Uuid,
        limit: SetCreditLimit,
    ) -> Result<Account, PaymentsError> {
        let limit = validate::range(
            "credit_limit_cents",
            limit.credit_limit_cents,
            0,
            MAX_CREDIT_LIMIT_CENTS,
        )
        .map_err(|e| PaymentsError::Invalid(vec![e]))?;
        self.check_customer(customer_id).await?;
        let mut tx = self.db.begin().await?;
        let account = self
            .ledger
            .set_credit_limit(&mut tx, customer_id, limit)
            .await
            .map_err(|e| self.store_error(e))?;
        tx.commit()
            .await
            .map_err(|e| PaymentsError::from(self.db.classify(e)))?;
        Ok(account)
    }

    async fn account(&self, customer_id: Uuid) -> Result<Account, PaymentsError> {
        self.load_account(customer_id, true).await
    }

    async fn list_payments(
        &self,
        filter: PaymentFilter,
        page: PageRequest,
    ) -> Result<Page<Payment>, PaymentsError> {
        let sql = list_sql(filter);
        let rows: Vec<PaymentRow> = with_reader!(self.db.reader()?, |pool| {
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(page.after.unwrap_or(Uuid::nil()));
            if let Some(order_id) = filter.order_id {
                query = query.bind(order_id);
            }
            if let Some(customer_id) = filter.customer_id {
                query = query.bind(customer_id);
            }
            query.bind(i64::from(page.limit) + 1).fetch_all(pool).await
        })
        .map_err(|e| PaymentsError::from(self.db.classify(e)))?;
        let payments = rows
            .into_iter()
            .map(PaymentRow::into_payment)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(payments, page, |p| p.id.0))
    }

    async fn payments_of_orders(&self, order_ids: &[Uuid]) -> Result<Vec<Payment>, PaymentsError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let reader = self.db.reader()?;
        let sql = of_orders_sql(reader.is_postgres());
        let ids = IdSet(order_ids.to_vec());
        let rows: Vec<PaymentRow> = with_reader!(reader, |pool| {
            // Only the placeholder is generated; the ids are bound.
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(&ids)
                .fetch_all(pool)
                .await
        })
        .map_err(|e| PaymentsError::from(self.db.classify(e)))?;
        rows.into_iter().map(PaymentRow::into_payment).collect()
    }

    async fn payment(&self, id: PaymentId, at: PointInTime) -> Result<Payment, PaymentsError> {
        if let PointInTime::Version(version) = at
            && version < 1
        {
            return Err(PaymentsError::Invalid(vec![FieldError::new(
                "at_version",
                "must be an integer of at least 1",
            )]));
        }
        let events = self.history(PaymentState::STREAM_TYPE, id.0).await?;
        if events.is_empty() {
            return Err(PaymentsError::PaymentNotFound(id));
        }
        let upto: Vec<StoredEvent> = match at {
            PointInTime::Latest => events,
            PointInTime::Version(version) => {
                // A version the stream has not reached is a state that does not exist (yet).
                if events.last().is_some_and(|last| last.version < version) {
                    return Err(PaymentsError::NotYet(id));
                }
                events
                    .into_iter()
                    .filter(|e| e.version <= version)
                    .collect()
            }
            PointInTime::AsOf(instant) => events
                .into_iter()
                .filter(|e| e.recorded_at <= instant)
                .collect(),
        };
        let mut loaded = Loaded {
            stream_id: id.0,
            state: PaymentState::default(),
            version: 0,
        };
        store::fold(&mut loaded, &upto).map_err(|e| self.store_error(e))?;
        loaded.state.0.ok_or(PaymentsError::NotYet(id))
    }

    async fn payment_events(&self, id: PaymentId) -> Result<Vec<PaymentEvent>, PaymentsError> {
        let events = self.history(PaymentState::STREAM_TYPE, id.0).await?;
        if events.is_empty() {
            return Err(PaymentsError::PaymentNotFound(id));
        }
        Ok(events.into_iter().map(to_dto).collect())
    }
}

#[cfg(test)]
mod plan_tests {
    use shared_kernel::storage::testing::{assert_plan, on_each_backend};

    use super::*;

    /// Every keyed read of payments seeks an index on both backends, rather than walking the
    /// table: with `($1 IS NULL OR order_id = $1)` SQLite walked the primary key, and so did
    /// Postgres's generic plan.
    #[tokio::test]
    async fn keyed_reads_use_their_index() {
        let dir = tempfile::tempdir().unwrap();
        on_each_backend(crate::NAME, &crate::MIGRATIONS, dir.path(), |db| async move {
            let postgres = db.reader().unwrap().is_postgres();
            let nil = Some(Uuid::nil());
            let list: (&[&str], &[&str]) = (
                &["uuid", "uuid", "bigint"],
                &["gen_random_uuid()", "gen_random_uuid()", "51"],
            );
            let by_order = PaymentFilter {
                order_id: nil,
                customer_id: None,
            };
            let order_key =
                "SEARCH payment_views USING INDEX sqlite_autoindex_payment_views_2 (order_id=?)";
            assert_plan(&db, &list_sql(by_order), list, &[order_key], &[
                "Index Cond: (order_id = $2)",
            ])
            .await;
            let by_customer = PaymentFilter {
                order_id: None,
                customer_id: nil,
            };
            assert_plan(
                &db,
                &list_sql(by_customer),
                list,
                &["SEARCH payment_views USING INDEX payment_views_by_customer (customer_id=? AND payment_id>?)"],
                &["Index Cond: ((customer_id = $2) AND (payment_id > $1))"],
            )
            .await;
            let batch: (&[&str], &[&str]) = (&["uuid[]"], &["ARRAY[gen_random_uuid()]"]);
            assert_plan(&db, &of_orders_sql(postgres), batch, &[order_key], &[
                "Index Cond: (order_id = ANY ($1))",
            ])
            .await;
        })
        .await;
    }
}
