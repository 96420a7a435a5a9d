//! Durable subscriptions: a consumer module applying a source module's events, exactly once in
//! effect.
//!
//! A batch is one transaction in the *consumer's* database holding, together, the handler's
//! effects, the inbox rows of the applied events and the advanced checkpoint. A crash anywhere
//! leaves either all of them or none; redelivery after a crash or a rewind finds the event in
//! the inbox and skips it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::Instrument as _;

use uuid::Uuid;

use super::dead_letters;
use super::event::{Envelope, EventContext};
use super::log::EventLog;
use crate::clock;
use crate::storage::{ModuleDb, StorageError, Tx, TxConn, bulk};
use crate::with_tx;

/// Applies events of one source inside the consumer's transaction.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `event` through `tx`. Events the handler does not know must be ignored
    /// (`Ok(())`): sources add event types without asking their consumers.
    ///
    /// # Errors
    /// Any error rolls back the whole batch, effects included; the batch is retried.
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()>;

    /// Applies the fresh events of a batch (recorded in the inbox just now, never applied
    /// before), in seq order, through `tx`: the set-based way, with a number of statements that
    /// does not grow with the batch. The kernel calls it for two or more events; one event
    /// alone goes through [`Self::handle`].
    ///
    /// The default applies them one by one through [`Self::handle`] ([`Batch::apply_each`]). An
    /// override must have exactly the effects of applying the events one by one, in order;
    /// since there is no task-local context for a batch, each event it publishes carries its
    /// cause's context explicitly (`EventContext::caused_by(event)`, see `outbox::append_many`).
    ///
    /// # Errors
    /// Any error rolls back the whole batch, effects included. [`BatchError::at`] names the
    /// failing event, which is retried and parked as [`Self::handle`]'s would be; an error that
    /// names none (`?` on any error) makes the next attempt apply the batch's events one at a
    /// time through [`Self::handle`], so that the failing one is found and parked alone.
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        batch.apply_each(self, tx).await
    }

    /// The event types (`module.EventName`) this handler applies, when it can say: other events
    /// are then skipped without a call and counted in `bounded_events_ignored_total`.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Whether [`Self::handle_batch`] is set-based: cheaper than [`Self::handle`] even for one
    /// event. The kernel then applies a lone fresh event through it as well, inside that
    /// event's `event` span and context (as [`Self::handle`] would run); otherwise a lone
    /// event goes to [`Self::handle`].
    fn set_based(&self) -> bool {
        false
    }

    /// Whether this handler's batches run one at a time with those of the consumer's other
    /// serialized handlers: the kernel then takes the consumer's batch lock before the
    /// handler's first effect, held to the commit (Postgres: a transaction-scoped advisory lock
    /// keyed by the module's schema, see [`BATCH_LOCK`]; SQLite's single writer serializes every
    /// transaction anyway). For handlers of different sources whose batches lock the same rows in
    /// different orders, which would otherwise deadlock on Postgres and park events.
    ///
    /// Publishing needs no such declaration: the outbox is written at commit, its lock every
    /// transaction's last (see `outbox::append_many`).
    fn serialized(&self) -> bool {
        false
    }
}

/// A named, durable subscription of `consumer` to the events of `source`.
#[derive(Clone)]
pub struct Subscription {
    /// `<consumer><-<source>`, e.g. `orders<-customers`.
    pub name: String,
    pub consumer: &'static str,
    pub source: &'static str,
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The fresh events of one batch of a subscription, for [`Handler::handle_batch`].
#[derive(Debug)]
pub struct Batch<'a> {
    subscription: &'a str,
    events: &'a [&'a Envelope],
    /// The span the batch was started in: the parent of each event's span when the events go
    /// one by one, so that per-event log lines read as they do outside a batch.
    parent: tracing::Span,
}

impl<'a> Batch<'a> {
    /// The subscription's name.
    pub fn subscription(&self) -> &'a str {
        self.subscription
    }

    /// The events, in seq order; none was applied before.
    pub fn events(&self) -> &'a [&'a Envelope] {
        self.events
    }

    /// Applies the events one by one through `handler`'s [`Handler::handle`], each the way a
    /// single event is (see [`run_handler`]: its `event` span, its context as
    /// `EventContext::current`, the debug line `Event applied.`); stops at the first failure,
    /// naming it.
    ///
    /// # Errors
    /// The failing event's error, [`BatchError::at`] its index.
    pub async fn apply_each<H: Handler + ?Sized>(
        &self,
        handler: &H,
        tx: &mut Tx,
    ) -> Result<(), BatchError> {
        for (i, event) in self.events.iter().enumerate() {
            run_one(tx, self.subscription, handler, event, &self.parent)
                .await
                .map_err(|error| BatchError::at(i, error))?;
        }
        Ok(())
    }
}

