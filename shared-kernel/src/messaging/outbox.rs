//! The transactional outbox: the one way a module publishes an event.

use std::collections::BTreeMap;

use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::{Envelope, EventContext, IntegrationEvent};
use super::recent;
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
/// describes: both commit or neither does. Returns the event's id. An [`append_many`] of one
/// event.
///
/// The event is written when `tx` commits ([`Tx::commit`](crate::storage::Tx::commit)), by
/// the transaction's last statement before the commit; its seq is taken then.
///
/// # Errors
/// `sqlx::Error::Encode` when the event does not serialize.
pub fn append<E: IntegrationEvent>(
    tx: &mut Tx,
    event: &E,
    context: &EventContext,
) -> Result<Uuid, sqlx::Error> {
    let outgoing = Outgoing::new(event, context)?;
    let id = outgoing.id;
    append_many(tx, [outgoing]);
    Ok(id)
}

/// One event on its way into the outbox, with the context it carries: what [`append_many`]
/// takes, so that one call can publish events of different types, each caused by its own
/// event (`EventContext::caused_by`, passed explicitly: nothing here reads
/// `EventContext::current`).
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: Uuid,
    aggregate_type: &'static str,
    aggregate_id: String,
    event_type: &'static str,
    event_version: i32,
    payload: serde_json::Value,
    context: EventContext,
}

impl Outgoing {
    /// `event` with `context`, and its id (a fresh UUID v7).
    ///
    /// # Errors
    /// `sqlx::Error::Encode` when the event does not serialize.
    pub fn new<E: IntegrationEvent>(
        event: &E,
        context: &EventContext,
    ) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: Uuid::now_v7(),
            aggregate_type: E::AGGREGATE_TYPE,
            aggregate_id: event.aggregate_id(),
            event_type: E::TYPE,
            event_version: E::VERSION,
            payload: serde_json::to_value(event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            context: context.clone(),
        })
    }

    /// The id the event will have in the outbox.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// Rows per multi-row insert on SQLite: 10 parameters each (plus the shared time) stays far
/// below its limit of bound parameters (32766).
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// Appends `events` to the module's outbox inside `tx`, in order, with consecutive seqs: what
/// [`append`] does for one, so that one call can publish events of different types.
///
/// Nothing touches the database yet: the events wait in `tx`, and [`Tx::commit`](
/// crate::storage::Tx::commit) writes every event the transaction appended with one statement
/// (on SQLite one per 500 events), the last before the commit. A savepoint rolled back
/// ([`Tx::rollback_to_savepoint`](crate::storage::Tx::rollback_to_savepoint)) takes back what
/// was appended after it.
///
/// Written last, the events take their seqs from `outbox_head` under its row lock (Postgres) or
/// the single writer (SQLite) only then, so seqs are gap-free and commit in order — a reader
/// that sees seq N has seen every seq below it — and the outbox lock is every transaction's
/// last lock, held for one insert and the commit. A transaction that holds it waits for no
/// other lock, so publishing can never take part in a deadlock, in whatever order the
/// transaction locked its rows and appended its events; and publishers of one module queue for
/// the lock only for the end of their transactions, not the whole of them.
pub fn append_many(tx: &mut Tx, events: impl IntoIterator<Item = Outgoing>) {
    tx.pending.extend(events);
}

