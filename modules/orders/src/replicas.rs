//! Replicas of customers (id, name, email) and products (id, sku, name, price), kept from the
//! owners' events (applied by [`crate::handlers`]). A replica row remembers the seq of the
//! event that wrote it, so an older event never overwrites a newer one.

use shared_kernel::clock;
use shared_kernel::storage::Tx;
use shared_kernel::with_tx;
use uuid::Uuid;

/// Writes a customer's replica from the event at `seq` of customers' log.
pub(crate) async fn upsert_customer(
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

/// A product as its events describe it.
#[derive(Debug)]
pub(crate) struct ProductReplica {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// Writes a product's replica from the event at `seq` of inventory's log.
pub(crate) async fn upsert_product(
    tx: &mut Tx,
    product: &ProductReplica,
    seq: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO product_replicas (product_id, sku, name, price_cents, source_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (product_id) DO UPDATE \
               SET sku = excluded.sku, name = excluded.name, price_cents = excluded.price_cents, \
                   source_seq = excluded.source_seq, updated_at = excluded.updated_at \
               WHERE product_replicas.source_seq < excluded.source_seq",
        )
        .bind(product.id)
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_cents)
        .bind(seq)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}
