//! Where a subscription reads its source's events.
//!
//! The subscription side (batches, inbox, checkpoint, dead letters) only needs an ordered,
//! replayable log of one source: "events after seq N", the head, and a wake-up when the log
//! grows. In process that log is the source's outbox read through the source module's own
//! handle ([`OutboxLog`]). A JetStream implementation fits the same trait (fetch from stream
//! sequence N+1, head from stream info, wake-ups from the push subscription), and the
//! handlers, the inbox and the commit-then-acknowledge order do not change.

use std::fmt::Debug;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::event::Envelope;
use super::outbox;
use crate::storage::ModuleDb;

/// An ordered, replayable log of one source's events.
#[async_trait]
pub trait EventLog: Send + Sync + Debug + 'static {
    /// The source module.
    fn source(&self) -> &'static str;

    /// Up to `limit` events after `after_seq`, in seq order.
    async fn read_after(&self, after_seq: i64, limit: i64) -> anyhow::Result<Vec<Envelope>>;

    /// Every retained event of one aggregate, in seq order.
    async fn about(&self, aggregate_id: &str) -> anyhow::Result<Vec<Envelope>>;

    /// The last seq committed to the log.
    async fn head(&self) -> anyhow::Result<i64>;

    /// When the event at `seq` was committed, if it is still retained.
    async fn occurred_at(&self, seq: i64) -> anyhow::Result<Option<OffsetDateTime>>;

    /// Changes whenever the log may have grown.
    fn wakeups(&self) -> watch::Receiver<u64>;
}

/// Reads of an [`OutboxLog`], by source and by where they were served from.
const READS: &str = "bounded_outbox_reads_total";

/// The in-process log: the source module's outbox; what this process committed lately is read
/// from memory (`messaging::recent`).
#[derive(Debug, Clone)]
pub struct OutboxLog {
    db: ModuleDb,
}

impl OutboxLog {
    pub fn new(db: ModuleDb) -> Self {
        Self { db }
    }
}

#[async_trait]
impl EventLog for OutboxLog {
    fn source(&self) -> &'static str {
        self.db.module()
    }

    /// From memory when this process committed the next event lately (see
    /// `ModuleDb::recent_after`), else from the outbox; counted in
    /// `bounded_outbox_reads_total{source, from="memory"|"database"}`.
    async fn read_after(&self, after_seq: i64, limit: i64) -> anyhow::Result<Vec<Envelope>> {
        let source = self.db.module();
        if let Some(events) = self.db.recent_after(after_seq, limit) {
            metrics::counter!(READS, "source" => source, "from" => "memory").increment(1);
            return Ok(events);
        }
        metrics::counter!(READS, "source" => source, "from" => "database").increment(1);
        Ok(outbox::read_after(&self.db, after_seq, limit).await?)
    }

    async fn about(&self, aggregate_id: &str) -> anyhow::Result<Vec<Envelope>> {
        Ok(outbox::about(&self.db, aggregate_id).await?)
    }

    async fn head(&self) -> anyhow::Result<i64> {
        Ok(outbox::head(&self.db).await?)
    }

    async fn occurred_at(&self, seq: i64) -> anyhow::Result<Option<OffsetDateTime>> {
        Ok(outbox::occurred_at(&self.db, seq).await?)
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.db.outbox_commits()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;
    use crate::messaging::EventContext;
    use crate::messaging::recent::CAPACITY;
    use crate::messaging::subscription::noted::Noted;
    use crate::storage::testing::ScratchDb;

    crate::both_backends! {
        async fn what_this_process_committed_is_read_from_memory_exactly_as_stored(scratch: ScratchDb) {
            let db = &scratch.db;
            let note = |id: &str| Noted { id: id.into() };
            let context = EventContext {
                correlation_id: Some(Uuid::now_v7()),
                causation_id: Some(Uuid::now_v7()),
                headers: BTreeMap::from([("traceparent".to_owned(), "t".to_owned())]),
            };
            for round in 0..3 {
                let mut tx = db.begin().await.unwrap();
                outbox::append(&mut tx, &note(&format!("{round}a")), &context).unwrap();
                outbox::append(&mut tx, &note(&format!("{round}b")), &EventContext::default())
                    .unwrap();
                tx.commit().await.unwrap();
            }
            // Rolled back: never kept.
            let mut tx = db.begin().await.unwrap();
            outbox::append(&mut tx, &note("rolled back"), &context).unwrap();
            drop(tx);

            let stored = outbox::read_after(db, 0, 100).await.unwrap();
            assert_eq!(stored.len(), 6);
            assert_eq!(db.recent_after(0, 100), Some(stored.clone()));
            assert_eq!(db.recent_after(2, 3).as_deref(), Some(&stored[2..5]));
            assert_eq!(db.recent_after(6, 100), None, "nothing after the head");

            // A commit through the bare database (as another process's would be) is not in
            // memory: a read that needs it goes to the database, one after it to memory.
            let mut bare = db.db().unwrap().begin().await.unwrap();
            outbox::append(&mut bare, &note("elsewhere"), &EventContext::default()).unwrap();
            bare.commit().await.unwrap();
            let mut tx = db.begin().await.unwrap();
            outbox::append(&mut tx, &note("here"), &EventContext::default()).unwrap();
            tx.commit().await.unwrap();
            let stored = outbox::read_after(db, 0, 100).await.unwrap();
            assert_eq!(stored.len(), 8);
            assert_eq!(db.recent_after(5, 100), Some(stored[5..6].to_vec()), "up to the gap");
            assert_eq!(db.recent_after(6, 100), None);
            assert_eq!(db.recent_after(7, 100), Some(stored[7..].to_vec()));
            let log = OutboxLog::new(db.clone());
            // Memory answers with the run up to the gap; the next read, the database, has the rest.
            assert_eq!(log.read_after(0, 100).await.unwrap(), stored[..6].to_vec());
            assert_eq!(log.read_after(6, 100).await.unwrap(), stored[6..].to_vec());
        }

        async fn a_transaction_larger_than_memory_leaves_its_last_events_there(scratch: ScratchDb) {
            let db = &scratch.db;
            let beyond = 3;
            let mut tx = db.begin().await.unwrap();
            for i in 0..CAPACITY + beyond {
                outbox::append(&mut tx, &Noted { id: i.to_string() }, &EventContext::default())
                    .unwrap();
            }
            tx.commit().await.unwrap();
            let from = i64::try_from(beyond).unwrap();
            let stored = outbox::read_after(db, from, 1000).await.unwrap();
            assert_eq!(stored.len(), CAPACITY);
            assert_eq!(db.recent_after(from, 1000), Some(stored));
            assert_eq!(db.recent_after(from - 1, 1000), None);
        }
    }
}
