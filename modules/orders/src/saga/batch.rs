//! A batch of participants' replies applied set-based: a constant number of statements for any
//! number of replies (up to the bind limit of one statement), with exactly the effects of
//! applying them one by one, in seq order, through [`super::on_reply`].
//!
//! **The rule: read and lock everything first, replay in memory in seq order, write the net
//! result.** What the per-event path reads — the order's status and its saga — is read once
//! for every order the batch names, before any reply is applied, and locked (on Postgres the
//! orders' and sagas' rows `FOR UPDATE`, in order id order; on SQLite the single writer holds
//! everything); the events go to the outbox at commit, under the lock every transaction takes
//! last (see [`outbox::append_many`]). Nothing else can change those
//! rows until the transaction ends, so the replay's state before reply *i* is exactly what the
//! per-event path would read before reply *i*: the replay goes through the same decisions
//! ([`Locked::reply`], which settles through [`Locked::settle`]). A reply that settles an order
//! makes a later reply of the batch about it late; a second reply of one participant is a
//! duplicate; a reply about an order that does not exist is logged and changes nothing.
//!
//! Statements, for any batch: read and lock the orders and their sagas (one), then write the
//! steps (one multi-row `INSERT`), the sagas' participants, step counts and settlement times
//! (one `UPDATE … FROM`), the settled orders' statuses, guarded by the status they were read
//! in (one `UPDATE … FROM`, which must move every one of them), and the events (one
//! [`outbox::append_many`], each caused by its reply's event) — each skipped when it has
//! nothing to do. Postgres binds one array per column (`UNNEST`), so one SQL text serves every
//! batch size; SQLite gets multi-row `VALUES` and `IN` lists, split only beyond
//! [`bulk::MAX_BINDS`] parameters. The product replicas a batch of inventory's events carries
//! are written apart, by `replicas::upsert_products` (one statement for all of them).
//!
//! Each reply gets the spans the per-event path has: `saga.reply` (and `saga.settle` when it
//! settles) with `order.id` and the `correlation_id` of its event, each with a debug line; the
//! outcome metrics are counted once the writes went through.

use std::collections::{BTreeMap, HashMap};

use orders_api::Reason;
use shared_kernel::clock;
use shared_kernel::messaging::outbox::{self, Outgoing};
use shared_kernel::messaging::{BatchError, Envelope, EventContext};
use shared_kernel::storage::{Tx, TxConn, bulk};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Locked, LockedRow, NewStep, Reply, Settlement, insert_steps, locked_columns, unknown_order,
};

/// What the replay leaves to write.
#[derive(Default)]
struct Replayed {
    steps: Vec<NewStep>,
    /// The settlements, with the time the saga was created (for its duration), in seq order.
    settlements: Vec<(Uuid, Settlement, OffsetDateTime)>,
    events: Vec<Outgoing>,
}

/// Applies `replies` (decoded from the batch's events, with each event's index in the batch,
/// in seq order) set-based; see the module doc.
///
/// # Errors
/// An event that cannot be published names its reply's event; storage errors, a stored saga
/// that does not parse and a settled order that left its status under the lock name none (the
/// kernel then isolates the failing event by applying the events one by one).
pub(crate) async fn apply_replies(
    tx: &mut Tx,
    replies: Vec<(usize, &Envelope, Reply)>,
) -> Result<(), BatchError> {
    if replies.is_empty() {
        return Ok(());
    }
    let now = clock::now();
    let mut order_ids: Vec<Uuid> = replies.iter().map(|(_, _, r)| r.order_id).collect();
    order_ids.sort_unstable();
    order_ids.dedup();
    let mut sagas = lock_all(tx, &order_ids).await?;

    let replayed = replay(&mut sagas, replies, now)?;

    // The net result.
    insert_steps(tx, &replayed.steps).await?;
    let mut settled_at: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    let mut moves: Vec<(Uuid, &Settlement)> = Vec::new();
    for (order_id, settlement, _) in &replayed.settlements {
        settled_at.insert(*order_id, now);
        moves.push((*order_id, settlement));
    }
    let mut touched: Vec<Uuid> = replayed.steps.iter().map(|s| s.0).collect();
    touched.sort_unstable();
    touched.dedup();
    let rows: Vec<SagaRow<'_>> = touched
        .iter()
        .filter_map(|order_id| {
            let saga = sagas.get(order_id)?;
            Some((*order_id, saga, settled_at.get(order_id).copied()))
        })
        .collect();
    update_sagas(tx, &rows).await?;
    moves.sort_unstable_by_key(|(order_id, _)| *order_id);
    update_orders(tx, &moves, now).await?;
    outbox::append_many(tx, replayed.events);

    for (_, settlement, created_at) in &replayed.settlements {
        settlement.count(*created_at, now);
    }
    Ok(())
}

