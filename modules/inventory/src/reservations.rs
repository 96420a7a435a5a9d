//! Stock reservations: inventory's step of the order saga.
//!
//! [`crate::handlers::OrderEvents`] applies the orders module's events through these functions
//! inside the consumer transaction of the subscription `inventory<-orders` (together with its
//! inbox and checkpoint):
//!
//! - `OrderPlaced`: reserve every line or none, drawing from the warehouses with the most
//!   available units first (ties by warehouse name, byte-wise); a line may span warehouses.
//!   Publishes `StockReserved` or `StockReservationFailed`.
//! - `OrderConfirmed`: a held reservation is committed (the units leave on hand).
//! - `OrderRejected`: a held reservation is released.
//! - `OrderCancelled`: a held reservation is released; a committed one is restocked into the
//!   warehouses its units came from.
//!
//! Every step is idempotent and tolerates "never happened": a state change is a conditional
//! update of the reservation's status, so a duplicate or late event finds nothing to do.
//!
//! **No oversell.** On Postgres the stock rows of the order's products are locked
//! (`FOR UPDATE`, by product and warehouse) before they are read, so a concurrent `PUT stock`
//! or reservation waits; each allocation is then a conditional update that only succeeds while
//! enough units are available — zero rows is an error that rolls the whole batch back. SQLite
//! has a single writer, so its transactions cannot interleave at all.
//!
//! **Batches.** A subscription batch of two or more events goes through `apply_batch`
//! (`batch.rs`): the same steps, set-based — everything the events read is read and locked
//! once, the events are replayed in memory in seq order with the same [`plan`], and the net
//! result is written with a constant number of statements. One event alone, an isolated batch
//! and a dead-letter retry go through `reserve` and `settle`, one statement at a time; the
//! differential test `tests/batches.rs` holds the two paths to the same effects.

use inventory_api::events::{
    ReservedLine, StockCommitted, StockReleased, StockReservationFailed, StockReserved,
    StockRestocked,
};
use inventory_api::{ProductId, ReservationStatus};
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, PlacedLine};
use shared_kernel::clock;
use shared_kernel::messaging::outbox::Outgoing;
use shared_kernel::messaging::{Envelope, EventContext, outbox};
use shared_kernel::storage::{Tx, TxConn};
use shared_kernel::with_tx;
use uuid::Uuid;

mod batch;
pub(crate) use batch::apply_batch;

/// Name of the reservation outcome counter (`outcome` = `reserved` | `failed`).
pub const RESERVATIONS_METRIC: &str = "bounded_stock_reservations_total";

/// Units of one product that one warehouse can give (`on_hand - reserved`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub product_id: Uuid,
    pub warehouse: String,
    pub available: i64,
}

/// Units of one product to take from one warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub product_id: Uuid,
    pub warehouse: String,
    pub quantity: i64,
}

/// The first line that the stock cannot cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub product_id: Uuid,
    pub requested: i64,
    /// Units of the product available over all warehouses (after earlier lines).
    pub available: i64,
}

/// Plans the reservation of `lines` from `stock`: every line covered, or the first line that
/// cannot be. Each line draws from the warehouses with the most available units first, ties by
/// warehouse name compared byte-wise, and may span warehouses. Allocations come in the order
/// they were drawn, one per product and warehouse.
///
/// A line asking for less than one unit cannot be covered (it would free units).
pub(crate) fn plan(
    lines: &[PlacedLine],
    stock: &[Candidate],
) -> Result<Vec<Allocation>, Shortfall> {
    let mut left = stock.to_vec();
    let mut allocations: Vec<Allocation> = Vec::new();
    for line in lines {
        let mut candidates: Vec<&mut Candidate> = left
            .iter_mut()
            .filter(|c| c.product_id == line.product_id && c.available > 0)
            .collect();
        let available = candidates
            .iter()
            .fold(0_i64, |sum, c| sum.saturating_add(c.available));
        if line.quantity < 1 || available < line.quantity {
            return Err(Shortfall {
                product_id: line.product_id,
                requested: line.quantity,
                available,
            });
        }
        candidates.sort_by(|a, b| {
            b.available
                .cmp(&a.available)
                .then_with(|| a.warehouse.as_bytes().cmp(b.warehouse.as_bytes()))
        });
        let mut needed = line.quantity;
        for candidate in candidates {
            if needed == 0 {
                break;
            }
            let take = needed.min(candidate.available);
            candidate.available -= take;
            needed -= take;
            let existing = allocations.iter_mut().find(|a| {
                a.product_id == candidate.product_id && a.warehouse == candidate.warehouse
            });
            match existing {
                Some(allocation) => allocation.quantity += take,
                None => allocations.push(Allocation {
                    product_id: candidate.product_id,
                    warehouse: candidate.warehouse.clone(),
                    quantity: take,
                }),
            }
        }
    }
    Ok(allocations)
}

