//! The event store: append-only streams with optimistic concurrency, snapshots, and the
//! savepoint-and-retry loop that serializes concurrent writers of one stream.
//!
//! - Appending is "the version loaded + 1, + 2, …": the primary key (stream_id, version) turns a
//!   concurrent append into a unique violation, reported as [`StoreError::Conflict`].
//! - Every `snapshot_every` events the state is saved; loading reads the latest snapshot and
//!   folds the events after it.
//! - [`retry_on_conflict!`] runs one decide-and-append attempt inside a `SAVEPOINT`, so a
//!   conflict (which aborts a Postgres transaction) only undoes the attempt; the attempt then
//!   runs again on the reloaded state, a bounded number of times.

use std::collections::HashMap;

use serde_json::Value;
use shared_kernel::clock;
use shared_kernel::messaging::EventContext;
use shared_kernel::storage::{Reader, Tx, TxConn, bulk, is_unique_violation};
use shared_kernel::{with_reader, with_tx};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Aggregate, DomainEvent, Recorded};

/// How many times one operation is attempted before a conflict is reported as an error.
pub const MAX_ATTEMPTS: u32 = 25;

const EVENTS_PKEY: (&str, &str) = ("events_pkey", "events.stream_id");
const ONE_PAYMENT_PER_ORDER: (&str, &str) =
    ("payment_views_order_id_key", "payment_views.order_id");

/// Failures of the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the stream since it was loaded.
    #[error("concurrent append to stream {0}")]
    Conflict(Uuid),
    /// The attempts ran out while other writers kept winning.
    #[error("stream {stream_id} kept changing: gave up after {attempts} attempts")]
    TooManyConflicts { stream_id: Uuid, attempts: u32 },
    /// A stored event or snapshot cannot be read (or an event cannot be written) as JSON.
    #[error("stream {stream_id}: {message}")]
    Corrupt { stream_id: Uuid, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A state folded from a stream, and the stream version it reflects (0 = no events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    pub stream_id: Uuid,
    pub state: A,
    pub version: i64,
}

/// One stored event, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub recorded_at: OffsetDateTime,
}

impl StoredEvent {
    /// The domain event, rebuilt from its type name and data.
    pub fn decode<E: DomainEvent>(&self, stream_id: Uuid) -> Result<E, StoreError> {
        if self.schema_version != E::SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                stream_id,
                message: format!(
                    "event {} has schema version {}, this reader knows {}",
                    self.version,
                    self.schema_version,
                    E::SCHEMA_VERSION
                ),
            });
        }
        let tagged = serde_json::json!({"type": self.event_type, "data": self.payload});
        serde_json::from_value(tagged).map_err(|e| StoreError::Corrupt {
            stream_id,
            message: format!("event {} ({}): {e}", self.version, self.event_type),
        })
    }

    pub fn recorded(&self) -> Recorded {
        Recorded {
            version: self.version,
            recorded_at: self.recorded_at,
        }
    }
}