/// Why [`Handler::handle_batch`] failed: the error and, when the handler knows, the index in
/// [`Batch::events`] of the event that caused it.
#[derive(Debug)]
pub struct BatchError {
    pub event: Option<usize>,
    pub error: anyhow::Error,
}

impl BatchError {
    /// The event at `index` of the batch failed.
    pub fn at(index: usize, error: impl Into<anyhow::Error>) -> Self {
        Self {
            event: Some(index),
            error: error.into(),
        }
    }
}

/// An error of the batch as a whole: which event caused it is not known.
impl<E: Into<anyhow::Error>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self {
            event: None,
            error: error.into(),
        }
    }
}

/// A set-based batch failed without naming an event (see [`Handler::handle_batch`]): the
/// worker's next attempt applies the events up to `through` one at a time.
#[derive(Debug, thiserror::Error)]
#[error("set-based batch of {count} events (#{first}..=#{through}) failed")]
pub(crate) struct Unattributed {
    first: i64,
    through: i64,
    count: usize,
}

impl Subscription {
    pub fn new(consumer: &'static str, source: &'static str, handler: Arc<dyn Handler>) -> Self {
        Self::named(format!("{consumer}<-{source}"), consumer, source, handler)
    }

    /// A subscription with a name of its own, when one consumer follows one source twice.
    pub fn named(
        name: impl Into<String>,
        consumer: &'static str,
        source: &'static str,
        handler: Arc<dyn Handler>,
    ) -> Self {
        Self {
            name: name.into(),
            consumer,
            source,
            handler,
        }
    }
}

/// Tuning of subscription workers.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    /// Events applied per transaction.
    pub batch_size: i64,
    /// Safety net: how long a worker waits for a wake-up before looking anyway.
    pub poll_interval: Duration,
    /// First retry delay after a failed batch; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts of one event before it is parked in dead letters.
    pub max_attempts: u32,
    /// How long processed events stay in the outbox (for rewinds and rebuilds); `None` keeps
    /// them forever. Events some subscription has not processed are never pruned.
    pub retention: Option<Duration>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(5),
            max_attempts: 5,
            retention: None,
        }
    }
}

/// What one batch attempt did.
pub(crate) enum Step {
    /// Applied events up to this seq; `full` when the batch was full, so more may be waiting.
    Applied { seq: i64, full: bool },
    /// Nothing new after the checkpoint.
    Idle,
    /// The checkpoint was not where the worker's [`Cursor`] said (another process applied a
    /// batch, or a rewind moved it): nothing was applied; the next attempt reads it.
    Stale,
}

/// What a worker knows of its subscription's checkpoint since its own last transaction: the
/// seq it left there, with no open dead letters. With it, an attempt does not read the
/// checkpoint: it reads the source after that seq and moves the checkpoint from it in the
/// transaction's first write, which also locks the row as reading it would have
/// (`UPDATE … WHERE seq = <known>`); if the row says otherwise the attempt stops there
/// ([`Step::Stale`]) and the next one reads the row as before. Whatever moves the checkpoint
/// behind the worker's back — a rewind, a batch or a parked event of another process — is thus
/// seen, at the latest, when the worker next applies something. Parked or blocked events are
/// never assumed away: a cursor exists only while there are none (parking moves the
/// checkpoint, so another process's parking fails the compare too). The worker forgets its
/// cursor after a failure, a nudge and an idle safety poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    seq: i64,
}