/// Replays the replies, in seq order, on the locked sagas (those of unknown orders are
/// missing): what each records (at `now`), settles and publishes.
fn replay(
    sagas: &mut BTreeMap<Uuid, Locked>,
    replies: Vec<(usize, &Envelope, Reply)>,
    now: OffsetDateTime,
) -> Result<Replayed, BatchError> {
    let mut replayed = Replayed::default();
    for (i, envelope, reply) in replies {
        let order_id = reply.order_id;
        let context = EventContext::caused_by(envelope);
        let correlation_id = context.correlation_id.map(tracing::field::display);
        let span = tracing::info_span!(
            "saga.reply",
            order.id = %order_id,
            correlation_id,
            party = ?reply.party,
            succeeded = reply.succeeded,
        );
        let _reply = span.enter();
        let Some(saga) = sagas.get_mut(&order_id) else {
            unknown_order(&reply);
            continue;
        };
        let replied = saga.reply(reply);
        replayed
            .steps
            .push((order_id, replied.n, replied.step, replied.detail, now));
        let Some(settlement) = replied.settlement else {
            tracing::debug!(n = replied.n, "Reply recorded.");
            continue;
        };
        let span = tracing::info_span!(
            "saga.settle",
            order.id = %order_id,
            correlation_id,
            to = settlement.to.as_str(),
        );
        let _settle = span.enter();
        replayed.steps.push((
            order_id,
            settlement.n,
            settlement.step,
            settlement.reason.map(|r| r.as_str().to_owned()),
            now,
        ));
        let event = settlement
            .event(order_id, &context)
            .map_err(|e| BatchError::at(i, e))?;
        replayed.events.push(event);
        tracing::debug!(n = settlement.n, "Saga settled.");
        replayed
            .settlements
            .push((order_id, settlement, saga.created_at));
    }
    Ok(replayed)
}

/// An order id with its row of [`LockedRow`].
type IdRow = (Uuid, String, String, String, i64, i32, OffsetDateTime);

/// The sagas of `orders` (sorted, distinct) that exist, with their orders' status; on
/// Postgres locked, in order id order, as the per-event path locks each.
async fn lock_all(tx: &mut Tx, orders: &[Uuid]) -> anyhow::Result<BTreeMap<Uuid, Locked>> {
    let mut rows: Vec<IdRow> = Vec::new();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            rows = sqlx::query_as(concat!(
                "SELECT o.id, ",
                locked_columns!(),
                " FROM orders o JOIN sagas s ON s.order_id = o.id \
                 WHERE o.id = ANY($1) ORDER BY o.id FOR UPDATE"
            ))
            .bind(orders)
            .fetch_all(&mut **conn)
            .await?;
        }
        // The single writer: nothing else writes while this transaction is open.
        TxConn::Sqlite(conn) => {
            for chunk in orders.chunks(bulk::MAX_BINDS) {
                let sql = format!(
                    concat!(
                        "SELECT o.id, ",
                        locked_columns!(),
                        " FROM orders o JOIN sagas s ON s.order_id = o.id WHERE o.id IN {}"
                    ),
                    bulk::values(1, chunk.len(), false)
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for order_id in chunk {
                    query = query.bind(order_id);
                }
                let found: Vec<IdRow> = query.fetch_all(&mut **conn).await?;
                rows.extend(found);
            }
        }
    }
    rows.into_iter()
        .map(
            |(id, status, stock, payment, deadline_us, steps, created_at)| {
                let row: LockedRow = (status, stock, payment, deadline_us, steps, created_at);
                Ok((id, Locked::from_row(row)?))
            },
        )
        .collect()
}

/// A saga to write: its order, its state after the replay, its settlement time if the batch
/// settled it.
type SagaRow<'a> = (Uuid, &'a Locked, Option<OffsetDateTime>);

