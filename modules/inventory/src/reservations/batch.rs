//! A batch of orders events applied set-based: a constant number of statements for any number
//! of events (up to the bind limit of one statement), with exactly the effects of applying them
//! one by one, in seq order, through [`super::reserve`] and [`super::settle`].
//!
//! **The rule: read and lock everything first, replay in memory in seq order, write the net
//! result.** Whatever the per-event path reads — the reservation of an order, its lines, the
//! stock of the products it touches — is read once, before any event is applied, and locked
//! (on Postgres: the reservations `FOR UPDATE`, then the stock rows `FOR UPDATE` in lock
//! order, the same order every writer follows; on SQLite the single writer holds everything).
//! Nothing else can change those rows until the transaction ends, and the handler itself only
//! changes them through the replay, so the replay's state before event *i* is exactly what the
//! per-event path would read before event *i*. The replay therefore needs no segments: a
//! release or restock earlier in the batch frees units that a later placement sees (its
//! in-memory stock has them), a placement sees what earlier placements took, an order placed
//! and confirmed in one batch ends committed, and a settlement before the order's placement
//! finds no reservation, as it would one by one.
//!
//! Statements, for any batch: claim the placed orders (one `INSERT … ON CONFLICT DO NOTHING
//! RETURNING`), read and lock the settled orders' reservations and lines (one), read and lock
//! the stock (one), then write: the stock deltas (one `UPDATE … FROM`), the new statuses (one),
//! the new reservation lines (one), the events (one `outbox::append_many`) — each a no-op
//! skipped when it has nothing to do. Postgres binds one array per column (`UNNEST`), so one
//! SQL text serves every batch size; SQLite gets multi-row `VALUES` and `IN` lists, split only
//! beyond [`bulk::MAX_BINDS`] parameters.
//!
//! The checks of the per-event path stay: a settlement whose stock no longer holds its units
//! fails naming its event ([`BatchError::at`]), and the stock update checks that every row it
//! moves exists; the table's `CHECK (reserved <= on_hand)` still stands behind the plan.

use std::collections::{BTreeMap, HashMap, HashSet};

use inventory_api::ReservationStatus;
use shared_kernel::clock;
use shared_kernel::messaging::outbox::{self, Outgoing};
use shared_kernel::messaging::{BatchError, Envelope, EventContext};
use shared_kernel::storage::{Tx, TxConn, bulk};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Allocation, Candidate, OrderEvent, log_failed, log_reserved, log_settled, plan,
    reservation_failed, settled_event, settles_into, stock_reserved,
};

/// A reservation as the replay sees it.
#[derive(Debug, Default)]
struct Held {
    /// `None`: no reservation (yet).
    status: Option<ReservationStatus>,
    /// The status stored now (a claimed order's row says `reserved` until it is written).
    stored: Option<ReservationStatus>,
    /// Lines, in lock order.
    lines: Vec<Allocation>,
}

/// A stock row as the replay sees it, and what the replay did to it.
#[derive(Debug)]
struct Level {
    on_hand: i64,
    reserved: i64,
    on_hand_delta: i64,
    reserved_delta: i64,
    touched: bool,
}

/// What to log once the batch's writes went through.
enum Outcome {
    Reserved(inventory_api::events::StockReserved),
    Failed(inventory_api::events::StockReservationFailed),
    Settled(Uuid, ReservationStatus),
}

