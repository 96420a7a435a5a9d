//! [`Ledger`]: the payments commands, each run inside a caller's transaction (an HTTP request's
//! or a subscription batch's): load the streams, decide, append, keep the payment view, and —
//! once the event-store writes stand — append the integration event to the outbox in the same
//! transaction.

mod batch;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use payments_api::events::{
    PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRefunded, PaymentVoided,
};
use payments_api::{Account, Payment, PaymentId};
use shared_kernel::messaging::EventContext;
use shared_kernel::messaging::outbox::{self, Outgoing};
use shared_kernel::storage::{Tx, TxConn, bulk};
use shared_kernel::with_tx;
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use batch::{Command, apply_batch};

use crate::PaymentsConfig;
use crate::domain::{AccountState, PaymentState, PaymentStreamEvent, Reservation, Settlement};
use crate::store::{self, Loaded, Source, StoreError, retry_on_conflict};

/// Reason of a declined payment.
pub const INSUFFICIENT_CREDIT: &str = "insufficient_credit";
/// Reason of a declined payment whose order total is negative (never sent by orders).
pub const INVALID_AMOUNT: &str = "invalid_amount";

/// The integration event a command publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Authorized(PaymentAuthorized),
    Declined(PaymentDeclined),
    Captured(PaymentCaptured),
    Voided(PaymentVoided),
    Refunded(PaymentRefunded),
}

/// The payments commands over the event store.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub config: PaymentsConfig,
    /// Version conflicts retried since start (also in the `bounded_event_store_conflicts_total`
    /// metric).
    pub conflicts: Arc<AtomicU64>,
}

/// An order's payment, as the command needs it.
struct OrderPayment {
    payment_id: PaymentId,
}

