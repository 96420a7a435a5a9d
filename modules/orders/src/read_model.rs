//! The CQRS read model `order_summaries`: one denormalized line per order (status, item count,
//! total, payment status, the customer's current name and email), kept in the orders module's
//! second database, the read store `orders_read`.
//!
//! A projector follows three sources (orders, customers, payments) through bus subscriptions
//! whose consumer is the read store; one event alone is one or two upserts, a batch of events
//! is applied set-based with a constant number of statements ([`batch`]). Every column group
//! remembers the seq of the event that wrote it, so an older event never overwrites newer data
//! and applying an event twice changes nothing.
//!
//! Rows belong to a *generation*; reads see the active one. A rebuild fills the next generation
//! aside by replaying the sources' logs from the start, then — in one transaction that holds
//! the live subscriptions' checkpoints — catches up with what the live projector has applied
//! and makes it active. Reads keep answering from the old generation until that commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use customers_api::events::{CustomerRegistered, CustomerUpdated};
use orders_api::OrderStatus;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected};
use payments_api::events::{
    PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRefunded, PaymentVoided,
};
use serde::Serialize;
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::messaging::{
    Batch, BatchError, Bus, Envelope, EventLog, Handler, IntegrationEvent, MalformedEvent,
    Subscription, lock_checkpoint,
};
use shared_kernel::storage::{Migrations, ModuleDb, StorageError, Tx, equal_filters};
use shared_kernel::{with_reader, with_tx};
use time::OffsetDateTime;
use tokio::sync::watch;
use utoipa::ToSchema;
use uuid::Uuid;

/// The read store's name: `orders_read.sqlite`, or schema and role `orders_read` on Postgres.
pub const READ_STORE: &str = "orders_read";

/// The projection's name, as `POST /ops/projections/{name}/rebuild` knows it.
pub const PROJECTION: &str = "order_summaries";

/// The read store's migrations: the orders module's own, under `migrations/orders/read/`.
pub static READ_MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("../../migrations/orders/read/sqlite"),
    postgres: sqlx::migrate!("../../migrations/orders/read/postgres"),
};

/// The sources the projector follows, in the order a rebuild replays them.
const SOURCES: [&str; 3] = [
    customers_api::MODULE,
    orders_api::MODULE,
    payments_api::MODULE,
];

/// Events per transaction while a rebuild replays a log.
const REPLAY_BATCH: i64 = 256;

/// The generation a statement writes: the parameter (`$1` unless named) when a rebuild names
/// one, else the active one.
macro_rules! target_generation {
    () => {
        target_generation!("$1")
    };
    ($parameter:literal) => {
        concat!(
            "COALESCE(",
            $parameter,
            ", (SELECT active_generation FROM read_models WHERE name = 'order_summaries'))"
        )
    };
}

/// The upsert of the projector's copy of a customer: newer data only.
macro_rules! on_customer_conflict {
    () => {
        " ON CONFLICT (generation, customer_id) DO UPDATE \
           SET name = excluded.name, email = excluded.email, \
               source_seq = excluded.source_seq, changed_at = excluded.changed_at \
           WHERE summary_customers.source_seq < excluded.source_seq"
    };
}

/// The placeholder of a customer the projector does not know yet (seq 0, no name); on an
/// existing row a no-op that locks it.
macro_rules! on_placeholder_conflict {
    () => {
        " ON CONFLICT (generation, customer_id) DO UPDATE \
           SET source_seq = summary_customers.source_seq"
    };
}

/// The upsert of a placed order's columns: over a row without them (a payment came first) or
/// with older ones.
macro_rules! on_placed_conflict {
    () => {
        " ON CONFLICT (generation, order_id) DO UPDATE \
           SET customer_id = excluded.customer_id, status = excluded.status, \
               item_count = excluded.item_count, total_cents = excluded.total_cents, \
               created_at = excluded.created_at, order_changed_at = excluded.order_changed_at, \
               order_seq = excluded.order_seq, customer_name = excluded.customer_name, \
               customer_email = excluded.customer_email, \
               customer_seq = excluded.customer_seq, \
               customer_changed_at = excluded.customer_changed_at \
           WHERE order_summaries.order_seq IS NULL \
              OR order_summaries.order_seq < excluded.order_seq"
    };
}

