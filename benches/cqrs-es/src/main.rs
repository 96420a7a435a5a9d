//! The `cqrs-es` side of the event-store comparison: the same account aggregate and the same
//! workload as `modules/payments/benches/event_store.rs` (the workload, checks and table are
//! `benches/common/event_store.rs`, included here), on `sqlite-es` / `postgres-es`.
//!
//! A command is `CqrsFramework::execute` (load the aggregate, handle, commit the events in one
//! transaction); a load is `EventStore::load_aggregate` of a `PersistedEventStore`: the event
//! store (`new_event_store`, no snapshots) or the snapshot store (`new_snapshot_store(repo,
//! N)`). SQLite runs with WAL and `synchronous = FULL`, as the payments module's database does;
//! Postgres on the same server, a throwaway database per row.
//!
//! ```text
//! cargo run --release --manifest-path benches/cqrs-es/Cargo.toml -- --backend sqlite
//! ```
//! (takes the options of the main bench; `--bench` is not needed).

#[path = "../../common/event_store.rs"]
mod common;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow};
use common::{Backend, EventStoreUnderTest, LIMIT_CENTS};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventStore};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlite_es::SqliteEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection, PgPool, SqlitePool};
use uuid::Uuid;

/// The payments account, as a cqrs-es aggregate.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AccountState {
    opened: bool,
    credit_limit_cents: i64,
    outstanding_cents: i64,
}

/// The payments module's account events (same fields, same JSON sizes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    AccountOpened {
        credit_limit_cents: i64,
    },
    CreditReserved {
        payment_id: Uuid,
        order_id: Uuid,
        amount_cents: i64,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened".to_owned(),
            AccountEvent::CreditReserved { .. } => "CreditReserved".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

/// Reserve `events` × 1 cent, opening the account first when needed.
#[derive(Debug)]
struct Reserve {
    events: usize,
}

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("insufficient credit")
    }
}

impl std::error::Error for Declined {}

impl Aggregate for AccountState {
    const TYPE: &'static str = "account";
    type Command = Reserve;
    type Event = AccountEvent;
    type Error = Declined;
    type Services = ();

    async fn handle(
        &mut self,
        command: Reserve,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Declined> {
        if !self.opened {
            let opened = AccountEvent::AccountOpened {
                credit_limit_cents: LIMIT_CENTS,
            };
            sink.write(opened, self).await;
        }
        for _ in 0..command.events {
            if self.credit_limit_cents - self.outstanding_cents < 1 {
                return Err(Declined);
            }
            let reserved = AccountEvent::CreditReserved {
                payment_id: Uuid::now_v7(),
                order_id: Uuid::now_v7(),
                amount_cents: 1,
            };
            sink.write(reserved, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::AccountOpened { credit_limit_cents } => {
                self.opened = true;
                self.credit_limit_cents = credit_limit_cents;
            }
            AccountEvent::CreditReserved { amount_cents, .. } => {
                self.outstanding_cents = self.outstanding_cents.saturating_add(amount_cents);
            }
        }
    }
}

type Store<R> = PersistedEventStore<R, AccountState>;

/// The framework a command runs on, and the two stores loads read from, over one repository
/// type.
struct Stores<R: PersistedEventRepository> {
    cqrs: CqrsFramework<AccountState, Store<R>>,
    replay: Store<R>,
    snapshot: Store<R>,
}

impl<R: PersistedEventRepository> Stores<R> {
    fn new(repo: impl Fn() -> R, snapshot_every: u32) -> Self {
        let store = if snapshot_every > 0 {
            PersistedEventStore::new_snapshot_store(repo(), snapshot_every as usize)
        } else {
            PersistedEventStore::new_event_store(repo())
        };
        Stores {
            cqrs: CqrsFramework::new(store, Vec::new(), ()),
            replay: PersistedEventStore::new_event_store(repo()),
            snapshot: PersistedEventStore::new_snapshot_store(
                repo(),
                snapshot_every.max(1) as usize,
            ),
        }
    }

    async fn execute(&self, stream: Uuid, events: usize) -> anyhow::Result<()> {
        self.cqrs
            .execute(&stream.to_string(), Reserve { events })
            .await
            .map_err(|e| anyhow!("execute: {e}"))
    }

    async fn load(&self, stream: Uuid, snapshots: bool) -> anyhow::Result<common::Account> {
        let store = if snapshots {
            &self.snapshot
        } else {
            &self.replay
        };
        let context = store
            .load_aggregate(&stream.to_string())
            .await
            .map_err(|e| anyhow!("load: {e}"))?;
        Ok(common::Account {
            version: i64::try_from(context.current_sequence)?,
            outstanding_cents: context.aggregate.outstanding_cents,
        })
    }
}

enum Backed {
    Sqlite {
        pool: SqlitePool,
        stores: Box<Stores<SqliteEventRepository>>,
        _dir: tempfile::TempDir,
    },
    Postgres {
        pool: PgPool,
        stores: Box<Stores<PostgresEventRepository>>,
        admin: Box<PgConnectOptions>,
        name: String,
    },
}

struct Db {
    backed: Backed,
    /// Streams whose account a command opened already: the count of events appended (the
    /// framework does not return them).
    opened: Mutex<HashSet<Uuid>>,
}

/// The schema of `sqlite-es` 0.5.0 (`migrations/20221114171845_init.sql`), without its test
/// view and seed row.
const SQLITE_SCHEMA: [&str; 2] = [
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence integer CHECK (sequence >= 0) NOT NULL,
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload text NOT NULL,
        metadata text NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    ) STRICT",
    "CREATE TABLE snapshots (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        last_sequence integer CHECK (last_sequence >= 0) NOT NULL,
        current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
        payload text NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
    ) STRICT",
];