/// Creates the checkpoint row of `subscription` if it does not exist.
pub(crate) async fn ensure_checkpoint(
    db: &ModuleDb,
    subscription: &Subscription,
) -> Result<(), StorageError> {
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query(
            "INSERT INTO subscription_checkpoints (name, source, seq, updated_at) \
             VALUES ($1, $2, 0, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&subscription.name)
        .bind(subscription.source)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
    .map_err(|e| db.classify(e))?;
    tx.commit().await.map_err(|e| db.classify(e))
}

/// Reads the checkpoint inside `tx`, locking it on Postgres so that two processes never run
/// one subscription's batch at the same time (SQLite has a single writer anyway). A consumer
/// that must act between two batches of its own subscription (a projection swapping in a
/// rebuilt generation) locks it the same way. Fails with `RowNotFound` before the
/// subscription's first start.
pub async fn lock_checkpoint(tx: &mut Tx, name: &str) -> Result<i64, sqlx::Error> {
    let sql = match tx.conn {
        TxConn::Sqlite(_) => "SELECT seq FROM subscription_checkpoints WHERE name = $1",
        TxConn::Postgres(_) => {
            "SELECT seq FROM subscription_checkpoints WHERE name = $1 FOR UPDATE"
        }
    };
    let (seq,): (i64,) = with_tx!(tx, |conn| {
        sqlx::query_as(sql).bind(name).fetch_one(conn).await
    })?;
    Ok(seq)
}

/// Locks and reads the checkpoint, and tells whether the subscription has parked or blocked
/// events. On SQLite (a single writer: nothing changes between the two) that is one statement;
/// on Postgres the dead letters are read after the lock is held, so that a batch another
/// process parked while this one waited for the lock is seen.
async fn checkpoint_and_dead_letters(tx: &mut Tx, name: &str) -> Result<(i64, bool), sqlx::Error> {
    match &mut tx.conn {
        TxConn::Sqlite(conn) => {
            sqlx::query_as(
                "SELECT seq, EXISTS (SELECT 1 FROM dead_letters \
                   WHERE subscription = $1 AND status IN ('parked', 'blocked')) \
                 FROM subscription_checkpoints WHERE name = $1",
            )
            .bind(name)
            .fetch_one(&mut **conn)
            .await
        }
        TxConn::Postgres(_) => {
            let seq = lock_checkpoint(tx, name).await?;
            Ok((seq, dead_letters::open_count(tx, name).await? > 0))
        }
    }
}

/// Reads the checkpoint of `name` (0 when it has none yet).
pub async fn checkpoint(db: &ModuleDb, name: &str) -> Result<i64, StorageError> {
    let row: Option<(i64,)> = crate::with_reader!(db.reader()?, |pool| {
        sqlx::query_as("SELECT seq FROM subscription_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
    })
    .map_err(|e| db.classify(e))?;
    Ok(row.map_or(0, |(seq,)| seq))
}

/// What [`rewind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewound {
    /// The checkpoint was `from` and is now the requested seq (unchanged when they are equal).
    Moved { from: i64 },
    /// The requested seq is ahead of the checkpoint: nothing changed. A rewind never skips
    /// events, so a checkpoint can never pass its source's head.
    Ahead { checkpoint: i64 },
}

/// Moves the checkpoint of `name` back to `seq`; events after it are delivered again and the
/// inbox keeps their effects from repeating. A `seq` ahead of the checkpoint changes nothing.
///
/// The check and the write are one transaction holding the checkpoint row lock on Postgres
/// (SQLite's single writer serializes them anyway), so a batch committing concurrently cannot
/// move the checkpoint between them.
pub async fn rewind(db: &ModuleDb, name: &str, seq: i64) -> Result<Rewound, StorageError> {
    let mut tx = db.begin().await?;
    let checkpoint = match lock_checkpoint(&mut tx, name).await {
        Ok(checkpoint) => checkpoint,
        // Not started yet: it would start from 0.
        Err(sqlx::Error::RowNotFound) => 0,
        Err(error) => return Err(db.classify(error)),
    };
    if seq > checkpoint {
        return Ok(Rewound::Ahead { checkpoint });
    }
    if seq < checkpoint {
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE subscription_checkpoints SET seq = $2, updated_at = $3 WHERE name = $1",
            )
            .bind(name)
            .bind(seq)
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(|e| db.classify(e))?;
        tx.commit().await.map_err(|e| db.classify(e))?;
    }
    Ok(Rewound::Moved { from: checkpoint })
}

/// An event whose handler keeps failing, tracked by the worker between attempts.
#[derive(Debug)]
pub(crate) struct Failure {
    event_id: Uuid,
    seq: i64,
    attempts: u32,
    last_error: String,
}

/// A batch that failed, and on which event.
pub(crate) enum StepError {
    Event {
        event: Box<Envelope>,
        error: anyhow::Error,
    },
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::Other(error.into())
    }
}

/// Applies one event: records it in the inbox and, if it was not applied before, runs the
/// handler — both inside `tx`.
pub(crate) async fn apply(
    tx: &mut Tx,
    subscription: &Subscription,
    event: &Envelope,
) -> anyhow::Result<()> {
    if wanted(subscription, event) && record_in_inbox(tx, &subscription.name, event).await? {
        handle(tx, subscription, event).await?;
    }
    Ok(())
}