/// The upsert of a payment's columns: newer data only; the row may not exist yet.
macro_rules! on_payment_conflict {
    () => {
        " ON CONFLICT (generation, order_id) DO UPDATE \
           SET payment_status = excluded.payment_status, \
               payment_seq = excluded.payment_seq, \
               payment_changed_at = excluded.payment_changed_at \
           WHERE order_summaries.payment_seq IS NULL \
              OR order_summaries.payment_seq < excluded.payment_seq"
    };
}

// After the macros, which it uses.
mod batch;

/// One line of `GET /order-summaries`: eventually consistent with orders, customers and
/// payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderSummary {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// The customer's current name (after a rename too); `null` until customers' event is in.
    pub customer_name: Option<String>,
    pub customer_email: Option<String>,
    pub status: OrderStatus,
    /// Units over all lines of the order.
    pub item_count: i64,
    pub total_cents: i64,
    /// `AUTHORIZED`, `CAPTURED`, `VOIDED`, `REFUNDED` or `DECLINED`; `null` until payments has
    /// answered.
    pub payment_status: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the order, its payment or its customer last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Filter of [`ReadModel::list`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RebuildReport {
    /// The projection, `order_summaries`.
    pub name: String,
    /// The generation now active.
    pub generation: i64,
    /// Events replayed into it, over all sources.
    pub events_replayed: u64,
    /// The seq of each source the new generation was complete up to at the swap.
    pub positions: BTreeMap<String, i64>,
    pub duration_ms: u64,
}

/// Why the read model could not answer or rebuild.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("a rebuild of {PROJECTION} is already running")]
    RebuildRunning,
    #[error("the {0} event log is not readable in this process")]
    SourceUnavailable(&'static str),
    #[error(
        "the {module} log starts at seq {first_seq}: older events were pruned, so a rebuild would lose them"
    )]
    LogPruned {
        module: &'static str,
        first_seq: i64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("projecting an event failed")]
    Projection(#[source] anyhow::Error),
}

/// The read model: queries, the projector's subscriptions and rebuilds.
#[derive(Debug, Clone)]
pub struct ReadModel {
    pub(crate) db: ModuleDb,
    /// Held while a rebuild runs in this process.
    rebuilding: Arc<tokio::sync::Mutex<()>>,
    gate: Arc<Gate>,
}

/// Lets a caller hold rebuilds just before their swap (see [`ReadModel::hold_swaps`]).
#[derive(Debug)]
struct Gate {
    /// How many [`SwapHold`]s exist.
    holds: watch::Sender<u32>,
    /// How many rebuilds wait at the gate.
    waiting: watch::Sender<u32>,
}

/// While it lives, rebuilds stop before swapping in their new generation.
#[derive(Debug)]
pub struct SwapHold {
    gate: Arc<Gate>,
}

impl SwapHold {
    /// Resolves once a rebuild has built its generation and waits for this hold to go.
    pub async fn reached(&self) {
        let mut waiting = self.gate.waiting.subscribe();
        // The sender lives in `gate`, which `self` keeps alive: the wait cannot fail.
        let _ = waiting.wait_for(|n| *n > 0).await;
    }
}

impl Drop for SwapHold {
    fn drop(&mut self) {
        self.gate.holds.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    order_id: Uuid,
    customer_id: Option<Uuid>,
    customer_name: Option<String>,
    customer_email: Option<String>,
    status: Option<String>,
    item_count: Option<i64>,
    total_cents: Option<i64>,
    payment_status: Option<String>,
    created_at: Option<OffsetDateTime>,
    order_changed_at: Option<OffsetDateTime>,
    customer_changed_at: Option<OffsetDateTime>,
    payment_changed_at: Option<OffsetDateTime>,
}

impl SummaryRow {
    /// The summary, or `None` for a row that only holds a payment ahead of its order.
    fn into_summary(self) -> Option<OrderSummary> {
        let created_at = self.created_at?;
        let updated_at = [
            self.order_changed_at,
            self.customer_changed_at,
            self.payment_changed_at,
        ]
        .into_iter()
        .flatten()
        .fold(created_at, OffsetDateTime::max);
        Some(OrderSummary {
            order_id: self.order_id,
            customer_id: self.customer_id?,
            customer_name: self.customer_name,
            customer_email: self.customer_email,
            status: OrderStatus::parse(self.status.as_deref()?)?,
            item_count: self.item_count?,
            total_cents: self.total_cents?,
            payment_status: self.payment_status,
            created_at,
            updated_at,
        })
    }
}

impl ReadModel {
    /// The read model over the read store `db` (opened with [`READ_MIGRATIONS`]).
    pub fn new(db: ModuleDb) -> Self {
        Self {
            db,
            rebuilding: Arc::new(tokio::sync::Mutex::new(())),
            gate: Arc::new(Gate {
                holds: watch::Sender::new(0),
                waiting: watch::Sender::new(0),
            }),
        }
    }