/// Handles `OrderPlaced`: reserves every line or none, once per order.
pub(crate) async fn reserve(tx: &mut Tx, placed: &OrderPlaced) -> anyhow::Result<()> {
    let order_id = placed.order_id.0;
    let now = clock::now();
    // Claim the order first: a duplicate (or a concurrent twin on Postgres, which waits on the
    // primary key until this transaction ends) finds the row and does nothing.
    let claimed = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO reservations (order_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(ReservationStatus::Reserved.as_str())
        .bind(now)
        .bind(now)
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    if claimed == 0 {
        tracing::debug!(order.id = %order_id, "Order already has a reservation; nothing to do.");
        return Ok(());
    }

    let mut products: Vec<Uuid> = placed.lines.iter().map(|l| l.product_id).collect();
    products.sort_unstable();
    products.dedup();
    let stock = lock_stock(tx, &products).await?;

    let allocations = match plan(&placed.lines, &stock) {
        Ok(allocations) => allocations,
        Err(shortfall) => {
            set_status(tx, order_id, ReservationStatus::Failed).await?;
            let failed = reservation_failed(order_id, shortfall);
            outbox::append(tx, &failed, &EventContext::current())?;
            log_failed(&failed);
            return Ok(());
        }
    };

    // Rows are updated in lock order (product, then warehouse), as every writer does.
    let mut in_lock_order: Vec<&Allocation> = allocations.iter().collect();
    in_lock_order
        .sort_by(|a, b| lock_order(a.product_id, &a.warehouse, b.product_id, &b.warehouse));
    for allocation in in_lock_order {
        let held = with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE stock_levels SET reserved = reserved + $3, updated_at = $4 \
                 WHERE product_id = $1 AND warehouse = $2 AND on_hand - reserved >= $3",
            )
            .bind(allocation.product_id)
            .bind(&allocation.warehouse)
            .bind(allocation.quantity)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        if held != 1 {
            // Never a partial reservation: the error rolls the batch back, and it is retried.
            anyhow::bail!(
                "stock of product {} in warehouse {:?} changed under the reservation of order {order_id}",
                allocation.product_id,
                allocation.warehouse
            );
        }
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, product_id, warehouse, quantity) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(order_id)
            .bind(allocation.product_id)
            .bind(&allocation.warehouse)
            .bind(allocation.quantity)
            .execute(&mut *conn)
            .await
            .map(drop)
        })?;
    }

    let reserved = stock_reserved(order_id, &allocations);
    outbox::append(tx, &reserved, &EventContext::current())?;
    log_reserved(&reserved);
    Ok(())
}

/// The event of a reservation that holds `allocations`.
fn stock_reserved(order_id: Uuid, allocations: &[Allocation]) -> StockReserved {
    StockReserved {
        order_id,
        lines: allocations
            .iter()
            .map(|a| ReservedLine {
                product_id: ProductId(a.product_id),
                warehouse: a.warehouse.clone(),
                quantity: a.quantity,
            })
            .collect(),
    }
}

/// The event of a reservation that `shortfall` made fail.
fn reservation_failed(order_id: Uuid, shortfall: Shortfall) -> StockReservationFailed {
    StockReservationFailed {
        order_id,
        product_id: ProductId(shortfall.product_id),
        requested: shortfall.requested,
        available: shortfall.available,
    }
}

/// Counts and logs a reservation made.
fn log_reserved(reserved: &StockReserved) {
    metrics::counter!(RESERVATIONS_METRIC, "outcome" => "reserved").increment(1);
    tracing::info!(order.id = %reserved.order_id, lines = reserved.lines.len(), "Stock reserved.");
}

