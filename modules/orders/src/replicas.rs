//! Replicas of customers (id, name, email) and products (id, sku, name, price), kept from the
//! owners' events.

use async_trait::async_trait;
use customers_api::events::{CustomerRegistered, CustomerUpdated};
use inventory_api::events::{ProductCreated, ProductUpdated};
use shared_kernel::clock;
use shared_kernel::messaging::{Envelope, Handler, IntegrationEvent};
use shared_kernel::storage::Tx;
use shared_kernel::with_tx;
use uuid::Uuid;

/// Applies `customers.*` events to `customer_replicas`.
#[derive(Debug)]
pub struct CustomerReplicator;

/// Applies `inventory.Product*` events to `product_replicas`.
#[derive(Debug)]
pub struct ProductReplicator;

#[async_trait]
impl Handler for CustomerReplicator {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let (id, name, email) = if let Some(e) = event.decode::<CustomerRegistered>() {
            let e = e?;
            (e.customer_id.0, e.name, e.email)
        } else if let Some(e) = event.decode::<CustomerUpdated>() {
            let e = e?;
            (e.customer_id.0, e.name, e.email)
        } else {
            return Ok(());
        };
        upsert_customer(tx, id, &name, &email, event.seq).await?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[CustomerRegistered::TYPE, CustomerUpdated::TYPE])
    }
}

async fn upsert_customer(
    tx: &mut Tx,
    id: Uuid,
    name: &str,
    email: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO customer_replicas (customer_id, name, email, source_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (customer_id) DO UPDATE \
               SET name = excluded.name, email = excluded.email, \
                   source_seq = excluded.source_seq, updated_at = excluded.updated_at \
               WHERE customer_replicas.source_seq < excluded.source_seq",
        )
        .bind(id)
        .bind(name)
        .bind(email)
        .bind(seq)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}

#[async_trait]
impl Handler for ProductReplicator {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let (id, sku, name, price_cents) = if let Some(e) = event.decode::<ProductCreated>() {
            let e = e?;
            (e.product_id.0, e.sku, e.name, e.price_cents)
        } else if let Some(e) = event.decode::<ProductUpdated>() {
            let e = e?;
            (e.product_id.0, e.sku, e.name, e.price_cents)
        } else {
            return Ok(());
        };
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO product_replicas (product_id, sku, name, price_cents, source_seq, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (product_id) DO UPDATE \
                   SET sku = excluded.sku, name = excluded.name, price_cents = excluded.price_cents, \
                       source_seq = excluded.source_seq, updated_at = excluded.updated_at \
                   WHERE product_replicas.source_seq < excluded.source_seq",
            )
            .bind(id)
            .bind(&sku)
            .bind(&name)
            .bind(price_cents)
            .bind(event.seq)
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[ProductCreated::TYPE, ProductUpdated::TYPE])
    }
}
