//! The order saga, orchestrated by orders: participants' replies, the deadline and
//! cancellation move an order out of `PENDING`, each transition committing together with the
//! step it records and the outbox event it publishes.
//!
//! Every transition (a reply recorded, a settlement, an expiry, a cancel) runs in a `tracing`
//! span carrying `order.id` and the `correlation_id` of the request or event that caused it.
//!
//! Every transition first locks the order's row (Postgres; the single SQLite writer serializes
//! anyway), then re-reads its state: a reply, the timer and a cancel racing for one order are
//! applied one after the other, and whichever comes second sees a settled order. Late and
//! duplicate replies are recorded as steps and change nothing.
//!
//! What a transition does to a saga is decided in memory ([`Locked::reply`],
//! [`Locked::settle`]) and then written: one transition at a time here, a subscription batch
//! of replies set-based in [`batch`], both through the same decisions.

mod batch;

use std::time::Duration;

use anyhow::Context as _;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderRejected};
use orders_api::{OrderId, OrderStatus, OrdersError, Participant, Reason};
use shared_kernel::clock;
use shared_kernel::messaging::EventContext;
use shared_kernel::messaging::outbox::{self, Outgoing};
use shared_kernel::storage::{ModuleDb, Tx, TxConn};
use shared_kernel::{with_reader, with_tx};
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) use batch::apply_replies;

