//! The in-process transport: runs every subscription of this process over the sources' outboxes.
//!
//! A source's log is its outbox, read through the source module's own database handle; a
//! commit that appended to it wakes that source's subscribers at once. (Across processes the
//! same subscriptions will read a JetStream stream fed by a relay; handlers do not change.)

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use uuid::Uuid;

use super::dead_letters::{self, DeadLetter, DeadLetterError};
use super::event::Envelope;
use super::log::{EventLog, OutboxLog};
use super::outbox;
use super::subscription::{self, DeliveryConfig, Subscription};
use crate::storage::{ModuleDb, StorageError};

/// Subscriptions of this process and the modules they connect. Cheap to clone: every clone is
/// the same bus.
#[derive(Debug, Clone)]
pub struct Bus {
    state: Arc<RwLock<State>>,
}

#[derive(Debug)]
struct State {
    modules: BTreeMap<&'static str, ModuleDb>,
    /// The log of every source readable here: local outboxes, and later remote streams.
    logs: BTreeMap<&'static str, Arc<dyn EventLog>>,
    subscriptions: Vec<Subscription>,
    config: DeliveryConfig,
    /// Last seq applied per running subscription, updated after each committed batch.
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriptionStatus {
    pub name: String,
    pub source: String,
    pub consumer: String,
    /// Last seq of the source applied by the consumer.
    pub checkpoint: i64,
    /// Last seq the source has committed.
    pub head_seq: i64,
    /// `head_seq - checkpoint`: events committed but not applied yet (never below 0).
    pub lag: i64,
    /// Age of the oldest event not applied yet (0 when caught up).
    pub lag_seconds: f64,
    /// Events given up on, waiting for an operator.
    pub parked: i64,
    /// Later events of parked events' aggregates, held back to keep their order.
    pub blocked: i64,
}

/// Why a subscription could not be inspected or moved.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("no subscription named {0:?}")]
    UnknownSubscription(String),
    /// A rewind only moves a checkpoint back; skipping events is not a rewind.
    #[error(
        "cannot rewind {name} to {to_seq}: that is ahead of its checkpoint {checkpoint} (the source's head is {}); a rewind only moves a checkpoint back",
        head_seq.map_or_else(|| "unknown".to_owned(), |seq| seq.to_string())
    )]
    RewindAhead {
        name: String,
        to_seq: i64,
        checkpoint: i64,
        head_seq: Option<i64>,
    },
    #[error("cannot rewind to {0}: a seq is 0 or more")]
    NegativeSeq(i64),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Bus {
    pub fn new(config: DeliveryConfig) -> Self {
        Self {
            state: Arc::new(RwLock::new(State {
                modules: BTreeMap::new(),
                logs: BTreeMap::new(),
                subscriptions: Vec::new(),
                config,
                applied: BTreeMap::new(),
                nudges: BTreeMap::new(),
            })),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes a local module's outbox available as a source and its database as a consumer.
    pub fn add_module(&self, db: ModuleDb) {
        let mut state = self.write();
        state
            .logs
            .insert(db.module(), Arc::new(OutboxLog::new(db.clone())));
        state.modules.insert(db.module(), db);
    }

    /// Adds a subscription; it runs from the next [`Bus::start`] if both its modules are local.
    pub fn subscribe(&self, subscription: Subscription) {
        self.write().subscriptions.push(subscription);
    }

    /// Makes a source's log readable here without its database: a source in another process.
    pub fn add_log(&self, log: Arc<dyn EventLog>) {
        self.write().logs.insert(log.source(), log);
    }

    /// The log of `source`, if it is readable here: what a projection rebuild replays.
    pub fn log(&self, source: &str) -> Option<Arc<dyn EventLog>> {
        self.read().logs.get(source).cloned()
    }

    /// Every subscription whose consumer runs here and whose source's log is readable here.
    fn local(&self) -> Vec<(Subscription, ModuleDb, Arc<dyn EventLog>)> {
        let state = self.read();
        state
            .subscriptions
            .iter()
            .filter_map(|s| {
                Some((
                    s.clone(),
                    state.modules.get(s.consumer)?.clone(),
                    state.logs.get(s.source)?.clone(),
                ))
            })
            .collect()
    }

    fn local_named(
        &self,
        name: &str,
    ) -> Result<(Subscription, ModuleDb, Arc<dyn EventLog>), BusError> {
        self.local()
            .into_iter()
            .find(|(s, _, _)| s.name == name)
            .ok_or_else(|| BusError::UnknownSubscription(name.to_owned()))
    }

    /// Starts one worker per subscription whose consumer and source run here.
    pub fn start(&self) -> Workers {
        let mut workers = Workers {
            stop: watch::Sender::new(false),
            set: JoinSet::new(),
        };
        let config = self.read().config;
        let names: Vec<String> = self
            .read()
            .subscriptions
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let local = self.local();
        for name in names {
            if !local.iter().any(|(s, _, _)| s.name == name) {
                tracing::info!(subscription = %name, "Subscription not local to this process; not started.");
            }
        }
        // Commits of other processes on the same Postgres database arrive as notifications.
        let sources: Vec<ModuleDb> = {
            let state = self.read();
            let mut names: Vec<&str> = local.iter().map(|(_, _, log)| log.source()).collect();
            names.sort_unstable();
            names.dedup();
            names
                .into_iter()
                .filter_map(|name| state.modules.get(name).cloned())
                .collect()
        };
        for source in sources {
            if matches!(source.db(), Ok(crate::storage::Db::Postgres(_))) {
                workers.set.spawn(listen(source, workers.stop.subscribe()));
            }
        }
        if let Some(retention) = config.retention {
            workers.set.spawn(prune_periodically(
                self.clone(),
                retention,
                workers.stop.subscribe(),
            ));
        }
        for (subscription, consumer, source) in local {
            let applied = watch::Sender::new(0);
            let nudge = watch::Sender::new(());
            {
                let mut state = self.write();
                state
                    .applied
                    .insert(subscription.name.clone(), applied.clone());
                state
                    .nudges
                    .insert(subscription.name.clone(), nudge.clone());
            }
            workers.set.spawn(subscription::run(
                subscription,
                consumer,
                source,
                config,
                workers.stop.subscribe(),
                nudge.subscribe(),
                applied,
            ));
        }
        workers
    }

    /// Every retained event about the given aggregates, from every log readable here (each
    /// source's outbox), ordered so that an event comes after the event that caused it, and
    /// otherwise by time.
    pub async fn events_about(&self, aggregate_ids: &[String]) -> anyhow::Result<Vec<Envelope>> {
        let logs: Vec<Arc<dyn EventLog>> = self.read().logs.values().cloned().collect();
        let mut events = Vec::new();
        for log in logs {
            for id in aggregate_ids {
                events.extend(log.about(id).await?);
            }
        }
        Ok(causal_order(events))
    }

    /// The last seq a running subscription has applied and committed; changes after each batch.
    pub fn applied(&self, name: &str) -> Option<watch::Receiver<i64>> {
        self.read().applied.get(name).map(watch::Sender::subscribe)
    }

    /// The modules whose databases this process holds.
    pub fn local_modules(&self) -> Vec<&'static str> {
        self.read().modules.keys().copied().collect()
    }

    /// Every subscription known to this process, local or not.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.read().subscriptions.clone()
    }

    /// Positions of every local subscription.
    pub async fn status(&self) -> Result<Vec<SubscriptionStatus>, StorageError> {
        let mut out = Vec::new();
        for (subscription, consumer, source) in self.local() {
            out.push(position(&subscription, &consumer, source.as_ref()).await?);
        }
        Ok(out)
    }

    /// The position of one local subscription.
    pub async fn status_of(&self, name: &str) -> Result<SubscriptionStatus, BusError> {
        let (subscription, consumer, source) = self.local_named(name)?;
        Ok(position(&subscription, &consumer, source.as_ref()).await?)
    }

    /// Moves a subscription's checkpoint back to `seq` and returns where it was. A `seq` ahead
    /// of the checkpoint (which would skip events) or below 0 changes nothing and fails.
    pub async fn rewind(&self, name: &str, seq: i64) -> Result<i64, BusError> {
        if seq < 0 {
            return Err(BusError::NegativeSeq(seq));
        }
        let (_, consumer, source) = self.local_named(name)?;
        let from = match subscription::rewind(&consumer, name, seq).await? {
            subscription::Rewound::Moved { from } => from,
            subscription::Rewound::Ahead { checkpoint } => {
                // For the operator's benefit only: the refusal does not depend on it.
                let head_seq = source.head().await.ok();
                return Err(BusError::RewindAhead {
                    name: name.to_owned(),
                    to_seq: seq,
                    checkpoint,
                    head_seq,
                });
            }
        };
        if let Some(nudge) = self.read().nudges.get(name) {
            nudge.send_replace(());
        }
        Ok(from)
    }

    /// The local consumer databases.
    fn consumers(&self) -> Vec<ModuleDb> {
        let state = self.read();
        state
            .modules
            .values()
            .filter(|db| {
                state
                    .subscriptions
                    .iter()
                    .any(|s| s.consumer == db.module())
            })
            .cloned()
            .collect()
    }

    /// Every dead letter of the local consumers, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StorageError> {
        let mut out = Vec::new();
        for consumer in self.consumers() {
            out.extend(dead_letters::list(&consumer).await?);
        }
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// Finds the dead letter `id`, the consumer database holding it and its subscription.
    async fn locate(&self, id: Uuid) -> Result<(DeadLetter, ModuleDb, Subscription), BusError> {
        for consumer in self.consumers() {
            if let Some(letter) = dead_letters::get(&consumer, id).await? {
                let (subscription, consumer, _) = self.local_named(&letter.subscription)?;
                return Ok((letter, consumer, subscription));
            }
        }
        Err(DeadLetterError::NotFound(id).into())
    }

    /// One dead letter of the local consumers.
    pub async fn dead_letter(&self, id: Uuid) -> Result<DeadLetter, BusError> {
        Ok(self.locate(id).await?.0)
    }

    /// Applies a parked event now and releases the events blocked behind it.
    pub async fn retry_dead_letter(&self, id: Uuid) -> Result<(), BusError> {
        let (_, consumer, subscription) = self.locate(id).await?;
        Ok(dead_letters::retry(&consumer, &subscription, id).await?)
    }

    /// Drops a parked event for good and releases the events blocked behind it.
    pub async fn discard_dead_letter(&self, id: Uuid) -> Result<(), BusError> {
        let (_, consumer, subscription) = self.locate(id).await?;
        Ok(dead_letters::discard(&consumer, &subscription, id).await?)
    }

    /// Prunes each local source's outbox of events older than `retention` that every
    /// subscription to it has processed. A source with a subscription whose position cannot be
    /// read here (its consumer runs elsewhere or its database is down) is left alone.
    pub async fn prune(&self, retention: Duration) -> Result<u64, StorageError> {
        let older_than = crate::clock::now() - retention;
        let (sources, subscriptions) = {
            let state = self.read();
            (state.modules.clone(), state.subscriptions.clone())
        };
        let mut total = 0;
        for (name, source) in sources {
            let readers: Vec<&Subscription> =
                subscriptions.iter().filter(|s| s.source == name).collect();
            let mut low: Option<i64> = None;
            let mut known = true;
            for subscription in &readers {
                let consumer = self.read().modules.get(subscription.consumer).cloned();
                let Some(consumer) = consumer else {
                    known = false;
                    break;
                };
                match subscription::checkpoint(&consumer, &subscription.name).await {
                    Ok(seq) => low = Some(low.map_or(seq, |l| l.min(seq))),
                    Err(_) => {
                        known = false;
                        break;
                    }
                }
            }
            // Without subscribers there is nobody to keep events for but rewinds; keep them
            // all until a subscription exists (it starts from 0).
            let (true, Some(low)) = (known, low) else {
                continue;
            };
            let deleted = outbox::prune(&source, low, older_than).await?;
            if deleted > 0 {
                let remaining = outbox::tail(&source).await?;
                let pruned_up_to = remaining.map_or(low, |tail| tail - 1);
                for subscription in &readers {
                    let consumer = self.read().modules.get(subscription.consumer).cloned();
                    if let Some(consumer) = consumer {
                        outbox::prune_inbox(&consumer, &subscription.name, pruned_up_to).await?;
                    }
                }
                tracing::info!(
                    source = name,
                    deleted,
                    up_to_seq = pruned_up_to,
                    "Pruned the outbox."
                );
            }
            total += deleted;
        }
        Ok(total)
    }

    /// Waits until every local subscription has applied everything its source has committed
    /// (at the time of each check), or `timeout` passes. Returns whether it settled.
    /// Meant for tests, benchmarks and graceful hand-overs.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let mut receivers: Vec<_> = self
            .read()
            .applied
            .values()
            .map(watch::Sender::subscribe)
            .collect();
        let check = async {
            // Positions are read one subscription after another, so one look can see a
            // consumer caught up just before a handler elsewhere appends to its source. Two
            // looks in a row, both caught up with the same heads, leave no event in flight:
            // an append between them would change a head or show as lag.
            let mut previous: Option<Vec<(String, i64)>> = None;
            loop {
                if let Ok(status) = self.status().await
                    && status.iter().all(|s| s.lag == 0)
                {
                    let heads: Vec<(String, i64)> =
                        status.into_iter().map(|s| (s.name, s.head_seq)).collect();
                    if previous.as_ref() == Some(&heads) {
                        return;
                    }
                    previous = Some(heads);
                    continue;
                }
                previous = None;
                progress(&mut receivers).await;
            }
        };
        tokio::time::timeout(timeout, check).await.is_ok()
    }

    /// Waits until each subscription named in `targets` has applied its source up to the seq
    /// given (a head read earlier, say), or `timeout` passes. Returns the names of those that
    /// had not reached their target by then (empty: all did); a name that is not a local
    /// subscription never does.
    ///
    /// # Errors
    /// [`StorageError`] when a consumer's checkpoint cannot be read.
    pub async fn reached(
        &self,
        targets: &BTreeMap<String, i64>,
        timeout: Duration,
    ) -> Result<Vec<String>, StorageError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let local = self.local();
        let mut receivers: Vec<_> = {
            let state = self.read();
            targets
                .keys()
                .filter_map(|name| state.applied.get(name).map(watch::Sender::subscribe))
                .collect()
        };
        loop {
            let mut behind = Vec::new();
            for (name, target) in targets {
                let consumer = local.iter().find(|(s, _, _)| &s.name == name);
                let reached = match consumer {
                    Some((_, consumer, _)) => {
                        subscription::checkpoint(consumer, name).await? >= *target
                    }
                    None => false,
                };
                if !reached {
                    behind.push(name.clone());
                }
            }
            if behind.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(behind);
            }
            // Past the deadline the wait ends; the next look is the last.
            let _ = tokio::time::timeout_at(deadline, progress(&mut receivers)).await;
        }
    }
}