/// Applies a batch with no parked events in the way: the inbox rows of its `wanted` events go
/// in with one statement per chunk (the first chunk's already in, when `recorded` holds the
/// ids it found new), then the handler applies those not applied before, in seq order — two
/// or more with one [`Handler::handle_batch`] call per chunk, in a `batch` span; one alone, or
/// every one when `one_by_one` (the batch is being isolated), through [`Handler::handle`].
async fn apply_batch(
    tx: &mut Tx,
    subscription: &Subscription,
    wanted: &[&Envelope],
    mut recorded: Option<HashSet<Uuid>>,
    one_by_one: bool,
) -> Result<(), StepError> {
    let handler = subscription.handler.as_ref();
    let mut prepared = false;
    for chunk in wanted.chunks(INBOX_ROWS_PER_STATEMENT) {
        let fresh = match recorded.take() {
            Some(fresh) => fresh,
            None => record_all_in_inbox(tx, &subscription.name, chunk).await?,
        };
        let fresh: Vec<&Envelope> = chunk
            .iter()
            .copied()
            .filter(|e| fresh.contains(&e.id))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        if !prepared {
            prepare(tx, handler).await?;
            prepared = true;
        }
        let lone = fresh.len() == 1;
        if one_by_one || (lone && !handler.set_based()) {
            let parent = tracing::Span::current();
            for event in fresh {
                if let Err(error) = run_one(tx, &subscription.name, handler, event, &parent).await {
                    return Err(event_error(subscription, event, error));
                }
            }
            continue;
        }
        let (first, through) = (fresh[0].seq, fresh[fresh.len() - 1].seq);
        let parent = tracing::Span::current();
        let (span, context) = if lone {
            let span = event_span(&subscription.name, fresh[0], &parent);
            (span, EventContext::caused_by(fresh[0]))
        } else {
            let span = tracing::info_span!(
                "batch",
                subscription = %subscription.name,
                first.seq = first,
                last.seq = through,
                count = fresh.len(),
            );
            (span, EventContext::default())
        };
        let batch = Batch {
            subscription: &subscription.name,
            events: &fresh,
            parent,
        };
        let handled = context
            .scope(handler.handle_batch(tx, &batch))
            .instrument(span.clone())
            .await;
        if lone && handled.is_ok() {
            span.in_scope(|| tracing::debug!("Event applied."));
        }
        match handled {
            Ok(()) => {}
            Err(BatchError {
                event: Some(i),
                error,
            }) if i < fresh.len() => return Err(event_error(subscription, fresh[i], error)),
            Err(BatchError { error, .. }) => {
                let count = fresh.len();
                let context = Unattributed {
                    first,
                    through,
                    count,
                };
                return Err(StepError::Other(error.context(context)));
            }
        }
    }
    Ok(())
}

/// A failure of `event` in a batch of `subscription`, with the context naming both.
fn event_error(subscription: &Subscription, event: &Envelope, error: anyhow::Error) -> StepError {
    StepError::Event {
        event: Box::new(event.clone()),
        error: in_context(subscription, event, error),
    }
}

fn in_context(
    subscription: &Subscription,
    event: &Envelope,
    error: anyhow::Error,
) -> anyhow::Error {
    error.context(format!(
        "{} handling {} #{} ({})",
        subscription.name,
        event.source,
        event.seq,
        event.name()
    ))
}

/// Whether the subscription's handler takes `event`; counts the ones it skips.
fn wanted(subscription: &Subscription, event: &Envelope) -> bool {
    if let Some(types) = subscription.handler.event_types()
        && !types.contains(&event.event_type.as_str())
    {
        metrics::counter!(
            "bounded_events_ignored_total",
            "subscription" => subscription.name.clone(),
            "type" => event.event_type.clone(),
        )
        .increment(1);
        return false;
    }
    true
}

/// Runs `handler` on `event` inside `tx` the way a batch of subscription `name` does: the
/// batch lock first when the handler is [`Handler::serialized`], and the events it publishes
/// caused by `event`. For whoever applies a handler
/// outside a subscription's batches, as tests do.
///
/// # Errors
/// The handler's error, or the storage error of taking the lock.
pub async fn run_handler(
    tx: &mut Tx,
    name: &str,
    handler: &dyn Handler,
    event: &Envelope,
) -> anyhow::Result<()> {
    prepare(tx, handler).await?;
    run_one(tx, name, handler, event, &tracing::Span::current()).await
}

/// Runs `handler`'s [`Handler::handle_batch`] on `events` (fresh, in seq order) inside `tx`
/// the way a batch of subscription `name` does: the batch lock first when the handler is
/// [`Handler::serialized`], then one call for all
/// of them. For whoever applies a handler's set-based path outside a subscription's batches,
/// as tests do.
///
/// # Errors
/// The handler's error, or the storage error of taking the lock (naming no event).
pub async fn run_handler_batch(
    tx: &mut Tx,
    name: &str,
    handler: &dyn Handler,
    events: &[&Envelope],
) -> Result<(), BatchError> {
    prepare(tx, handler).await?;
    let batch = Batch {
        subscription: name,
        events,
        parent: tracing::Span::current(),
    };
    handler.handle_batch(tx, &batch).await
}

/// What a batch does before its handler's first effect: the batch lock when the handler is
/// [`Handler::serialized`].
async fn prepare<H: Handler + ?Sized>(tx: &mut Tx, handler: &H) -> Result<(), sqlx::Error> {
    if handler.serialized() && !tx.serialized {
        if let TxConn::Postgres(conn) = &mut tx.conn {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
                .bind(BATCH_LOCK)
                .execute(&mut **conn)
                .await?;
        }
        tx.serialized = true;
    }
    Ok(())
}

