//! A worker's [`Cursor`]: what it knows of its checkpoint is checked by the transaction that
//! moves it, so another process's work is never overrun.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::noted::{Noted, TYPES};
use super::*;
use crate::messaging::log::OutboxLog;
use crate::messaging::outbox;
use crate::storage::testing::ScratchDb;

/// Fails the event at seq 1 while `failing`; records the seqs it applied.
#[derive(Default)]
struct FirstFails {
    failing: AtomicBool,
    applied: Mutex<Vec<i64>>,
}

#[async_trait]
impl Handler for Arc<FirstFails> {
    async fn handle(&self, _: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        if event.seq == 1 && self.failing.load(Ordering::SeqCst) {
            anyhow::bail!("the first event fails");
        }
        self.applied.lock().unwrap().push(event.seq);
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(TYPES)
    }
}

/// The scratch database's subscription to itself through a [`FirstFails`] (not failing), its
/// checkpoint created, and the log it reads.
async fn subscribed(db: &ModuleDb) -> (Arc<FirstFails>, Subscription, OutboxLog) {
    let handler = Arc::new(FirstFails::default());
    let subscription = Subscription::named(
        "scratch<-scratch",
        "scratch",
        "scratch",
        Arc::new(Arc::clone(&handler)),
    );
    ensure_checkpoint(db, &subscription).await.unwrap();
    (handler, subscription, OutboxLog::new(db.clone()))
}

crate::both_backends! {
    async fn a_stale_cursor_never_applies_past_an_event_another_process_parked(scratch: ScratchDb) {
        let db = &scratch.db;
        let mut tx = db.begin().await.unwrap();
        for _ in 0..2 {
            let note = Noted { id: "a".into() };
            outbox::append(&mut tx, &note, &EventContext::default()).unwrap();
        }
        tx.commit().await.unwrap();
        let handler = Arc::new(FirstFails::default());
        handler.failing.store(true, Ordering::SeqCst);
        let subscription =
            Subscription::named("scratch<-scratch", "scratch", "scratch", Arc::new(Arc::clone(&handler)));
        ensure_checkpoint(db, &subscription).await.unwrap();
        let log = OutboxLog::new(db.clone());
        let config = DeliveryConfig { max_attempts: 1, ..DeliveryConfig::default() };

        // This worker last left the checkpoint at 0.
        let mut cursor = Some(Cursor { seq: 0 });
        // Another process gives up on event 1 and parks it; its cause then goes away.
        let first = outbox::read_after(db, 0, 1).await.unwrap().remove(0);
        let failure = Failure {
            event_id: first.id,
            seq: 1,
            attempts: 1,
            last_error: "the first event fails".into(),
        };
        let parked = attempt(&subscription, db, &log, &config, Some(&failure), false, &mut None).await;
        assert!(matches!(parked, Ok(Step::Applied { seq: 1, .. })));
        handler.failing.store(false, Ordering::SeqCst);

        // The worker finds the checkpoint elsewhere and applies nothing…
        let stale = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(stale, Ok(Step::Stale)));
        assert_eq!(cursor, None);
        // …then reads it, and holds event 2 back behind its aggregate's parked event.
        let next = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(next, Ok(Step::Applied { seq: 2, .. })));
        assert!(handler.applied.lock().unwrap().is_empty());
        let statuses: Vec<(i64, String)> = dead_letters::list(db)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.seq, d.status))
            .collect();
        assert_eq!(statuses, [(1, "parked".to_owned()), (2, "blocked".to_owned())]);
        // With dead letters open, the worker keeps reading its checkpoint.
        assert_eq!(cursor, None);
    }

    async fn a_cursor_applies_what_is_new_and_finds_a_rewind_behind_its_back(scratch: ScratchDb) {
        let db = &scratch.db;
        let (handler, subscription, log) = subscribed(db).await;
        let config = DeliveryConfig::default();
        let mut cursor = None;
        let idle = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(idle, Ok(Step::Idle)));
        assert_eq!(cursor, Some(Cursor { seq: 0 }));

        for round in 1..=3_i64 {
            let mut tx = db.begin().await.unwrap();
            outbox::append(&mut tx, &Noted { id: format!("{round}") }, &EventContext::default())
                .unwrap();
            tx.commit().await.unwrap();
            let step = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
            assert!(matches!(step, Ok(Step::Applied { seq, full: false }) if seq == round));
            assert_eq!(cursor, Some(Cursor { seq: round }));
        }
        // A rewind behind the worker's back (no nudge) is found by its next transaction.
        assert_eq!(rewind(db, "scratch<-scratch", 1).await.unwrap(), Rewound::Moved { from: 3 });
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &Noted { id: "4".into() }, &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        let stale = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(stale, Ok(Step::Stale)));
        let step = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(step, Ok(Step::Applied { seq: 4, .. })));
        // Events 2 and 3 were in the inbox: applied once each.
        assert_eq!(*handler.applied.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!(checkpoint(db, "scratch<-scratch").await.unwrap(), 4);
    }

    async fn a_cursor_records_the_inbox_as_it_moves_and_skips_what_was_applied(scratch: ScratchDb) {
        let db = &scratch.db;
        let (handler, subscription, log) = subscribed(db).await;
        let config = DeliveryConfig::default();
        let note = |id: &str| Noted { id: id.into() };
        let inbox = || async {
            let rows: Vec<i64> = crate::with_reader!(db.reader().unwrap(), |pool| {
                sqlx::query_scalar("SELECT seq FROM inbox WHERE subscription = $1 ORDER BY seq")
                    .bind("scratch<-scratch")
                    .fetch_all(pool)
                    .await
            })
            .unwrap();
            rows
        };
        let mut tx = db.begin().await.unwrap();
        for id in ["1", "2", "3"] {
            outbox::append(&mut tx, &note(id), &EventContext::default()).unwrap();
        }
        tx.commit().await.unwrap();
        let mut cursor = Some(Cursor { seq: 0 });
        let step = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(step, Ok(Step::Applied { seq: 3, .. })));
        assert_eq!(inbox().await, [1, 2, 3]);

        assert_eq!(rewind(db, "scratch<-scratch", 1).await.unwrap(), Rewound::Moved { from: 3 });
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &note("4"), &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        // A cursor that is wrong moves nothing, and leaves nothing of its batch in the inbox.
        let mut wrong = Some(Cursor { seq: 0 });
        let stale = attempt(&subscription, db, &log, &config, None, false, &mut wrong).await;
        assert!(matches!(stale, Ok(Step::Stale)));
        assert_eq!(inbox().await, [1, 2, 3]);
        // One that knows the rewound checkpoint finds 2 and 3 in the inbox: only 4 is applied.
        let mut cursor = Some(Cursor { seq: 1 });
        let step = attempt(&subscription, db, &log, &config, None, false, &mut cursor).await;
        assert!(matches!(step, Ok(Step::Applied { seq: 4, .. })));
        assert_eq!(*handler.applied.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!(inbox().await, [1, 2, 3, 4]);
        assert_eq!(checkpoint(db, "scratch<-scratch").await.unwrap(), 4);
    }
}