/// Applies `events` (fresh, in seq order) set-based; see the module doc.
///
/// # Errors
/// A malformed event or a settlement the stock cannot honour names its event; storage errors
/// name none (the kernel then isolates the failing event by applying them one by one).
pub(crate) async fn apply_batch(tx: &mut Tx, events: &[&Envelope]) -> Result<(), BatchError> {
    let mut decoded: Vec<(usize, &Envelope, OrderEvent)> = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        match OrderEvent::decode(event) {
            Some(Ok(order_event)) => decoded.push((i, event, order_event)),
            Some(Err(error)) => return Err(BatchError::at(i, error)),
            None => {}
        }
    }
    if decoded.is_empty() {
        return Ok(());
    }
    let now = clock::now();

    // Claim every placed order at once: those whose row already existed do nothing, as a
    // duplicate does one by one.
    let mut placed: Vec<Uuid> = Vec::new();
    for (_, _, event) in &decoded {
        if let OrderEvent::Placed(p) = event
            && !placed.contains(&p.order_id.0)
        {
            placed.push(p.order_id.0);
        }
    }
    let claimed = claim(tx, &placed, now).await?;

    // The reservations the settlements may find: those of this batch's claims start with no
    // row; the others are read (and locked) as they are.
    let mut settled: Vec<Uuid> = decoded
        .iter()
        .filter_map(|(_, _, event)| match event {
            OrderEvent::Settle(order_id, _) if !claimed.contains(order_id) => Some(*order_id),
            _ => None,
        })
        .collect();
    settled.sort_unstable();
    settled.dedup();
    let mut held = read_reservations(tx, &settled).await?;
    for order_id in &claimed {
        held.insert(
            *order_id,
            Held {
                stored: Some(ReservationStatus::Reserved),
                ..Held::default()
            },
        );
    }

    // The stock of every product a claimed placement or a read reservation touches.
    let mut products: Vec<Uuid> = decoded
        .iter()
        .filter_map(|(_, _, event)| match event {
            OrderEvent::Placed(p) if claimed.contains(&p.order_id.0) => Some(p),
            _ => None,
        })
        .flat_map(|p| p.lines.iter().map(|l| l.product_id))
        .chain(
            held.values()
                .flat_map(|h| h.lines.iter().map(|l| l.product_id)),
        )
        .collect();
    products.sort_unstable();
    products.dedup();
    let mut levels = lock_levels(tx, &products).await?;

    // The replay, in seq order.
    let mut placed_now: HashSet<Uuid> = HashSet::new();
    let mut new_lines: Vec<(Uuid, Allocation)> = Vec::new();
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (i, envelope, event) in &decoded {
        let context = EventContext::caused_by(envelope);
        match event {
            OrderEvent::Placed(p) => {
                let order_id = p.order_id.0;
                // Only an order's first placement, and only if it claimed the order.
                if !claimed.contains(&order_id) || !placed_now.insert(order_id) {
                    tracing::debug!(order.id = %order_id, "Order already has a reservation; nothing to do.");
                    continue;
                }
                let stock: Vec<Candidate> = levels
                    .iter()
                    .filter(|((product_id, _), _)| {
                        p.lines.iter().any(|l| l.product_id == *product_id)
                    })
                    .map(|((product_id, warehouse), level)| Candidate {
                        product_id: *product_id,
                        warehouse: warehouse.clone(),
                        available: (level.on_hand - level.reserved).max(0),
                    })
                    .collect();
                let reservation = held.entry(order_id).or_default();
                match plan(&p.lines, &stock) {
                    Ok(allocations) => {
                        for a in &allocations {
                            let level = levels
                                .get_mut(&(a.product_id, a.warehouse.clone()))
                                .filter(|l| l.on_hand - l.reserved >= a.quantity)
                                .ok_or_else(|| {
                                    BatchError::at(
                                        *i,
                                        anyhow::anyhow!(
                                            "stock of product {} in warehouse {:?} changed under the reservation of order {order_id}",
                                            a.product_id,
                                            a.warehouse
                                        ),
                                    )
                                })?;
                            level.reserved += a.quantity;
                            level.reserved_delta += a.quantity;
                            level.touched = true;
                            new_lines.push((order_id, a.clone()));
                        }
                        let reserved = stock_reserved(order_id, &allocations);
                        outgoing.push(Outgoing::new(&reserved, &context)?);
                        outcomes.push(Outcome::Reserved(reserved));
                        let mut lines = allocations;
                        lines.sort_by(|a, b| {
                            super::lock_order(
                                a.product_id,
                                &a.warehouse,
                                b.product_id,
                                &b.warehouse,
                            )
                        });
                        reservation.status = Some(ReservationStatus::Reserved);
                        reservation.lines = lines;
                    }
                    Err(shortfall) => {
                        let failed = reservation_failed(order_id, shortfall);
                        outgoing.push(Outgoing::new(&failed, &context)?);
                        outcomes.push(Outcome::Failed(failed));
                        reservation.status = Some(ReservationStatus::Failed);
                    }
                }
            }
            OrderEvent::Settle(order_id, settlement) => {
                let order_id = *order_id;
                let Some(reservation) = held.get_mut(&order_id) else {
                    tracing::debug!(order.id = %order_id, ?settlement, "No reservation to settle; nothing to do.");
                    continue;
                };
                let Some(status) = reservation
                    .status
                    .and_then(|status| settles_into(status, *settlement))
                else {
                    tracing::debug!(order.id = %order_id, ?settlement, "No reservation to settle; nothing to do.");
                    continue;
                };
                for line in &reservation.lines {
                    let level = levels
                        .get_mut(&(line.product_id, line.warehouse.clone()))
                        .filter(|l| status == ReservationStatus::Restocked || l.reserved >= line.quantity)
                        .ok_or_else(|| {
                            BatchError::at(
                                *i,
                                anyhow::anyhow!(
                                    "the stock of product {} in warehouse {:?} does not hold the {} units of order {order_id}",
                                    line.product_id,
                                    line.warehouse,
                                    line.quantity
                                ),
                            )
                        })?;
                    let (on_hand, reserved) = match status {
                        ReservationStatus::Committed => (-line.quantity, -line.quantity),
                        ReservationStatus::Released => (0, -line.quantity),
                        _ => (line.quantity, 0),
                    };
                    level.on_hand += on_hand;
                    level.reserved += reserved;
                    level.on_hand_delta += on_hand;
                    level.reserved_delta += reserved;
                    level.touched = true;
                }
                reservation.status = Some(status);
                outgoing.push(settled_event(order_id, status, &context)?);
                outcomes.push(Outcome::Settled(order_id, status));
            }
        }
    }

    // The net result.
    let moved: Vec<(&(Uuid, String), &Level)> = levels.iter().filter(|(_, l)| l.touched).collect();
    update_levels(tx, &moved, now).await?;
    let mut statuses: Vec<(Uuid, ReservationStatus)> = held
        .iter()
        .filter_map(|(order_id, h)| match h.status {
            Some(status) if h.stored != Some(status) => Some((*order_id, status)),
            _ => None,
        })
        .collect();
    statuses.sort_unstable_by_key(|(order_id, _)| *order_id);
    update_statuses(tx, &statuses, now).await?;
    insert_lines(tx, &new_lines).await?;
    outbox::append_many(tx, outgoing);

    for outcome in &outcomes {
        match outcome {
            Outcome::Reserved(reserved) => log_reserved(reserved),
            Outcome::Failed(failed) => log_failed(failed),
            Outcome::Settled(order_id, status) => log_settled(*order_id, *status),
        }
    }
    Ok(())
}