/// Writes the events `tx` appended (see [`append_many`]): for [`Tx::commit`](
/// crate::storage::Tx::commit), just before the commit.
///
/// Postgres: one statement for any number of events — a CTE moves `outbox_head` by their
/// count under its row lock and inserts them from `UNNEST` of one array per column, numbered
/// by `WITH ORDINALITY`. SQLite: under the single writer, the head is read once (a
/// materialized CTE) and the rows are inserted with one multi-row `VALUES`, each seq the head
/// plus the row's place; the trigger `outbox_head_follows` moves the head row by row, so it
/// ends at the last seq.
pub(crate) async fn write(tx: &mut Tx) -> Result<(), sqlx::Error> {
    let owned = std::mem::take(&mut tx.pending);
    if owned.is_empty() {
        return Ok(());
    }
    let events = owned.as_slice();
    let now = clock::now();
    let mut seqs: Vec<(i64, Uuid)> = Vec::with_capacity(events.len());
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let column = |f: fn(&Outgoing) -> Uuid| events.iter().map(f).collect::<Vec<_>>();
            let text = |f: fn(&Outgoing) -> &str| events.iter().map(f).collect::<Vec<_>>();
            let json = |f: fn(&Outgoing) -> Json<serde_json::Value>| {
                events.iter().map(f).collect::<Vec<_>>()
            };
            let optional =
                |f: fn(&Outgoing) -> Option<Uuid>| events.iter().map(f).collect::<Vec<_>>();
            // `announce` tells every process listening on this database, at commit, that
            // the module's outbox grew: their subscribers wake as this process's do. The
            // payload names the source (the module's schema) and this process, whose own
            // subscribers the commit's local wake-up reaches. In the insert rather than a
            // statement of its own at commit, it costs no round trip; Postgres delivers a
            // transaction's identical notifications once.
            let rows: Vec<(i64, Uuid)> = sqlx::query_as(concat!(
                "WITH head AS (UPDATE outbox_head SET seq = seq + cardinality($1::uuid[]) \
                   WHERE id = 1 RETURNING seq - cardinality($1::uuid[]) AS seq), \
                 announce AS (SELECT pg_notify($11, current_schema() || ':' || $12)) \
                 INSERT INTO outbox (",
                outbox_insert_columns!(),
                ") SELECT head.seq + e.n, e.id, e.aggregatetype, e.aggregateid, e.type, \
                     e.event_version, e.payload, $10, e.correlation_id, e.causation_id, e.headers \
                 FROM head, announce, UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], \
                     $6::jsonb[], $7::uuid[], $8::uuid[], $9::jsonb[]) WITH ORDINALITY \
                   AS e(id, aggregatetype, aggregateid, type, event_version, payload, \
                        correlation_id, causation_id, headers, n) \
                 RETURNING seq, id"
            ))
            .bind(column(|e| e.id))
            .bind(text(|e| e.aggregate_type))
            .bind(text(|e| &e.aggregate_id))
            .bind(text(|e| e.event_type))
            .bind(events.iter().map(|e| e.event_version).collect::<Vec<_>>())
            .bind(json(|e| Json(e.payload.clone())))
            .bind(optional(|e| e.context.correlation_id))
            .bind(optional(|e| e.context.causation_id))
            .bind(json(|e| Json(serde_json::json!(e.context.headers))))
            .bind(now)
            .bind(NOTIFY_CHANNEL)
            .bind(tx.tag.as_deref().unwrap_or(""))
            .fetch_all(&mut **conn)
            .await?;
            seqs.extend(rows);
        }
        TxConn::Sqlite(conn) => {
            for chunk in events.chunks(SQLITE_ROWS_PER_STATEMENT) {
                // `$1` is the time of every row; each event adds its place and 9 columns.
                let mut sql = String::from(concat!(
                    "WITH head AS MATERIALIZED (SELECT seq FROM outbox_head WHERE id = 1) \
                     INSERT INTO outbox (",
                    outbox_insert_columns!(),
                    ") SELECT head.seq + v.column1, v.column2, v.column3, v.column4, v.column5, \
                         v.column6, v.column7, $1, v.column8, v.column9, v.column10 \
                     FROM head, (VALUES "
                ));
                for i in 0..chunk.len() {
                    let p = 2 + 10 * i;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    let placeholders: Vec<String> = (p..p + 10).map(|n| format!("${n}")).collect();
                    sql.push_str(&format!("({})", placeholders.join(", ")));
                }
                // Rows go in in the order of `VALUES`, so the trigger leaves the head at the
                // last seq.
                sql.push_str(") AS v ORDER BY v.column1 RETURNING seq, id");
                // Only placeholders are generated; every value is bound.
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(now);
                for (place, event) in (1i64..).zip(chunk) {
                    query = query
                        .bind(place)
                        .bind(event.id)
                        .bind(event.aggregate_type)
                        .bind(&event.aggregate_id)
                        .bind(event.event_type)
                        .bind(event.event_version)
                        .bind(Json(&event.payload))
                        .bind(event.context.correlation_id)
                        .bind(event.context.causation_id)
                        .bind(Json(&event.context.headers));
                }
                let rows: Vec<(i64, Uuid)> = query.fetch_all(&mut **conn).await?;
                seqs.extend(rows);
            }
        }
    }
    // `RETURNING` promises no order; the seqs follow the events' order.
    seqs.sort_unstable_by_key(|(seq, _)| *seq);
    if seqs.len() != events.len() || seqs.iter().zip(events).any(|((_, id), e)| *id != e.id) {
        return Err(sqlx::Error::Protocol(
            "the outbox insert did not return one seq per event, in order".into(),
        ));
    }
    tx.appended_events.extend(
        seqs.iter()
            .zip(events)
            .map(|((seq, _), event)| AppendedEvent {
                seq: *seq,
                aggregate_id: event.aggregate_id.clone(),
                event_type: event.event_type,
            }),
    );
    if tx.recent.is_some() {
        // As `read_after` would return them: the time is the row's (microseconds, as stored).
        // Only the last `recent::CAPACITY` can be kept.
        let source = tx.module.unwrap_or_default();
        let kept = seqs.len().saturating_sub(recent::CAPACITY);
        tx.written.extend(
            seqs.iter()
                .zip(owned)
                .skip(kept)
                .map(|((seq, _), event)| Envelope {
                    id: event.id,
                    source: source.to_owned(),
                    seq: *seq,
                    aggregate_type: event.aggregate_type.to_owned(),
                    aggregate_id: event.aggregate_id,
                    event_type: event.event_type.to_owned(),
                    event_version: event.event_version,
                    occurred_at: now,
                    correlation_id: event.context.correlation_id,
                    causation_id: event.context.causation_id,
                    headers: event.context.headers,
                    payload: event.payload,
                }),
        );
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgListener;

    use super::*;
    use crate::messaging::subscription::noted::Noted;
    use crate::storage::Db;
    use crate::storage::testing::{OnBackend, ScratchDb, TestBackend};

    /// Another process learns of a commit that appended through `NOTIFY_CHANNEL`, from the
    /// insert itself: once per committed transaction, never for one rolled back.
    #[tokio::test]
    async fn a_committed_append_is_announced_to_other_processes_once() {
        let Some(scratch) = ScratchDb::on_backend(TestBackend::Postgres, "outbox_announce").await
        else {
            return;
        };
        let db = &scratch.db;
        let Ok(Db::Postgres(pool)) = db.db() else {
            panic!("a Postgres scratch database");
        };
        let mut listener = PgListener::connect_with(pool).await.unwrap();
        listener.listen(NOTIFY_CHANNEL).await.unwrap();
        let note = |id: &str| Noted { id: id.into() };

        let mut rolled_back = db.begin().await.unwrap();
        append(&mut rolled_back, &note("a"), &EventContext::default()).unwrap();
        drop(rolled_back);
        let mut tx = db.begin().await.unwrap();
        // Two appends, one announcement: Postgres folds a transaction's identical ones.
        append(&mut tx, &note("a"), &EventContext::default()).unwrap();
        append_many(
            &mut tx,
            [Outgoing::new(&note("b"), &EventContext::default()).unwrap()],
        );
        tx.commit().await.unwrap();
        // A marker committed after it: whatever arrives before the marker was announced by
        // the transactions above.
        sqlx::query("SELECT pg_notify($1, 'marker')")
            .bind(NOTIFY_CHANNEL)
            .execute(pool)
            .await
            .unwrap();

        let mut payloads = Vec::new();
        while payloads.last().map(String::as_str) != Some("marker") {
            let notification = tokio::time::timeout(Duration::from_secs(30), listener.recv())
                .await
                .expect("the announcements arrive")
                .unwrap();
            payloads.push(notification.payload().to_owned());
        }
        assert_eq!(
            payloads,
            [format!("scratch:{}", db.tag()), "marker".to_owned()]
        );
    }

    /// The ids of `db`'s outbox events, in seq order, with their seqs.
    async fn written(db: &ModuleDb) -> Vec<(i64, String)> {
        let events = read_after(db, 0, 100).await.unwrap();
        events
            .into_iter()
            .map(|e| (e.seq, e.decode::<Noted>().unwrap().unwrap().id))
            .collect()
    }

    /// Two transactions that append concurrently get their seqs in the order they commit, not
    /// the order they appended: the events are written at commit, under the outbox lock.
    #[tokio::test]
    async fn seqs_follow_commit_order_not_append_order() {
        let Some(scratch) =
            ScratchDb::on_backend(TestBackend::Postgres, "outbox_commit_order").await
        else {
            return;
        };
        let db = &scratch.db;
        let note = |id: &str| Noted { id: id.into() };
        let mut first = db.begin().await.unwrap();
        append(
            &mut first,
            &note("appended first"),
            &EventContext::default(),
        )
        .unwrap();
        let mut second = db.begin().await.unwrap();
        append(
            &mut second,
            &note("appended second"),
            &EventContext::default(),
        )
        .unwrap();
        // Neither holds the outbox lock before it commits: the second commits without waiting.
        tokio::time::timeout(Duration::from_secs(30), second.commit())
            .await
            .expect("the second commits while the first is open")
            .unwrap();
        first.commit().await.unwrap();
        assert_eq!(
            written(db).await,
            [
                (1, "appended second".to_owned()),
                (2, "appended first".to_owned())
            ]
        );
    }

    crate::both_backends! {
        async fn a_rolled_back_savepoint_takes_back_what_was_appended_after_it(scratch: ScratchDb) {
            let db = &scratch.db;
            let note = |id: &str| Noted { id: id.into() };
            let mut tx = db.begin().await.unwrap();
            append(&mut tx, &note("before"), &EventContext::default()).unwrap();
            tx.savepoint("outer").await.unwrap();
            append(&mut tx, &note("undone"), &EventContext::default()).unwrap();
            tx.savepoint("inner").await.unwrap();
            append(&mut tx, &note("undone too"), &EventContext::default()).unwrap();
            // Rolling back to the outer one undoes the inner one as well, which is gone.
            tx.rollback_to_savepoint("outer").await.unwrap();
            let gone = tx.release_savepoint("inner").await.unwrap_err();
            assert!(gone.to_string().contains("no savepoint inner is open"), "{gone}");
            append(&mut tx, &note("kept"), &EventContext::default()).unwrap();
            tx.release_savepoint("outer").await.unwrap();
            tx.savepoint("released").await.unwrap();
            append(&mut tx, &note("released"), &EventContext::default()).unwrap();
            tx.release_savepoint("released").await.unwrap();
            tx.commit().await.unwrap();
            assert_eq!(
                written(db).await,
                [(1, "before".to_owned()), (2, "kept".to_owned()), (3, "released".to_owned())]
            );
        }
    }
}
