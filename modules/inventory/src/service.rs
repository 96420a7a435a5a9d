//! [`Inventory`]: the module's implementation of [`InventoryApi`] over its own database.

use async_trait::async_trait;
use inventory_api::events::{ProductCreated, ProductUpdated};
use inventory_api::{
    Availability, InventoryApi, InventoryError, NewProduct, Product, ProductId, ProductPatch,
    Reservation, ReservationLine, ReservationStatus, SetStock, StockLevel,
};
use shared_kernel::clock;
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::idempotency::{self, IdempotencyError, IdempotencyKey};
use shared_kernel::storage::{IdSet, ModuleDb, Tx, is_unique_violation};
use shared_kernel::{with_reader, with_tx};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{self, ValidPatch, ValidProduct};

/// Scope of `Idempotency-Key`s of product creation.
const SCOPE_CREATE_PRODUCT: &str = "inventory.create_product";

/// The inventory module over its database handle.
#[derive(Debug, Clone)]
pub struct Inventory {
    db: ModuleDb,
}

#[derive(Debug, sqlx::FromRow)]
struct ProductRow {
    id: Uuid,
    sku: String,
    name: String,
    price_cents: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: ProductId(row.id),
            sku: row.sku,
            name: row.name,
            price_cents: row.price_cents,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct StockRow {
    warehouse: String,
    on_hand: i64,
    reserved: i64,
}

impl StockRow {
    fn into_level(self, product_id: ProductId) -> StockLevel {
        StockLevel {
            product_id,
            available: (self.on_hand - self.reserved).max(0),
            warehouse: self.warehouse,
            on_hand: self.on_hand,
            reserved: self.reserved,
        }
    }
}

/// One row of the reservations read: a reservation and one of its lines, if it has any.
type ReservationRow = (
    Uuid,
    String,
    OffsetDateTime,
    OffsetDateTime,
    Option<Uuid>,
    Option<String>,
    Option<i64>,
);

/// [`InventoryApi::get_products`]: binds the product ids as one [`IdSet`].
fn products_sql(postgres: bool) -> String {
    format!(
        "SELECT id, sku, name, price_cents, created_at, updated_at FROM products \
         WHERE {} ORDER BY id",
        IdSet::matches("id", 1, postgres)
    )
}

/// [`InventoryApi::reservations`]: binds the order ids as one [`IdSet`].
fn reservations_sql(postgres: bool) -> String {
    format!(
        "SELECT r.order_id, r.status, r.created_at, r.updated_at, \
           l.product_id, l.warehouse, l.quantity \
         FROM reservations r LEFT JOIN reservation_lines l ON l.order_id = r.order_id \
         WHERE {} ORDER BY r.order_id",
        IdSet::matches("r.order_id", 1, postgres)
    )
}

impl Inventory {
    /// The module over its own database handle.
    pub fn new(db: ModuleDb) -> Self {
        Self { db }
    }

    pub(crate) fn db(&self) -> &ModuleDb {
        &self.db
    }

    fn storage(&self, error: sqlx::Error) -> InventoryError {
        self.db.classify(error).into()
    }

    fn idempotency_error(&self, error: IdempotencyError) -> InventoryError {
        match error {
            IdempotencyError::Reused(e) => e.into(),
            IdempotencyError::Storage(e) => self.storage(e),
        }
    }