    /// The projector: one subscription per source, consumed by the read store.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        SOURCES
            .into_iter()
            .map(|source| {
                Subscription::named(
                    subscription_name(source),
                    READ_STORE,
                    source,
                    Arc::new(Projector { source }),
                )
            })
            .collect()
    }

    /// A page of summaries of the active generation in order-id order.
    pub async fn list(
        &self,
        filter: SummaryFilter,
        page: PageRequest,
    ) -> Result<Page<OrderSummary>, ReadModelError> {
        let (filters, limit) = equal_filters(
            2,
            &[
                ("customer_id", filter.customer_id.is_some()),
                ("status", filter.status.is_some()),
            ],
        );
        let sql = format!(
            "SELECT order_id, customer_id, customer_name, customer_email, status, item_count, \
                    total_cents, payment_status, created_at, order_changed_at, \
                    customer_changed_at, payment_changed_at \
             FROM order_summaries \
             WHERE generation = \
                     (SELECT active_generation FROM read_models WHERE name = 'order_summaries') \
               AND status IS NOT NULL AND order_id > $1{filters} \
             ORDER BY order_id LIMIT ${limit}"
        );
        let rows: Vec<SummaryRow> = with_reader!(self.db.reader()?, |pool| {
            // Only placeholders are generated; every value is bound.
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(page.after.unwrap_or(Uuid::nil()));
            if let Some(customer_id) = filter.customer_id {
                query = query.bind(customer_id);
            }
            if let Some(status) = filter.status {
                query = query.bind(status.as_str());
            }
            query.bind(i64::from(page.limit) + 1).fetch_all(pool).await
        })
        .map_err(|e| self.db.classify(e))?;
        let summaries = rows
            .into_iter()
            .filter_map(SummaryRow::into_summary)
            .collect();
        Ok(Page::from_rows(summaries, page, |s| s.order_id))
    }

    /// Holds every rebuild of this process just before its swap until the returned guard is
    /// dropped: the new generation is complete but not active yet. For tests (reads during a
    /// rebuild) and for inspecting a rebuild before it goes live.
    pub fn hold_swaps(&self) -> SwapHold {
        self.gate.holds.send_modify(|n| *n += 1);
        SwapHold {
            gate: Arc::clone(&self.gate),
        }
    }