/// Runs `handler` on one event in its `event` span (a child of `parent`), with the events it
/// publishes caused by this one.
async fn run_one<H: Handler + ?Sized>(
    tx: &mut Tx,
    name: &str,
    handler: &H,
    event: &Envelope,
    parent: &tracing::Span,
) -> anyhow::Result<()> {
    // Events the handler publishes are caused by this one and share its correlation.
    let context = EventContext::caused_by(event);
    let span = event_span(name, event, parent);
    let handled = context
        .scope(handler.handle(tx, event))
        .instrument(span.clone())
        .await;
    if handled.is_ok() {
        span.in_scope(|| tracing::debug!("Event applied."));
    }
    handled
}

/// Runs the handler on an event just recorded in the inbox (see [`run_handler`]). The batch
/// lock, when the handler is serialized, comes after the checkpoint's lock (taken first by every
/// transaction of a subscription: batches and dead-letter retries alike) and before the
/// handler's first effect; the inbox rows written before it lock nothing another
/// subscription's transaction touches.
async fn handle(tx: &mut Tx, subscription: &Subscription, event: &Envelope) -> anyhow::Result<()> {
    let handled = run_handler(tx, &subscription.name, subscription.handler.as_ref(), event).await;
    handled.map_err(|e| in_context(subscription, event, e))
}

/// The span a handler runs in: the subscription, the event, and what a log line is followed by
/// across modules (BRIEF §9): the correlation id (the id of the HTTP request that started the
/// flow) and, when the event concerns an order (its payload names `order_id`), the order.
fn event_span(subscription: &str, event: &Envelope, parent: &tracing::Span) -> tracing::Span {
    let span = tracing::info_span!(
        parent: parent,
        "event",
        subscription = %subscription,
        event.id = %event.id,
        event.seq = event.seq,
        "event.type" = %event.event_type,
        correlation_id = tracing::field::Empty,
        order.id = tracing::field::Empty,
    );
    if let Some(correlation) = event.correlation_id {
        span.record("correlation_id", tracing::field::display(correlation));
    }
    if let Some(order) = event.payload.get("order_id").and_then(|id| id.as_str()) {
        span.record("order.id", tracing::field::display(order));
    }
    span
}

/// Applies the next batch after the consumer's checkpoint, in one consumer transaction.
///
/// With a `failure` pending, the batch stops short of the failing event (so the events before
/// it commit), then retries that event alone; once it has failed `max_attempts` times it is
/// parked instead, and later events of its aggregate are recorded as blocked behind it. With
/// `isolate` (a set-based batch failed without naming its event), the handler applies the
/// events one at a time, so that a failure names its event.
async fn attempt(
    subscription: &Subscription,
    consumer: &ModuleDb,
    source: &dyn EventLog,
    config: &DeliveryConfig,
    failure: Option<&Failure>,
    isolate: bool,
    cursor: &mut Option<Cursor>,
) -> Result<Step, StepError> {
    // Any way out but a clean commit leaves the worker without a cursor.
    let known = cursor.take();
    if let Some(known) = known.filter(|_| failure.is_none() && !isolate) {
        // The transaction first, then the read: on SQLite beginning waits for the module's
        // writer, and whatever the source committed meanwhile joins this batch (reading
        // first made batches smaller and commits more frequent).
        let mut tx = consumer.begin_keyed().await?;
        let events = source.read_after(known.seq, config.batch_size).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            *cursor = Some(known);
            return Ok(Step::Idle);
        };
        let wanted: Vec<&Envelope> = events.iter().filter(|e| wanted(subscription, e)).collect();
        let first = &wanted[..wanted.len().min(INBOX_ROWS_PER_STATEMENT)];
        let serialized = subscription.handler.serialized();
        let Some(fresh) = move_checkpoint(
            &mut tx,
            &subscription.name,
            (known.seq, last),
            serialized,
            first,
        )
        .await?
        else {
            return Ok(Step::Stale);
        };
        apply_batch(&mut tx, subscription, &wanted, Some(fresh), false).await?;
        tx.commit().await?;
        *cursor = Some(Cursor { seq: last });
        let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= config.batch_size;
        count_handled(subscription, events.len());
        return Ok(Step::Applied { seq: last, full });
    }
    let mut tx = consumer.begin_keyed().await?;
    let (from, dead_letters_open) =
        checkpoint_and_dead_letters(&mut tx, &subscription.name).await?;
    let mut events = source.read_after(from, config.batch_size).await?;
    let read = events.len();
    // A failure at or below the checkpoint is behind us (a rewind or another process moved on).
    if let Some(failure) = failure.filter(|f| f.seq > from) {
        match events.first() {
            Some(first) if first.id == failure.event_id => {
                events.truncate(1);
                if failure.attempts >= config.max_attempts {
                    let event = &events[0];
                    dead_letters::insert(
                        &mut tx,
                        &subscription.name,
                        event,
                        "parked",
                        Some(&failure.last_error),
                        i32::try_from(failure.attempts).unwrap_or(i32::MAX),
                    )
                    .await?;
                    let step = commit_checkpoint(tx, &subscription.name, event.seq, true).await?;
                    tracing::error!(subscription = %subscription.name, event.id = %event.id, event.seq = event.seq, attempts = failure.attempts, error = %failure.last_error, "Event parked in dead letters.");
                    metrics::counter!("bounded_events_parked_total", "subscription" => subscription.name.clone())
                        .increment(1);
                    return Ok(step);
                }
            }
            _ => events.retain(|e| e.seq < failure.seq),
        }
    }
    let Some(last) = events.last().map(|e| e.seq) else {
        if !dead_letters_open {
            *cursor = Some(Cursor { seq: from });
        }
        return Ok(Step::Idle);
    };
    apply_events(&mut tx, subscription, &events, dead_letters_open, isolate).await?;
    // More may be waiting when the read filled the batch, or when this batch stopped short
    // of a failing event.
    let full = i64::try_from(read).unwrap_or(i64::MAX) >= config.batch_size || events.len() < read;
    let step = commit_checkpoint(tx, &subscription.name, last, full).await?;
    if !dead_letters_open {
        *cursor = Some(Cursor { seq: last });
    }
    count_handled(subscription, events.len());
    Ok(step)
}

