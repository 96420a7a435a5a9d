//! Dead letters: events a subscription gave up on, and the events of the same aggregate held
//! back behind them, in the consumer's database.
//!
//! A parked event blocks only its own aggregate: later events of that aggregate are recorded
//! here as `blocked` instead of being applied out of order, while every other aggregate flows.
//! Retrying or discarding the parked event releases the blocked ones in seq order.

use serde::Serialize;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::event::Envelope;
use super::subscription::{Subscription, apply, lock_checkpoint};
use crate::clock;
use crate::storage::{ModuleDb, StorageError, Tx};
use crate::{with_reader, with_tx};

/// One dead letter, for `/ops/dead-letters`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: Uuid,
    pub subscription: String,
    /// `parked` (gave up after `attempts`), `blocked` (waiting behind a parked event of its
    /// aggregate), `retried` or `discarded`.
    pub status: String,
    /// The error chain of the last attempt, outermost first.
    pub error: Option<String>,
    pub attempts: i32,
    pub seq: i64,
    pub aggregate_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub parked_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// The whole envelope.
    #[schema(value_type = Object)]
    pub event: Envelope,
}

/// Why a dead letter could not be retried or discarded.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter with id {0}")]
    NotFound(Uuid),
    #[error("dead letter {id} is {status}; only parked events can be retried or discarded")]
    NotParked { id: Uuid, status: String },
    /// The retry ran and failed again; the dead letter stays parked with one more attempt.
    #[error("the retry failed again: {0}")]
    StillFailing(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// `<source>:<aggregate type>:<aggregate id>`: the unit of ordering.
pub(crate) fn aggregate_key(event: &Envelope) -> String {
    format!(
        "{}:{}:{}",
        event.source, event.aggregate_type, event.aggregate_id
    )
}

/// How many events of `subscription` are parked or blocked.
pub(crate) async fn open_count(tx: &mut Tx, subscription: &str) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) = with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM dead_letters \
             WHERE subscription = $1 AND status IN ('parked', 'blocked')",
        )
        .bind(subscription)
        .fetch_one(conn)
        .await
    })?;
    Ok(count)
}

/// Whether an earlier event of this aggregate is parked or blocked.
pub(crate) async fn is_blocked(
    tx: &mut Tx,
    subscription: &str,
    key: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = with_tx!(tx, |conn| {
        sqlx::query_as(
            "SELECT seq FROM dead_letters WHERE subscription = $1 AND aggregate_key = $2 \
             AND status IN ('parked', 'blocked') LIMIT 1",
        )
        .bind(subscription)
        .bind(key)
        .fetch_optional(conn)
        .await
    })?;
    Ok(row.is_some())
}

/// Records `event` as parked (with its error) or blocked.
pub(crate) async fn insert(
    tx: &mut Tx,
    subscription: &str,
    event: &Envelope,
    status: &str,
    error: Option<&str>,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO dead_letters (id, subscription, event_id, seq, aggregate_key, envelope, \
               status, error, attempts, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(subscription)
        .bind(event.id)
        .bind(event.seq)
        .bind(aggregate_key(event))
        .bind(Json(event))
        .bind(status)
        .bind(error)
        .bind(attempts)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}

/// `SELECT <the columns of Row> FROM dead_letters <rest>`, as one static string.
macro_rules! select_dead_letters {
    ($rest:literal) => {
        concat!(
            "SELECT id, subscription, status, error, attempts, seq, aggregate_key, parked_at, \
             resolved_at, envelope FROM dead_letters ",
            $rest
        )
    };
}

type Row = (
    Uuid,
    String,
    String,
    Option<String>,
    i32,
    i64,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Json<Envelope>,
);

fn from_row(row: Row) -> DeadLetter {
    let (
        id,
        subscription,
        status,
        error,
        attempts,
        seq,
        aggregate_key,
        parked_at,
        resolved_at,
        event,
    ) = row;
    DeadLetter {
        id,
        subscription,
        status,
        error,
        attempts,
        seq,
        aggregate_key,
        parked_at,
        resolved_at,
        event: event.0,
    }
}

/// Every dead letter in `db` (the consumer's database), oldest first.
pub async fn list(db: &ModuleDb) -> Result<Vec<DeadLetter>, StorageError> {
    let rows: Vec<Row> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(select_dead_letters!("ORDER BY id"))
            .fetch_all(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// One dead letter of `db`, by id.
pub async fn get(db: &ModuleDb, id: Uuid) -> Result<Option<DeadLetter>, StorageError> {
    let row: Option<Row> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(select_dead_letters!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(row.map(from_row))
}

/// Counts of parked and blocked events of one subscription.
pub async fn counts(db: &ModuleDb, subscription: &str) -> Result<(i64, i64), StorageError> {
    let (parked, blocked): (i64, i64) = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN status = 'parked' THEN 1 ELSE 0 END), 0), \
                    COALESCE(SUM(CASE WHEN status = 'blocked' THEN 1 ELSE 0 END), 0) \
             FROM dead_letters WHERE subscription = $1",
        )
        .bind(subscription)
        .fetch_one(pool)
        .await
    })
    .map_err(|e| db.classify(e))?;
    Ok((parked, blocked))
}

