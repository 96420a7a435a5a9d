//! Two scratch modules for the kernel's own messaging tests and benchmark, with their own
//! migrations (`tests/migrations/{source,consumer}`), so that the runtime is exercised without
//! any module of the shop: `source` registers and renames members, publishing
//! `source.MemberRegistered@1` / `source.MemberUpdated@1` through the outbox; `consumer` keeps
//! `member_replicas` (the shape of orders' `customer_replicas`) with [`Replicate`], and
//! `tallies` (one row per application) with [`Tally`].
//!
//! Included by path by `tests/messaging` and `benches/messaging.rs`; each takes what it needs.

#![allow(dead_code)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared_kernel::messaging::{Envelope, EventContext, Handler, IntegrationEvent, outbox};
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
    outbox::append(&mut tx, &registered, &EventContext::current()).await?;
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
    outbox::append(&mut tx, &updated, &EventContext::current()).await?;
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