/// Counts and logs a reservation that failed.
fn log_failed(failed: &StockReservationFailed) {
    metrics::counter!(RESERVATIONS_METRIC, "outcome" => "failed").increment(1);
    tracing::info!(order.id = %failed.order_id, product.id = %failed.product_id.0, requested = failed.requested, available = failed.available, "Stock reservation failed.");
}

/// The order in which stock rows are locked and updated: product id (bytes), then warehouse
/// name (bytes) — the same as Postgres' `ORDER BY product_id, warehouse COLLATE "C"`.
fn lock_order(
    a_product: Uuid,
    a_warehouse: &str,
    b_product: Uuid,
    b_warehouse: &str,
) -> std::cmp::Ordering {
    a_product
        .cmp(&b_product)
        .then_with(|| a_warehouse.as_bytes().cmp(b_warehouse.as_bytes()))
}

/// Reads the stock of `products` (sorted, distinct); on Postgres locks the rows first, in lock
/// order, so that nobody changes them before this transaction ends.
async fn lock_stock(tx: &mut Tx, products: &[Uuid]) -> Result<Vec<Candidate>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i64)> = match &mut tx.conn {
        TxConn::Postgres(conn) => {
            sqlx::query_as(
                "SELECT product_id, warehouse, on_hand - reserved FROM stock_levels \
                 WHERE product_id = ANY($1) \
                 ORDER BY product_id, warehouse COLLATE \"C\" FOR UPDATE",
            )
            .bind(products)
            .fetch_all(&mut **conn)
            .await?
        }
        // The single writer: nothing else writes while this transaction is open.
        TxConn::Sqlite(conn) => {
            let mut rows = Vec::new();
            for product in products {
                let found: Vec<(Uuid, String, i64)> = sqlx::query_as(
                    "SELECT product_id, warehouse, on_hand - reserved FROM stock_levels \
                     WHERE product_id = $1",
                )
                .bind(product)
                .fetch_all(&mut **conn)
                .await?;
                rows.extend(found);
            }
            rows
        }
    };
    Ok(rows
        .into_iter()
        .map(|(product_id, warehouse, available)| Candidate {
            product_id,
            warehouse,
            available: available.max(0),
        })
        .collect())
}

async fn set_status(
    tx: &mut Tx,
    order_id: Uuid,
    status: ReservationStatus,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query("UPDATE reservations SET status = $2, updated_at = $3 WHERE order_id = $1")
            .bind(order_id)
            .bind(status.as_str())
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
    })
}

/// What an order's outcome asks of its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// `OrderConfirmed`: reserved → committed.
    Commit,
    /// `OrderRejected`: reserved → released.
    Release,
    /// `OrderCancelled`: reserved → released, committed → restocked.
    Cancel,
}