/// Adds `count` to the events `subscription` handled.
fn count_handled(subscription: &Subscription, count: usize) {
    metrics::counter!("bounded_events_handled_total", "subscription" => subscription.name.clone())
        .increment(count as u64);
}

/// Applies `events` inside `tx`: when `dead_letters_open`, one at a time, holding back (as
/// blocked) those whose aggregate has a parked or blocked event; otherwise as a batch
/// ([`apply_batch`], one event at a time when `isolate`).
async fn apply_events(
    tx: &mut Tx,
    subscription: &Subscription,
    events: &[Envelope],
    dead_letters_open: bool,
    isolate: bool,
) -> Result<(), StepError> {
    if dead_letters_open {
        // Rare: look up every event's aggregate, and hold back those behind a parked event.
        for event in events {
            let key = dead_letters::aggregate_key(event);
            if dead_letters::is_blocked(tx, &subscription.name, &key).await? {
                let reason = "waiting behind a parked event of the same aggregate";
                dead_letters::insert(tx, &subscription.name, event, "blocked", Some(reason), 0)
                    .await?;
                continue;
            }
            if let Err(error) = apply(tx, subscription, event).await {
                return Err(StepError::Event {
                    event: Box::new(event.clone()),
                    error,
                });
            }
        }
        Ok(())
    } else {
        let wanted: Vec<&Envelope> = events.iter().filter(|e| wanted(subscription, e)).collect();
        apply_batch(tx, subscription, &wanted, None, isolate).await
    }
}

/// Moves the checkpoint from `from` to `to` if it is at `from`, and records `events` (the
/// batch's first chunk of wanted events) in the inbox, in one statement (one command to
/// SQLite's connection thread, one round trip to Postgres); with `serialized`, the same
/// statement takes the batch lock on Postgres, what [`prepare`] would take next, so the lock
/// is still the batch's first. Returns the ids of the events not applied before, or `None`
/// when the checkpoint is elsewhere: the caller then drops the transaction, inbox rows and
/// all.
async fn move_checkpoint(
    tx: &mut Tx,
    name: &str,
    (from, to): (i64, i64),
    serialized: bool,
    events: &[&Envelope],
) -> Result<Option<HashSet<Uuid>>, sqlx::Error> {
    let now = clock::now();
    // Each row says what it is: `moved` (the checkpoint's row) or `fresh` (a new inbox row).
    let rows: Vec<(String, Option<Uuid>)> =
        match &mut tx.conn {
            TxConn::Postgres(conn) => sqlx::query_as(
                "WITH batch_lock AS (SELECT pg_advisory_xact_lock($8, hashtext(current_schema())) \
                   WHERE $5), \
                 moved AS (UPDATE subscription_checkpoints SET seq = $3, updated_at = $4 \
                   WHERE name = $1 AND seq = $2 AND (NOT $5 OR EXISTS (SELECT FROM batch_lock)) \
                   RETURNING seq), \
                 fresh AS (INSERT INTO inbox (subscription, event_id, seq, processed_at) \
                   SELECT $1, e.id, e.seq, $4 FROM UNNEST($6::uuid[], $7::int8[]) AS e(id, seq) \
                   WHERE EXISTS (SELECT FROM moved) \
                   ON CONFLICT (subscription, event_id) DO NOTHING RETURNING event_id) \
                 SELECT 'moved', NULL::uuid FROM moved \
                 UNION ALL SELECT 'fresh', event_id FROM fresh",
            )
            .bind(name)
            .bind(from)
            .bind(to)
            .bind(now)
            .bind(serialized)
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .bind(BATCH_LOCK)
            .fetch_all(&mut **conn)
            .await?,
            TxConn::Sqlite(conn) => {
                // Two statements in one text: sqlx runs them in order in one command, `$N` naming
                // the same argument in both. The single writer makes a lock unnecessary.
                let mut sql = String::from(
                    "UPDATE subscription_checkpoints SET seq = $3, updated_at = $4 \
                 WHERE name = $1 AND seq = $2 RETURNING 'moved', NULL",
                );
                if !events.is_empty() {
                    sql.push_str("; ");
                    sql.push_str(&sqlite_inbox_insert(
                        events.len(),
                        5,
                        4,
                        "'fresh', event_id",
                    ));
                }
                // Only placeholders are generated; every value is bound.
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .persistent(bulk::cached(events.len()))
                    .bind(name)
                    .bind(from)
                    .bind(to)
                    .bind(now);
                for event in events {
                    query = query.bind(event.id).bind(event.seq);
                }
                query.fetch_all(&mut **conn).await?
            }
        };
    if !rows.iter().any(|(kind, _)| kind == "moved") {
        return Ok(None);
    }
    if serialized {
        tx.serialized = true;
    }
    Ok(Some(rows.into_iter().filter_map(|(_, id)| id).collect()))
}