    /// Rebuilds the projection from the sources' logs, aside, then swaps it in; reads keep
    /// answering from the current generation meanwhile. A second rebuild while one runs is
    /// refused with [`ReadModelError::RebuildRunning`].
    pub async fn rebuild(&self, bus: &Bus) -> Result<RebuildReport, ReadModelError> {
        let Ok(_running) = self.rebuilding.try_lock() else {
            return Err(ReadModelError::RebuildRunning);
        };
        let started = Instant::now();
        let logs = SOURCES
            .into_iter()
            .map(|source| {
                bus.log(source)
                    .map(|log| (source, log))
                    .ok_or(ReadModelError::SourceUnavailable(source))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (old, generation) = self.start_generation().await?;
        tracing::info!(
            projection = PROJECTION,
            generation,
            "Rebuilding the read model aside."
        );

        let mut replayed = 0;
        let mut positions = BTreeMap::new();
        for (source, log) in &logs {
            let mut position = 0;
            loop {
                let events = read(log.as_ref(), position).await?;
                if position == 0
                    && let Some(first) = events.first()
                    && first.seq > 1
                {
                    return Err(ReadModelError::LogPruned {
                        module: source,
                        first_seq: first.seq,
                    });
                }
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                let mut tx = self.db.begin().await?;
                let batch: Vec<&Envelope> = events.iter().collect();
                batch::apply(&mut tx, Some(generation), &batch)
                    .await
                    .map_err(|e| ReadModelError::Projection(e.error))?;
                tx.commit().await.map_err(|e| self.db.classify(e))?;
                replayed += events.len() as u64;
                position = last;
            }
            positions.insert(*source, position);
        }

        self.gate.pass().await;

        // The swap: with the live subscriptions' checkpoints held, apply what they have applied
        // beyond the replay, then make the new generation the active one.
        let mut tx = self.db.begin().await?;
        for (source, log) in &logs {
            let live = match lock_checkpoint(&mut tx, &subscription_name(source)).await {
                Ok(seq) => seq,
                Err(sqlx::Error::RowNotFound) => 0,
                Err(e) => return Err(self.db.classify(e).into()),
            };
            let position = positions.entry(*source).or_insert(0);
            while *position < live {
                let events = read(log.as_ref(), *position).await?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                let batch: Vec<&Envelope> = events.iter().filter(|e| e.seq <= live).collect();
                batch::apply(&mut tx, Some(generation), &batch)
                    .await
                    .map_err(|e| ReadModelError::Projection(e.error))?;
                replayed += batch.len() as u64;
                *position = last.min(live);
            }
        }
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE read_models SET active_generation = $1, building_generation = NULL \
                 WHERE name = 'order_summaries'",
            )
            .bind(generation)
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(|e| self.db.classify(e))?;
        tx.commit().await.map_err(|e| self.db.classify(e))?;
        self.drop_generations(|g| g == old).await?;

        let report = RebuildReport {
            name: PROJECTION.to_owned(),
            generation,
            events_replayed: replayed,
            positions: positions
                .into_iter()
                .map(|(source, seq)| (source.to_owned(), seq))
                .collect(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        tracing::info!(
            projection = PROJECTION,
            generation,
            events = replayed,
            duration_ms = report.duration_ms,
            "Read model rebuilt and swapped in."
        );
        metrics::counter!("bounded_projection_rebuilds_total", "projection" => PROJECTION)
            .increment(1);
        Ok(report)
    }

    /// Registers the next generation as being built, clearing what an abandoned rebuild
    /// left; returns the active generation and the new one.
    async fn start_generation(&self) -> Result<(i64, i64), ReadModelError> {
        let mut tx = self.db.begin().await?;
        let (active, building): (i64, Option<i64>) = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT active_generation, building_generation FROM read_models \
                 WHERE name = 'order_summaries'",
            )
            .fetch_one(conn)
            .await
        })
        .map_err(|e| self.db.classify(e))?;
        let generation = active.max(building.unwrap_or(0)) + 1;
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "UPDATE read_models SET building_generation = $1 WHERE name = 'order_summaries'",
            )
            .bind(generation)
            .execute(conn)
            .await
            .map(drop)
        })
        .map_err(|e| self.db.classify(e))?;
        tx.commit().await.map_err(|e| self.db.classify(e))?;
        self.drop_generations(|g| g != active).await?;
        Ok((active, generation))
    }

    /// Deletes the rows of every generation `doomed` picks among those present.
    async fn drop_generations(&self, doomed: impl Fn(i64) -> bool) -> Result<(), ReadModelError> {
        let mut tx = self.db.begin().await?;
        let generations: Vec<(i64,)> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT DISTINCT generation FROM order_summaries \
                 UNION SELECT DISTINCT generation FROM summary_customers",
            )
            .fetch_all(conn)
            .await
        })
        .map_err(|e| self.db.classify(e))?;
        for (generation,) in generations.into_iter().filter(|(g,)| doomed(*g)) {
            with_tx!(&mut tx, |conn| {
                sqlx::query("DELETE FROM order_summaries WHERE generation = $1")
                    .bind(generation)
                    .execute(&mut *conn)
                    .await
                    .map_err(StorageError::from)?;
                sqlx::query("DELETE FROM summary_customers WHERE generation = $1")
                    .bind(generation)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(StorageError::from)
            })?;
        }
        tx.commit().await.map_err(|e| self.db.classify(e))?;
        Ok(())
    }
}

