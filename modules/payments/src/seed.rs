//! Bulk history for benchmarks: captured payments of confirmed orders written straight into
//! the event store, as if their sagas had run long ago and their integration events had been
//! delivered and pruned from the outbox. Nothing is appended to the outbox.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use payments_api::PaymentId;
use serde_json::Value;
use shared_kernel::bulk_insert;
use shared_kernel::clock;
use shared_kernel::messaging::EventContext;
use shared_kernel::storage::Tx;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    AccountEvent, AccountState, Aggregate, DomainEvent, PaymentState, PaymentStreamEvent, Recorded,
};
use crate::service::Payments;
use crate::store::{self, Loaded, Source};

/// The payment of one confirmed order: authorized on the customer's account, then captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPayment {
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
}

/// One `events` row to insert.
struct Row {
    stream_id: Uuid,
    stream_type: &'static str,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: Value,
}

fn row<E: DomainEvent>(
    stream_id: Uuid,
    stream_type: &'static str,
    version: i64,
    event: &E,
) -> anyhow::Result<Row> {
    let tagged = serde_json::to_value(event)?;
    let (Some(event_type), Some(payload)) = (
        tagged.get("type").and_then(Value::as_str),
        tagged.get("data"),
    ) else {
        anyhow::bail!("event is not {{type, data}}: {tagged}");
    };
    Ok(Row {
        stream_id,
        stream_type,
        version,
        event_type: event_type.to_owned(),
        schema_version: E::SCHEMA_VERSION,
        payload: payload.clone(),
    })
}

impl Payments {
    /// Bulk-inserts `payments` as settled history, in one transaction with multi-row
    /// `INSERT`s: each customer's account stream gets a `CreditReserved` per payment (the
    /// account is opened with the default limit first if needed; every amount must fit the
    /// available credit, as the saga would have required) and a snapshot at its new version;
    /// each payment gets its stream (`PaymentAuthorized` v1, `PaymentCaptured` v2) and its
    /// `payment_views` row (CAPTURED). Appends no outbox event. For benchmarks
    /// (`bounded seed-history`); payment and order ids must be new.
    ///
    /// # Errors
    /// The storage error, or a payment that does not fit its account's credit; nothing is
    /// written then.
    pub async fn seed_history(&self, payments: &[SeedPayment]) -> anyhow::Result<()> {
        let config = self.ledger.config;
        let mut tx = self.db().begin().await?;
        let recorded_at = clock::now();
        let mut rows = Vec::with_capacity(payments.len() * 3);
        // Accounts first, as every command writes them: load, decide, fold.
        let mut accounts: HashMap<Uuid, (Loaded<AccountState>, i64)> = HashMap::new();
        for payment in payments {
            let account = match accounts.entry(payment.customer_id) {
                Entry::Occupied(entry) => &mut entry.into_mut().0,
                Entry::Vacant(entry) => {
                    let loaded: Loaded<AccountState> =
                        store::load(Source::Tx(&mut tx), payment.customer_id, true).await?;
                    let version = loaded.version;
                    &mut entry.insert((loaded, version)).0
                }
            };
            let reservation = account.state.decide_reserve(
                PaymentId(payment.payment_id),
                payment.order_id,
                payment.amount_cents,
                config.default_credit_limit_cents,
            );
            anyhow::ensure!(
                reservation.reserved,
                "history payment of {} cents does not fit the {} cents available to customer {}",
                payment.amount_cents,
                reservation.available_cents,
                payment.customer_id
            );
            for event in &reservation.events {
                account.version += 1;
                account.state.apply(
                    event,
                    Recorded {
                        version: account.version,
                        recorded_at,
                    },
                );
                rows.push(row::<AccountEvent>(
                    payment.customer_id,
                    AccountState::STREAM_TYPE,
                    account.version,
                    event,
                )?);
            }
        }
        let mut views = Vec::with_capacity(payments.len());
        for payment in payments {
            let events = [
                PaymentStreamEvent::PaymentAuthorized {
                    payment_id: PaymentId(payment.payment_id),
                    order_id: payment.order_id,
                    customer_id: payment.customer_id,
                    amount_cents: payment.amount_cents,
                },
                PaymentStreamEvent::PaymentCaptured {},
            ];
            let mut state = PaymentState::default();
            for (version, event) in (1..).zip(&events) {
                state.apply(
                    event,
                    Recorded {
                        version,
                        recorded_at,
                    },
                );
                rows.push(row(
                    payment.payment_id,
                    PaymentState::STREAM_TYPE,
                    version,
                    event,
                )?);
            }
            let Some(view) = state.0 else {
                anyhow::bail!("a history payment folded to nothing");
            };
            views.push(view);
        }
        let context = EventContext::current();
        let metadata = serde_json::json!({
            "correlation_id": context.correlation_id,
            "causation_id": context.causation_id,
            "headers": context.headers,
        });
        insert(&mut tx, &rows, &metadata, recorded_at).await?;
        bulk_insert!(
            &mut tx,
            "INSERT INTO payment_views (payment_id, order_id, customer_id, amount_cents, status, \
               version, created_at, updated_at)",
            8,
            views,
            |q, v| q
                .bind(v.id.0)
                .bind(v.order_id)
                .bind(v.customer_id)
                .bind(v.amount_cents)
                .bind(v.status.as_str())
                .bind(v.version)
                .bind(v.created_at)
                .bind(v.updated_at)
        )?;
        if config.snapshot_every > 0 {
            for (account, loaded_version) in accounts.values() {
                if account.version > *loaded_version {
                    store::save_snapshot(&mut tx, account, recorded_at).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert(
    tx: &mut Tx,
    rows: &[Row],
    metadata: &Value,
    recorded_at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    bulk_insert!(
        tx,
        "INSERT INTO events (stream_id, stream_type, version, event_type, schema_version, \
           payload, metadata, recorded_at)",
        8,
        rows,
        |q, r| q
            .bind(r.stream_id)
            .bind(r.stream_type)
            .bind(r.version)
            .bind(r.event_type.as_str())
            .bind(r.schema_version)
            .bind(Json(&r.payload))
            .bind(Json(metadata))
            .bind(recorded_at)
    )
}