async fn commit_checkpoint(
    mut tx: Tx,
    name: &str,
    seq: i64,
    full: bool,
) -> Result<Step, StepError> {
    with_tx!(&mut tx, |conn| {
        sqlx::query("UPDATE subscription_checkpoints SET seq = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(seq)
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
    })?;
    tx.commit().await?;
    Ok(Step::Applied { seq, full })
}

/// Inserts the event into the inbox; `false` when it was applied before.
async fn record_in_inbox(
    tx: &mut Tx,
    subscription: &str,
    event: &Envelope,
) -> Result<bool, sqlx::Error> {
    let result = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO inbox (subscription, event_id, seq, processed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subscription, event_id) DO NOTHING",
        )
        .bind(subscription)
        .bind(event.id)
        .bind(event.seq)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(result == 1)
}

/// Inbox rows per multi-row insert: 4 parameters each stays far below both backends' limits.
const INBOX_ROWS_PER_STATEMENT: usize = 500;

/// The first key of the batch lock of [`Handler::serialized`] handlers (Postgres'
/// `pg_advisory_xact_lock(int4, int4)`, whose key space is apart from the one-`bigint` locks
/// sqlx's migrations take); the second is the hash of the module's schema, so each module
/// database has its own.
pub const BATCH_LOCK: i32 = 0x626e_6462;

/// Inserts the events into the inbox with one statement; returns the ids of those that were
/// not applied before.
async fn record_all_in_inbox(
    tx: &mut Tx,
    subscription: &str,
    events: &[&Envelope],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let now = clock::now();
    let fresh: Vec<Uuid> = match &mut tx.conn {
        // One SQL text for any number of events.
        TxConn::Postgres(conn) => {
            sqlx::query_scalar(
                "INSERT INTO inbox (subscription, event_id, seq, processed_at) \
                 SELECT $1, e.id, e.seq, $2 FROM UNNEST($3::uuid[], $4::int8[]) AS e(id, seq) \
                 ON CONFLICT (subscription, event_id) DO NOTHING RETURNING event_id",
            )
            .bind(subscription)
            .bind(now)
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.seq).collect::<Vec<_>>())
            .fetch_all(&mut **conn)
            .await?
        }
        TxConn::Sqlite(conn) => {
            let sql = sqlite_inbox_insert(events.len(), 3, 2, "event_id");
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .persistent(bulk::cached(events.len()))
                .bind(subscription)
                .bind(now);
            for event in events {
                query = query.bind(event.id).bind(event.seq);
            }
            query.fetch_all(&mut **conn).await?
        }
    };
    Ok(fresh.into_iter().collect())
}

/// SQLite's inbox insert of `count` events, the subscription bound at `$1` and the time at
/// `$time`, each event's id and seq from `$first` on:
/// `INSERT INTO inbox … VALUES ($1, $first, $first+1, $time), … ON CONFLICT … DO NOTHING
/// RETURNING <returning>`.
fn sqlite_inbox_insert(count: usize, first: usize, time: usize, returning: &str) -> String {
    let mut sql =
        String::from("INSERT INTO inbox (subscription, event_id, seq, processed_at) VALUES ");
    for i in 0..count {
        let id = first + 2 * i;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("($1, ${id}, ${}, ${time})", id + 1));
    }
    sql.push_str(" ON CONFLICT (subscription, event_id) DO NOTHING RETURNING ");
    sql.push_str(returning);
    sql
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod cursor_tests;
#[cfg(test)]
mod lock_tests;
#[cfg(test)]
pub(crate) mod noted;