/// Where to read a stream from: inside a write transaction (to decide) or from the readers.
#[derive(Debug)]
pub enum Source<'a> {
    Tx(&'a mut Tx),
    Reader(Reader<'a>),
}

/// Runs one query body on a [`Source`]; `$conn` is a connection or a pool of either backend.
macro_rules! on_source {
    ($source:expr, |$conn:ident| $body:expr) => {
        match $source {
            Source::Tx(tx) => with_tx!(*tx, |$conn| $body),
            Source::Reader(reader) => with_reader!(*reader, |$conn| $body),
        }
    };
}

type EventRow = (i64, String, i32, Json<Value>, OffsetDateTime);

fn stored(row: EventRow) -> StoredEvent {
    let (version, event_type, schema_version, payload, recorded_at) = row;
    StoredEvent {
        version,
        event_type,
        schema_version,
        payload: payload.0,
        recorded_at,
    }
}

/// The events of a stream after `after_version`, oldest first.
pub async fn read_events(
    source: &mut Source<'_>,
    stream_type: &str,
    stream_id: Uuid,
    after_version: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows: Vec<EventRow> = on_source!(source, |conn| {
        sqlx::query_as(
            "SELECT version, event_type, schema_version, payload, recorded_at FROM events \
             WHERE stream_id = $1 AND stream_type = $2 AND version > $3 ORDER BY version",
        )
        .bind(stream_id)
        .bind(stream_type)
        .bind(after_version)
        .fetch_all(conn)
        .await
    })?;
    Ok(rows.into_iter().map(stored).collect())
}

/// Folds `events` into `loaded`, checking that their versions follow on without a gap.
pub fn fold<A: Aggregate>(
    loaded: &mut Loaded<A>,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    for event in events {
        if event.version != loaded.version + 1 {
            return Err(StoreError::Corrupt {
                stream_id: loaded.stream_id,
                message: format!(
                    "version {} follows version {}",
                    event.version, loaded.version
                ),
            });
        }
        let decoded: A::Event = event.decode(loaded.stream_id)?;
        loaded.state.apply(&decoded, event.recorded());
        loaded.version = event.version;
    }
    Ok(())
}

/// Loads a stream's current state: the latest snapshot (when `use_snapshot`) plus the events
/// after it. A snapshot that cannot be read (an older state shape) is ignored: the events are
/// the truth.
pub async fn load<A: Aggregate>(
    mut source: Source<'_>,
    stream_id: Uuid,
    use_snapshot: bool,
) -> Result<Loaded<A>, StoreError> {
    let mut loaded = Loaded {
        stream_id,
        state: A::default(),
        version: 0,
    };
    if use_snapshot {
        let snapshot: Option<(i64, Json<Value>)> = on_source!(&mut source, |conn| {
            sqlx::query_as(
                "SELECT version, state FROM snapshots WHERE stream_id = $1 AND stream_type = $2",
            )
            .bind(stream_id)
            .bind(A::STREAM_TYPE)
            .fetch_optional(conn)
            .await
        })?;
        if let Some((version, Json(state))) = snapshot
            && let Some(from_snapshot) = from_snapshot(stream_id, version, state)
        {
            loaded = from_snapshot;
        }
    }
    let events = read_events(&mut source, A::STREAM_TYPE, stream_id, loaded.version).await?;
    fold(&mut loaded, &events)?;
    Ok(loaded)
}

/// The state a snapshot holds; `None` (with a warning) when it cannot be read as `A`, e.g. an
/// older state shape: the events are the truth, and the stream is then folded from its start.
fn from_snapshot<A: Aggregate>(stream_id: Uuid, version: i64, state: Value) -> Option<Loaded<A>> {
    match serde_json::from_value::<A>(state) {
        Ok(state) => Some(Loaded {
            stream_id,
            state,
            version,
        }),
        Err(error) => {
            tracing::warn!(%stream_id, version, %error, "Ignoring an unreadable snapshot.");
            None
        }
    }
}

/// The version of a stream's snapshot, if it has one.
pub async fn snapshot_version(
    reader: Reader<'_>,
    stream_type: &str,
    stream_id: Uuid,
) -> Result<Option<i64>, StoreError> {
    let row: Option<(i64,)> = with_reader!(reader, |pool| {
        sqlx::query_as("SELECT version FROM snapshots WHERE stream_id = $1 AND stream_type = $2")
            .bind(stream_id)
            .bind(stream_type)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(|(version,)| version))
}

/// An event decided but not yet stored: what one row of `events` receives.
#[derive(Debug, Clone)]
pub struct Staged {
    pub stream_id: Uuid,
    pub stream_type: &'static str,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: OffsetDateTime,
}

/// The metadata stored with every event: the correlation and causation of `context` and its
/// trace headers.
pub fn metadata(context: &EventContext) -> Value {
    serde_json::json!({
        "correlation_id": context.correlation_id,
        "causation_id": context.causation_id,
        "headers": context.headers,
    })
}

/// Folds `events` into `loaded` at the versions after its own and returns them as rows to
/// insert, each with `metadata` and `recorded_at`. Nothing is stored: [`insert_events`] does.
///
/// # Errors
/// [`StoreError::Corrupt`] when an event does not serialize as `{type, data}`.
pub fn stage<A: Aggregate>(
    loaded: &mut Loaded<A>,
    events: &[A::Event],
    metadata: &Value,
    recorded_at: OffsetDateTime,
) -> Result<Vec<Staged>, StoreError> {
    let stream_id = loaded.stream_id;
    let mut staged = Vec::with_capacity(events.len());
    for event in events {
        let version = loaded.version + 1;
        let tagged = serde_json::to_value(event).map_err(|e| StoreError::Corrupt {
            stream_id,
            message: format!("cannot serialize an event: {e}"),
        })?;
        let (Some(event_type), Some(payload)) = (
            tagged.get("type").and_then(Value::as_str),
            tagged.get("data"),
        ) else {
            return Err(StoreError::Corrupt {
                stream_id,
                message: format!("event is not {{type, data}}: {tagged}"),
            });
        };
        staged.push(Staged {
            stream_id,
            stream_type: A::STREAM_TYPE,
            version,
            event_type: event_type.to_owned(),
            schema_version: <A::Event as DomainEvent>::SCHEMA_VERSION,
            payload: payload.clone(),
            metadata: metadata.clone(),
            recorded_at,
        });
        loaded.state.apply(
            event,
            Recorded {
                version,
                recorded_at,
            },
        );
        loaded.version = version;
    }
    Ok(staged)
}

/// Inserts staged events: one statement for any number on Postgres (`UNNEST`), multi-row
/// `VALUES` on SQLite. An event at a version some stream has already is a
/// [`StoreError::Conflict`] (naming the first staged stream: the statement does not say which).
pub async fn insert_events(tx: &mut Tx, events: &[Staged]) -> Result<(), StoreError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let inserted = match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let column = |f: fn(&Staged) -> Uuid| events.iter().map(f).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO events (stream_id, stream_type, version, event_type, \
                   schema_version, payload, metadata, recorded_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], \
                   $5::int4[], $6::jsonb[], $7::jsonb[], $8::timestamptz[])",
            )
            .bind(column(|e| e.stream_id))
            .bind(events.iter().map(|e| e.stream_type).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.version).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.payload)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| Json(&e.metadata)).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
            .execute(&mut **conn)
            .await
            .map(drop)
        }
        TxConn::Sqlite(_) => shared_kernel::bulk_insert!(
            tx,
            "INSERT INTO events (stream_id, stream_type, version, event_type, \
               schema_version, payload, metadata, recorded_at)",
            8,
            events,
            |q, e| q
                .bind(e.stream_id)
                .bind(e.stream_type)
                .bind(e.version)
                .bind(e.event_type.as_str())
                .bind(e.schema_version)
                .bind(Json(&e.payload))
                .bind(Json(&e.metadata))
                .bind(e.recorded_at)
        ),
    };
    inserted.map_err(|error| {
        if is_unique_violation(&error, EVENTS_PKEY.0, EVENTS_PKEY.1) {
            StoreError::Conflict(first.stream_id)
        } else {
            StoreError::Database(error)
        }
    })
}