async fn load(tx: &mut Tx, id: Uuid) -> Result<Option<DeadLetter>, sqlx::Error> {
    let row: Option<Row> = with_tx!(tx, |conn| {
        sqlx::query_as(select_dead_letters!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await
    })?;
    Ok(row.map(from_row))
}

async fn set_status(
    tx: &mut Tx,
    id: Uuid,
    status: &str,
    error: Option<&str>,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    let resolved = matches!(status, "retried" | "discarded").then(clock::now);
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE dead_letters SET status = $2, error = COALESCE($3, error), attempts = $4, \
               resolved_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(attempts)
        .bind(resolved)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Starts an operator action on a parked dead letter: a transaction holding the
/// subscription's checkpoint lock (so the worker waits) and the dead letter.
async fn begin_on_parked(
    db: &ModuleDb,
    subscription: &Subscription,
    id: Uuid,
) -> Result<(Tx, DeadLetter), DeadLetterError> {
    let mut tx = db.begin().await?;
    lock_checkpoint(&mut tx, &subscription.name)
        .await
        .map_err(|e| db.classify(e))?;
    let letter = load(&mut tx, id)
        .await
        .map_err(|e| db.classify(e))?
        .ok_or(DeadLetterError::NotFound(id))?;
    if letter.status != "parked" {
        return Err(DeadLetterError::NotParked {
            id,
            status: letter.status,
        });
    }
    Ok((tx, letter))
}

/// After a failed attempt (whose transaction was rolled back): records the dead letter as
/// parked with the attempt's error, under the subscription's checkpoint lock.
async fn keep_parked(
    db: &ModuleDb,
    subscription: &Subscription,
    id: Uuid,
    error: &str,
    attempts: i32,
) -> Result<(), DeadLetterError> {
    let mut tx = db.begin().await?;
    lock_checkpoint(&mut tx, &subscription.name)
        .await
        .map_err(|e| db.classify(e))?;
    set_status(&mut tx, id, "parked", Some(error), attempts)
        .await
        .map_err(|e| db.classify(e))?;
    tx.commit().await.map_err(|e| db.classify(e))?;
    Ok(())
}

/// Applies a parked event now; on success releases the events blocked behind it, in order.
pub async fn retry(
    db: &ModuleDb,
    subscription: &Subscription,
    id: Uuid,
) -> Result<(), DeadLetterError> {
    let (mut tx, letter) = begin_on_parked(db, subscription, id).await?;
    match apply(&mut tx, subscription, &letter.event).await {
        Ok(()) => {
            set_status(&mut tx, id, "retried", None, letter.attempts + 1)
                .await
                .map_err(|e| db.classify(e))?;
            tx.commit().await.map_err(|e| db.classify(e))?;
            release(db, subscription, &letter.aggregate_key).await
        }
        Err(error) => {
            drop(tx);
            let chain = format!("{error:#}");
            keep_parked(db, subscription, id, &chain, letter.attempts + 1).await?;
            Err(DeadLetterError::StillFailing(chain))
        }
    }
}

/// Gives up on a parked event for good and releases the events blocked behind it, in order.
pub async fn discard(
    db: &ModuleDb,
    subscription: &Subscription,
    id: Uuid,
) -> Result<(), DeadLetterError> {
    let (mut tx, letter) = begin_on_parked(db, subscription, id).await?;
    set_status(&mut tx, id, "discarded", None, letter.attempts)
        .await
        .map_err(|e| db.classify(e))?;
    tx.commit().await.map_err(|e| db.classify(e))?;
    release(db, subscription, &letter.aggregate_key).await
}

/// Applies the blocked events of one aggregate in seq order, one transaction each; the first
/// that fails becomes the aggregate's parked event and the rest stay blocked behind it.
async fn release(
    db: &ModuleDb,
    subscription: &Subscription,
    key: &str,
) -> Result<(), DeadLetterError> {
    loop {
        let mut tx = db.begin().await?;
        lock_checkpoint(&mut tx, &subscription.name)
            .await
            .map_err(|e| db.classify(e))?;
        let next: Option<Row> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(select_dead_letters!(
                "WHERE subscription = $1 AND aggregate_key = $2 AND status = 'blocked' \
                     ORDER BY seq LIMIT 1"
            ))
            .bind(&subscription.name)
            .bind(key)
            .fetch_optional(conn)
            .await
        })
        .map_err(|e| db.classify(e))?;
        let Some(letter) = next.map(from_row) else {
            return Ok(());
        };
        match apply(&mut tx, subscription, &letter.event).await {
            Ok(()) => {
                set_status(&mut tx, letter.id, "retried", None, 1)
                    .await
                    .map_err(|e| db.classify(e))?;
                tx.commit().await.map_err(|e| db.classify(e))?;
            }
            Err(error) => {
                drop(tx);
                keep_parked(db, subscription, letter.id, &format!("{error:#}"), 1).await?;
                return Ok(());
            }
        }
    }
}