/// Unix microseconds: how deadlines are stored, comparable on both backends.
pub(crate) fn unix_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_unix_micros(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The steps a saga records (`saga_steps.step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Placed,
    StockReserved,
    StockReservationFailed,
    PaymentAuthorized,
    PaymentDeclined,
    Confirmed,
    Rejected,
    TimedOut,
    Cancelled,
}

impl Step {
    /// The stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Step::Placed => "placed",
            Step::StockReserved => "stock_reserved",
            Step::StockReservationFailed => "stock_reservation_failed",
            Step::PaymentAuthorized => "payment_authorized",
            Step::PaymentDeclined => "payment_declined",
            Step::Confirmed => "confirmed",
            Step::Rejected => "rejected",
            Step::TimedOut => "timed_out",
            Step::Cancelled => "cancelled",
        }
    }
}

/// The participant a reply comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Party {
    Stock,
    Payment,
}

/// A participant's reply about an order, as its event says it.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub order_id: Uuid,
    pub party: Party,
    pub succeeded: bool,
    /// What the reply's step records (allocations, the payment, why it failed).
    pub detail: Option<String>,
}

/// The columns of a [`LockedRow`], over `orders o JOIN sagas s ON s.order_id = o.id`.
macro_rules! locked_columns {
    () => {
        "o.status, s.stock, s.payment, s.deadline_us, s.steps, o.created_at"
    };
}
use locked_columns;

/// An order's saga as stored: status, stock, payment, deadline, steps, created at.
type LockedRow = (String, String, String, i64, i32, OffsetDateTime);

/// The saga of one order as locked for a transition.
#[derive(Debug)]
struct Locked {
    status: OrderStatus,
    stock: Participant,
    payment: Participant,
    deadline_us: i64,
    steps: i32,
    created_at: OffsetDateTime,
}

/// A reply applied to a saga in memory: the step it records and, when it settles the saga,
/// the settlement.
#[derive(Debug)]
struct Replied {
    n: i32,
    step: Step,
    detail: Option<String>,
    settlement: Option<Settlement>,
}

/// A settlement decided in memory: the order moves `from` → `to` (with `reason`), recorded as
/// step `n`.
#[derive(Debug)]
struct Settlement {
    from: OrderStatus,
    to: OrderStatus,
    reason: Option<Reason>,
    n: i32,
    step: Step,
}

impl Locked {
    fn from_row(row: LockedRow) -> anyhow::Result<Self> {
        let (status, stock, payment, deadline_us, steps, created_at) = row;
        let status = OrderStatus::parse(&status).context("stored order has an unknown status")?;
        let participant = |value: &str| {
            Participant::parse(value).context("stored saga has an unknown participant state")
        };
        Ok(Self {
            status,
            stock: participant(&stock)?,
            payment: participant(&payment)?,
            deadline_us,
            steps,
            created_at,
        })
    }

    /// Applies `reply`: a late one (the saga has an outcome) or a duplicate (this participant
    /// answered already) is a step that changes nothing else; otherwise the participant's
    /// answer is recorded, and a failure of either or the success of both settles the saga.
    fn reply(&mut self, reply: Reply) -> Replied {
        let step = match (reply.party, reply.succeeded) {
            (Party::Stock, true) => Step::StockReserved,
            (Party::Stock, false) => Step::StockReservationFailed,
            (Party::Payment, true) => Step::PaymentAuthorized,
            (Party::Payment, false) => Step::PaymentDeclined,
        };
        let answered = match reply.party {
            Party::Stock => self.stock != Participant::Waiting,
            Party::Payment => self.payment != Participant::Waiting,
        };
        self.steps += 1;
        let n = self.steps;
        if self.status != OrderStatus::Pending || answered {
            let why = if self.status == OrderStatus::Pending {
                "duplicate reply ignored".to_owned()
            } else {
                format!("late reply ignored: order is {}", self.status.as_str())
            };
            return Replied {
                n,
                step,
                detail: Some(why),
                settlement: None,
            };
        }
        let answer = if reply.succeeded {
            Participant::Succeeded
        } else {
            Participant::Failed
        };
        match reply.party {
            Party::Stock => self.stock = answer,
            Party::Payment => self.payment = answer,
        }
        let outcome = match (self.stock, self.payment) {
            (Participant::Failed, _) => Some((OrderStatus::Rejected, Some(Reason::OutOfStock))),
            (_, Participant::Failed) => {
                Some((OrderStatus::Rejected, Some(Reason::PaymentDeclined)))
            }
            (Participant::Succeeded, Participant::Succeeded) => {
                Some((OrderStatus::Confirmed, None))
            }
            _ => None,
        };
        Replied {
            n,
            step,
            detail: reply.detail,
            settlement: outcome.map(|(to, reason)| self.settle(to, reason)),
        }
    }

    /// Moves the saga to `to`, with the step that records it.
    fn settle(&mut self, to: OrderStatus, reason: Option<Reason>) -> Settlement {
        let from = self.status;
        self.status = to;
        self.steps += 1;
        let step = match (to, reason) {
            (OrderStatus::Confirmed, _) => Step::Confirmed,
            (OrderStatus::Cancelled, _) => Step::Cancelled,
            (_, Some(Reason::Timeout)) => Step::TimedOut,
            _ => Step::Rejected,
        };
        Settlement {
            from,
            to,
            reason,
            n: self.steps,
            step,
        }
    }
}

impl Settlement {
    /// The event the settlement publishes, with `context`.
    fn event(&self, order_id: Uuid, context: &EventContext) -> anyhow::Result<Outgoing> {
        let order_id = OrderId(order_id);
        Ok(match self.to {
            OrderStatus::Confirmed => Outgoing::new(&OrderConfirmed { order_id }, context)?,
            OrderStatus::Cancelled => Outgoing::new(&OrderCancelled { order_id }, context)?,
            OrderStatus::Rejected => {
                let reason = self.reason.context("a rejection has a reason")?;
                Outgoing::new(&OrderRejected { order_id, reason }, context)?
            }
            OrderStatus::Pending => anyhow::bail!("a saga never returns to PENDING"),
        })
    }

    /// Counts the saga's outcome and its duration (from `created_at` to `now`), once: when it
    /// leaves `PENDING`.
    fn count(&self, created_at: OffsetDateTime, now: OffsetDateTime) {
        if self.from != OrderStatus::Pending {
            return;
        }
        let outcome = match self.to {
            OrderStatus::Rejected => self.reason.map_or("rejected", Reason::as_str),
            OrderStatus::Confirmed => "confirmed",
            _ => "cancelled",
        };
        metrics::counter!("bounded_saga_outcomes_total", "outcome" => outcome).increment(1);
        let seconds = (now - created_at).as_seconds_f64();
        metrics::histogram!("bounded_saga_duration_seconds", "outcome" => outcome).record(seconds);
    }
}

/// Locks the order for a transition. Two subscription batches (stock and payment replies), the
/// timer and cancel each lock orders, a batch many of them in order id order, so they never
/// wait for each other in opposite orders; what they publish is written at commit, under the
/// outbox lock each takes last (see `outbox::append_many`).
async fn lock(tx: &mut Tx, order_id: Uuid) -> anyhow::Result<Option<Locked>> {
    let sql = match tx.conn {
        TxConn::Sqlite(_) => concat!(
            "SELECT ",
            locked_columns!(),
            " FROM orders o JOIN sagas s ON s.order_id = o.id WHERE o.id = $1"
        ),
        TxConn::Postgres(_) => concat!(
            "SELECT ",
            locked_columns!(),
            " FROM orders o JOIN sagas s ON s.order_id = o.id WHERE o.id = $1 FOR UPDATE"
        ),
    };
    let row: Option<LockedRow> = with_tx!(tx, |conn| {
        sqlx::query_as(sql)
            .bind(order_id)
            .fetch_optional(conn)
            .await
    })?;
    row.map(Locked::from_row).transpose()
}

/// The insert of saga steps up to its rows, in the order of every path's binds: one step
/// ([`record_step`]) or many ([`insert_steps`]).
macro_rules! insert_steps_into {
    () => {
        "INSERT INTO saga_steps (order_id, n, step, detail, at)"
    };
}

/// Appends step `n` to the order's saga history.
pub(crate) async fn record_step(
    tx: &mut Tx,
    order_id: Uuid,
    n: i32,
    step: Step,
    detail: Option<&str>,
    at: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(concat!(
            insert_steps_into!(),
            " VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(order_id)
        .bind(n)
        .bind(step.as_str())
        .bind(detail)
        .bind(at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// One step to record: order, n, step, detail, at.
pub(crate) type NewStep = (Uuid, i32, Step, Option<String>, OffsetDateTime);

/// Appends `steps` to their sagas' histories with a number of statements that does not grow
/// with them: what [`record_step`] does for each, for a batch of replies ([`batch`]) or a group
/// of placements (`crate::placement`). Postgres binds one array per column (`UNNEST`), so one
/// SQL text serves every size; SQLite gets multi-row `VALUES`, split only beyond
/// [`shared_kernel::storage::bulk::MAX_BINDS`] parameters.
pub(crate) async fn insert_steps(tx: &mut Tx, steps: &[NewStep]) -> Result<(), sqlx::Error> {
    if steps.is_empty() {
        return Ok(());
    }
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            let orders: Vec<Uuid> = steps.iter().map(|s| s.0).collect();
            let ns: Vec<i32> = steps.iter().map(|s| s.1).collect();
            let names: Vec<&str> = steps.iter().map(|s| s.2.as_str()).collect();
            let details: Vec<Option<&str>> = steps.iter().map(|s| s.3.as_deref()).collect();
            let at: Vec<OffsetDateTime> = steps.iter().map(|s| s.4).collect();
            sqlx::query(concat!(
                insert_steps_into!(),
                " SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::text[], \
                   $5::timestamptz[])"
            ))
            .bind(orders)
            .bind(ns)
            .bind(names)
            .bind(details)
            .bind(at)
            .execute(&mut **conn)
            .await
            .map(drop)
        }
        TxConn::Sqlite(_) => {
            shared_kernel::bulk_insert!(tx, insert_steps_into!(), 5, steps, |q, step| q
                .bind(step.0)
                .bind(step.1)
                .bind(step.2.as_str())
                .bind(step.3.as_deref())
                .bind(step.4))
        }
    }
}

/// Writes the saga row after a transition: participants, step count, settled or not.
async fn save(
    tx: &mut Tx,
    order_id: Uuid,
    saga: &Locked,
    settled_at: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE sagas SET stock = $2, payment = $3, steps = $4, \
               settled_at = COALESCE(settled_at, $5) WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(saga.stock.as_str())
        .bind(saga.payment.as_str())
        .bind(saga.steps)
        .bind(settled_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// The correlation id of the request or event being handled, for a transition's span.
fn correlation_id() -> Option<tracing::field::DisplayValue<Uuid>> {
    EventContext::current()
        .correlation_id
        .map(tracing::field::display)
}

/// Writes `settlement` of the order's `saga` (settled in memory already): the order's new
/// status (from the status it was locked in), the step, the saga row, the event.
#[tracing::instrument(name = "saga.settle", skip_all, fields(order.id = %order_id, correlation_id = correlation_id(), to = settlement.to.as_str()))]
async fn write_settlement(
    tx: &mut Tx,
    order_id: Uuid,
    saga: &Locked,
    settlement: &Settlement,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let Settlement {
        from, to, reason, ..
    } = *settlement;
    let moved = with_tx!(tx, |conn| {
        sqlx::query(
            "UPDATE orders SET status = $2, reason = $3, updated_at = $4 \
             WHERE id = $1 AND status = $5",
        )
        .bind(order_id)
        .bind(to.as_str())
        .bind(reason.map(Reason::as_str))
        .bind(now)
        .bind(from.as_str())
        .execute(conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    anyhow::ensure!(moved == 1, "order {order_id} left {from:?} under a lock");
    record_step(
        tx,
        order_id,
        settlement.n,
        settlement.step,
        reason.map(Reason::as_str),
        now,
    )
    .await?;
    save(tx, order_id, saga, Some(now)).await?;
    let event = settlement.event(order_id, &EventContext::current())?;
    outbox::append_many(tx, [event]);
    settlement.count(saga.created_at, now);
    Ok(())
}

/// Applies a participant's reply to the order's saga.
#[tracing::instrument(name = "saga.reply", skip_all, fields(order.id = %reply.order_id, correlation_id = correlation_id(), party = ?reply.party, succeeded = reply.succeeded))]
pub(crate) async fn on_reply(tx: &mut Tx, reply: Reply) -> anyhow::Result<()> {
    let now = clock::now();
    let order_id = reply.order_id;
    let Some(mut saga) = lock(tx, order_id).await? else {
        unknown_order(&reply);
        return Ok(());
    };
    let replied = saga.reply(reply);
    let detail = replied.detail.as_deref();
    record_step(tx, order_id, replied.n, replied.step, detail, now).await?;
    match &replied.settlement {
        Some(settlement) => write_settlement(tx, order_id, &saga, settlement, now).await,
        None => Ok(save(tx, order_id, &saga, None).await?),
    }
}

/// Only orders publishes the orders participants reply to; an unknown order is a reply to
/// someone else's order id, which changes nothing here.
fn unknown_order(reply: &Reply) {
    let (order_id, party) = (reply.order_id, reply.party);
    tracing::warn!(%order_id, ?party, "Reply for an unknown order ignored.");
}

/// Rejects the order with `timeout` if its saga is still open at `now`.
#[tracing::instrument(name = "saga.expire", skip_all, fields(order.id = %order_id, correlation_id = correlation_id()))]
pub(crate) async fn expire(tx: &mut Tx, order_id: Uuid, now: OffsetDateTime) -> anyhow::Result<()> {
    let Some(mut saga) = lock(tx, order_id).await? else {
        return Ok(());
    };
    if saga.status != OrderStatus::Pending || saga.deadline_us > unix_micros(now) {
        return Ok(());
    }
    let deadline = from_unix_micros(saga.deadline_us)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    tracing::info!(%order_id, deadline, "Saga deadline passed; rejecting the order with timeout.");
    let settlement = saga.settle(OrderStatus::Rejected, Some(Reason::Timeout));
    write_settlement(tx, order_id, &saga, &settlement, now).await
}

/// What a cancel request found.
pub(crate) enum Cancel {
    NotFound,
    Rejected,
    AlreadyCancelled,
    Cancelled,
}

/// Cancels a `PENDING` or `CONFIRMED` order.
#[tracing::instrument(name = "saga.cancel", skip_all, fields(order.id = %order_id, correlation_id = correlation_id()))]
pub(crate) async fn cancel(
    tx: &mut Tx,
    order_id: Uuid,
    now: OffsetDateTime,
) -> anyhow::Result<Cancel> {
    let locked = lock(tx, order_id).await?;
    let Some(mut saga) = locked else {
        return Ok(Cancel::NotFound);
    };
    match saga.status {
        OrderStatus::Rejected => Ok(Cancel::Rejected),
        OrderStatus::Cancelled => Ok(Cancel::AlreadyCancelled),
        OrderStatus::Pending | OrderStatus::Confirmed => {
            let settlement = saga.settle(OrderStatus::Cancelled, Some(Reason::Cancelled));
            write_settlement(tx, order_id, &saga, &settlement, now).await?;
            Ok(Cancel::Cancelled)
        }
    }
}

/// A saga transition's failure: a storage error is classified as such (unavailable or
/// unexpected), anything else is unexpected.
pub(crate) fn transition_error(db: &ModuleDb, error: anyhow::Error) -> OrdersError {
    match error.downcast::<sqlx::Error>() {
        Ok(e) => db.classify(e).into(),
        Err(other) => OrdersError::Unexpected(other.into()),
    }
}

/// The saga's deadline timer over the orders database `db`.
#[derive(Debug, Clone)]
pub(crate) struct Deadlines {
    pub db: ModuleDb,
}

impl Deadlines {
    fn storage(&self, error: sqlx::Error) -> OrdersError {
        self.db.classify(error).into()
    }

    /// Rejects every open saga whose deadline has passed; returns the next deadline (Unix µs).
    pub(crate) async fn expire_due(&self) -> Result<Option<i64>, OrdersError> {
        loop {
            let now = clock::now();
            let due: Vec<(Uuid,)> = with_reader!(self.db.reader()?, |pool| {
                sqlx::query_as(
                    "SELECT order_id FROM sagas WHERE settled_at IS NULL AND deadline_us <= $1 \
                     ORDER BY deadline_us LIMIT 100",
                )
                .bind(unix_micros(now))
                .fetch_all(pool)
                .await
            })
            .map_err(|e| self.storage(e))?;
            if due.is_empty() {
                break;
            }
            for (order_id,) in due {
                let mut tx = self.db.begin().await?;
                expire(&mut tx, order_id, now)
                    .await
                    .map_err(|e| transition_error(&self.db, e))?;
                tx.commit().await.map_err(|e| self.storage(e))?;
            }
        }
        let next: (Option<i64>,) = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as("SELECT MIN(deadline_us) FROM sagas WHERE settled_at IS NULL")
                .fetch_one(pool)
                .await
        })
        .map_err(|e| self.storage(e))?;
        Ok(next.0)
    }

    /// The durable saga timer: rejects open sagas at their deadline until `stop` turns true.
    /// Deadlines live in the database, so sagas left open by a stopped or crashed process are
    /// expired by the next one; on Postgres several processes may run it (each expiry locks
    /// its order and re-checks it).
    pub(crate) async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut commits = self.db.outbox_commits();
        let poll = Duration::from_secs(1);
        while !*stop.borrow() {
            commits.mark_unchanged();
            let next = match self.expire_due().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(error = %error, "Saga timer cannot reach the orders database.");
                    None
                }
            };
            match next {
                // Sagas are open: sleep until the earliest deadline (at most the poll). A saga
                // placed meanwhile has a later deadline, so commits need not wake the timer —
                // under load that would be two queries per placement.
                Some(next) => {
                    let in_us = next.saturating_sub(unix_micros(clock::now()));
                    let wait = Duration::from_micros(u64::try_from(in_us).unwrap_or(0)).min(poll);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => {}
                    }
                }
                // None open: the next placement's commit starts the clock.
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(poll) => {}
                        _ = commits.changed() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod span_tests {
    use std::sync::{Arc, Mutex};

    use shared_kernel::storage::testing::on_each_backend;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    /// A span's name and its recorded fields (name, value).
    type Opened = (String, Vec<(String, String)>);

    /// Every span opened.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<Opened>>>);

    struct Fields(Vec<(String, String)>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            let mut fields = Fields(Vec::new());
            attrs.record(&mut fields);
            let name = attrs.metadata().name().to_owned();
            self.0.lock().unwrap().push((name, fields.0));
        }
    }

    /// A cancel runs in a span naming the order and the correlation of its request.
    #[tokio::test]
    async fn a_transition_runs_in_a_span_with_the_order_and_correlation_ids() {
        let dir = tempfile::tempdir().unwrap();
        on_each_backend(
            crate::NAME,
            &crate::MIGRATIONS,
            dir.path(),
            |db| async move {
                let spans = Spans::default();
                let _default = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(spans.clone()),
                );
                let (order_id, correlation_id) = (Uuid::now_v7(), Uuid::now_v7());
                let context = EventContext {
                    correlation_id: Some(correlation_id),
                    ..EventContext::default()
                };
                let mut tx = db.begin().await.unwrap();
                let cancelled = context.scope(cancel(&mut tx, order_id, clock::now())).await;
                assert!(matches!(cancelled, Ok(Cancel::NotFound)));
                let spans = spans.0.lock().unwrap().clone();
                let expected = vec![
                    ("order.id".to_owned(), order_id.to_string()),
                    ("correlation_id".to_owned(), correlation_id.to_string()),
                ];
                assert_eq!(spans, [("saga.cancel".to_owned(), expected)]);
            },
        )
        .await;
    }

    /// A reply runs in the same `saga.reply` span one by one (its context set by the kernel)
    /// and in a set-based batch (its context taken from its event).
    #[tokio::test]
    async fn a_reply_runs_in_the_same_span_one_by_one_and_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        on_each_backend(
            crate::NAME,
            &crate::MIGRATIONS,
            dir.path(),
            |db| async move {
                let spans = Spans::default();
                let _default = tracing::subscriber::set_default(
                    tracing_subscriber::registry().with(spans.clone()),
                );
                let order_id = Uuid::now_v7();
                let event = shared_kernel::messaging::Envelope {
                    id: Uuid::now_v7(),
                    source: "payments".into(),
                    seq: 1,
                    aggregate_type: "payment".into(),
                    aggregate_id: Uuid::now_v7().to_string(),
                    event_type: "payments.PaymentAuthorized".into(),
                    event_version: 1,
                    occurred_at: clock::now(),
                    correlation_id: Some(Uuid::now_v7()),
                    causation_id: None,
                    headers: std::collections::BTreeMap::new(),
                    payload: serde_json::Value::Null,
                };
                let reply = || Reply {
                    order_id,
                    party: Party::Payment,
                    succeeded: true,
                    detail: None,
                };
                let mut tx = db.begin().await.unwrap();
                let correlation_id = event.correlation_id.unwrap();
                EventContext::caused_by(&event)
                    .scope(on_reply(&mut tx, reply()))
                    .await
                    .unwrap();
                apply_replies(&mut tx, vec![(0, &event, reply())])
                    .await
                    .unwrap();
                let spans = spans.0.lock().unwrap().clone();
                let expected = (
                    "saga.reply".to_owned(),
                    vec![
                        ("order.id".to_owned(), order_id.to_string()),
                        ("correlation_id".to_owned(), correlation_id.to_string()),
                        ("party".to_owned(), "Payment".to_owned()),
                        ("succeeded".to_owned(), "true".to_owned()),
                    ],
                );
                assert_eq!(spans, [expected.clone(), expected]);
            },
        )
        .await;
    }
}
