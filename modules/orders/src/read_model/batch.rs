//! A batch of events applied set-based: a constant number of statements for any number of
//! events (up to the bind limit of one statement), with exactly the effects of applying them
//! one by one, in seq order, through [`super::project`].
//!
//! **Fold per key in memory, then write the net result with one statement per column group.**
//! A subscription's batch holds one source's events in seq order. Within a run of one
//! source's events with rising seqs, each per-event write overwrites its whole column group
//! under the guard "the stored seq is older", so the last write of a key decides — and the
//! guards stay in the SQL, so that the net write, like the events one by one, changes nothing
//! where newer data is already stored (a replay after a rewind). Folding also keeps every key
//! to one row per statement, which Postgres requires of `INSERT … ON CONFLICT DO UPDATE`.
//!
//! - Customers: per customer the latest name and email; one upsert of `summary_customers`, one
//!   `UPDATE` of their summaries.
//! - Orders: the placeholder rows of every placed order's customer first (one upsert, in
//!   customer id order: customer rows are locked first, as a customer's events lock them);
//!   then per order its latest placement, as the per-event upsert writes it (one upsert joined
//!   to the customer rows); then, for each order whose last event is a status change, that
//!   change under the per-event guard (one `UPDATE`). The two replay the order's events
//!   exactly: an order with no order columns yet or older ones takes the latest placement, and
//!   the events after it are status changes whose last one decides; where the stored columns
//!   are newer than the placement, only the status changes newer than them apply, and again
//!   the last one decides. `created_at` is the placement's time, `order_changed_at` the last
//!   applied event's.
//! - Payments: per order the latest status; one upsert.
//!
//! Should a batch mix sources (or seqs not rise), it is cut into runs that each satisfy this
//! and are applied in order. Postgres binds one array per column (`UNNEST`), so one SQL text
//! serves every batch size; SQLite gets multi-row `VALUES`, split only beyond
//! [`bulk::MAX_BINDS`] parameters.

use std::collections::{BTreeMap, BTreeSet};

use orders_api::OrderStatus;
use shared_kernel::messaging::{BatchError, Envelope};
use shared_kernel::storage::{Tx, TxConn, bulk};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Change, Placed};

/// One multi-row statement over rows `v`: bound as one array per column on Postgres, as
/// multi-row `VALUES` on SQLite; then the generation (`$1` on Postgres, the last `?` on SQLite).
struct Statement {
    /// The whole statement on Postgres.
    postgres: &'static str,
    /// On SQLite, what comes before the `VALUES` list and what follows it.
    sqlite: (&'static str, &'static str),
    /// Values per row.
    columns: usize,
}

/// `statement!("a, b", "$2::uuid[], $3::text[]", body)`: rows `v(a, b)` and `body!(generation
/// parameter)` reading them.
macro_rules! statement {
    ($columns:literal, $arrays:literal, $body:ident) => {
        Statement {
            postgres: concat!(
                "WITH v(",
                $columns,
                ") AS (SELECT * FROM UNNEST(",
                $arrays,
                ")) ",
                $body!("$1")
            ),
            sqlite: (
                concat!("WITH v(", $columns, ") AS (VALUES "),
                concat!(") ", $body!("?")),
            ),
            columns: column_count($columns),
        }
    };
}

/// The number of comma-separated names in `columns`.
const fn column_count(columns: &str) -> usize {
    let bytes = columns.as_bytes();
    let mut count = 1;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b',' {
            count += 1;
        }
        i += 1;
    }
    count
}

macro_rules! upsert_customers {
    ($generation:literal) => {
        concat!(
            "INSERT INTO summary_customers \
               (generation, customer_id, name, email, source_seq, changed_at) \
             SELECT g.generation, v.customer_id, v.name, v.email, v.seq, v.at \
             FROM (SELECT ",
            target_generation!($generation),
            " AS generation) AS g CROSS JOIN v WHERE true ORDER BY v.customer_id",
            on_customer_conflict!()
        )
    };
}

macro_rules! insert_placeholders {
    ($generation:literal) => {
        concat!(
            "INSERT INTO summary_customers (generation, customer_id, source_seq) \
             SELECT g.generation, v.customer_id, 0 \
             FROM (SELECT ",
            target_generation!($generation),
            " AS generation) AS g CROSS JOIN v WHERE true ORDER BY v.customer_id",
            on_placeholder_conflict!()
        )
    };
}

