//! The lock-order rule as the kernel enforces it: a batch whose handler declares
//! [`Handler::locks_outbox`] holds the outbox lock before the handler's first effect; a handler
//! that publishes without declaring it fails its batch, which is retried and parked like any
//! other failure.

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
    /// Whether the handler answers it with a [`Ponged`].
    answer: bool,
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

/// Answers `Pinged { answer: true }` with a `Ponged`, without declaring that it publishes.
#[derive(Debug)]
struct Undeclared;

#[async_trait]
impl Handler for Undeclared {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        if let Some(pinged) = event.decode::<Pinged>() {
            let pinged = pinged?;
            if pinged.answer {
                outbox::append(tx, &Ponged { id: pinged.id }, &EventContext::current()).await?;
            }
        }
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[Pinged::TYPE])
    }
}

/// Answers every `Pinged` with a `Ponged`, declaring it; says when it has begun, then waits
/// for the test's release before its first effect.
#[derive(Debug)]
struct Declared {
    begun: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl Handler for Declared {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(pinged) = event.decode::<Pinged>() else {
            return Ok(());
        };
        let begun = self.begun.lock().unwrap().take();
        let release = self.release.lock().unwrap().take();
        if let (Some(begun), Some(release)) = (begun, release) {
            begun.send(()).unwrap();
            release.await?;
        }
        outbox::append(tx, &Ponged { id: pinged?.id }, &EventContext::current()).await?;
        Ok(())
    }

    /// Its own answers too (ignored by `handle`).
    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(TYPES)
    }

    fn locks_outbox(&self) -> bool {
        true
    }
}

/// Publishes `Pinged`s as the source (a command transaction: appends are its own business).
async fn ping(db: &ModuleDb, pings: &[(&str, bool)]) -> Vec<Uuid> {
    let mut tx = db.begin().await.unwrap();
    let mut ids = Vec::new();
    for &(id, answer) in pings {
        let pinged = Pinged {
            id: id.into(),
            answer,
        };
        let (event_id, _) = outbox::append(&mut tx, &pinged, &EventContext::default())
            .await
            .unwrap();
        ids.push(event_id);
    }
    tx.commit().await.unwrap();
    ids
}

/// The scratch database's subscription to itself, its checkpoint created.
async fn subscribe(db: &ModuleDb, handler: Arc<dyn Handler>) -> Subscription {
    let subscription = Subscription::new("scratch", "scratch", handler);
    ensure_checkpoint(db, &subscription).await.unwrap();
    subscription
}

/// Runs batches as the worker does (a failing event retried, then parked after
/// `max_attempts`) until nothing is left; returns each failure's error chain.
async fn deliver(
    subscription: &Subscription,
    db: &ModuleDb,
    config: &DeliveryConfig,
) -> Vec<String> {
    let log = OutboxLog::new(db.clone());
    let mut failure: Option<Failure> = None;
    let mut errors = Vec::new();
    loop {
        match step(subscription, db, &log, config, failure.as_ref()).await {
            Ok(Step::Applied { seq, .. }) => {
                if failure.as_ref().is_some_and(|f| seq >= f.seq) {
                    failure = None;
                }
            }
            Ok(Step::Idle) => return errors,
            // `step` keeps no cursor: the checkpoint is always read.
            Ok(Step::Stale) => {}
            Err(StepError::Event { event, error }) => {
                let last_error = format!("{error:#}");
                errors.push(last_error.clone());
                let attempts = match &failure {
                    Some(f) if f.event_id == event.id => f.attempts + 1,
                    _ => 1,
                };
                failure = Some(Failure {
                    event_id: event.id,
                    seq: event.seq,
                    attempts,
                    last_error,
                });
            }
            Err(StepError::Other(error)) => panic!("{error:#}"),
        }
    }
}

