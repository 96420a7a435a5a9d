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

/// The in-process log: the source module's outbox.
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

    async fn read_after(&self, after_seq: i64, limit: i64) -> anyhow::Result<Vec<Envelope>> {
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
