//! `Scratch`: the scratch source and consumer (see `tests/scratch`) on fresh databases, with a
//! [`Bus`] running `consumer<-source` ([`Replicate`]) and `consumer<-source:tally` ([`Tally`]),
//! as a process of the shop runs its modules.

use std::sync::Arc;
use std::time::Duration;

use shared_kernel::messaging::{Bus, DeliveryConfig, Subscription, SubscriptionStatus, Workers};
use shared_kernel::storage::testing::{OnBackend, TestBackend, TestDatabase, fresh_config};
use shared_kernel::storage::{ModuleDb, StorageConfig};
use shared_kernel::with_reader;
use tempfile::TempDir;
use uuid::Uuid;

use crate::scratch::{self, CONSUMER, REPLICAS, Replicate, SOURCE, TALLY, Tally};

#[derive(Debug)]
pub struct Scratch {
    pub source: ModuleDb,
    pub consumer: ModuleDb,
    pub bus: Bus,
    /// The running subscription workers; `None` while delivery is stopped.
    pub workers: Option<Workers>,
    /// Where the SQLite files are; on Postgres, the database (dropped with the fixture).
    _dir: TempDir,
    pub database: Option<TestDatabase>,
}

impl OnBackend for Scratch {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (config, database) = fresh_config(backend, test, dir.path()).await?;
        Some(Self::open(&config, dir, database).await)
    }
}

impl Scratch {
    /// Opens the scratch modules' databases where `config` says and starts delivery.
    pub async fn open(
        config: &StorageConfig,
        dir: TempDir,
        database: Option<TestDatabase>,
    ) -> Self {
        let (source, consumer) = scratch::open(config).await.unwrap();
        let bus = Bus::new(DeliveryConfig::default());
        bus.add_module(source.clone());
        bus.add_module(consumer.clone());
        bus.subscribe(Subscription::named(
            REPLICAS,
            CONSUMER,
            SOURCE,
            Arc::new(Replicate),
        ));
        bus.subscribe(Subscription::named(
            TALLY,
            CONSUMER,
            SOURCE,
            Arc::new(Tally),
        ));
        let workers = Some(bus.start());
        Self {
            source,
            consumer,
            bus,
            workers,
            _dir: dir,
            database,
        }
    }

    /// Stops event delivery, as a process stopped between commit and publish would.
    pub async fn stop_delivery(&mut self) {
        if let Some(workers) = self.workers.take() {
            workers.stop().await;
        }
    }

    pub fn start_delivery(&mut self) {
        if self.workers.is_none() {
            self.workers = Some(self.bus.start());
        }
    }

    /// Stops delivery, adds `subscription` of the consumer to the source, and starts again.
    pub async fn subscribe(
        &mut self,
        name: &str,
        handler: Arc<dyn shared_kernel::messaging::Handler>,
    ) {
        self.stop_delivery().await;
        self.bus
            .subscribe(Subscription::named(name, CONSUMER, SOURCE, handler));
        self.start_delivery();
    }

    /// Waits until every subscription has applied everything committed so far.
    pub async fn settled(&self) {
        let settled = self.bus.settled(Duration::from_secs(30)).await;
        assert!(
            settled,
            "subscriptions did not catch up within 30 s: {:?}",
            self.bus.status().await
        );
    }

    /// Registers a member at the source; returns its id.
    pub async fn register(&self, name: &str, email: &str) -> Uuid {
        scratch::register(&self.source, name, email).await.unwrap()
    }

    pub async fn rename(&self, id: Uuid, name: &str) {
        scratch::rename(&self.source, id, name).await.unwrap();
    }

    pub async fn status(&self, name: &str) -> SubscriptionStatus {
        self.bus.status_of(name).await.unwrap()
    }

    /// The consumer's replica of the members, `(id, name, email)` by id.
    pub async fn replicas(&self) -> Vec<(Uuid, String, String)> {
        with_reader!(self.consumer.reader().unwrap(), |pool| {
            sqlx::query_as("SELECT member_id, name, email FROM member_replicas ORDER BY member_id")
                .fetch_all(pool)
                .await
        })
        .unwrap()
    }

    /// The seq of every event the tally subscription applied, once per application, in order.
    pub async fn tallies(&self) -> Vec<i64> {
        seqs(&self.consumer, "SELECT seq FROM tallies ORDER BY seq").await
    }

    /// The seqs retained in the source's outbox.
    pub async fn outbox_seqs(&self) -> Vec<i64> {
        seqs(&self.source, "SELECT seq FROM outbox ORDER BY seq").await
    }
}

/// The one column of seqs `sql` reads from `db`.
async fn seqs(db: &ModuleDb, sql: &'static str) -> Vec<i64> {
    let rows: Vec<(i64,)> = with_reader!(db.reader().unwrap(), |pool| {
        sqlx::query_as(sql).fetch_all(pool).await
    })
    .unwrap();
    rows.into_iter().map(|(seq,)| seq).collect()
}
