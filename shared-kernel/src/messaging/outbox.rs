//! The transactional outbox: the one way a module publishes an event.

use std::collections::BTreeMap;

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::{Envelope, EventContext, IntegrationEvent};
use crate::clock;
use crate::storage::{AppendedEvent, ModuleDb, StorageError, Tx, TxConn};
use crate::{with_reader, with_tx};

/// The columns an append writes, in the order of its binds (after `seq`).
macro_rules! outbox_insert_columns {
    () => {
        "seq, id, aggregatetype, aggregateid, type, event_version, payload, occurred_at, \
         correlation_id, causation_id, headers"
    };
}

/// The Postgres channel on which commits that appended to an outbox are announced.
pub const NOTIFY_CHANNEL: &str = "bounded_outbox";

/// Appends `event` to the module's outbox inside `tx`, the transaction of the change it
/// describes: both commit or neither does. Returns the event's id and seq.
///
/// The seq comes from `outbox_head` under its row lock (Postgres) or the single writer
/// (SQLite), so seqs are gap-free and commit in order: a reader that sees seq N has seen every
/// seq below it.
///
/// # Errors
/// Besides storage errors, `sqlx::Error::InvalidArgument` naming the lock-order rule inside a
/// subscription batch whose handler does not declare `Handler::locks_outbox`: such a batch has
/// not taken the outbox lock first, and appending would break the lock order (see [`lock`]).
pub async fn append<E: IntegrationEvent>(
    tx: &mut Tx,
    event: &E,
    context: &EventContext,
) -> Result<(Uuid, i64), sqlx::Error> {
    if let Some(subscription) = &tx.appends_refused_for {
        return Err(sqlx::Error::InvalidArgument(format!(
            "{subscription}: the handler appended to the outbox without declaring it \
             (`Handler::locks_outbox`); a batch that may publish takes the outbox lock first \
             (the lock-order rule, see `outbox::lock`)"
        )));
    }
    let payload = serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id = Uuid::now_v7();
    let aggregate_id = event.aggregate_id();
    // One statement takes the next seq from the head and inserts the event (Postgres: under
    // the head's row lock, held to commit; SQLite: under the single writer, with the trigger
    // `outbox_head_follows` moving the head).
    let sql = match tx.conn {
        TxConn::Sqlite(_) => concat!(
            "INSERT INTO outbox (",
            outbox_insert_columns!(),
            ") SELECT seq + 1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
             FROM outbox_head WHERE id = 1 RETURNING seq"
        ),
        TxConn::Postgres(_) => concat!(
            "WITH head AS (UPDATE outbox_head SET seq = seq + 1 WHERE id = 1 RETURNING seq) \
             INSERT INTO outbox (",
            outbox_insert_columns!(),
            ") SELECT seq, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM head RETURNING seq"
        ),
    };
    let seq: i64 = with_tx!(tx, |conn| {
        sqlx::query_scalar(sql)
            .bind(id)
            .bind(E::AGGREGATE_TYPE)
            .bind(&aggregate_id)
            .bind(E::TYPE)
            .bind(E::VERSION)
            .bind(Json(&payload))
            .bind(clock::now())
            .bind(context.correlation_id)
            .bind(context.causation_id)
            .bind(Json(&context.headers))
            .fetch_one(conn)
            .await
    })?;
    tx.appended_events.push(AppendedEvent {
        seq,
        aggregate_id,
        event_type: E::TYPE,
    });
    Ok((id, seq))
}

/// Takes the outbox's append lock now rather than at the first [`append`] (Postgres; SQLite's
/// single writer serializes writers anyway). Every transaction of a module that both locks
/// rows and may publish takes it **first**: then all of them lock in one order — the outbox,
/// then rows — and two of them can never deadlock, one holding a row and waiting for the
/// outbox while the other holds the outbox and waits for that row. (A subscription batch
/// applies many events and would otherwise interleave row locks and appends.)
///
/// Subscription batches do not call it themselves: the kernel takes it for every batch whose
/// handler declares `Handler::locks_outbox`, before the handler's first effect, and refuses
/// appends from any other batch (see [`append`]). A command path (a request, a timer)
/// that locks rows and may publish calls it first.
///
/// The lock is held to the end of the transaction, so only a transaction's first call costs a
/// round trip. Call it first, outside any savepoint: rolling back to a savepoint taken before
/// it would release the lock while this transaction still counts it as held.
pub async fn lock(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if tx.outbox_locked {
        return Ok(());
    }
    if let TxConn::Postgres(conn) = &mut tx.conn {
        sqlx::query("SELECT seq FROM outbox_head WHERE id = 1 FOR UPDATE")
            .execute(&mut **conn)
            .await?;
    }
    tx.outbox_locked = true;
    Ok(())
}