impl Ledger {
    pub fn new(config: PaymentsConfig) -> Self {
        Self {
            config,
            conflicts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Opens the customer's account with the default limit unless it is open already.
    pub async fn open_account(&self, tx: &mut Tx, customer_id: Uuid) -> Result<(), StoreError> {
        let limit = self.config.default_credit_limit_cents;
        retry_on_conflict!(tx, self.conflicts, async {
            let account: Loaded<AccountState> =
                store::load(Source::Tx(&mut *tx), customer_id, true).await?;
            let events = account.state.decide_open(limit);
            store::append(&mut *tx, &account, &events, self.config.snapshot_every).await?;
            Ok(())
        })?;
        Ok(())
    }

    /// Sets the limit of the customer's account, opening it if needed.
    pub async fn set_credit_limit(
        &self,
        tx: &mut Tx,
        customer_id: Uuid,
        limit: i64,
    ) -> Result<Account, StoreError> {
        let (account, _) = retry_on_conflict!(tx, self.conflicts, async {
            let account: Loaded<AccountState> =
                store::load(Source::Tx(&mut *tx), customer_id, true).await?;
            let events = account.state.decide_set_limit(limit);
            store::append(&mut *tx, &account, &events, self.config.snapshot_every).await
        })?;
        Ok(account.state.to_dto(customer_id, account.version))
    }

    /// Applies `orders.OrderPlaced`: authorizes the total on the customer's account, or
    /// declines it; nothing when the order has a payment already.
    pub async fn authorize(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        customer_id: Uuid,
        amount_cents: i64,
    ) -> Result<Option<Payment>, StoreError> {
        let (outcome, _) = retry_on_conflict!(
            tx,
            self.conflicts,
            self.try_authorize(&mut *tx, order_id, customer_id, amount_cents)
        )?;
        let Some((payment, published)) = outcome else {
            return Ok(None);
        };
        publish(tx, &published).await?;
        Ok(Some(payment))
    }

    async fn try_authorize(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        customer_id: Uuid,
        amount_cents: i64,
    ) -> Result<Option<(Payment, Published)>, StoreError> {
        if find_by_order(tx, order_id).await?.is_some() {
            return Ok(None);
        }
        let account: Loaded<AccountState> =
            store::load(Source::Tx(&mut *tx), customer_id, true).await?;
        let payment_id = PaymentId::generate();
        let reservation = account.state.decide_reserve(
            payment_id,
            order_id,
            amount_cents,
            self.config.default_credit_limit_cents,
        );
        store::append(
            &mut *tx,
            &account,
            &reservation.events,
            self.config.snapshot_every,
        )
        .await?;
        let (event, published) = authorization(
            payment_id,
            order_id,
            customer_id,
            amount_cents,
            &reservation,
        );
        let fresh = Loaded {
            stream_id: payment_id.0,
            state: PaymentState::default(),
            version: 0,
        };
        let payment = store::append(&mut *tx, &fresh, &[event], self.config.snapshot_every).await?;
        let payment = payment.state.0.ok_or_else(|| StoreError::Corrupt {
            stream_id: payment_id.0,
            message: "a new payment folded to nothing".into(),
        })?;
        write_view(tx, &payment).await?;
        Ok(Some((payment, published)))
    }

    /// Applies `orders.OrderConfirmed` (capture), `orders.OrderRejected` (void) or
    /// `orders.OrderCancelled` (void or refund) to the order's payment: nothing when there is
    /// no payment or its state does not call for it (duplicates, late events).
    pub async fn settle(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        settlement: Settlement,
    ) -> Result<Option<Payment>, StoreError> {
        let (outcome, _) = retry_on_conflict!(
            tx,
            self.conflicts,
            self.try_settle(&mut *tx, order_id, settlement)
        )?;
        let Some((payment, published)) = outcome else {
            return Ok(None);
        };
        publish(tx, &published).await?;
        Ok(Some(payment))
    }

    async fn try_settle(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        settlement: Settlement,
    ) -> Result<Option<(Payment, Published)>, StoreError> {
        let Some(found) = find_by_order(tx, order_id).await? else {
            return Ok(None);
        };
        let stream: Loaded<PaymentState> =
            store::load(Source::Tx(&mut *tx), found.payment_id.0, true).await?;
        let (Some(current), Some(settled)) = (
            stream.state.0.clone(),
            stream.state.decide_settlement(settlement),
        ) else {
            return Ok(None);
        };
        // Account first, then payment: every command writes streams in this order.
        if let Some(reason) = settled.release {
            let account: Loaded<AccountState> =
                store::load(Source::Tx(&mut *tx), current.customer_id, true).await?;
            let events = AccountState::decide_release(&current, reason);
            store::append(&mut *tx, &account, &events, self.config.snapshot_every).await?;
        }
        let next = store::append(
            &mut *tx,
            &stream,
            std::slice::from_ref(&settled.event),
            self.config.snapshot_every,
        )
        .await?;
        let payment = next.state.0.ok_or_else(|| StoreError::Corrupt {
            stream_id: found.payment_id.0,
            message: "a settled payment folded to nothing".into(),
        })?;
        write_view(tx, &payment).await?;
        let published = settled_event(&payment, &settled.event);
        Ok(Some((payment, published)))
    }
}

async fn publish(tx: &mut Tx, event: &Published) -> Result<(), StoreError> {
    outbox::append_many(tx, [event.outgoing(&EventContext::current())?]);
    Ok(())
}

impl Published {
    /// The outbox row of this event, caused as `context` says.
    pub(crate) fn outgoing(&self, context: &EventContext) -> Result<Outgoing, sqlx::Error> {
        match self {
            Published::Authorized(e) => Outgoing::new(e, context),
            Published::Declined(e) => Outgoing::new(e, context),
            Published::Captured(e) => Outgoing::new(e, context),
            Published::Voided(e) => Outgoing::new(e, context),
            Published::Refunded(e) => Outgoing::new(e, context),
        }
    }
}

/// The payment stream's first event and the integration event for an order's authorization
/// attempt, as `reservation` decided it.
fn authorization(
    payment_id: PaymentId,
    order_id: Uuid,
    customer_id: Uuid,
    amount_cents: i64,
    reservation: &Reservation,
) -> (PaymentStreamEvent, Published) {
    if reservation.reserved {
        (
            PaymentStreamEvent::PaymentAuthorized {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
            },
            Published::Authorized(PaymentAuthorized {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
            }),
        )
    } else {
        let reason = if amount_cents < 0 {
            INVALID_AMOUNT
        } else {
            INSUFFICIENT_CREDIT
        };
        (
            PaymentStreamEvent::PaymentDeclined {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
                reason: reason.to_owned(),
                available_cents: reservation.available_cents,
            },
            Published::Declined(PaymentDeclined {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
                reason: reason.to_owned(),
            }),
        )
    }
}

/// The integration event of a settlement `event` applied to `payment`.
fn settled_event(payment: &Payment, event: &PaymentStreamEvent) -> Published {
    let (payment_id, order_id, amount_cents) = (payment.id, payment.order_id, payment.amount_cents);
    match event {
        PaymentStreamEvent::PaymentCaptured {} => Published::Captured(PaymentCaptured {
            payment_id,
            order_id,
            amount_cents,
        }),
        PaymentStreamEvent::PaymentRefunded {} => Published::Refunded(PaymentRefunded {
            payment_id,
            order_id,
            amount_cents,
        }),
        _ => Published::Voided(PaymentVoided {
            payment_id,
            order_id,
            amount_cents,
        }),
    }
}

async fn find_by_order(tx: &mut Tx, order_id: Uuid) -> Result<Option<OrderPayment>, StoreError> {
    let row: Option<(Uuid,)> = with_tx!(tx, |conn| {
        sqlx::query_as("SELECT payment_id FROM payment_views WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await
    })?;
    Ok(row.map(|(id,)| OrderPayment {
        payment_id: PaymentId(id),
    }))
}

/// Keeps the inline projection of a payment stream in step with its latest append.
async fn write_view(tx: &mut Tx, payment: &Payment) -> Result<(), StoreError> {
    write_views(tx, std::slice::from_ref(payment)).await
}

/// Keeps the inline projections of payment streams in step with their latest appends: one
/// statement for any number of payments (at most one row each), as one does for one.
async fn write_views(tx: &mut Tx, payments: &[Payment]) -> Result<(), StoreError> {
    let Some(first) = payments.first() else {
        return Ok(());
    };
    const UPSERT: &str = "ON CONFLICT (payment_id) DO UPDATE \
           SET status = excluded.status, version = excluded.version, \
               updated_at = excluded.updated_at \
           WHERE payment_views.version < excluded.version";
    const COLUMNS: &str = "INSERT INTO payment_views (payment_id, order_id, customer_id, \
           amount_cents, status, version, created_at, updated_at)";
    let written = match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let uuids = |f: fn(&Payment) -> Uuid| payments.iter().map(f).collect::<Vec<_>>();
            let times =
                |f: fn(&Payment) -> OffsetDateTime| payments.iter().map(f).collect::<Vec<_>>();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{COLUMNS} SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], \
                   $4::int8[], $5::text[], $6::int8[], $7::timestamptz[], $8::timestamptz[]) \
                 {UPSERT}"
            )))
            .bind(uuids(|p| p.id.0))
            .bind(uuids(|p| p.order_id))
            .bind(uuids(|p| p.customer_id))
            .bind(payments.iter().map(|p| p.amount_cents).collect::<Vec<_>>())
            .bind(
                payments
                    .iter()
                    .map(|p| p.status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(payments.iter().map(|p| p.version).collect::<Vec<_>>())
            .bind(times(|p| p.created_at))
            .bind(times(|p| p.updated_at))
            .execute(&mut **conn)
            .await
            .map(drop)
        }
        TxConn::Sqlite(conn) => {
            let mut result = Ok(());
            for chunk in payments.chunks(bulk::rows_per_statement(8)) {
                let sql = format!(
                    "{COLUMNS} SELECT * FROM (VALUES {}) WHERE true {UPSERT}",
                    bulk::values(chunk.len(), 8, false)
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for p in chunk {
                    query = query
                        .bind(p.id.0)
                        .bind(p.order_id)
                        .bind(p.customer_id)
                        .bind(p.amount_cents)
                        .bind(p.status.as_str())
                        .bind(p.version)
                        .bind(p.created_at)
                        .bind(p.updated_at);
                }
                result = query.execute(&mut **conn).await.map(drop);
                if result.is_err() {
                    break;
                }
            }
            result
        }
    };
    written.map_err(|e| store::payment_view_error(e, first.order_id))
}
