//! The locks a batch holds, as the kernel takes them: a publishing batch holds no outbox lock
//! until it commits (its events are written then, under the lock every transaction takes last),
//! and a [`Handler::serialized`] handler's batch holds the consumer's batch lock from before
//! the handler's first effect to its commit. Each is checked for a worker without a cursor and
//! one that knows the checkpoint (whose move takes the batch lock in the same statement).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::*;
use crate::messaging::{IntegrationEvent, OutboxLog, outbox};
use crate::storage::Reader;
use crate::storage::testing::ScratchDb;

/// The event the tests publish as the source.
#[derive(Debug, Serialize, Deserialize)]
struct Pinged {
    id: String,
}

/// The event the handlers publish.
#[derive(Debug, Serialize, Deserialize)]
struct Ponged {
    id: String,
}

crate::integration_events! {
    module "scratch";
    "ping" by id: Pinged, Ponged;
}

/// Where a [`Pausing`] handler stops until the test releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// Before its first effect.
    First,
    /// After its answer was appended.
    Appended,
}

/// Answers every `Pinged` with a `Ponged`; says when it reaches its pause, then waits for the
/// test's release.
#[derive(Debug)]
struct Pausing {
    pause: Pause,
    serialized: bool,
    reached: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Pausing {
    async fn wait(&self, at: Pause) -> anyhow::Result<()> {
        if at != self.pause {
            return Ok(());
        }
        let reached = self.reached.lock().unwrap().take();
        let release = self.release.lock().unwrap().take();
        if let (Some(reached), Some(release)) = (reached, release) {
            reached.send(()).unwrap();
            release.await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Handler for Pausing {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(pinged) = event.decode::<Pinged>() else {
            return Ok(());
        };
        self.wait(Pause::First).await?;
        outbox::append(tx, &Ponged { id: pinged?.id }, &EventContext::current())?;
        self.wait(Pause::Appended).await
    }

    /// Its own answers too (ignored by `handle`).
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(TYPES)
    }

    fn serialized(&self) -> bool {
        self.serialized
    }
}

/// Publishes a `Pinged` as the source; returns its id.
async fn ping(db: &ModuleDb) -> Uuid {
    let mut tx = db.begin().await.unwrap();
    let id = outbox::append(
        &mut tx,
        &Pinged { id: "one".into() },
        &EventContext::default(),
    )
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// The types of the events in the outbox, in seq order.
async fn published(db: &ModuleDb) -> Vec<String> {
    let events = outbox::read_after(db, 0, 100).await.unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

/// Takes the outbox lock from another connection without waiting (Postgres), releasing it at
/// once: `Err` when another transaction holds it.
async fn try_outbox_lock(db: &ModuleDb) -> Result<(), sqlx::Error> {
    let Reader::Postgres(pool) = db.reader().unwrap() else {
        panic!("only Postgres has row locks");
    };
    sqlx::query("SELECT seq FROM outbox_head WHERE id = 1 FOR UPDATE NOWAIT")
        .execute(pool)
        .await
        .map(drop)
}

/// Whether another connection could take the module's batch lock now (Postgres); if it could,
/// it is released at once.
async fn batch_lock_free(db: &ModuleDb) -> bool {
    let Reader::Postgres(pool) = db.reader().unwrap() else {
        panic!("only Postgres has advisory locks");
    };
    let (free,): (bool,) =
        sqlx::query_as("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))")
            .bind(BATCH_LOCK)
            .fetch_one(pool)
            .await
            .unwrap();
    free
}

/// Runs one batch of `handler`'s subscription of the scratch database to itself in a task, as
/// a worker with `cursor`; returns the task and the signal that the handler reached its pause.
async fn start_batch(
    db: &ModuleDb,
    handler: Pausing,
    cursor: Option<Cursor>,
) -> tokio::task::JoinHandle<Result<Step, String>> {
    let subscription = Subscription::new("scratch", "scratch", Arc::new(handler));
    ensure_checkpoint(db, &subscription).await.unwrap();
    let db = db.clone();
    tokio::spawn(async move {
        let log = OutboxLog::new(db.clone());
        let config = DeliveryConfig::default();
        let mut cursor = cursor;
        attempt(&subscription, &db, &log, &config, None, false, &mut cursor)
            .await
            .map_err(|e| match e {
                StepError::Event { error, .. } | StepError::Other(error) => format!("{error:#}"),
            })
    })
}

/// A handler that pauses at `pause`, with the channels to learn it got there and to release it.
fn pausing(
    pause: Pause,
    serialized: bool,
) -> (Pausing, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let (reached, has_reached) = oneshot::channel();
    let (release, released) = oneshot::channel();
    let handler = Pausing {
        pause,
        serialized,
        reached: Mutex::new(Some(reached)),
        release: Mutex::new(Some(released)),
    };
    (handler, has_reached, release)
}

crate::both_backends! {
    async fn a_publishing_batch_holds_no_outbox_lock_until_it_commits(scratch: ScratchDb) {
        holds_no_outbox_lock_until_it_commits(&scratch.db, None).await;
    }

    async fn nor_does_it_when_its_worker_knows_the_checkpoint(scratch: ScratchDb) {
        holds_no_outbox_lock_until_it_commits(&scratch.db, Some(Cursor { seq: 0 })).await;
    }

    async fn a_serialized_handler_holds_the_batch_lock_before_its_first_effect(scratch: ScratchDb) {
        holds_the_batch_lock_before_its_first_effect(&scratch.db, None).await;
    }

    async fn so_it_does_when_its_worker_knows_the_checkpoint(scratch: ScratchDb) {
        holds_the_batch_lock_before_its_first_effect(&scratch.db, Some(Cursor { seq: 0 })).await;
    }
}

/// A batch whose handler has appended its answer and not committed yet holds no outbox lock
/// (Postgres) and has written nothing to the outbox; its commit writes the answer, caused by
/// the event it answers, at the next seq.
async fn holds_no_outbox_lock_until_it_commits(db: &ModuleDb, cursor: Option<Cursor>) {
    let postgres = db.reader().unwrap().is_postgres();
    let ping = ping(db).await;
    let (handler, reached, release) = pausing(Pause::Appended, false);
    let batch = start_batch(db, handler, cursor).await;
    reached.await.unwrap();
    if postgres {
        try_outbox_lock(db)
            .await
            .expect("an uncommitted batch holds no outbox lock");
        assert!(batch_lock_free(db).await, "the handler is not serialized");
    }
    assert_eq!(published(db).await, [Pinged::TYPE]);
    release.send(()).unwrap();
    assert!(matches!(
        batch.await.unwrap(),
        Ok(Step::Applied { seq: 1, .. })
    ));
    let events = outbox::read_after(db, 0, 100).await.unwrap();
    let answers: Vec<_> = events
        .iter()
        .map(|e| (e.seq, e.event_type.as_str(), e.causation_id))
        .collect();
    assert_eq!(
        answers,
        [(1, Pinged::TYPE, None), (2, Ponged::TYPE, Some(ping))]
    );
}

/// A serialized handler's batch holds the batch lock (Postgres) from before the handler's
/// first effect to its commit; the outbox stays free.
async fn holds_the_batch_lock_before_its_first_effect(db: &ModuleDb, cursor: Option<Cursor>) {
    let postgres = db.reader().unwrap().is_postgres();
    ping(db).await;
    if postgres {
        assert!(
            batch_lock_free(db).await,
            "nobody holds the batch lock before the batch"
        );
    }
    let (handler, reached, release) = pausing(Pause::First, true);
    let batch = start_batch(db, handler, cursor).await;
    reached.await.unwrap();
    // The handler has begun and done nothing yet: its batch holds the lock already.
    if postgres {
        assert!(!batch_lock_free(db).await, "the batch holds the batch lock");
        try_outbox_lock(db).await.expect("the outbox is free");
    }
    release.send(()).unwrap();
    assert!(matches!(
        batch.await.unwrap(),
        Ok(Step::Applied { seq: 1, .. })
    ));
    if postgres {
        assert!(
            batch_lock_free(db).await,
            "the commit released the batch lock"
        );
    }
    assert_eq!(published(db).await, [Pinged::TYPE, Ponged::TYPE]);
}
