//! A batch of orders events applied set-based: a constant number of statements for any number
//! of events, with exactly the effects of applying them one by one, in seq order, through
//! [`Ledger::authorize`] and [`Ledger::settle`].
//!
//! **The rule (as in inventory): read everything first, replay in memory in seq order, write
//! the net result.** The batch reads, once, the payments of its orders (`payment_views`), then
//! every stream a command may touch — the accounts of the placed orders' customers and of the
//! existing payments' customers, and those payments' streams — with their snapshots
//! ([`store::read_many`]). It replays the commands in seq order on those states with the same
//! decisions the per-event path takes (`decide_reserve`, `decide_settlement`,
//! `decide_release`), staging each stream's new events at the versions after the ones it read
//! ([`store::stage`]). Then it writes: every new event in one multi-row insert
//! ([`store::insert_events`]), the snapshots due (one), every changed payment view once, at its
//! final state (one), and the integration events (one `outbox::append_many`).
//!
//! **Optimistic concurrency stays as it is.** Nothing is locked while reading: the event
//! store's key `(stream_id, version)` is the guard. A writer that appended to one of the
//! batch's streams since it was read (an HTTP credit-limit change) makes the insert a unique
//! violation, the whole attempt rolls back to its savepoint and runs again on a fresh read
//! ([`retry_on_conflict!`], as for one event). `payment_views`' unique order id guards "one
//! payment per order" the same way. On SQLite the batch holds the module's single writer from
//! its reads to its commit, so no other writer can come between: it runs without the
//! savepoint.
//!
//! Each stored and published event carries the context of the event that caused it
//! ([`EventContext::caused_by`]): in a batch there is no current context to take.

use std::collections::{BTreeMap, HashMap};

use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected};
use payments_api::{Payment, PaymentId};
use shared_kernel::clock;
use shared_kernel::messaging::outbox::{self, Outgoing};
use shared_kernel::messaging::{BatchError, Envelope, EventContext, MalformedEvent};
use shared_kernel::storage::{Tx, TxConn, bulk};
use uuid::Uuid;

use super::{Ledger, authorization, settled_event, write_views};
use crate::domain::{AccountState, Aggregate, PaymentState, Settlement};
use crate::store::{self, Loaded, Snapshot, Staged, StoreError, retry_on_conflict};

/// What an orders event asks of payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// `OrderPlaced`: authorize the total on the customer's account, or decline it.
    Authorize {
        order_id: Uuid,
        customer_id: Uuid,
        amount_cents: i64,
    },
    /// `OrderConfirmed`, `OrderRejected`, `OrderCancelled`: settle the order's payment.
    Settle {
        order_id: Uuid,
        settlement: Settlement,
    },
}

impl Command {
    /// The command of an orders event; `None` for events payments does not act on.
    pub(crate) fn decode(event: &Envelope) -> Option<Result<Self, MalformedEvent>> {
        if let Some(placed) = event.decode::<OrderPlaced>() {
            return Some(placed.map(|p| Command::Authorize {
                order_id: p.order_id.0,
                customer_id: p.customer_id,
                amount_cents: p.total_cents,
            }));
        }
        let settle = |order_id: orders_api::OrderId, settlement| Command::Settle {
            order_id: order_id.0,
            settlement,
        };
        if let Some(e) = event.decode::<OrderConfirmed>() {
            Some(e.map(|e| settle(e.order_id, Settlement::Capture)))
        } else if let Some(e) = event.decode::<OrderRejected>() {
            Some(e.map(|e| settle(e.order_id, Settlement::Void)))
        } else {
            event
                .decode::<OrderCancelled>()
                .map(|e| e.map(|e| settle(e.order_id, Settlement::Cancel)))
        }
    }

    fn order_id(&self) -> Uuid {
        match self {
            Command::Authorize { order_id, .. } | Command::Settle { order_id, .. } => *order_id,
        }
    }
}

