//! Bulk history for benchmarks: committed reservations of confirmed orders written straight
//! into the inventory store, as if their sagas had run long ago and their events had been
//! delivered and pruned from the outbox. Nothing is appended to the outbox.

use std::collections::{BTreeMap, HashMap};

use shared_kernel::bulk_insert;
use shared_kernel::clock;
use shared_kernel::with_tx;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::service::Inventory;

/// The stock one confirmed order took: `(product, units)` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReservation {
    pub order_id: Uuid,
    pub lines: Vec<(Uuid, i64)>,
    pub at: OffsetDateTime,
}

impl Inventory {
    /// Bulk-inserts `reservations` as committed history, in one transaction with multi-row
    /// `INSERT`s: a `reservations` row (committed) per order and `reservation_lines` taken
    /// from the warehouses with the most available stock first (a line may span warehouses),
    /// as the saga would; the units leave `on_hand` of those stock levels, as a commit does.
    /// Appends no outbox event. For benchmarks (`bounded seed-history`); order ids must be new.
    ///
    /// # Errors
    /// The storage error, or a line whose product has not enough available stock; nothing is
    /// written then.
    pub async fn seed_history(&self, reservations: &[SeedReservation]) -> anyhow::Result<()> {
        let mut tx = self.db().begin().await?;
        let levels: Vec<(Uuid, String, i64, i64)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as("SELECT product_id, warehouse, on_hand, reserved FROM stock_levels")
                .fetch_all(&mut *conn)
                .await
        })?;
        // Available units per product and warehouse, as the reservations below leave them.
        let mut available: HashMap<Uuid, Vec<(String, i64)>> = HashMap::new();
        for (product, warehouse, on_hand, reserved) in levels {
            available
                .entry(product)
                .or_default()
                .push((warehouse, on_hand - reserved));
        }
        let mut taken: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
        let mut lines: Vec<(Uuid, Uuid, String, i64)> = Vec::new();
        for reservation in reservations {
            let mut held: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
            for &(product, quantity) in &reservation.lines {
                let warehouses = available.get_mut(&product).ok_or_else(|| {
                    anyhow::anyhow!("history line of product {product}, which has no stock")
                })?;
                let mut missing = quantity;
                while missing > 0 {
                    let Some((warehouse, units)) = warehouses
                        .iter_mut()
                        .filter(|(_, units)| *units > 0)
                        .max_by_key(|(_, units)| *units)
                    else {
                        anyhow::bail!("not enough stock of product {product} for the history");
                    };
                    let take = missing.min(*units);
                    *units -= take;
                    missing -= take;
                    *held.entry((product, warehouse.clone())).or_default() += take;
                }
            }
            for ((product, warehouse), quantity) in held {
                *taken.entry((product, warehouse.clone())).or_default() += quantity;
                lines.push((reservation.order_id, product, warehouse, quantity));
            }
        }
        bulk_insert!(
            &mut tx,
            "INSERT INTO reservations (order_id, status, created_at, updated_at)",
            4,
            reservations,
            |q, r| q.bind(r.order_id).bind("committed").bind(r.at).bind(r.at)
        )?;
        bulk_insert!(
            &mut tx,
            "INSERT INTO reservation_lines (order_id, product_id, warehouse, quantity)",
            4,
            lines,
            |q, l| q.bind(l.0).bind(l.1).bind(l.2.as_str()).bind(l.3)
        )?;
        let now = clock::now();
        for ((product, warehouse), quantity) in taken {
            with_tx!(&mut tx, |conn| {
                sqlx::query(
                    "UPDATE stock_levels SET on_hand = on_hand - $3, updated_at = $4 \
                     WHERE product_id = $1 AND warehouse = $2",
                )
                .bind(product)
                .bind(warehouse.as_str())
                .bind(quantity)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(())
    }
}