/// Inserts a `reserved` row for each of `orders` that has none; returns those inserted.
async fn claim(
    tx: &mut Tx,
    orders: &[Uuid],
    now: OffsetDateTime,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut claimed = HashSet::new();
    if orders.is_empty() {
        return Ok(claimed);
    }
    let reserved = ReservationStatus::Reserved.as_str();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let rows: Vec<(Uuid,)> = sqlx::query_as(
                "INSERT INTO reservations (order_id, status, created_at, updated_at) \
                 SELECT o.id, $2, $3, $3 FROM UNNEST($1::uuid[]) AS o(id) \
                 ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
            )
            .bind(orders)
            .bind(reserved)
            .bind(now)
            .fetch_all(&mut **conn)
            .await?;
            claimed.extend(rows.into_iter().map(|(id,)| id));
        }
        TxConn::Sqlite(conn) => {
            for chunk in orders.chunks(bulk::rows_per_statement(3)) {
                let sql = format!(
                    "INSERT INTO reservations (order_id, status, created_at, updated_at) \
                     SELECT v.column1, v.column2, v.column3, v.column3 FROM (VALUES {}) AS v \
                     WHERE true ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                    bulk::values(chunk.len(), 3, false)
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for order_id in chunk {
                    query = query.bind(order_id).bind(reserved).bind(now);
                }
                let rows: Vec<(Uuid,)> = query.fetch_all(&mut **conn).await?;
                claimed.extend(rows.into_iter().map(|(id,)| id));
            }
        }
    }
    Ok(claimed)
}

type ReservationRow = (Uuid, String, Option<Uuid>, Option<String>, Option<i64>);