/// Whether a stream that was at version `from` and is now at `to` is due a snapshot: it
/// crossed a multiple of `snapshot_every` (0 = never).
pub fn snapshot_due(from: i64, to: i64, snapshot_every: u32) -> bool {
    let every = i64::from(snapshot_every);
    every > 0 && to / every > from / every
}

/// Appends `events` to the stream of `loaded` at the versions after `loaded.version`, and
/// returns the new state. A concurrent append since the load is a [`StoreError::Conflict`];
/// the caller rolls back to its savepoint and tries again (see [`retry_on_conflict!`]).
///
/// Takes a snapshot when the new version reaches a multiple of `snapshot_every` (0 = never).
pub async fn append<A: Aggregate>(
    tx: &mut Tx,
    loaded: &Loaded<A>,
    events: &[A::Event],
    snapshot_every: u32,
) -> Result<Loaded<A>, StoreError> {
    let mut next = loaded.clone();
    if events.is_empty() {
        return Ok(next);
    }
    let recorded_at = clock::now();
    let metadata = metadata(&EventContext::current());
    let staged = stage(&mut next, events, &metadata, recorded_at)?;
    insert_events(tx, &staged).await?;
    if snapshot_due(loaded.version, next.version, snapshot_every) {
        save_snapshot(tx, &next, recorded_at).await?;
    }
    Ok(next)
}