macro_rules! upsert_placed {
    ($generation:literal) => {
        concat!(
            "INSERT INTO order_summaries \
               (generation, order_id, customer_id, status, item_count, total_cents, created_at, \
                order_changed_at, order_seq, customer_name, customer_email, customer_seq, \
                customer_changed_at) \
             SELECT g.generation, v.order_id, v.customer_id, 'PENDING', v.item_count, \
                    v.total_cents, v.at, v.at, v.seq, \
                    c.name, c.email, c.source_seq, c.changed_at \
             FROM (SELECT ",
            target_generation!($generation),
            " AS generation) AS g CROSS JOIN v \
             LEFT JOIN summary_customers AS c \
               ON c.generation = g.generation AND c.customer_id = v.customer_id \
             WHERE true ORDER BY v.order_id",
            on_placed_conflict!()
        )
    };
}

macro_rules! upsert_payments {
    ($generation:literal) => {
        concat!(
            "INSERT INTO order_summaries \
               (generation, order_id, payment_status, payment_seq, payment_changed_at) \
             SELECT g.generation, v.order_id, v.status, v.seq, v.at \
             FROM (SELECT ",
            target_generation!($generation),
            " AS generation) AS g CROSS JOIN v WHERE true ORDER BY v.order_id",
            on_payment_conflict!()
        )
    };
}

const CUSTOMERS: Statement = statement!(
    "customer_id, name, email, seq, at",
    "$2::uuid[], $3::text[], $4::text[], $5::int8[], $6::timestamptz[]",
    upsert_customers
);

/// The two `UPDATE … FROM v` statements spell out their rows' CTE in the same literal as the
/// `UPDATE`, so that the architecture lint reads `v` as the CTE it is.
const CUSTOMER_SUMMARIES: Statement = Statement {
    postgres: concat!(
        "WITH v(customer_id, name, email, seq, at) AS (SELECT * FROM UNNEST($2::uuid[], \
           $3::text[], $4::text[], $5::int8[], $6::timestamptz[])) \
         UPDATE order_summaries \
         SET customer_name = v.name, customer_email = v.email, customer_seq = v.seq, \
             customer_changed_at = v.at \
         FROM v WHERE order_summaries.generation = ",
        target_generation!("$1"),
        " AND order_summaries.customer_id = v.customer_id \
          AND (order_summaries.customer_seq IS NULL OR order_summaries.customer_seq < v.seq)"
    ),
    sqlite: (
        "WITH v(customer_id, name, email, seq, at) AS (VALUES ",
        concat!(
            ") UPDATE order_summaries \
             SET customer_name = v.name, customer_email = v.email, customer_seq = v.seq, \
                 customer_changed_at = v.at \
             FROM v WHERE order_summaries.generation = ",
            target_generation!("?"),
            " AND order_summaries.customer_id = v.customer_id \
              AND (order_summaries.customer_seq IS NULL OR order_summaries.customer_seq < v.seq)"
        ),
    ),
    columns: 5,
};

const PLACEHOLDERS: Statement = statement!("customer_id", "$2::uuid[]", insert_placeholders);

const PLACED: Statement = statement!(
    "order_id, customer_id, item_count, total_cents, at, seq",
    "$2::uuid[], $3::uuid[], $4::int8[], $5::int8[], $6::timestamptz[], $7::int8[]",
    upsert_placed
);

const STATUSES: Statement = Statement {
    postgres: concat!(
        "WITH v(order_id, status, at, seq) AS (SELECT * FROM UNNEST($2::uuid[], $3::text[], \
           $4::timestamptz[], $5::int8[])) \
         UPDATE order_summaries SET status = v.status, order_changed_at = v.at, order_seq = v.seq \
         FROM v WHERE order_summaries.generation = ",
        target_generation!("$1"),
        " AND order_summaries.order_id = v.order_id AND order_summaries.order_seq < v.seq"
    ),
    sqlite: (
        "WITH v(order_id, status, at, seq) AS (VALUES ",
        concat!(
            ") UPDATE order_summaries \
             SET status = v.status, order_changed_at = v.at, order_seq = v.seq \
             FROM v WHERE order_summaries.generation = ",
            target_generation!("?"),
            " AND order_summaries.order_id = v.order_id AND order_summaries.order_seq < v.seq"
        ),
    ),
    columns: 4,
};

const PAYMENTS: Statement = statement!(
    "order_id, status, seq, at",
    "$2::uuid[], $3::text[], $4::int8[], $5::timestamptz[]",
    upsert_payments
);

/// A value with the seq and time of the event that set it.
#[derive(Debug, Clone, Copy)]
struct Stamped<T> {
    value: T,
    seq: i64,
    at: OffsetDateTime,
}

impl<T> Stamped<T> {
    fn of(event: &Envelope, value: T) -> Self {
        Self {
            value,
            seq: event.seq,
            at: event.occurred_at,
        }
    }
}