/// The reservations of `orders` (sorted, distinct) with their lines; on Postgres locked, in
/// order id order, as the per-event path's conditional updates lock them.
async fn read_reservations(
    tx: &mut Tx,
    orders: &[Uuid],
) -> Result<HashMap<Uuid, Held>, BatchError> {
    let mut held: HashMap<Uuid, Held> = HashMap::new();
    if orders.is_empty() {
        return Ok(held);
    }
    let mut rows: Vec<ReservationRow> = Vec::new();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            rows = sqlx::query_as(
                "SELECT r.order_id, r.status, l.product_id, l.warehouse, l.quantity \
                 FROM reservations r LEFT JOIN reservation_lines l ON l.order_id = r.order_id \
                 WHERE r.order_id = ANY($1) ORDER BY r.order_id FOR UPDATE OF r",
            )
            .bind(orders)
            .fetch_all(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in orders.chunks(bulk::MAX_BINDS) {
                let sql = format!(
                    "SELECT r.order_id, r.status, l.product_id, l.warehouse, l.quantity \
                     FROM reservations r LEFT JOIN reservation_lines l ON l.order_id = r.order_id \
                     WHERE r.order_id IN ({})",
                    bulk::placeholders(chunk.len())
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for order_id in chunk {
                    query = query.bind(order_id);
                }
                let found: Vec<ReservationRow> = query.fetch_all(&mut **conn).await?;
                rows.extend(found);
            }
        }
    }
    for (order_id, status, product_id, warehouse, quantity) in rows {
        let parsed = ReservationStatus::parse(&status).ok_or_else(|| {
            anyhow::anyhow!("reservation of order {order_id} has status {status:?}")
        })?;
        let reservation = held.entry(order_id).or_insert_with(|| Held {
            status: Some(parsed),
            stored: Some(parsed),
            lines: Vec::new(),
        });
        if let (Some(product_id), Some(warehouse), Some(quantity)) =
            (product_id, warehouse, quantity)
        {
            reservation.lines.push(Allocation {
                product_id,
                warehouse,
                quantity,
            });
        }
    }
    for reservation in held.values_mut() {
        reservation.lines.sort_by(|a, b| {
            super::lock_order(a.product_id, &a.warehouse, b.product_id, &b.warehouse)
        });
    }
    Ok(held)
}

/// The stock rows of `products` (sorted, distinct), keyed in lock order (`Uuid` and `String`
/// compare byte-wise); on Postgres locked in that order.
async fn lock_levels(
    tx: &mut Tx,
    products: &[Uuid],
) -> Result<BTreeMap<(Uuid, String), Level>, sqlx::Error> {
    let mut rows: Vec<(Uuid, String, i64, i64)> = Vec::new();
    if products.is_empty() {
        return Ok(BTreeMap::new());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            rows = sqlx::query_as(
                "SELECT product_id, warehouse, on_hand, reserved FROM stock_levels \
                 WHERE product_id = ANY($1) \
                 ORDER BY product_id, warehouse COLLATE \"C\" FOR UPDATE",
            )
            .bind(products)
            .fetch_all(&mut **conn)
            .await?;
        }
        // The single writer: nothing else writes while this transaction is open.
        TxConn::Sqlite(conn) => {
            for chunk in products.chunks(bulk::MAX_BINDS) {
                let sql = format!(
                    "SELECT product_id, warehouse, on_hand, reserved FROM stock_levels \
                     WHERE product_id IN ({})",
                    bulk::placeholders(chunk.len())
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for product_id in chunk {
                    query = query.bind(product_id);
                }
                let found: Vec<(Uuid, String, i64, i64)> = query.fetch_all(&mut **conn).await?;
                rows.extend(found);
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(product_id, warehouse, on_hand, reserved)| {
            let level = Level {
                on_hand,
                reserved,
                on_hand_delta: 0,
                reserved_delta: 0,
                touched: false,
            };
            ((product_id, warehouse), level)
        })
        .collect())
}

/// Moves the stock rows by the replay's deltas, in lock order; every row must exist.
async fn update_levels(
    tx: &mut Tx,
    moved: &[(&(Uuid, String), &Level)],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if moved.is_empty() {
        return Ok(());
    }
    let mut changed = 0;
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let products: Vec<Uuid> = moved.iter().map(|((p, _), _)| *p).collect();
            let warehouses: Vec<&str> = moved.iter().map(|((_, w), _)| w.as_str()).collect();
            let on_hand: Vec<i64> = moved.iter().map(|(_, l)| l.on_hand_delta).collect();
            let reserved: Vec<i64> = moved.iter().map(|(_, l)| l.reserved_delta).collect();
            changed += sqlx::query(
                "UPDATE stock_levels s \
                 SET on_hand = s.on_hand + v.on_hand, reserved = s.reserved + v.reserved, \
                     updated_at = $5 \
                 FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[]) \
                   AS v(product_id, warehouse, on_hand, reserved) \
                 WHERE s.product_id = v.product_id AND s.warehouse = v.warehouse",
            )
            .bind(products)
            .bind(warehouses)
            .bind(on_hand)
            .bind(reserved)
            .bind(now)
            .execute(&mut **conn)
            .await?
            .rows_affected();
        }
        TxConn::Sqlite(conn) => {
            for chunk in moved.chunks(bulk::rows_per_statement(4)) {
                let sql = format!(
                    "UPDATE stock_levels \
                     SET on_hand = on_hand + v.column3, reserved = reserved + v.column4, \
                         updated_at = ? \
                     FROM (VALUES {}) AS v \
                     WHERE stock_levels.product_id = v.column1 \
                       AND stock_levels.warehouse = v.column2",
                    bulk::values(chunk.len(), 4, false)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(bulk::cached(chunk.len()))
                    .bind(now);
                for ((product_id, warehouse), level) in chunk {
                    query = query
                        .bind(*product_id)
                        .bind(warehouse.as_str())
                        .bind(level.on_hand_delta)
                        .bind(level.reserved_delta);
                }
                changed += query.execute(&mut **conn).await?.rows_affected();
            }
        }
    }
    if changed != moved.len() as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "the stock update moved {changed} of {} stock rows",
            moved.len()
        )));
    }
    Ok(())
}