/// The schema of `postgres-es` 0.5.0 (`db/init.sql`), without its test view, seed row and
/// user.
const POSTGRES_SCHEMA: [&str; 2] = [
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence bigint CHECK (sequence >= 0) NOT NULL,
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload json NOT NULL,
        metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence)
    )",
    "CREATE TABLE snapshots (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
        current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
        payload json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
    )",
];

/// Pool size: that of the payments module's Postgres pool and SQLite reader pool.
const MAX_CONNECTIONS: u32 = 8;

struct CqrsEs;

impl EventStoreUnderTest for CqrsEs {
    type Db = Db;

    fn name(&self) -> &'static str {
        "cqrs-es"
    }

    fn versions(&self) -> String {
        "cqrs-es 0.5.0, sqlite-es 0.5.0, postgres-es 0.5.0, sqlx 0.8".to_owned()
    }

    async fn open(&self, backend: &Backend, snapshot_every: u32) -> anyhow::Result<Db> {
        let backed = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let options = SqliteConnectOptions::new()
                    .filename(dir.path().join("cqrs.sqlite"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .connect_with(options)
                    .await?;
                for statement in SQLITE_SCHEMA {
                    sqlx::query(statement).execute(&pool).await?;
                }
                let stores = Box::new(Stores::new(
                    || SqliteEventRepository::new(pool.clone()),
                    snapshot_every,
                ));
                Backed::Sqlite {
                    pool,
                    stores,
                    _dir: dir,
                }
            }
            Backend::Postgres { admin_url } => {
                let admin = PgConnectOptions::from_str(admin_url)?;
                let name = format!("cqrs_es_b_{}", Uuid::now_v7().simple());
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .connect_with(admin.clone().database(&name))
                    .await?;
                for statement in POSTGRES_SCHEMA {
                    sqlx::query(statement).execute(&pool).await?;
                }
                let stores = Box::new(Stores::new(
                    || PostgresEventRepository::new(pool.clone()),
                    snapshot_every,
                ));
                Backed::Postgres {
                    pool,
                    stores,
                    admin: Box::new(admin),
                    name,
                }
            }
        };
        Ok(Db {
            backed,
            opened: Mutex::new(HashSet::new()),
        })
    }

    async fn close(&self, db: Db) -> anyhow::Result<()> {
        match db.backed {
            Backed::Sqlite { pool, .. } => pool.close().await,
            Backed::Postgres {
                pool, admin, name, ..
            } => {
                pool.close().await;
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("drop database {name}"))?;
                conn.close().await?;
            }
        }
        Ok(())
    }

    async fn server_version(&self, db: &Db) -> anyhow::Result<String> {
        let (version,): (String,) = match &db.backed {
            Backed::Sqlite { pool, .. } => {
                sqlx::query_as("SELECT 'SQLite ' || sqlite_version()")
                    .fetch_one(pool)
                    .await?
            }
            Backed::Postgres { pool, .. } => {
                sqlx::query_as("SELECT 'PostgreSQL ' || current_setting('server_version')")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(version)
    }

    async fn reserve(&self, db: &Db, stream: Uuid, events: usize) -> anyhow::Result<usize> {
        match &db.backed {
            Backed::Sqlite { stores, .. } => stores.execute(stream, events).await?,
            Backed::Postgres { stores, .. } => stores.execute(stream, events).await?,
        }
        let first = db
            .opened
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .insert(stream);
        Ok(events + usize::from(first))
    }

    async fn load(
        &self,
        db: &Db,
        stream: Uuid,
        snapshots: bool,
    ) -> anyhow::Result<common::Account> {
        match &db.backed {
            Backed::Sqlite { stores, .. } => stores.load(stream, snapshots).await,
            Backed::Postgres { stores, .. } => stores.load(stream, snapshots).await,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = common::parse_args(false)? else {
        return Ok(());
    };
    common::run(&CqrsEs, &args).await
}