/// The types of the events in the outbox, in seq order.
async fn published(db: &ModuleDb) -> Vec<String> {
    let events = outbox::read_after(db, 0, 100).await.unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

/// Takes the outbox lock from another connection without waiting (Postgres).
async fn try_outbox_lock(db: &ModuleDb) -> Result<(), sqlx::Error> {
    let Reader::Postgres(pool) = db.reader().unwrap() else {
        panic!("only Postgres has row locks");
    };
    sqlx::query("SELECT seq FROM outbox_head WHERE id = 1 FOR UPDATE NOWAIT")
        .execute(pool)
        .await
        .map(drop)
}

crate::both_backends! {
    async fn a_handler_that_publishes_without_declaring_it_fails_and_is_parked(scratch: ScratchDb) {
        let db = &scratch.db;
        let ids = ping(db, &[("quiet", false), ("loud", true), ("after", false)]).await;
        let subscription = subscribe(db, Arc::new(Undeclared)).await;
        let config = DeliveryConfig { max_attempts: 2, ..DeliveryConfig::default() };

        let errors = deliver(&subscription, db, &config).await;
        // The whole batch failed on `loud`; then, `quiet` applied, `loud` alone failed again
        // (its second attempt) and was parked.
        assert_eq!(errors.len(), 2, "{errors:#?}");
        for error in &errors {
            assert!(error.contains("scratch.Pinged"), "{error}");
            assert!(error.contains("without declaring it"), "{error}");
            assert!(error.contains("lock-order rule"), "{error}");
        }
        let letters = dead_letters::list(db).await.unwrap();
        let parked: Vec<_> = letters.iter().map(|l| (l.event.id, l.status.as_str(), l.attempts)).collect();
        assert_eq!(parked, [(ids[1], "parked", 2)]);
        assert!(letters[0].error.as_deref().unwrap().contains("Handler::locks_outbox"));
        // The events around it were applied; nothing was published in the subscription's name.
        assert_eq!(checkpoint(db, &subscription.name).await.unwrap(), 3);
        assert_eq!(published(db).await, [Pinged::TYPE; 3]);
    }

    async fn a_declaring_handler_holds_the_outbox_lock_before_its_first_effect(scratch: ScratchDb) {
        holds_the_outbox_lock_before_its_first_effect(scratch.db.clone(), None).await;
    }

    async fn so_it_does_when_its_worker_knows_the_checkpoint(scratch: ScratchDb) {
        holds_the_outbox_lock_before_its_first_effect(scratch.db.clone(), Some(Cursor { seq: 0 })).await;
    }
}

/// A declaring handler's batch holds the outbox lock (Postgres) from before the handler's first
/// effect to its commit; run as a worker without a cursor, or with one (the checkpoint's move
/// then takes the lock in the same statement).
async fn holds_the_outbox_lock_before_its_first_effect(db: ModuleDb, cursor: Option<Cursor>) {
    let postgres = db.reader().unwrap().is_postgres();
    let ids = ping(&db, &[("one", true)]).await;
    let (begun, has_begun) = oneshot::channel();
    let (release, released) = oneshot::channel();
    let handler = Declared {
        begun: Mutex::new(Some(begun)),
        release: Mutex::new(Some(released)),
    };
    let subscription = subscribe(&db, Arc::new(handler)).await;
    if postgres {
        try_outbox_lock(&db)
            .await
            .expect("nobody holds the outbox lock before the batch");
    }

    let batch = tokio::spawn({
        let (subscription, db) = (subscription.clone(), db.clone());
        async move {
            let log = OutboxLog::new(db.clone());
            let config = DeliveryConfig::default();
            let mut cursor = cursor;
            attempt(&subscription, &db, &log, &config, None, false, &mut cursor)
                .await
                .map_err(|e| match e {
                    StepError::Event { error, .. } | StepError::Other(error) => {
                        format!("{error:#}")
                    }
                })
        }
    });
    has_begun.await.unwrap();
    // The handler has begun and done nothing yet: its batch holds the lock already.
    if postgres {
        let busy = try_outbox_lock(&db)
            .await
            .expect_err("the batch holds the outbox lock");
        let code = busy
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("55P03"), "{busy}");
    }
    release.send(()).unwrap();
    assert!(matches!(
        batch.await.unwrap(),
        Ok(Step::Applied { seq: 1, .. })
    ));
    if postgres {
        try_outbox_lock(&db)
            .await
            .expect("the commit released the outbox lock");
    }
    // Its answer was accepted, caused by the event it answers.
    let events = outbox::read_after(&db, 0, 100).await.unwrap();
    let answer = events
        .iter()
        .find(|e| e.event_type == Ponged::TYPE)
        .expect("the answer");
    assert_eq!(answer.causation_id, Some(ids[0]));
}
