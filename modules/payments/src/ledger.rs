//! [`Ledger`]: the payments commands, each run inside a caller's transaction (an HTTP request's
//! or a subscription batch's): load the streams, decide, append, keep the payment view, and —
//! once the event-store writes stand — append the integration event to the outbox in the same
//! transaction.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use payments_api::events::{
    PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRefunded, PaymentVoided,
};
use payments_api::{Account, Payment, PaymentId};
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::Tx;
use shared_kernel::with_tx;
use uuid::Uuid;

use crate::PaymentsConfig;
use crate::domain::{AccountState, PaymentState, PaymentStreamEvent, Settlement};
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
        let (event, published) = if reservation.reserved {
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
        };
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
        let (payment_id, order_id, amount_cents) =
            (payment.id, payment.order_id, payment.amount_cents);
        let published = match settled.event {
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
        };
        Ok(Some((payment, published)))
    }
}

async fn publish(tx: &mut Tx, event: &Published) -> Result<(), StoreError> {
    let context = EventContext::current();
    match event {
        Published::Authorized(e) => outbox::append(tx, e, &context).await?,
        Published::Declined(e) => outbox::append(tx, e, &context).await?,
        Published::Captured(e) => outbox::append(tx, e, &context).await?,
        Published::Voided(e) => outbox::append(tx, e, &context).await?,
        Published::Refunded(e) => outbox::append(tx, e, &context).await?,
    };
    Ok(())
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
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO payment_views (payment_id, order_id, customer_id, amount_cents, status, \
               version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (payment_id) DO UPDATE \
               SET status = excluded.status, version = excluded.version, \
                   updated_at = excluded.updated_at \
               WHERE payment_views.version < excluded.version",
        )
        .bind(payment.id.0)
        .bind(payment.order_id)
        .bind(payment.customer_id)
        .bind(payment.amount_cents)
        .bind(payment.status.as_str())
        .bind(payment.version)
        .bind(payment.created_at)
        .bind(payment.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
    .map_err(|e| store::payment_view_error(e, payment.order_id))
}
