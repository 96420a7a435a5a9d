//! Two scratch modules for the kernel's own messaging tests and benchmark, with their own
//! migrations (`tests/migrations/{source,consumer}`), so that the runtime is exercised without
//! any module of the shop: `source` registers and renames members, publishing
//! `source.MemberRegistered@1` / `source.MemberUpdated@1` through the outbox; `consumer` keeps
//! `member_replicas` (the shape of orders' `customer_replicas`) with [`Replicate`], and
//! `tallies` (one row per application) with [`Tally`]; [`ReplicateBatch`] is the set-based
//! replicator, keeping `member_replicas_batch` and publishing `consumer.MemberReplicated@1`.
//!
//! Included by path by `tests/messaging` and `benches/messaging.rs`; each takes what it needs.

#![allow(dead_code)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use shared_kernel::messaging::outbox::Outgoing;
use shared_kernel::messaging::{
    Batch, BatchError, Envelope, EventContext, Handler, IntegrationEvent, outbox,
};
use shared_kernel::storage::{Migrations, ModuleDb, OpenError, StorageConfig, Tx};
use shared_kernel::{clock, with_reader, with_tx};
use uuid::Uuid;

/// The publishing module.
pub const SOURCE: &str = "source";
/// The consuming module.
pub const CONSUMER: &str = "consumer";
/// The subscription that keeps `member_replicas`.
pub const REPLICAS: &str = "consumer<-source";
/// The subscription that appends to `tallies`.
pub const TALLY: &str = "consumer<-source:tally";
/// The subscription that keeps `member_replicas_batch` ([`ReplicateBatch`]).
pub const BATCH_REPLICAS: &str = "consumer<-source:batch";

pub static SOURCE_MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("tests/migrations/source/sqlite"),
    postgres: sqlx::migrate!("tests/migrations/source/postgres"),
};

pub static CONSUMER_MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("tests/migrations/consumer/sqlite"),
    postgres: sqlx::migrate!("tests/migrations/consumer/postgres"),
};

shared_kernel::define_id!(
    /// A member of the scratch source.
    MemberId
);

/// `source.MemberRegistered@1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRegistered {
    pub member_id: MemberId,
    pub name: String,
    pub email: String,
}

/// `source.MemberUpdated@1`: carries the member's current name and email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdated {
    pub member_id: MemberId,
    pub name: String,
    pub email: String,
}

shared_kernel::integration_events! {
    module "source";
    "member" by member_id: MemberRegistered, MemberUpdated;
}

/// Opens (creating and migrating) the source's and the consumer's databases.
pub async fn open(config: &StorageConfig) -> Result<(ModuleDb, ModuleDb), OpenError> {
    let source = ModuleDb::open(SOURCE, &SOURCE_MIGRATIONS, config).await?;
    let consumer = ModuleDb::open(CONSUMER, &CONSUMER_MIGRATIONS, config).await?;
    Ok((source, consumer))
}

/// A fresh registration (not stored): the member of the `i`-th registration of a run.
pub fn member(i: usize) -> MemberRegistered {
    let member_id = MemberId::generate();
    MemberRegistered {
        member_id,
        name: format!("Member {i}"),
        email: format!("m{}@example.com", member_id.0.simple()),
    }
}

/// The source's command: stores a member and publishes its registration, in one transaction.
pub async fn register(source: &ModuleDb, name: &str, email: &str) -> anyhow::Result<Uuid> {
    let registered = MemberRegistered {
        member_id: MemberId::generate(),
        name: name.to_owned(),
        email: email.to_owned(),
    };
    let mut tx = source.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query("INSERT INTO members (id, name, email) VALUES ($1, $2, $3)")
            .bind(registered.member_id.0)
            .bind(&registered.name)
            .bind(&registered.email)
            .execute(conn)
            .await
            .map(drop)
    })?;
    outbox::append(&mut tx, &registered, &EventContext::current())?;
    tx.commit().await?;
    Ok(registered.member_id.0)
}

/// The source's command: renames a member and publishes the update, in one transaction.
pub async fn rename(source: &ModuleDb, id: Uuid, name: &str) -> anyhow::Result<()> {
    let mut tx = source.begin().await?;
    let (email,): (String,) = with_tx!(&mut tx, |conn| {
        sqlx::query_as("UPDATE members SET name = $2 WHERE id = $1 RETURNING email")
            .bind(id)
            .bind(name)
            .fetch_one(conn)
            .await
    })?;
    let updated = MemberUpdated {
        member_id: MemberId(id),
        name: name.to_owned(),
        email,
    };
    outbox::append(&mut tx, &updated, &EventContext::current())?;
    tx.commit().await?;
    Ok(())
}