/// The net result of a run of one source's events, by key (in key order).
#[derive(Debug, Default)]
struct Net<'a> {
    /// Per customer, the latest name and email.
    customers: BTreeMap<Uuid, Stamped<(&'a str, &'a str)>>,
    /// The customer of every placement.
    placeholders: BTreeSet<Uuid>,
    /// Per order, its latest placement.
    placed: BTreeMap<Uuid, Stamped<Placed>>,
    /// Per order, its last event when that is a status change.
    statuses: BTreeMap<Uuid, Option<Stamped<OrderStatus>>>,
    /// Per order, the latest payment status.
    payments: BTreeMap<Uuid, Stamped<&'static str>>,
}

impl<'a> Net<'a> {
    fn add(&mut self, event: &Envelope, change: &'a Change) {
        match change {
            Change::Customer {
                customer_id,
                name,
                email,
            } => {
                self.customers
                    .insert(*customer_id, Stamped::of(event, (name, email)));
            }
            Change::Placed(placed) => {
                self.placeholders.insert(placed.customer_id);
                self.placed
                    .insert(placed.order_id, Stamped::of(event, *placed));
                self.statuses.insert(placed.order_id, None);
            }
            Change::Status { order_id, status } => {
                self.statuses
                    .insert(*order_id, Some(Stamped::of(event, *status)));
            }
            Change::Payment { order_id, status } => {
                self.payments.insert(*order_id, Stamped::of(event, *status));
            }
        }
    }