pub(crate) async fn save_snapshot<A: Aggregate>(
    tx: &mut Tx,
    loaded: &Loaded<A>,
    taken_at: OffsetDateTime,
) -> Result<(), StoreError> {
    let snapshot = Snapshot::of(loaded)?;
    save_snapshots(tx, &[snapshot], taken_at).await
}

/// A stream's state, serialized for `snapshots`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stream_id: Uuid,
    pub stream_type: &'static str,
    pub version: i64,
    pub state: Value,
}

impl Snapshot {
    pub fn of<A: Aggregate>(loaded: &Loaded<A>) -> Result<Self, StoreError> {
        let state = serde_json::to_value(&loaded.state).map_err(|e| StoreError::Corrupt {
            stream_id: loaded.stream_id,
            message: format!("cannot serialize a snapshot: {e}"),
        })?;
        Ok(Self {
            stream_id: loaded.stream_id,
            stream_type: A::STREAM_TYPE,
            version: loaded.version,
            state,
        })
    }
}

/// Saves snapshots (at most one per stream), each replacing an older one of its stream.
pub async fn save_snapshots(
    tx: &mut Tx,
    snapshots: &[Snapshot],
    taken_at: OffsetDateTime,
) -> Result<(), StoreError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    const UPSERT: &str = "ON CONFLICT (stream_id) DO UPDATE \
          SET version = excluded.version, state = excluded.state, taken_at = excluded.taken_at \
          WHERE snapshots.version < excluded.version";
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO snapshots (stream_id, stream_type, version, state, taken_at) \
                 SELECT v.*, $5 FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::jsonb[]) \
                   AS v {UPSERT}"
            )))
            .bind(snapshots.iter().map(|s| s.stream_id).collect::<Vec<_>>())
            .bind(snapshots.iter().map(|s| s.stream_type).collect::<Vec<_>>())
            .bind(snapshots.iter().map(|s| s.version).collect::<Vec<_>>())
            .bind(snapshots.iter().map(|s| Json(&s.state)).collect::<Vec<_>>())
            .bind(taken_at)
            .execute(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in snapshots.chunks(bulk::rows_per_statement(5)) {
                let sql = format!(
                    "INSERT INTO snapshots (stream_id, stream_type, version, state, taken_at) \
                     SELECT * FROM (VALUES {}) WHERE true {UPSERT}",
                    bulk::values(chunk.len(), 5, false)
                );
                let mut query =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for s in chunk {
                    query = query
                        .bind(s.stream_id)
                        .bind(s.stream_type)
                        .bind(s.version)
                        .bind(Json(&s.state))
                        .bind(taken_at);
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// Streams read at once (see [`read_many`]): their snapshots and the events after them.
#[derive(Debug, Default)]
pub struct Many {
    snapshots: HashMap<Uuid, (i64, Value)>,
    events: HashMap<Uuid, Vec<StoredEvent>>,
}

impl Many {
    /// The state of stream `stream_id` as [`load`] with snapshots gives it. A snapshot that
    /// cannot be read is ignored, as there: the stream is then loaded alone, from its start.
    pub async fn take<A: Aggregate>(
        &mut self,
        tx: &mut Tx,
        stream_id: Uuid,
    ) -> Result<Loaded<A>, StoreError> {
        let mut loaded = Loaded {
            stream_id,
            state: A::default(),
            version: 0,
        };
        if let Some((version, state)) = self.snapshots.remove(&stream_id) {
            match from_snapshot(stream_id, version, state) {
                Some(from_snapshot) => loaded = from_snapshot,
                None => return load(Source::Tx(tx), stream_id, false).await,
            }
        }
        let events = self.events.remove(&stream_id).unwrap_or_default();
        fold(&mut loaded, &events)?;
        Ok(loaded)
    }
}

/// Reads many streams, each given with its type, in two statements whatever their number
/// (two per [`bulk::MAX_BINDS`] parameters on SQLite): their snapshots, then the events after
/// each snapshot's version — what [`load`] reads for one, in the same order, so an append
/// between the two reads is seen as events after the snapshot.
pub async fn read_many(tx: &mut Tx, streams: &[(Uuid, &'static str)]) -> Result<Many, StoreError> {
    let mut many = Many::default();
    if streams.is_empty() {
        return Ok(many);
    }
    let mut snapshots: Vec<(Uuid, i64, Json<Value>)> = Vec::new();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            snapshots = sqlx::query_as(
                "SELECT s.stream_id, s.version, s.state \
                 FROM UNNEST($1::uuid[], $2::text[]) AS v(id, type) \
                 JOIN snapshots s ON s.stream_id = v.id AND s.stream_type = v.type",
            )
            .bind(streams.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(streams.iter().map(|(_, t)| *t).collect::<Vec<_>>())
            .fetch_all(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in streams.chunks(bulk::rows_per_statement(2)) {
                let sql = format!(
                    "SELECT s.stream_id, s.version, s.state FROM (VALUES {}) AS v \
                     JOIN snapshots s ON s.stream_id = v.column1 AND s.stream_type = v.column2",
                    bulk::values(chunk.len(), 2, false)
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for (id, stream_type) in chunk {
                    query = query.bind(*id).bind(*stream_type);
                }
                let found: Vec<(Uuid, i64, Json<Value>)> = query.fetch_all(&mut **conn).await?;
                snapshots.extend(found);
            }
        }
    }
    many.snapshots = snapshots
        .into_iter()
        .map(|(id, version, Json(state))| (id, (version, state)))
        .collect();
    let after = |id: &Uuid| many.snapshots.get(id).map_or(0, |(version, _)| *version);
    let mut rows: Vec<(Uuid, i64, String, i32, Json<Value>, OffsetDateTime)> = Vec::new();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            rows = sqlx::query_as(
                "SELECT e.stream_id, e.version, e.event_type, e.schema_version, e.payload, \
                   e.recorded_at \
                 FROM UNNEST($1::uuid[], $2::text[], $3::int8[]) AS v(id, type, after) \
                 JOIN events e \
                   ON e.stream_id = v.id AND e.stream_type = v.type AND e.version > v.after \
                 ORDER BY e.stream_id, e.version",
            )
            .bind(streams.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(streams.iter().map(|(_, t)| *t).collect::<Vec<_>>())
            .bind(streams.iter().map(|(id, _)| after(id)).collect::<Vec<_>>())
            .fetch_all(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in streams.chunks(bulk::rows_per_statement(3)) {
                let sql = format!(
                    "SELECT e.stream_id, e.version, e.event_type, e.schema_version, e.payload, \
                       e.recorded_at \
                     FROM (VALUES {}) AS v \
                     JOIN events e ON e.stream_id = v.column1 AND e.stream_type = v.column2 \
                       AND e.version > v.column3 \
                     ORDER BY e.stream_id, e.version",
                    bulk::values(chunk.len(), 3, false)
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for (id, stream_type) in chunk {
                    query = query.bind(*id).bind(*stream_type).bind(after(id));
                }
                let found: Vec<_> = query.fetch_all(&mut **conn).await?;
                rows.extend(found);
            }
        }
    }
    for (stream_id, version, event_type, schema_version, payload, recorded_at) in rows {
        let event = stored((version, event_type, schema_version, payload, recorded_at));
        many.events.entry(stream_id).or_default().push(event);
    }
    Ok(many)
}

/// Maps a unique violation of "one payment per order" to a conflict: another writer created
/// the order's payment since this attempt looked.
pub fn payment_view_error(error: sqlx::Error, order_id: Uuid) -> StoreError {
    if is_unique_violation(&error, ONE_PAYMENT_PER_ORDER.0, ONE_PAYMENT_PER_ORDER.1) {
        StoreError::Conflict(order_id)
    } else {
        StoreError::Database(error)
    }
}

/// The savepoint of an attempt, taken through the transaction's own savepoints
/// ([`Tx::savepoint`]), so that a rolled-back attempt's outbox appends go with it.
pub const ATTEMPT: &str = "payments_attempt";

/// Runs `$attempt` (an expression evaluating to a future of `Result<T, StoreError>`, built anew
/// for every attempt) inside a savepoint of `$tx`, up to [`MAX_ATTEMPTS`] times while it
/// fails with [`StoreError::Conflict`]. Evaluates to `Result<(T, conflicts), StoreError>`.
///
/// Each conflict is counted in `bounded_event_store_conflicts_total{module="payments"}` and
/// in `$conflicts` (an `AtomicU64`).
macro_rules! retry_on_conflict {
    ($tx:expr, $conflicts:expr, $attempt:expr) => {{
        let mut conflicts: u32 = 0;
        loop {
            if let Err(e) = $tx.savepoint($crate::store::ATTEMPT).await {
                break Err(e.into());
            }
            match $attempt.await {
                Ok(value) => match $tx.release_savepoint($crate::store::ATTEMPT).await {
                    Ok(()) => break Ok((value, conflicts)),
                    Err(e) => break Err(e.into()),
                },
                Err($crate::store::StoreError::Conflict(stream_id)) => {
                    conflicts += 1;
                    metrics::counter!("bounded_event_store_conflicts_total", "module" => $crate::NAME)
                        .increment(1);
                    $conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(%stream_id, conflicts, "Event store conflict; retrying.");
                    if let Err(e) = $tx.rollback_to_savepoint($crate::store::ATTEMPT).await {
                        break Err(e.into());
                    }
                    if let Err(e) = $tx.release_savepoint($crate::store::ATTEMPT).await {
                        break Err(e.into());
                    }
                    if conflicts >= $crate::store::MAX_ATTEMPTS {
                        break Err($crate::store::StoreError::TooManyConflicts {
                            stream_id,
                            attempts: conflicts,
                        });
                    }
                }
                Err(error) => {
                    // The caller's transaction fails anyway; undo the attempt for tidiness.
                    let _ = $tx.rollback_to_savepoint($crate::store::ATTEMPT).await;
                    break Err(error);
                }
            }
        }
    }};
}

pub(crate) use retry_on_conflict;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use shared_kernel::storage::testing::{TestDatabase, postgres_url};
    use shared_kernel::storage::{ModuleDb, StorageConfig};

    use super::*;
    use crate::domain::{AccountEvent, AccountState};

    async fn sqlite() -> (ModuleDb, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = ModuleDb::open(
            crate::NAME,
            &crate::MIGRATIONS,
            &StorageConfig::sqlite(dir.path()),
        )
        .await
        .unwrap();
        (db, dir)
    }

    async fn postgres(test: &str) -> Option<(ModuleDb, TestDatabase)> {
        let database = TestDatabase::create(&postgres_url(test)?).await;
        let db = ModuleDb::open(
            crate::NAME,
            &crate::MIGRATIONS,
            &StorageConfig::postgres(database.url()),
        )
        .await
        .unwrap();
        Some((db, database))
    }

    fn limit(cents: i64) -> AccountEvent {
        AccountEvent::CreditLimitChanged {
            credit_limit_cents: cents,
        }
    }

    fn reserve(cents: i64) -> AccountEvent {
        AccountEvent::CreditReserved {
            payment_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            amount_cents: cents,
        }
    }

    /// An append from a stale load conflicts; the retry loop rolls back to its savepoint,
    /// reloads and succeeds, and the enclosing transaction stays usable (on Postgres a failed
    /// statement outside a savepoint would abort it).
    async fn a_stale_append_conflicts_and_is_retried(db: &ModuleDb) {
        let stream = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        let stale: Loaded<AccountState> = load(Source::Tx(&mut tx), stream, true).await.unwrap();
        let opened = [AccountEvent::AccountOpened {
            credit_limit_cents: 100,
        }];
        append(&mut tx, &stale, &opened, 0).await.unwrap();

        let conflicts = AtomicU64::new(0);
        let mut attempts = 0;
        let (version, retried) = retry_on_conflict!(&mut tx, conflicts, async {
            attempts += 1;
            // The first attempt decides on what it loaded before the other append.
            let loaded = if attempts == 1 {
                stale.clone()
            } else {
                load(Source::Tx(&mut tx), stream, true).await?
            };
            append(&mut tx, &loaded, &[limit(250)], 0)
                .await
                .map(|next| next.version)
        })
        .unwrap();
        assert_eq!((version, retried, attempts), (2, 1, 2));
        assert_eq!(conflicts.load(Ordering::Relaxed), 1);
        tx.commit().await.unwrap();

        let loaded: Loaded<AccountState> = load(Source::Reader(db.reader().unwrap()), stream, true)
            .await
            .unwrap();
        assert_eq!((loaded.version, loaded.state.credit_limit_cents), (2, 250));
    }

    #[tokio::test]
    async fn a_stale_append_conflicts_and_is_retried_sqlite() {
        let (db, _dir) = sqlite().await;
        a_stale_append_conflicts_and_is_retried(&db).await;
    }

    #[tokio::test]
    async fn a_stale_append_conflicts_and_is_retried_postgres() {
        if let Some((db, _database)) = postgres("a_stale_append_conflicts_and_is_retried").await {
            a_stale_append_conflicts_and_is_retried(&db).await;
        }
    }

    /// Snapshots are taken at multiples of `snapshot_every` and loading from one gives what a
    /// full replay gives.
    #[tokio::test]
    async fn loads_from_a_snapshot_match_a_full_replay() {
        let (db, _dir) = sqlite().await;
        let stream = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        let mut loaded: Loaded<AccountState> =
            load(Source::Tx(&mut tx), stream, true).await.unwrap();
        loaded = append(
            &mut tx,
            &loaded,
            &[AccountEvent::AccountOpened {
                credit_limit_cents: 1_000,
            }],
            3,
        )
        .await
        .unwrap();
        for i in 0..6 {
            loaded = append(&mut tx, &loaded, &[reserve(10 + i)], 3)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(
            snapshot_version(db.reader().unwrap(), "account", stream)
                .await
                .unwrap(),
            Some(6)
        );
        let reader = || Source::Reader(db.reader().unwrap());
        let with: Loaded<AccountState> = load(reader(), stream, true).await.unwrap();
        let without: Loaded<AccountState> = load(reader(), stream, false).await.unwrap();
        assert_eq!(with, without);
        assert_eq!((with.version, with.state.outstanding_cents), (7, 75));
        assert_eq!(with, loaded);
    }

    /// Two transactions load the same version of a stream at once (a barrier makes sure), then
    /// both append: the second waits on the first's unique-index entry, gets a conflict when it
    /// commits, rolls back to its savepoint and retries on the new version. Only Postgres runs
    /// writers truly in parallel; SQLite's single writer connection queues them instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_of_one_version_conflict_and_retry_postgres() {
        let Some((db, _database)) = postgres("concurrent_writers_of_one_version_conflict").await
        else {
            return;
        };
        let stream = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        let fresh: Loaded<AccountState> = load(Source::Tx(&mut tx), stream, true).await.unwrap();
        let opened = [AccountEvent::AccountOpened {
            credit_limit_cents: 1_000,
        }];
        append(&mut tx, &fresh, &opened, 0).await.unwrap();
        tx.commit().await.unwrap();

        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writers: Vec<_> = [100, 200]
            .into_iter()
            .map(|amount| {
                let (db, barrier) = (db.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let conflicts = AtomicU64::new(0);
                    let mut tx = db.begin().await.unwrap();
                    let mut first = true;
                    let (_, retried) = retry_on_conflict!(&mut tx, conflicts, async {
                        let loaded: Loaded<AccountState> =
                            load(Source::Tx(&mut tx), stream, true).await?;
                        if std::mem::take(&mut first) {
                            assert_eq!(loaded.version, 1);
                            barrier.wait().await;
                        }
                        append(&mut tx, &loaded, &[reserve(amount)], 0).await
                    })
                    .unwrap();
                    tx.commit().await.unwrap();
                    retried
                })
            })
            .collect();
        let mut retried = Vec::new();
        for writer in writers {
            retried.push(writer.await.unwrap());
        }
        retried.sort_unstable();
        assert_eq!(retried, [0, 1]);
        let loaded: Loaded<AccountState> =
            load(Source::Reader(db.reader().unwrap()), stream, false)
                .await
                .unwrap();
        assert_eq!((loaded.version, loaded.state.outstanding_cents), (3, 300));
    }
}