    async fn product_exists(&self, tx: &mut Tx, id: ProductId) -> Result<bool, InventoryError> {
        let found: Option<(Uuid,)> = with_tx!(tx, |conn| {
            sqlx::query_as("SELECT id FROM products WHERE id = $1")
                .bind(id.0)
                .fetch_optional(conn)
                .await
        })
        .map_err(|e| self.storage(e))?;
        Ok(found.is_some())
    }
}

async fn insert_product(tx: &mut Tx, product: &Product) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO products (id, sku, name, price_cents, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(product.id.0)
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_cents)
        .bind(product.created_at)
        .bind(product.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

#[async_trait]
impl InventoryApi for Inventory {
    async fn create_product(
        &self,
        input: NewProduct,
        key: Option<IdempotencyKey>,
    ) -> Result<Product, InventoryError> {
        let valid = ValidProduct::parse(&input).map_err(InventoryError::Invalid)?;
        let fingerprint = idempotency::fingerprint(&input);
        let mut tx = self.db.begin().await?;
        if let Some(key) = &key {
            let stored =
                idempotency::replay(&mut tx, SCOPE_CREATE_PRODUCT, key, &fingerprint).await;
            if let Some(product) = stored.map_err(|e| self.idempotency_error(e))? {
                return Ok(product);
            }
        }
        let now = clock::now();
        let product = Product {
            id: ProductId::generate(),
            sku: valid.sku,
            name: valid.name,
            price_cents: valid.price_cents,
            created_at: now,
            updated_at: now,
        };
        insert_product(&mut tx, &product).await.map_err(|e| {
            if is_unique_violation(&e, "products_sku_key", "products.sku") {
                InventoryError::SkuTaken(product.sku.clone())
            } else {
                self.storage(e)
            }
        })?;
        let created = ProductCreated {
            product_id: product.id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            price_cents: product.price_cents,
        };
        outbox::append(&mut tx, &created, &EventContext::current()).map_err(|e| self.storage(e))?;
        if let Some(key) = &key {
            idempotency::remember(&mut tx, SCOPE_CREATE_PRODUCT, key, &fingerprint, &product)
                .await
                .map_err(|e| self.storage(e))?;
        }
        tx.commit().await.map_err(|e| self.storage(e))?;
        Ok(product)
    }

    async fn get_product(&self, id: ProductId) -> Result<Product, InventoryError> {
        let row: Option<ProductRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(
                "SELECT id, sku, name, price_cents, created_at, updated_at \
                 FROM products WHERE id = $1",
            )
            .bind(id.0)
            .fetch_optional(pool)
            .await
        })
        .map_err(|e| self.storage(e))?;
        row.map(Product::from)
            .ok_or(InventoryError::ProductNotFound(id))
    }

    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, InventoryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = IdSet(ids.iter().map(|id| id.0).collect());
        let rows: Vec<ProductRow> = ids.read(&self.db, products_sql).await?;
        Ok(rows.into_iter().map(Product::from).collect())
    }

    async fn update_product(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, InventoryError> {
        let valid = ValidPatch::parse(&patch).map_err(InventoryError::Invalid)?;
        if valid.is_empty() {
            return self.get_product(id).await;
        }
        let mut tx = self.db.begin().await?;
        let row: Option<ProductRow> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "UPDATE products SET \
                   name = COALESCE($2, name), \
                   price_cents = COALESCE($3, price_cents), \
                   updated_at = $4 \
                 WHERE id = $1 \
                 RETURNING id, sku, name, price_cents, created_at, updated_at",
            )
            .bind(id.0)
            .bind(valid.name.as_deref())
            .bind(valid.price_cents)
            .bind(clock::now())
            .fetch_optional(conn)
            .await
        })
        .map_err(|e| self.storage(e))?;
        let Some(row) = row else {
            return Err(InventoryError::ProductNotFound(id));
        };
        let product = Product::from(row);
        let updated = ProductUpdated {
            product_id: product.id,
            sku: product.sku.clone(),
            name: product.name.clone(),
            price_cents: product.price_cents,
        };
        outbox::append(&mut tx, &updated, &EventContext::current()).map_err(|e| self.storage(e))?;
        tx.commit().await.map_err(|e| self.storage(e))?;
        Ok(product)
    }

    async fn list_products(&self, page: PageRequest) -> Result<Page<Product>, InventoryError> {
        let rows: Vec<ProductRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(
                "SELECT id, sku, name, price_cents, created_at, updated_at FROM products \
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after.unwrap_or(Uuid::nil()))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await
        })
        .map_err(|e| self.storage(e))?;
        Ok(Page::from_rows(
            rows.into_iter().map(Product::from).collect(),
            page,
            |p| p.id.0,
        ))
    }

    async fn set_stock(
        &self,
        product: ProductId,
        warehouse: String,
        stock: SetStock,
    ) -> Result<StockLevel, InventoryError> {
        let (warehouse, on_hand) =
            domain::stock(&warehouse, stock.on_hand).map_err(InventoryError::Invalid)?;
        let mut tx = self.db.begin().await?;
        if !self.product_exists(&mut tx, product).await? {
            return Err(InventoryError::ProductNotFound(product));
        }
        // One conditional upsert: the stock level never drops below what is reserved, even
        // when a reservation commits concurrently.
        let row: Option<StockRow> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "INSERT INTO stock_levels (product_id, warehouse, on_hand, reserved, updated_at) \
                 VALUES ($1, $2, $3, 0, $4) \
                 ON CONFLICT (product_id, warehouse) DO UPDATE \
                   SET on_hand = excluded.on_hand, updated_at = excluded.updated_at \
                   WHERE stock_levels.reserved <= excluded.on_hand \
                 RETURNING warehouse, on_hand, reserved",
            )
            .bind(product.0)
            .bind(&warehouse)
            .bind(on_hand)
            .bind(clock::now())
            .fetch_optional(&mut *conn)
            .await
        })
        .map_err(|e| self.storage(e))?;
        let Some(row) = row else {
            let reserved: (i64,) = with_tx!(&mut tx, |conn| {
                sqlx::query_as(
                    "SELECT reserved FROM stock_levels WHERE product_id = $1 AND warehouse = $2",
                )
                .bind(product.0)
                .bind(&warehouse)
                .fetch_one(conn)
                .await
            })
            .map_err(|e| self.storage(e))?;
            return Err(InventoryError::BelowReserved {
                warehouse,
                requested: on_hand,
                reserved: reserved.0,
            });
        };
        tx.commit().await.map_err(|e| self.storage(e))?;
        Ok(row.into_level(product))
    }

    async fn availability(&self, product: ProductId) -> Result<Availability, InventoryError> {
        // Product and stock in one snapshot: a single statement on the reader.
        let rows: Vec<(Uuid, Option<String>, Option<i64>, Option<i64>)> =
            with_reader!(self.db.reader()?, |pool| {
                sqlx::query_as(
                    "SELECT p.id, s.warehouse, s.on_hand, s.reserved \
                     FROM products p LEFT JOIN stock_levels s ON s.product_id = p.id \
                     WHERE p.id = $1",
                )
                .bind(product.0)
                .fetch_all(pool)
                .await
            })
            .map_err(|e| self.storage(e))?;
        if rows.is_empty() {
            return Err(InventoryError::ProductNotFound(product));
        }
        let mut warehouses: Vec<StockLevel> = rows
            .into_iter()
            .filter_map(|(_, warehouse, on_hand, reserved)| {
                Some(
                    StockRow {
                        warehouse: warehouse?,
                        on_hand: on_hand?,
                        reserved: reserved?,
                    }
                    .into_level(product),
                )
            })
            .collect();
        // By name, byte-wise on both backends (Postgres collations would order differently).
        warehouses.sort_by(|a, b| a.warehouse.cmp(&b.warehouse));
        let on_hand = warehouses.iter().map(|w| w.on_hand).sum();
        let reserved = warehouses.iter().map(|w| w.reserved).sum();
        Ok(Availability {
            product_id: product,
            on_hand,
            reserved,
            available: warehouses.iter().map(|w| w.available).sum(),
            warehouses,
        })
    }

    async fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>, InventoryError> {
        Ok(self.reservations(&[order_id]).await?.pop())
    }

    async fn reservations(&self, order_ids: &[Uuid]) -> Result<Vec<Reservation>, InventoryError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        // The reservations and their lines in one snapshot: a single statement on the reader.
        let rows: Vec<ReservationRow> = IdSet(order_ids.to_vec())
            .read(&self.db, reservations_sql)
            .await?;
        let mut reservations: Vec<Reservation> = Vec::new();
        for (order_id, status, created_at, updated_at, product_id, warehouse, quantity) in rows {
            if reservations.last().is_none_or(|r| r.order_id != order_id) {
                let status = ReservationStatus::parse(&status).ok_or_else(|| {
                    InventoryError::Unexpected(
                        format!("reservation of order {order_id} has an unknown status {status:?}")
                            .into(),
                    )
                })?;
                reservations.push(Reservation {
                    order_id,
                    status,
                    lines: Vec::new(),
                    created_at,
                    updated_at,
                });
            }
            if let (Some(reservation), Some(product_id), Some(warehouse), Some(quantity)) =
                (reservations.last_mut(), product_id, warehouse, quantity)
            {
                reservation.lines.push(ReservationLine {
                    product_id: ProductId(product_id),
                    warehouse,
                    quantity,
                });
            }
        }
        for reservation in &mut reservations {
            // By product, then warehouse name byte-wise, on both backends.
            reservation.lines.sort_by(|a, b| {
                a.product_id
                    .cmp(&b.product_id)
                    .then_with(|| a.warehouse.cmp(&b.warehouse))
            });
        }
        Ok(reservations)
    }
}

#[cfg(test)]
mod plan_tests {
    use shared_kernel::storage::testing::assert_batch_read_plan;

    use super::*;

    /// The batch read of reservations seeks the reservations' and the lines' keys.
    #[tokio::test]
    async fn batch_read_uses_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_batch_read_plan(
            crate::NAME,
            &crate::MIGRATIONS,
            dir.path(),
            reservations_sql,
            &[
                "SEARCH r USING INDEX sqlite_autoindex_reservations_1 (order_id=?)",
                "SEARCH l USING INDEX sqlite_autoindex_reservation_lines_1 (order_id=?)",
            ],
            &[
                "Index Cond: (order_id = ANY ($1))",
                "Index Cond: (order_id = r.order_id)",
            ],
        )
        .await;
    }
}