/// Applies `events` (fresh, in seq order) set-based; see the module doc.
///
/// # Errors
/// A malformed event names its index; storage errors and conflicts that kept winning name
/// none (the kernel then applies the events one by one to find the failing one).
pub(crate) async fn apply_batch(
    ledger: &Ledger,
    tx: &mut Tx,
    events: &[&Envelope],
) -> Result<(), BatchError> {
    let mut commands: Vec<(&Envelope, Command)> = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        match Command::decode(event) {
            Some(Ok(command)) => commands.push((event, command)),
            Some(Err(error)) => return Err(BatchError::at(i, error)),
            None => {}
        }
    }
    if commands.is_empty() {
        return Ok(());
    }
    let published = if tx.is_postgres() {
        retry_on_conflict!(tx, ledger.conflicts, replay(ledger, &mut *tx, &commands))?.0
    } else {
        // The module's one writer connection is this transaction's until it ends: nothing can
        // append between the batch's reads and its writes, so no conflict can come from
        // another writer, and a savepoint would cost two statements for nothing. (A conflict
        // would be a bug here; it fails the batch, whose isolation then goes event by event,
        // through the savepoints of the per-event path.)
        replay(ledger, &mut *tx, &commands).await?
    };
    outbox::append_many(tx, published);
    Ok(())
}

/// A stream of the batch: its state as the replay goes, and the version it was read at.
struct Stream<A> {
    loaded: Loaded<A>,
    read_at: i64,
}

impl<A> Stream<A> {
    fn new(loaded: Loaded<A>) -> Self {
        let read_at = loaded.version;
        Self { loaded, read_at }
    }
}

