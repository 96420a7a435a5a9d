//! The in-process transport: runs every subscription of this process over the sources' outboxes.
//!
//! A source's log is its outbox, read through the source module's own database handle; a
//! commit that appended to it wakes that source's subscribers at once. (Across processes the
//! same subscriptions will read a JetStream stream fed by a relay; handlers do not change.)

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::outbox;
use super::subscription::{self, DeliveryConfig, Subscription};
use crate::storage::{ModuleDb, StorageError};

/// Subscriptions of this process and the modules they connect. Cheap to clone: clones share
/// the running workers' state.
#[derive(Debug, Clone)]
pub struct Bus {
    modules: BTreeMap<&'static str, ModuleDb>,
    subscriptions: Vec<Subscription>,
    config: DeliveryConfig,
    applied: BTreeMap<String, watch::Sender<i64>>,
    /// Wakes a subscription's worker without a source commit (after a rewind).
    nudges: BTreeMap<String, watch::Sender<()>>,
}

/// The running workers of a [`Bus`]; [`Workers::stop`] ends them at a batch boundary.
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    set: JoinSet<()>,
}

impl Workers {
    /// Stops the workers at a batch boundary and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        while self.set.join_next().await.is_some() {}
    }
}

/// One subscription's position, for `/ops/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionStatus {
    pub name: String,
    pub source: String,
    pub consumer: String,
    /// Last seq of the source applied by the consumer.
    pub checkpoint: i64,
    /// Last seq the source has committed.
    pub head_seq: i64,
    /// `head_seq - checkpoint`: events committed but not applied yet.
    pub lag: i64,
}

/// Why a subscription could not be inspected or moved.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("no subscription named {0:?}")]
    UnknownSubscription(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Bus {
    pub fn new(config: DeliveryConfig) -> Self {
        Self {
            modules: BTreeMap::new(),
            subscriptions: Vec::new(),
            config,
            applied: BTreeMap::new(),
            nudges: BTreeMap::new(),
        }
    }

    /// Makes a local module's outbox available as a source and its database as a consumer.
    pub fn add_module(&mut self, db: ModuleDb) {
        self.modules.insert(db.module(), db);
    }

    /// Adds a subscription; it runs once [`Bus::start`] is called, if both its modules are local.
    pub fn subscribe(&mut self, subscription: Subscription) {
        self.subscriptions.push(subscription);
    }

    fn local(&self, subscription: &Subscription) -> Option<(ModuleDb, ModuleDb)> {
        Some((
            self.modules.get(subscription.consumer)?.clone(),
            self.modules.get(subscription.source)?.clone(),
        ))
    }

    /// Starts one worker per subscription whose consumer and source run here.
    pub fn start(&mut self) -> Workers {
        let mut workers = Workers {
            stop: watch::Sender::new(false),
            set: JoinSet::new(),
        };
        for subscription in self.subscriptions.clone() {
            let Some((consumer, source)) = self.local(&subscription) else {
                tracing::info!(subscription = %subscription.name, "Subscription not local to this process; not started.");
                continue;
            };
            let applied = watch::Sender::new(0);
            let nudge = watch::Sender::new(());
            self.applied
                .insert(subscription.name.clone(), applied.clone());
            self.nudges.insert(subscription.name.clone(), nudge.clone());
            workers.set.spawn(subscription::run(
                subscription,
                consumer,
                source,
                self.config,
                workers.stop.subscribe(),
                nudge.subscribe(),
                applied,
            ));
        }
        workers
    }

    /// The modules whose databases this process holds.
    pub fn local_modules(&self) -> Vec<&'static str> {
        self.modules.keys().copied().collect()
    }

    /// Every subscription known to this process, local or not.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Positions of every local subscription.
    pub async fn status(&self) -> Result<Vec<SubscriptionStatus>, StorageError> {
        let mut out = Vec::new();
        for subscription in &self.subscriptions {
            let Some((consumer, source)) = self.local(subscription) else {
                continue;
            };
            let checkpoint = subscription::checkpoint(&consumer, &subscription.name).await?;
            let head_seq = outbox::head(&source).await?;
            out.push(SubscriptionStatus {
                name: subscription.name.clone(),
                source: subscription.source.to_owned(),
                consumer: subscription.consumer.to_owned(),
                checkpoint,
                head_seq,
                lag: head_seq - checkpoint,
            });
        }
        Ok(out)
    }

    /// Moves a subscription's checkpoint back (or forward) to `seq`.
    pub async fn rewind(&self, name: &str, seq: i64) -> Result<(), BusError> {
        let subscription = self
            .subscriptions
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| BusError::UnknownSubscription(name.to_owned()))?;
        let (consumer, _) = self
            .local(subscription)
            .ok_or_else(|| BusError::UnknownSubscription(name.to_owned()))?;
        subscription::rewind(&consumer, name, seq).await?;
        if let Some(nudge) = self.nudges.get(name) {
            nudge.send_replace(());
        }
        Ok(())
    }

    /// Waits until every local subscription has applied everything its source has committed
    /// (at the time of each check), or `timeout` passes. Returns whether it settled.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let mut receivers: Vec<_> = self
            .applied
            .values()
            .map(watch::Sender::subscribe)
            .collect();
        let check = async {
            loop {
                if let Ok(status) = self.status().await
                    && status.iter().all(|s| s.lag == 0)
                {
                    return;
                }
                if receivers.is_empty() {
                    std::future::pending::<()>().await;
                }
                let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                let _ = futures::future::select_all(changes).await;
            }
        };
        tokio::time::timeout(timeout, check).await.is_ok()
    }
}