/// Moves a reservation on, if it is in a state the settlement applies to, and moves its units
/// accordingly; does nothing otherwise (no reservation, failed, already settled).
pub(crate) async fn settle(
    tx: &mut Tx,
    order_id: Uuid,
    settlement: Settlement,
) -> anyhow::Result<()> {
    // One conditional update decides: a duplicate or concurrent twin matches no row (on
    // Postgres it waits for this transaction and then re-checks the status).
    let sql = match settlement {
        Settlement::Commit => {
            "UPDATE reservations SET status = 'committed', updated_at = $2 \
             WHERE order_id = $1 AND status = 'reserved' RETURNING status"
        }
        Settlement::Release => {
            "UPDATE reservations SET status = 'released', updated_at = $2 \
             WHERE order_id = $1 AND status = 'reserved' RETURNING status"
        }
        Settlement::Cancel => {
            "UPDATE reservations \
             SET status = CASE status WHEN 'reserved' THEN 'released' ELSE 'restocked' END, \
                 updated_at = $2 \
             WHERE order_id = $1 AND status IN ('reserved', 'committed') RETURNING status"
        }
    };
    let moved: Option<(String,)> = with_tx!(tx, |conn| {
        sqlx::query_as(sql)
            .bind(order_id)
            .bind(clock::now())
            .fetch_optional(conn)
            .await
    })?;
    let Some((status,)) = moved else {
        tracing::debug!(order.id = %order_id, ?settlement, "No reservation to settle; nothing to do.");
        return Ok(());
    };
    let status = ReservationStatus::parse(&status)
        .ok_or_else(|| anyhow::anyhow!("reservation of order {order_id} has status {status:?}"))?;
    let stock_sql = match status {
        ReservationStatus::Committed => {
            "UPDATE stock_levels \
             SET on_hand = on_hand - $3, reserved = reserved - $3, updated_at = $4 \
             WHERE product_id = $1 AND warehouse = $2 AND reserved >= $3"
        }
        ReservationStatus::Released => {
            "UPDATE stock_levels SET reserved = reserved - $3, updated_at = $4 \
             WHERE product_id = $1 AND warehouse = $2 AND reserved >= $3"
        }
        ReservationStatus::Restocked => {
            "UPDATE stock_levels SET on_hand = on_hand + $3, updated_at = $4 \
             WHERE product_id = $1 AND warehouse = $2"
        }
        ReservationStatus::Reserved | ReservationStatus::Failed => {
            anyhow::bail!("reservation of order {order_id} cannot settle into {status:?}")
        }
    };
    let now = clock::now();
    for line in reservation_lines(tx, order_id).await? {
        let changed = with_tx!(tx, |conn| {
            sqlx::query(stock_sql)
                .bind(line.product_id)
                .bind(&line.warehouse)
                .bind(line.quantity)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
        })?;
        if changed != 1 {
            anyhow::bail!(
                "the stock of product {} in warehouse {:?} does not hold the {} units of order {order_id}",
                line.product_id,
                line.warehouse,
                line.quantity
            );
        }
    }
    let settled = settled_event(order_id, status, &EventContext::current())?;
    outbox::append_many(tx, [settled]);
    log_settled(order_id, status);
    Ok(())
}

/// The event of a reservation settled into `status` (committed, released or restocked).
fn settled_event(
    order_id: Uuid,
    status: ReservationStatus,
    context: &EventContext,
) -> Result<Outgoing, sqlx::Error> {
    match status {
        ReservationStatus::Committed => Outgoing::new(&StockCommitted { order_id }, context),
        ReservationStatus::Released => Outgoing::new(&StockReleased { order_id }, context),
        _ => Outgoing::new(&StockRestocked { order_id }, context),
    }
}

fn log_settled(order_id: Uuid, status: ReservationStatus) {
    tracing::info!(order.id = %order_id, status = status.as_str(), "Stock reservation settled.");
}

/// What `settlement` makes of a reservation in `status`: its new status, or `None` when it
/// does not apply (the conditional updates of [`settle`], in memory).
pub(crate) fn settles_into(
    status: ReservationStatus,
    settlement: Settlement,
) -> Option<ReservationStatus> {
    use ReservationStatus::{Committed, Released, Reserved, Restocked};
    match (settlement, status) {
        (Settlement::Commit, Reserved) => Some(Committed),
        (Settlement::Release | Settlement::Cancel, Reserved) => Some(Released),
        (Settlement::Cancel, Committed) => Some(Restocked),
        _ => None,
    }
}

/// The lines of a reservation, in lock order.
async fn reservation_lines(tx: &mut Tx, order_id: Uuid) -> Result<Vec<Allocation>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i64)> = with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT product_id, warehouse, quantity FROM reservation_lines WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_all(conn)
        .await
    })?;
    let mut lines: Vec<Allocation> = rows
        .into_iter()
        .map(|(product_id, warehouse, quantity)| Allocation {
            product_id,
            warehouse,
            quantity,
        })
        .collect();
    lines.sort_by(|a, b| lock_order(a.product_id, &a.warehouse, b.product_id, &b.warehouse));
    Ok(lines)
}

/// An orders event, as inventory reads it.
#[derive(Debug)]
pub(crate) enum OrderEvent {
    /// `OrderPlaced`: reserve.
    Placed(OrderPlaced),
    /// `OrderConfirmed`, `OrderRejected`, `OrderCancelled`: settle the order's reservation.
    Settle(Uuid, Settlement),
}