/// Resolves when a local worker announces a committed batch, or after a short re-check
/// interval: progress made by another process on the same database is only seen by looking
/// again.
async fn progress(receivers: &mut [watch::Receiver<i64>]) {
    let recheck = tokio::time::sleep(Duration::from_millis(100));
    if receivers.is_empty() {
        return recheck.await;
    }
    let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
    tokio::select! {
        _ = futures::future::select_all(changes) => {}
        () = recheck => {}
    }
}

/// Relays Postgres notifications of outbox commits to `source`'s local subscribers.
async fn listen(source: ModuleDb, mut stop: watch::Receiver<bool>) {
    let Ok(crate::storage::Db::Postgres(pool)) = source.db() else {
        return;
    };
    let module = source.module();
    let own = source.tag().to_owned();
    let mut listener = loop {
        let attempt = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(outbox::NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(module, error = %error, "Cannot listen for outbox commits; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    };
    // Wake once now: commits made before the listener was up are not lost either way (the
    // workers also poll), but this makes the start deterministic.
    source.signal_outbox_commit();
    loop {
        tokio::select! {
            notification = listener.recv() => match notification {
                Ok(n) => {
                    // `<module>:<tag>`: another process's commit to this source wakes the
                    // subscribers here; this handle's own commits already did.
                    let from_elsewhere = n
                        .payload()
                        .split_once(':')
                        .is_some_and(|(source, tag)| source == module && tag != own);
                    if from_elsewhere {
                        source.signal_outbox_commit();
                    }
                }
                Err(error) => {
                    // PgListener reconnects on the next recv; commits missed meanwhile are
                    // picked up by the workers' safety poll.
                    tracing::warn!(module, error = %error, "Outbox listener lost its connection.");
                    source.signal_outbox_commit();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// Prunes the outboxes every `retention / 10` (between a minute and an hour).
async fn prune_periodically(bus: Bus, retention: Duration, mut stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = bus.prune(retention).await {
            tracing::warn!(error = %error, "Pruning the outbox failed; trying again later.");
        }
    }
}

/// Where `subscription` stands: its checkpoint against its source's head, and its dead letters.
async fn position(
    subscription: &Subscription,
    consumer: &ModuleDb,
    source: &dyn EventLog,
) -> Result<SubscriptionStatus, StorageError> {
    let checkpoint = subscription::checkpoint(consumer, &subscription.name).await?;
    let head_seq = source.head().await.map_err(unavailable(subscription))?;
    let (parked, blocked) = dead_letters::counts(consumer, &subscription.name).await?;
    let lag_seconds = if head_seq > checkpoint {
        source
            .occurred_at(checkpoint + 1)
            .await
            .map_err(unavailable(subscription))?
            .map_or(0.0, |at| {
                (crate::clock::now() - at).as_seconds_f64().max(0.0)
            })
    } else {
        0.0
    };
    Ok(SubscriptionStatus {
        name: subscription.name.clone(),
        source: subscription.source.to_owned(),
        consumer: subscription.consumer.to_owned(),
        checkpoint,
        head_seq,
        // A checkpoint cannot pass the head (batches apply committed events, rewinds only
        // move back), but a store written before that was enforced may hold one: such a
        // subscription is not "ahead", it is caught up.
        lag: (head_seq - checkpoint).max(0),
        lag_seconds,
        parked,
        blocked,
    })
}

/// A source log that cannot be read makes the subscription's status unavailable.
fn unavailable(subscription: &Subscription) -> impl Fn(anyhow::Error) -> StorageError + '_ {
    move |error| {
        tracing::warn!(subscription = %subscription.name, error = format!("{error:#}"), "Cannot read the source's log.");
        StorageError::Unavailable {
            module: subscription.source,
            source: None,
        }
    }
}

/// Orders events by time, then moves any event that precedes its cause (clocks of different
/// processes may disagree) to just after it: a stable topological order of the causation
/// links within the set.
fn causal_order(mut events: Vec<Envelope>) -> Vec<Envelope> {
    events
        .sort_by(|a, b| (a.occurred_at, &a.source, a.seq).cmp(&(b.occurred_at, &b.source, b.seq)));
    events.dedup_by_key(|e| e.id);
    let ids: std::collections::HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let mut placed: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    let mut ordered = Vec::with_capacity(events.len());
    let mut waiting = events;
    while !waiting.is_empty() {
        let before = waiting.len();
        let mut rest = Vec::new();
        for event in waiting {
            let cause_pending = event.causation_id.is_some_and(|cause| {
                cause != event.id && ids.contains(&cause) && !placed.contains(&cause)
            });
            if cause_pending {
                rest.push(event);
            } else {
                placed.insert(event.id);
                ordered.push(event);
            }
        }
        if rest.len() == before {
            // A cycle cannot happen with real causation; keep time order for whatever is left.
            ordered.extend(rest);
            break;
        }
        waiting = rest;
    }
    ordered
}

#[cfg(test)]
mod causal_tests {
    use super::*;

    fn event(n: u128, cause: Option<u128>, at_ms: i64) -> Envelope {
        Envelope {
            id: Uuid::from_u128(n),
            source: "m".into(),
            seq: i64::try_from(n).unwrap_or(0),
            aggregate_type: "a".into(),
            aggregate_id: "x".into(),
            event_type: "m.E".into(),
            event_version: 1,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(at_ms),
            correlation_id: None,
            causation_id: cause.map(Uuid::from_u128),
            headers: std::collections::BTreeMap::new(),
            payload: serde_json::Value::Null,
        }
    }

    #[test]
    fn an_effect_never_precedes_its_cause_even_with_a_skewed_clock() {
        // 3 is caused by 2 but stamped earlier than 2; 4 is unrelated.
        let events = vec![
            event(2, Some(1), 20),
            event(1, None, 10),
            event(3, Some(2), 5),
            event(4, None, 15),
        ];
        let order: Vec<u128> = causal_order(events)
            .iter()
            .map(|e| e.id.as_u128())
            .collect();
        assert_eq!(order, vec![1, 4, 2, 3]);
    }
}