impl Gate {
    /// Waits while a [`SwapHold`] exists.
    async fn pass(&self) {
        self.waiting.send_modify(|n| *n += 1);
        let mut holds = self.holds.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = holds.wait_for(|n| *n == 0).await;
        self.waiting.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// `order_summaries<-orders` and so on.
fn subscription_name(source: &str) -> String {
    format!("{PROJECTION}<-{source}")
}

async fn read(log: &dyn EventLog, after: i64) -> Result<Vec<Envelope>, ReadModelError> {
    log.read_after(after, REPLAY_BATCH)
        .await
        .map_err(|_| ReadModelError::SourceUnavailable(log.source()))
}

/// The live projector of one source: writes the active generation. Not a module's handler of
/// another module's events (those are the modules' `handlers::<Source>Events`): one type for
/// the three sources, consumed by the read store (`order_summaries<-<source>`).
#[derive(Debug)]
struct Projector {
    source: &'static str,
}

#[async_trait]
impl Handler for Projector {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        project(tx, None, event).await
    }

    /// Set-based: one statement per column group for the whole batch ([`batch`]), with the
    /// effects of [`project`] applied event by event.
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        batch::apply(tx, None, batch.events()).await
    }

    /// Cheaper than `handle` even for one event.
    fn set_based(&self) -> bool {
        true
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        match self.source {
            customers_api::MODULE => Some(customers_api::events::TYPES),
            orders_api::MODULE => Some(orders_api::events::TYPES),
            payments_api::MODULE => Some(payments_api::events::TYPES),
            _ => None,
        }
    }

    /// The projector's three batches lock summary and customer rows in data order; serialized,
    /// they cannot deadlock on Postgres and park events.
    fn serialized(&self) -> bool {
        true
    }
}

/// What one event changes in the read model.
#[derive(Debug)]
enum Change {
    /// A customer registered or changed.
    Customer {
        customer_id: Uuid,
        name: String,
        email: String,
    },
    /// An order was placed.
    Placed(Placed),
    /// An order moved on (confirmed, rejected, cancelled).
    Status { order_id: Uuid, status: OrderStatus },
    /// An order's payment moved on.
    Payment {
        order_id: Uuid,
        status: &'static str,
    },
}

impl Change {
    /// The change `event` makes, or `None` for an event the projector does not follow.
    fn decode(event: &Envelope) -> Option<Result<Self, MalformedEvent>> {
        fn as_change<E: IntegrationEvent>(
            event: &Envelope,
            change: impl FnOnce(E) -> Change,
        ) -> Option<Result<Change, MalformedEvent>> {
            event.decode::<E>().map(|e| e.map(change))
        }
        let status = |order_id: Uuid, status| Change::Status { order_id, status };
        let payment = |order_id: Uuid, status| Change::Payment { order_id, status };
        as_change(event, |e: CustomerRegistered| Change::Customer {
            customer_id: e.customer_id.0,
            name: e.name,
            email: e.email,
        })
        .or_else(|| {
            as_change(event, |e: CustomerUpdated| Change::Customer {
                customer_id: e.customer_id.0,
                name: e.name,
                email: e.email,
            })
        })
        .or_else(|| {
            as_change(event, |e: OrderPlaced| {
                Change::Placed(Placed {
                    order_id: e.order_id.0,
                    customer_id: e.customer_id,
                    item_count: e.lines.iter().map(|l| l.quantity).sum(),
                    total_cents: e.total_cents,
                })
            })
        })
        .or_else(|| {
            as_change(event, |e: OrderConfirmed| {
                status(e.order_id.0, OrderStatus::Confirmed)
            })
        })
        .or_else(|| {
            as_change(event, |e: OrderRejected| {
                status(e.order_id.0, OrderStatus::Rejected)
            })
        })
        .or_else(|| {
            as_change(event, |e: OrderCancelled| {
                status(e.order_id.0, OrderStatus::Cancelled)
            })
        })
        .or_else(|| {
            as_change(event, |e: PaymentAuthorized| {
                payment(e.order_id, "AUTHORIZED")
            })
        })
        .or_else(|| as_change(event, |e: PaymentDeclined| payment(e.order_id, "DECLINED")))
        .or_else(|| as_change(event, |e: PaymentCaptured| payment(e.order_id, "CAPTURED")))
        .or_else(|| as_change(event, |e: PaymentVoided| payment(e.order_id, "VOIDED")))
        .or_else(|| as_change(event, |e: PaymentRefunded| payment(e.order_id, "REFUNDED")))
    }
}

/// Applies one event to `generation` (the active one when `None`); other events are ignored.
async fn project(tx: &mut Tx, generation: Option<i64>, event: &Envelope) -> anyhow::Result<()> {
    let Some(change) = Change::decode(event) else {
        return Ok(());
    };
    match change? {
        Change::Customer {
            customer_id,
            name,
            email,
        } => customer(tx, generation, event, customer_id, &name, &email).await?,
        Change::Placed(p) => placed(tx, generation, event, p).await?,
        Change::Status { order_id, status } => {
            order_status(tx, generation, event, order_id, status).await?;
        }
        Change::Payment { order_id, status } => {
            payment(tx, generation, event, order_id, status).await?;
        }
    }
    Ok(())
}