/// The member's name as the source has it now.
pub async fn name_of(source: &ModuleDb, id: Uuid) -> anyhow::Result<String> {
    let (name,): (String,) = with_reader!(source.reader()?, |pool| {
        sqlx::query_as("SELECT name FROM members WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
    })?;
    Ok(name)
}

/// `(id, name, email)` of a registration or an update of a member.
fn member_of(event: &Envelope) -> Option<anyhow::Result<(Uuid, String, String)>> {
    if let Some(e) = event.decode::<MemberRegistered>() {
        return Some(
            e.map(|e| (e.member_id.0, e.name, e.email))
                .map_err(Into::into),
        );
    }
    let e = event.decode::<MemberUpdated>()?;
    Some(
        e.map(|e| (e.member_id.0, e.name, e.email))
            .map_err(Into::into),
    )
}

/// What orders' replicator does with a customer's events: one upsert in the batch's
/// transaction, older events never overwriting newer data.
pub const UPSERT: &str = "INSERT INTO member_replicas (member_id, name, email, source_seq, updated_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (member_id) DO UPDATE \
       SET name = excluded.name, email = excluded.email, \
           source_seq = excluded.source_seq, updated_at = excluded.updated_at \
       WHERE member_replicas.source_seq < excluded.source_seq";

/// Keeps `member_replicas` from the members' events.
#[derive(Debug)]
pub struct Replicate;

#[async_trait]
impl Handler for Replicate {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(member) = member_of(event) else {
            return Ok(());
        };
        let (id, name, email) = member?;
        with_tx!(tx, |conn| {
            sqlx::query(UPSERT)
                .bind(id)
                .bind(&name)
                .bind(&email)
                .bind(event.seq)
                .bind(clock::now())
                .execute(conn)
                .await
                .map(drop)
        })?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[MemberRegistered::TYPE, MemberUpdated::TYPE])
    }
}

/// Appends one row to `tallies` per event it applies: an effect that is not idempotent by
/// itself, so only the inbox keeps it exactly-once.
#[derive(Debug)]
pub struct Tally;

#[async_trait]
impl Handler for Tally {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        with_tx!(tx, |conn| {
            sqlx::query("INSERT INTO tallies (event_id, seq) VALUES ($1, $2)")
                .bind(event.id)
                .bind(event.seq)
                .execute(conn)
                .await
                .map(drop)
        })?;
        Ok(())
    }
}

/// What the consumer publishes (its own `TYPES` apart from the source's).
pub mod published {
    use serde::{Deserialize, Serialize};

    use super::MemberId;

    /// `consumer.MemberReplicated@1`: the consumer replicated a member's event (one per event).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MemberReplicated {
        pub member_id: MemberId,
        pub name: String,
        pub source_seq: i64,
    }

    shared_kernel::integration_events! {
        module "consumer";
        "member" by member_id: MemberReplicated;
    }
}

pub use published::MemberReplicated;

/// The set-based replicator: what [`Replicate`] does (into `member_replicas_batch`), plus one
/// `MemberReplicated` per event, with one upsert and one outbox append per batch. Counts its
/// set-based calls (two or more events).
#[derive(Debug, Default)]
pub struct ReplicateBatch {
    pub set_calls: AtomicUsize,
}

/// `(id, name, email, seq)` of each member event: the rows of a multi-row upsert.
type ReplicaRow = (Uuid, String, String, i64);

/// The `VALUES` of `n` rows of `(member_id, name, email, source_seq, updated_at)`: `$1` is the
/// time of every row, and each row adds four placeholders.
pub fn replica_rows(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let p = 2 + 4 * i;
            format!("(${p}, ${}, ${}, ${}, $1)", p + 1, p + 2, p + 3)
        })
        .collect();
    rows.join(", ")
}

/// Upserts the rows into `member_replicas_batch` with one statement, older events never
/// overwriting newer data; one row per member (a statement may not update a row twice), the
/// latest.
async fn upsert_replicas(tx: &mut Tx, rows: &[ReplicaRow]) -> Result<(), sqlx::Error> {
    let mut latest: HashMap<Uuid, &ReplicaRow> = HashMap::new();
    for row in rows {
        latest
            .entry(row.0)
            .and_modify(|kept| {
                if kept.3 < row.3 {
                    *kept = row;
                }
            })
            .or_insert(row);
    }
    let sql = format!(
        "INSERT INTO member_replicas_batch (member_id, name, email, source_seq, updated_at) \
         VALUES {} ON CONFLICT (member_id) DO UPDATE \
           SET name = excluded.name, email = excluded.email, \
               source_seq = excluded.source_seq, updated_at = excluded.updated_at \
           WHERE member_replicas_batch.source_seq < excluded.source_seq",
        replica_rows(latest.len())
    );
    with_tx!(tx, |conn| {
        // Only placeholders are generated; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(clock::now());
        for (id, name, email, seq) in latest.values() {
            query = query.bind(id).bind(name).bind(email).bind(seq);
        }
        query.execute(conn).await.map(drop)
    })
}

impl ReplicateBatch {
    /// Replicates `events` (member events, in seq order) and publishes one `MemberReplicated`
    /// per event, each caused by its event.
    async fn replicate(&self, tx: &mut Tx, events: &[&Envelope]) -> Result<(), BatchError> {
        let mut rows: Vec<ReplicaRow> = Vec::with_capacity(events.len());
        let mut outgoing = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let Some(member) = member_of(event) else {
                continue;
            };
            let (id, name, email) = member.map_err(|e| BatchError::at(i, e))?;
            let replicated = MemberReplicated {
                member_id: MemberId(id),
                name: name.clone(),
                source_seq: event.seq,
            };
            outgoing.push(Outgoing::new(&replicated, &EventContext::caused_by(event))?);
            rows.push((id, name, email, event.seq));
        }
        if !rows.is_empty() {
            upsert_replicas(tx, &rows).await?;
        }
        outbox::append_many(tx, outgoing);
        Ok(())
    }
}

#[async_trait]
impl Handler for ReplicateBatch {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        self.replicate(tx, &[event]).await.map_err(|e| e.error)
    }

    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        self.set_calls.fetch_add(1, Ordering::SeqCst);
        self.replicate(tx, batch.events()).await
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[MemberRegistered::TYPE, MemberUpdated::TYPE])
    }
}