impl OrderEvent {
    /// Decodes `event`; `None` for an event inventory does not apply.
    pub(crate) fn decode(event: &Envelope) -> Option<anyhow::Result<Self>> {
        let decoded = if let Some(placed) = event.decode::<OrderPlaced>() {
            placed.map(Self::Placed)
        } else if let Some(confirmed) = event.decode::<OrderConfirmed>() {
            confirmed.map(|e| Self::Settle(e.order_id.0, Settlement::Commit))
        } else if let Some(rejected) = event.decode::<OrderRejected>() {
            rejected.map(|e| Self::Settle(e.order_id.0, Settlement::Release))
        } else if let Some(cancelled) = event.decode::<OrderCancelled>() {
            cancelled.map(|e| Self::Settle(e.order_id.0, Settlement::Cancel))
        } else {
            return None;
        };
        Some(decoded.map_err(anyhow::Error::from))
    }

    /// Applies the event alone (the per-event path).
    pub(crate) async fn apply(&self, tx: &mut Tx) -> anyhow::Result<()> {
        match self {
            Self::Placed(placed) => reserve(tx, placed).await,
            Self::Settle(order_id, settlement) => settle(tx, *order_id, *settlement).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn line(product_id: Uuid, quantity: i64) -> PlacedLine {
        PlacedLine {
            product_id,
            quantity,
            unit_price_cents: 100,
        }
    }

    fn stock(product_id: Uuid, warehouse: &str, available: i64) -> Candidate {
        Candidate {
            product_id,
            warehouse: warehouse.into(),
            available,
        }
    }

    fn taken(allocations: &[Allocation]) -> Vec<(&str, i64)> {
        allocations
            .iter()
            .map(|a| (a.warehouse.as_str(), a.quantity))
            .collect()
    }

    #[test]
    fn the_warehouse_with_most_available_gives_first_and_lines_span_warehouses() {
        let p = product(1);
        let stock = [stock(p, "a", 2), stock(p, "b", 5), stock(p, "c", 4)];
        assert_eq!(taken(&plan(&[line(p, 4)], &stock).unwrap()), [("b", 4)]);
        assert_eq!(
            taken(&plan(&[line(p, 10)], &stock).unwrap()),
            [("b", 5), ("c", 4), ("a", 1)]
        );
    }

    #[test]
    fn ties_go_to_the_byte_wise_smaller_name() {
        let p = product(1);
        // Byte-wise, "B" < "a" < "b"; a locale collation would put "a" first.
        let stock = [stock(p, "b", 3), stock(p, "a", 3), stock(p, "B", 3)];
        assert_eq!(
            taken(&plan(&[line(p, 7)], &stock).unwrap()),
            [("B", 3), ("a", 3), ("b", 1)]
        );
    }

    #[test]
    fn the_first_uncovered_line_is_reported_with_what_is_available() {
        let (p, q, r) = (product(1), product(2), product(3));
        let stock = [stock(p, "a", 5), stock(q, "a", 1), stock(q, "b", 2)];
        let lines = [line(p, 5), line(q, 4), line(r, 1)];
        assert_eq!(
            plan(&lines, &stock),
            Err(Shortfall {
                product_id: q,
                requested: 4,
                available: 3
            })
        );
        assert_eq!(
            plan(&[line(r, 1)], &stock),
            Err(Shortfall {
                product_id: r,
                requested: 1,
                available: 0
            })
        );
    }

    #[test]
    fn repeated_products_share_the_stock_and_non_positive_quantities_fail() {
        let p = product(1);
        let stock = [stock(p, "a", 3), stock(p, "b", 2)];
        let planned = plan(&[line(p, 2), line(p, 2)], &stock).unwrap();
        assert_eq!(taken(&planned), [("a", 2), ("b", 2)]);
        assert_eq!(
            plan(&[line(p, 3), line(p, 3)], &stock),
            Err(Shortfall {
                product_id: p,
                requested: 3,
                available: 2
            })
        );
        assert!(plan(&[line(p, 0)], &stock).is_err());
        assert!(plan(&[line(p, -1)], &stock).is_err());
        assert_eq!(plan(&[], &stock), Ok(Vec::new()));
    }
}