/// A customer registered or changed: the projector's copy, then every summary of theirs.
async fn customer(
    tx: &mut Tx,
    generation: Option<i64>,
    event: &Envelope,
    customer_id: Uuid,
    name: &str,
    email: &str,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(concat!(
            "INSERT INTO summary_customers \
               (generation, customer_id, name, email, source_seq, changed_at) \
             VALUES (",
            target_generation!(),
            ", $2, $3, $4, $5, $6)",
            on_customer_conflict!()
        ))
        .bind(generation)
        .bind(customer_id)
        .bind(name)
        .bind(email)
        .bind(event.seq)
        .bind(event.occurred_at)
        .execute(&mut *conn)
        .await?;
        sqlx::query(concat!(
            "UPDATE order_summaries \
             SET customer_name = $3, customer_email = $4, customer_seq = $5, \
                 customer_changed_at = $6 \
             WHERE generation = ",
            target_generation!(),
            " AND customer_id = $2 AND (customer_seq IS NULL OR customer_seq < $5)"
        ))
        .bind(generation)
        .bind(customer_id)
        .bind(name)
        .bind(email)
        .bind(event.seq)
        .bind(event.occurred_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// What a placement puts in its order's summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placed {
    order_id: Uuid,
    customer_id: Uuid,
    item_count: i64,
    total_cents: i64,
}

/// An order was placed: its summary, with the customer's name if the projector knows it.
async fn placed(
    tx: &mut Tx,
    generation: Option<i64>,
    event: &Envelope,
    placed: Placed,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        // Lock the customer's row (a placeholder if the customer is not known yet) first, as
        // the customer's events do: a concurrent rename then either sees this order's row or
        // commits before this order reads the name.
        sqlx::query(concat!(
            "INSERT INTO summary_customers (generation, customer_id, source_seq) VALUES (",
            target_generation!(),
            ", $2, 0)",
            on_placeholder_conflict!()
        ))
        .bind(generation)
        .bind(placed.customer_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO order_summaries \
               (generation, order_id, customer_id, status, item_count, total_cents, created_at, \
                order_changed_at, order_seq, customer_name, customer_email, customer_seq, \
                customer_changed_at) \
             SELECT g.generation, $2, $3, 'PENDING', $4, $5, $6, $6, $7, \
                    c.name, c.email, c.source_seq, c.changed_at \
             FROM (SELECT ",
            target_generation!(),
            " AS generation) g \
             LEFT JOIN summary_customers c \
               ON c.generation = g.generation AND c.customer_id = $3 \
             WHERE true",
            on_placed_conflict!()
        ))
        .bind(generation)
        .bind(placed.order_id)
        .bind(placed.customer_id)
        .bind(placed.item_count)
        .bind(placed.total_cents)
        .bind(event.occurred_at)
        .bind(event.seq)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// The order moved on (confirmed, rejected, cancelled).
async fn order_status(
    tx: &mut Tx,
    generation: Option<i64>,
    event: &Envelope,
    order_id: Uuid,
    status: OrderStatus,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(concat!(
            "UPDATE order_summaries SET status = $3, order_changed_at = $4, order_seq = $5 \
             WHERE generation = ",
            target_generation!(),
            " AND order_id = $2 AND order_seq < $5"
        ))
        .bind(generation)
        .bind(order_id)
        .bind(status.as_str())
        .bind(event.occurred_at)
        .bind(event.seq)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// The order's payment moved on; it may arrive before the order itself.
async fn payment(
    tx: &mut Tx,
    generation: Option<i64>,
    event: &Envelope,
    order_id: Uuid,
    status: &str,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(concat!(
            "INSERT INTO order_summaries \
               (generation, order_id, payment_status, payment_seq, payment_changed_at) \
             VALUES (",
            target_generation!(),
            ", $2, $3, $4, $5)",
            on_payment_conflict!()
        ))
        .bind(generation)
        .bind(order_id)
        .bind(status)
        .bind(event.seq)
        .bind(event.occurred_at)
        .execute(conn)
        .await
        .map(drop)
    })
}