    /// Writes the net result: each statement only when it has rows.
    async fn write(&self, tx: &mut Tx, generation: Option<i64>) -> Result<(), sqlx::Error> {
        let customers: Vec<(Uuid, Stamped<(&str, &str)>)> =
            self.customers.iter().map(|(id, c)| (*id, *c)).collect();
        let placeholders: Vec<Uuid> = self.placeholders.iter().copied().collect();
        let placed: Vec<Stamped<Placed>> = self.placed.values().copied().collect();
        let statuses: Vec<(Uuid, Stamped<OrderStatus>)> = self
            .statuses
            .iter()
            .filter_map(|(id, s)| s.map(|s| (*id, s)))
            .collect();
        let payments: Vec<(Uuid, Stamped<&str>)> =
            self.payments.iter().map(|(id, p)| (*id, *p)).collect();

        // The customers' own rows first, then their summaries: the order a customer's event
        // locks them in.
        if !customers.is_empty() {
            let ids: Vec<Uuid> = customers.iter().map(|(id, _)| *id).collect();
            let names: Vec<&str> = customers.iter().map(|(_, c)| c.value.0).collect();
            let emails: Vec<&str> = customers.iter().map(|(_, c)| c.value.1).collect();
            let seqs: Vec<i64> = customers.iter().map(|(_, c)| c.seq).collect();
            let ats: Vec<OffsetDateTime> = customers.iter().map(|(_, c)| c.at).collect();
            for statement in [&CUSTOMERS, &CUSTOMER_SUMMARIES] {
                match &mut tx.conn {
                    TxConn::Postgres(conn) => {
                        sqlx::query(statement.postgres)
                            .bind(generation)
                            .bind(&ids)
                            .bind(&names)
                            .bind(&emails)
                            .bind(&seqs)
                            .bind(&ats)
                            .execute(&mut **conn)
                            .await?;
                    }
                    TxConn::Sqlite(conn) => {
                        sqlite_rows(conn, statement, generation, &customers, |q, (id, c)| {
                            q.bind(*id)
                                .bind(c.value.0)
                                .bind(c.value.1)
                                .bind(c.seq)
                                .bind(c.at)
                        })
                        .await?;
                    }
                }
            }
        }

        if !placeholders.is_empty() {
            match &mut tx.conn {
                TxConn::Postgres(conn) => {
                    sqlx::query(PLACEHOLDERS.postgres)
                        .bind(generation)
                        .bind(&placeholders)
                        .execute(&mut **conn)
                        .await?;
                }
                TxConn::Sqlite(conn) => {
                    sqlite_rows(conn, &PLACEHOLDERS, generation, &placeholders, |q, id| {
                        q.bind(*id)
                    })
                    .await?;
                }
            }
        }

        if !placed.is_empty() {
            match &mut tx.conn {
                TxConn::Postgres(conn) => {
                    let column = |f: fn(&Stamped<Placed>) -> i64| -> Vec<i64> {
                        placed.iter().map(f).collect()
                    };
                    sqlx::query(PLACED.postgres)
                        .bind(generation)
                        .bind(placed.iter().map(|p| p.value.order_id).collect::<Vec<_>>())
                        .bind(
                            placed
                                .iter()
                                .map(|p| p.value.customer_id)
                                .collect::<Vec<_>>(),
                        )
                        .bind(column(|p| p.value.item_count))
                        .bind(column(|p| p.value.total_cents))
                        .bind(placed.iter().map(|p| p.at).collect::<Vec<_>>())
                        .bind(column(|p| p.seq))
                        .execute(&mut **conn)
                        .await?;
                }
                TxConn::Sqlite(conn) => {
                    sqlite_rows(conn, &PLACED, generation, &placed, |q, p| {
                        q.bind(p.value.order_id)
                            .bind(p.value.customer_id)
                            .bind(p.value.item_count)
                            .bind(p.value.total_cents)
                            .bind(p.at)
                            .bind(p.seq)
                    })
                    .await?;
                }
            }
        }

        if !statuses.is_empty() {
            match &mut tx.conn {
                TxConn::Postgres(conn) => {
                    sqlx::query(STATUSES.postgres)
                        .bind(generation)
                        .bind(statuses.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                        .bind(
                            statuses
                                .iter()
                                .map(|(_, s)| s.value.as_str())
                                .collect::<Vec<_>>(),
                        )
                        .bind(statuses.iter().map(|(_, s)| s.at).collect::<Vec<_>>())
                        .bind(statuses.iter().map(|(_, s)| s.seq).collect::<Vec<_>>())
                        .execute(&mut **conn)
                        .await?;
                }
                TxConn::Sqlite(conn) => {
                    sqlite_rows(conn, &STATUSES, generation, &statuses, |q, (id, s)| {
                        q.bind(*id).bind(s.value.as_str()).bind(s.at).bind(s.seq)
                    })
                    .await?;
                }
            }
        }

        if !payments.is_empty() {
            match &mut tx.conn {
                TxConn::Postgres(conn) => {
                    sqlx::query(PAYMENTS.postgres)
                        .bind(generation)
                        .bind(payments.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                        .bind(payments.iter().map(|(_, p)| p.value).collect::<Vec<_>>())
                        .bind(payments.iter().map(|(_, p)| p.seq).collect::<Vec<_>>())
                        .bind(payments.iter().map(|(_, p)| p.at).collect::<Vec<_>>())
                        .execute(&mut **conn)
                        .await?;
                }
                TxConn::Sqlite(conn) => {
                    sqlite_rows(conn, &PAYMENTS, generation, &payments, |q, (id, p)| {
                        q.bind(*id).bind(p.value).bind(p.seq).bind(p.at)
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}

type SqliteQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Runs `statement` on SQLite over `rows`, as few statements as [`bulk::MAX_BINDS`] allows:
/// `bind` binds one row's values, the generation is bound last.
async fn sqlite_rows<R: Sync>(
    conn: &mut sqlx::SqliteConnection,
    statement: &Statement,
    generation: Option<i64>,
    rows: &[R],
    bind: impl Fn(SqliteQuery, &R) -> SqliteQuery + Sync,
) -> Result<(), sqlx::Error> {
    let (head, tail) = statement.sqlite;
    for chunk in rows.chunks(bulk::rows_per_statement(statement.columns)) {
        let sql = format!(
            "{head}{}{tail}",
            bulk::values(chunk.len(), statement.columns, false)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(bulk::cached(chunk.len()));
        for row in chunk {
            query = bind(query, row);
        }
        query.bind(generation).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The source of a change: a run of one source's changes is folded at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Customers,
    Orders,
    Payments,
}

fn source(change: &Change) -> Source {
    match change {
        Change::Customer { .. } => Source::Customers,
        Change::Placed(_) | Change::Status { .. } => Source::Orders,
        Change::Payment { .. } => Source::Payments,
    }
}

/// Applies `events` (in seq order) to `generation` (the active one when `None`) set-based; see
/// the module doc.
///
/// # Errors
/// A malformed event names its index; storage errors name none (a subscription then applies
/// the events one by one, to find the failing one).
pub(super) async fn apply(
    tx: &mut Tx,
    generation: Option<i64>,
    events: &[&Envelope],
) -> Result<(), BatchError> {
    let mut changes: Vec<(&Envelope, Change)> = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if let Some(change) = Change::decode(event) {
            changes.push((event, change.map_err(|error| BatchError::at(i, error))?));
        }
    }
    let mut rest = changes.as_slice();
    while let Some(((_, first), _)) = rest.split_first() {
        let run = 1 + rest
            .windows(2)
            .take_while(|w| source(&w[1].1) == source(first) && w[1].0.seq > w[0].0.seq)
            .count();
        let (run, after) = rest.split_at(run);
        let mut net = Net::default();
        for (event, change) in run {
            net.add(event, change);
        }
        net.write(tx, generation).await?;
        rest = after;
    }
    Ok(())
}