/// The columns of an [`OutboxRow`], in its order.
macro_rules! envelope_columns {
    () => {
        "seq, id, aggregatetype, aggregateid, type, event_version, payload, occurred_at, \
         correlation_id, causation_id, headers"
    };
}

type OutboxRow = (
    i64,
    Uuid,
    String,
    String,
    String,
    i32,
    Json<serde_json::Value>,
    OffsetDateTime,
    Option<Uuid>,
    Option<Uuid>,
    Json<BTreeMap<String, String>>,
);

/// Up to `limit` events of `db`'s outbox after `after_seq`, in seq order.
pub async fn read_after(
    db: &ModuleDb,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Envelope>, StorageError> {
    let rows: Vec<OutboxRow> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(concat!(
            "SELECT ",
            envelope_columns!(),
            " FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(envelopes(db, rows))
}

/// Every retained event of one aggregate (`aggregate_id`, any type) in `db`'s outbox, in seq
/// order: what a timeline of that aggregate shows.
pub async fn about(db: &ModuleDb, aggregate_id: &str) -> Result<Vec<Envelope>, StorageError> {
    let rows: Vec<OutboxRow> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(concat!(
            "SELECT ",
            envelope_columns!(),
            " FROM outbox WHERE aggregateid = $1 ORDER BY seq"
        ))
        .bind(aggregate_id)
        .fetch_all(pool)
        .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(envelopes(db, rows))
}

fn envelopes(db: &ModuleDb, rows: Vec<OutboxRow>) -> Vec<Envelope> {
    let source = db.module().to_owned();
    rows.into_iter()
        .map(
            |(
                seq,
                id,
                aggregate_type,
                aggregate_id,
                event_type,
                event_version,
                payload,
                occurred_at,
                correlation_id,
                causation_id,
                headers,
            )| Envelope {
                id,
                source: source.clone(),
                seq,
                aggregate_type,
                aggregate_id,
                event_type,
                event_version,
                occurred_at,
                correlation_id,
                causation_id,
                headers: headers.0,
                payload: payload.0,
            },
        )
        .collect()
}

/// The last seq appended to `db`'s outbox (0 when empty).
pub async fn head(db: &ModuleDb) -> Result<i64, StorageError> {
    let (seq,): (i64,) = with_reader!(db.reader()?, |pool| {
        sqlx::query_as("SELECT seq FROM outbox_head WHERE id = 1")
            .fetch_one(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(seq)
}

/// When the event at `seq` was committed, if it is still in the log.
pub async fn occurred_at(db: &ModuleDb, seq: i64) -> Result<Option<OffsetDateTime>, StorageError> {
    let row: Option<(OffsetDateTime,)> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as("SELECT occurred_at FROM outbox WHERE seq = $1")
            .bind(seq)
            .fetch_optional(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(row.map(|(at,)| at))
}

/// Deletes events at or below `up_to_seq` committed before `older_than`, and the inbox rows
/// that remember them; returns how many events went. The caller passes the lowest checkpoint
/// of every subscription to this source, so no unprocessed event is ever dropped.
pub async fn prune(
    db: &ModuleDb,
    up_to_seq: i64,
    older_than: OffsetDateTime,
) -> Result<u64, StorageError> {
    let mut tx = db.begin().await?;
    let deleted = with_tx!(&mut tx, |conn| {
        sqlx::query("DELETE FROM outbox WHERE seq <= $1 AND occurred_at < $2")
            .bind(up_to_seq)
            .bind(older_than)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
    .map_err(|e| db.classify(e))?;
    tx.commit().await.map_err(|e| db.classify(e))?;
    Ok(deleted)
}

/// Deletes inbox rows of `subscription` for events at or below `seq` of its source: pruned
/// events can never be delivered again, so their ids need no remembering.
pub async fn prune_inbox(db: &ModuleDb, subscription: &str, seq: i64) -> Result<u64, StorageError> {
    let mut tx = db.begin().await?;
    let deleted = with_tx!(&mut tx, |conn| {
        sqlx::query("DELETE FROM inbox WHERE subscription = $1 AND seq <= $2")
            .bind(subscription)
            .bind(seq)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
    .map_err(|e| db.classify(e))?;
    tx.commit().await.map_err(|e| db.classify(e))?;
    Ok(deleted)
}

/// The lowest seq still in the log (`None` when it is empty).
pub async fn tail(db: &ModuleDb) -> Result<Option<i64>, StorageError> {
    let (seq,): (Option<i64>,) = with_reader!(db.reader()?, |pool| {
        sqlx::query_as("SELECT MIN(seq) FROM outbox")
            .fetch_one(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(seq)
}