/// Writes the reservations' new statuses.
async fn update_statuses(
    tx: &mut Tx,
    statuses: &[(Uuid, ReservationStatus)],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if statuses.is_empty() {
        return Ok(());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let orders: Vec<Uuid> = statuses.iter().map(|(o, _)| *o).collect();
            let names: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str()).collect();
            sqlx::query(
                "UPDATE reservations r SET status = v.status, updated_at = $3 \
                 FROM UNNEST($1::uuid[], $2::text[]) AS v(order_id, status) \
                 WHERE r.order_id = v.order_id",
            )
            .bind(orders)
            .bind(names)
            .bind(now)
            .execute(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in statuses.chunks(bulk::rows_per_statement(2)) {
                let sql = format!(
                    "UPDATE reservations SET status = v.column2, updated_at = ? \
                     FROM (VALUES {}) AS v WHERE reservations.order_id = v.column1",
                    bulk::values(chunk.len(), 2, false)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(bulk::cached(chunk.len()))
                    .bind(now);
                for (order_id, status) in chunk {
                    query = query.bind(*order_id).bind(status.as_str());
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// Inserts the lines of the reservations made.
async fn insert_lines(tx: &mut Tx, lines: &[(Uuid, Allocation)]) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let orders: Vec<Uuid> = lines.iter().map(|(o, _)| *o).collect();
            let products: Vec<Uuid> = lines.iter().map(|(_, a)| a.product_id).collect();
            let warehouses: Vec<&str> = lines.iter().map(|(_, a)| a.warehouse.as_str()).collect();
            let quantities: Vec<i64> = lines.iter().map(|(_, a)| a.quantity).collect();
            sqlx::query(
                "INSERT INTO reservation_lines (order_id, product_id, warehouse, quantity) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[])",
            )
            .bind(orders)
            .bind(products)
            .bind(warehouses)
            .bind(quantities)
            .execute(&mut **conn)
            .await?;
            Ok(())
        }
        TxConn::Sqlite(_) => shared_kernel::bulk_insert!(
            tx,
            "INSERT INTO reservation_lines (order_id, product_id, warehouse, quantity)",
            4,
            lines,
            |q, line| q
                .bind(line.0)
                .bind(line.1.product_id)
                .bind(line.1.warehouse.as_str())
                .bind(line.1.quantity)
        ),
    }
}
