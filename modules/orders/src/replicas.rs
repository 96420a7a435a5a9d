//! Replicas of customers (id, name, email) and products (id, sku, name, price), kept from the
//! owners' events (applied by [`crate::handlers`]). A replica row remembers the seq of the
//! event that wrote it, so an older event never overwrites a newer one.

use std::collections::BTreeMap;

use shared_kernel::clock;
use shared_kernel::storage::{Tx, TxConn, bulk};
use shared_kernel::with_tx;
use uuid::Uuid;

/// The conflict clause of a product replica's upsert: a row is only overwritten by a later
/// event.
macro_rules! product_upsert {
    () => {
        "ON CONFLICT (product_id) DO UPDATE \
           SET sku = excluded.sku, name = excluded.name, price_cents = excluded.price_cents, \
               source_seq = excluded.source_seq, updated_at = excluded.updated_at \
           WHERE product_replicas.source_seq < excluded.source_seq"
    };
}

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

/// Writes products' replicas from their events, each at its seq of inventory's log (in any
/// order): per product, the event of the highest seq wins, unless the replica was written by a
/// later one already — what applying them one by one in seq order leaves. One statement for
/// any number of products (on SQLite one per [`bulk::MAX_BINDS`] parameters); rows in product
/// id order.
pub(crate) async fn upsert_products(
    tx: &mut Tx,
    products: &[(ProductReplica, i64)],
) -> Result<(), sqlx::Error> {
    // An upsert cannot touch one row twice: the latest event of each product only.
    let mut latest: BTreeMap<Uuid, &(ProductReplica, i64)> = BTreeMap::new();
    for event in products {
        let newest = latest.get(&event.0.id).is_none_or(|kept| kept.1 < event.1);
        if newest {
            latest.insert(event.0.id, event);
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    let rows: Vec<&(ProductReplica, i64)> = latest.into_values().collect();
    let now = clock::now();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let ids: Vec<Uuid> = rows.iter().map(|(p, _)| p.id).collect();
            let skus: Vec<&str> = rows.iter().map(|(p, _)| p.sku.as_str()).collect();
            let names: Vec<&str> = rows.iter().map(|(p, _)| p.name.as_str()).collect();
            let prices: Vec<i64> = rows.iter().map(|(p, _)| p.price_cents).collect();
            let seqs: Vec<i64> = rows.iter().map(|(_, seq)| *seq).collect();
            sqlx::query(concat!(
                "INSERT INTO product_replicas (product_id, sku, name, price_cents, source_seq, updated_at) \
                 SELECT v.id, v.sku, v.name, v.price_cents, v.seq, $6 \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[]) \
                   AS v(id, sku, name, price_cents, seq) ",
                product_upsert!()
            ))
            .bind(ids)
            .bind(skus)
            .bind(names)
            .bind(prices)
            .bind(seqs)
            .bind(now)
            .execute(&mut **conn)
            .await
            .map(drop)
        }
        TxConn::Sqlite(conn) => {
            for chunk in rows.chunks(bulk::rows_per_statement(6)) {
                let sql = format!(
                    concat!(
                        "INSERT INTO product_replicas (product_id, sku, name, price_cents, source_seq, updated_at) \
                         VALUES {} ",
                        product_upsert!()
                    ),
                    bulk::values(chunk.len(), 6, false)
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for (product, seq) in chunk {
                    query = query
                        .bind(product.id)
                        .bind(product.sku.as_str())
                        .bind(product.name.as_str())
                        .bind(product.price_cents)
                        .bind(*seq)
                        .bind(now);
                }
                query.execute(&mut **conn).await?;
            }
            Ok(())
        }
    }
}