/// Reads, decides and writes the batch's streams and views; returns the events to publish.
async fn replay(
    ledger: &Ledger,
    tx: &mut Tx,
    commands: &[(&Envelope, Command)],
) -> Result<Vec<Outgoing>, StoreError> {
    let mut orders: Vec<Uuid> = commands.iter().map(|(_, c)| c.order_id()).collect();
    orders.sort_unstable();
    orders.dedup();
    // order id → (payment id, customer id), for the payments that exist already.
    let existing = payments_of(tx, &orders).await?;

    // The accounts a command may write: the placed orders' customers, and those of existing
    // payments a void or refund may release credit to (a capture never touches the account).
    let mut customers: Vec<Uuid> = commands
        .iter()
        .filter_map(|(_, c)| match *c {
            Command::Authorize { customer_id, .. } => Some(customer_id),
            Command::Settle {
                order_id,
                settlement,
            } if settlement != Settlement::Capture => existing.get(&order_id).map(|(_, c)| *c),
            Command::Settle { .. } => None,
        })
        .collect();
    customers.sort_unstable();
    customers.dedup();
    let mut wanted: Vec<(Uuid, &'static str)> = customers
        .iter()
        .map(|id| (*id, AccountState::STREAM_TYPE))
        .collect();
    wanted.extend(
        existing
            .values()
            .map(|(payment_id, _)| (*payment_id, PaymentState::STREAM_TYPE)),
    );
    let mut read = store::read_many(tx, &wanted).await?;
    let mut accounts: HashMap<Uuid, Stream<AccountState>> = HashMap::new();
    for id in customers {
        accounts.insert(id, Stream::new(read.take(tx, id).await?));
    }
    let mut payments: HashMap<Uuid, Stream<PaymentState>> = HashMap::new();
    let mut by_order: HashMap<Uuid, Uuid> = HashMap::new();
    for (order_id, (payment_id, _)) in &existing {
        payments.insert(*payment_id, Stream::new(read.take(tx, *payment_id).await?));
        by_order.insert(*order_id, *payment_id);
    }

    let now = clock::now();
    let config = ledger.config;
    let mut staged: Vec<Staged> = Vec::new();
    let mut views: BTreeMap<Uuid, Payment> = BTreeMap::new();
    let mut published: Vec<Outgoing> = Vec::new();
    for (event, command) in commands {
        let context = EventContext::caused_by(event);
        let metadata = store::metadata(&context);
        match *command {
            Command::Authorize {
                order_id,
                customer_id,
                amount_cents,
            } => {
                if by_order.contains_key(&order_id) {
                    continue;
                }
                let account = &mut stream_of(&mut accounts, customer_id)?.loaded;
                let payment_id = PaymentId::generate();
                let reservation = account.state.decide_reserve(
                    payment_id,
                    order_id,
                    amount_cents,
                    config.default_credit_limit_cents,
                );
                staged.extend(store::stage(account, &reservation.events, &metadata, now)?);
                let (first, outcome) = authorization(
                    payment_id,
                    order_id,
                    customer_id,
                    amount_cents,
                    &reservation,
                );
                let mut stream = Stream::new(Loaded {
                    stream_id: payment_id.0,
                    state: PaymentState::default(),
                    version: 0,
                });
                staged.extend(store::stage(&mut stream.loaded, &[first], &metadata, now)?);
                views.insert(payment_id.0, folded(&stream.loaded)?);
                payments.insert(payment_id.0, stream);
                by_order.insert(order_id, payment_id.0);
                published.push(outcome.outgoing(&context)?);
            }
            Command::Settle {
                order_id,
                settlement,
            } => {
                let Some(payment_id) = by_order.get(&order_id) else {
                    continue;
                };
                let stream = &mut stream_of(&mut payments, *payment_id)?.loaded;
                let (Some(current), Some(settled)) = (
                    stream.state.0.clone(),
                    stream.state.decide_settlement(settlement),
                ) else {
                    continue;
                };
                // Account first, then payment: the order every command stages streams in.
                if let Some(reason) = settled.release {
                    let account = &mut stream_of(&mut accounts, current.customer_id)?.loaded;
                    let events = AccountState::decide_release(&current, reason);
                    staged.extend(store::stage(account, &events, &metadata, now)?);
                }
                let settled_events = std::slice::from_ref(&settled.event);
                staged.extend(store::stage(stream, settled_events, &metadata, now)?);
                let payment = folded(stream)?;
                published.push(settled_event(&payment, &settled.event).outgoing(&context)?);
                views.insert(payment.id.0, payment);
            }
        }
    }

    store::insert_events(tx, &staged).await?;
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for stream in accounts.values() {
        if store::snapshot_due(stream.read_at, stream.loaded.version, config.snapshot_every) {
            snapshots.push(Snapshot::of(&stream.loaded)?);
        }
    }
    for stream in payments.values() {
        if store::snapshot_due(stream.read_at, stream.loaded.version, config.snapshot_every) {
            snapshots.push(Snapshot::of(&stream.loaded)?);
        }
    }
    store::save_snapshots(tx, &snapshots, now).await?;
    let views: Vec<Payment> = views.into_values().collect();
    write_views(tx, &views).await?;
    Ok(published)
}

/// A stream the batch read; every stream a command touches was.
fn stream_of<A>(
    streams: &mut HashMap<Uuid, Stream<A>>,
    stream_id: Uuid,
) -> Result<&mut Stream<A>, StoreError> {
    streams
        .get_mut(&stream_id)
        .ok_or_else(|| StoreError::Corrupt {
            stream_id,
            message: "a batch touched a stream it did not read".into(),
        })
}

/// The payment a payment stream folds to after an append.
fn folded(stream: &Loaded<PaymentState>) -> Result<Payment, StoreError> {
    stream.state.0.clone().ok_or_else(|| StoreError::Corrupt {
        stream_id: stream.stream_id,
        message: "an appended payment folded to nothing".into(),
    })
}

/// The payments (id, customer) of `orders` (sorted, distinct) that have one.
async fn payments_of(
    tx: &mut Tx,
    orders: &[Uuid],
) -> Result<HashMap<Uuid, (Uuid, Uuid)>, StoreError> {
    let mut rows: Vec<(Uuid, Uuid, Uuid)> = Vec::new();
    match &mut tx.conn {
        TxConn::Postgres(conn) => {
            rows = sqlx::query_as(
                "SELECT order_id, payment_id, customer_id FROM payment_views \
                 WHERE order_id = ANY($1)",
            )
            .bind(orders)
            .fetch_all(&mut **conn)
            .await?;
        }
        TxConn::Sqlite(conn) => {
            for chunk in orders.chunks(bulk::MAX_BINDS) {
                let sql = format!(
                    "SELECT order_id, payment_id, customer_id FROM payment_views \
                     WHERE order_id IN ({})",
                    bulk::placeholders(chunk.len())
                );
                let mut query =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
                for order_id in chunk {
                    query = query.bind(order_id);
                }
                let found: Vec<(Uuid, Uuid, Uuid)> = query.fetch_all(&mut **conn).await?;
                rows.extend(found);
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(order_id, payment_id, customer_id)| (order_id, (payment_id, customer_id)))
        .collect())
}