/// Runs one subscription until `stop` turns true: batches while there is work, then waits for
/// the source's next commit (or the safety poll), retrying failures with capped backoff.
pub(crate) async fn run(
    subscription: Subscription,
    consumer: ModuleDb,
    source: Arc<dyn EventLog>,
    config: DeliveryConfig,
    mut stop: watch::Receiver<bool>,
    mut nudge: watch::Receiver<()>,
    applied: watch::Sender<i64>,
) {
    let name = subscription.name.clone();
    let mut commits = source.wakeups();
    let mut backoff = config.min_backoff;
    let mut ready = false;
    let mut failure: Option<Failure> = None;
    // After a set-based batch failed without naming its event: its last seq, up to which
    // events are applied one at a time.
    let mut isolate_through: Option<i64> = None;
    let mut cursor: Option<Cursor> = None;
    while !stopped(&stop) {
        if !ready {
            match ensure_checkpoint(&consumer, &subscription).await {
                Ok(()) => ready = true,
                Err(error) => {
                    tracing::warn!(subscription = %name, error = %error, "Subscription cannot reach its database.");
                    wait(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                    continue;
                }
            }
        }
        // Mark the wake-ups seen before looking, so a commit during the batch is not missed.
        commits.mark_unchanged();
        nudge.mark_unchanged();
        match attempt(
            &subscription,
            &consumer,
            source.as_ref(),
            &config,
            failure.as_ref(),
            isolate_through.is_some(),
            &mut cursor,
        )
        .await
        {
            Ok(Step::Applied { seq, full }) => {
                if isolate_through.is_some_and(|through| seq >= through) {
                    isolate_through = None;
                }
                if failure.as_ref().is_some_and(|f| seq >= f.seq) {
                    failure = None;
                    backoff = config.min_backoff;
                }
                applied.send_replace(seq);
                if !full {
                    // A short batch took everything there was: wait for the next commit
                    // instead of opening a transaction to find nothing. Wake-ups were marked
                    // seen before the batch, so a commit made meanwhile ends the wait at once.
                    if idle(&mut commits, &mut nudge, &mut stop, config.poll_interval).await {
                        cursor = None;
                    }
                }
            }
            Ok(Step::Idle) => {
                isolate_through = None;
                backoff = config.min_backoff;
                if idle(&mut commits, &mut nudge, &mut stop, config.poll_interval).await {
                    cursor = None;
                }
            }
            Ok(Step::Stale) => {
                metrics::counter!("bounded_checkpoint_stale_total", "subscription" => name.clone())
                    .increment(1);
            }
            Err(StepError::Event { event, error }) => {
                let last_error = format!("{error:#}");
                let attempts = match &failure {
                    Some(f) if f.event_id == event.id => f.attempts + 1,
                    _ => 1,
                };
                tracing::warn!(subscription = %name, event.id = %event.id, event.seq = event.seq, attempts, error = %last_error, retry_in_ms = backoff.as_millis() as u64, "Event handler failed; retrying.");
                metrics::counter!("bounded_events_failed_total", "subscription" => name.clone())
                    .increment(1);
                failure = Some(Failure {
                    event_id: event.id,
                    seq: event.seq,
                    attempts,
                    last_error,
                });
                wait(&mut stop, backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
            Err(StepError::Other(error)) if error.downcast_ref::<Unattributed>().is_some() => {
                // At once: the next attempt goes one event at a time, so it cannot end here
                // again; a failing event then backs off as any does.
                let through = error.downcast_ref::<Unattributed>().map(|u| u.through);
                tracing::warn!(subscription = %name, error = format!("{error:#}"), "Set-based batch failed; isolating events.");
                metrics::counter!("bounded_batches_isolated_total", "subscription" => name.clone())
                    .increment(1);
                isolate_through = through;
            }
            Err(StepError::Other(error)) => {
                tracing::warn!(subscription = %name, error = format!("{error:#}"), retry_in_ms = backoff.as_millis() as u64, "Subscription batch failed; retrying.");
                wait(&mut stop, backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// Waits for the source's next commit, a nudge, stop, or the safety poll; `true` unless a
/// commit ended the wait: after a nudge (a rewind) or a quiet poll interval the worker reads
/// its checkpoint again rather than trust its [`Cursor`].
async fn idle(
    commits: &mut watch::Receiver<u64>,
    nudge: &mut watch::Receiver<()>,
    stop: &mut watch::Receiver<bool>,
    poll: Duration,
) -> bool {
    tokio::select! {
        _ = commits.changed() => false,
        _ = nudge.changed() => true,
        () = tokio::time::sleep(poll) => true,
        _ = stop.changed() => true,
    }
}

/// Stop was requested, or whoever could request it is gone.
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

async fn wait(stop: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}