/// Writes the sagas' participants, step counts and settlement times (a settled saga keeps its
/// first); every row must exist.
async fn update_sagas(tx: &mut Tx, sagas: &[SagaRow<'_>]) -> Result<(), sqlx::Error> {
    if sagas.is_empty() {
        return Ok(());
    }
    let mut changed = 0;
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let orders: Vec<Uuid> = sagas.iter().map(|s| s.0).collect();
            let stock: Vec<&str> = sagas.iter().map(|s| s.1.stock.as_str()).collect();
            let payment: Vec<&str> = sagas.iter().map(|s| s.1.payment.as_str()).collect();
            let steps: Vec<i32> = sagas.iter().map(|s| s.1.steps).collect();
            let settled_at: Vec<Option<OffsetDateTime>> = sagas.iter().map(|s| s.2).collect();
            changed += sqlx::query(
                "UPDATE sagas s SET stock = v.stock, payment = v.payment, steps = v.steps, \
                   settled_at = COALESCE(s.settled_at, v.settled_at) \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int4[], $5::timestamptz[]) \
                   AS v(order_id, stock, payment, steps, settled_at) \
                 WHERE s.order_id = v.order_id",
            )
            .bind(orders)
            .bind(stock)
            .bind(payment)
            .bind(steps)
            .bind(settled_at)
            .execute(&mut **conn)
            .await?
            .rows_affected();
        }
        TxConn::Sqlite(conn) => {
            for chunk in sagas.chunks(bulk::rows_per_statement(5)) {
                let sql = format!(
                    "UPDATE sagas SET stock = v.column2, payment = v.column3, steps = v.column4, \
                       settled_at = COALESCE(sagas.settled_at, v.column5) \
                     FROM (VALUES {}) AS v WHERE sagas.order_id = v.column1",
                    bulk::values(chunk.len(), 5, false)
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for (order_id, saga, settled_at) in chunk {
                    query = query
                        .bind(*order_id)
                        .bind(saga.stock.as_str())
                        .bind(saga.payment.as_str())
                        .bind(saga.steps)
                        .bind(*settled_at);
                }
                changed += query.execute(&mut **conn).await?.rows_affected();
            }
        }
    }
    expect_rows("saga", changed, sagas.len())
}

/// Moves the settled orders to their new status, from the status each was locked in; every one
/// must move.
async fn update_orders(
    tx: &mut Tx,
    moves: &[(Uuid, &Settlement)],
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    if moves.is_empty() {
        return Ok(());
    }
    let mut changed = 0;
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let orders: Vec<Uuid> = moves.iter().map(|m| m.0).collect();
            let to: Vec<&str> = moves.iter().map(|m| m.1.to.as_str()).collect();
            let reasons: Vec<Option<&str>> = moves
                .iter()
                .map(|m| m.1.reason.map(Reason::as_str))
                .collect();
            let from: Vec<&str> = moves.iter().map(|m| m.1.from.as_str()).collect();
            changed += sqlx::query(
                "UPDATE orders o SET status = v.status, reason = v.reason, updated_at = $5 \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) \
                   AS v(id, status, reason, from_status) \
                 WHERE o.id = v.id AND o.status = v.from_status",
            )
            .bind(orders)
            .bind(to)
            .bind(reasons)
            .bind(from)
            .bind(now)
            .execute(&mut **conn)
            .await?
            .rows_affected();
        }
        TxConn::Sqlite(conn) => {
            for chunk in moves.chunks(bulk::rows_per_statement(4)) {
                let sql = format!(
                    "UPDATE orders SET status = v.column2, reason = v.column3, updated_at = ? \
                     FROM (VALUES {}) AS v \
                     WHERE orders.id = v.column1 AND orders.status = v.column4",
                    bulk::values(chunk.len(), 4, false)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(bulk::cached(chunk.len()))
                    .bind(now);
                for (order_id, settlement) in chunk {
                    query = query
                        .bind(*order_id)
                        .bind(settlement.to.as_str())
                        .bind(settlement.reason.map(Reason::as_str))
                        .bind(settlement.from.as_str());
                }
                changed += query.execute(&mut **conn).await?.rows_affected();
            }
        }
    }
    expect_rows("order", changed, moves.len())
}

/// Fails unless an update changed `expected` rows: each was read under the lock.
fn expect_rows(what: &str, changed: u64, expected: usize) -> Result<(), sqlx::Error> {
    if changed == expected as u64 {
        return Ok(());
    }
    Err(sqlx::Error::Protocol(format!(
        "{changed} of {expected} {what} rows changed under a lock"
    )))
}
