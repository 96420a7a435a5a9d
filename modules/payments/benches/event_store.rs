//! Event-store benchmark of the payments module: figures, not tests (`cargo test` does not run
//! them).
//!
//! Appends (commands on one stream, with and without snapshots, and on many short streams) and
//! aggregate loads of K events with and without snapshots, through the module's own store:
//! `store::load` and `store::append` inside a write transaction and a savepoint, committed
//! durably, as the module's commands do. The workload, the checks and the table are
//! `benches/common/event_store.rs`, shared with the `cqrs-es` side (`benches/cqrs-es`); see
//! `benches/event-store-compare.sh` to run both.
//!
//! ```text
//! cargo bench -p payments --bench event_store -- --backend sqlite
//! BOUNDED_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p payments --bench event_store -- --backend postgres
//! ```
//!
//! Options: `--appends N` (default 1000), `--streams N --per-stream N` (200 × 5),
//! `--loads 10,100,1000`, `--load-seconds S` (1.5), `--snapshot-every N` (20, the module's
//! default).

#[path = "../../../benches/common/event_store.rs"]
mod common;

use common::{Account, Backend, EventStoreUnderTest, LIMIT_CENTS};
use payments::bench_support::{ATTEMPT, AccountEvent, AccountState, Loaded, Source, append, load};
use payments_api::PaymentId;
use shared_kernel::storage::testing::TestDatabase;
use shared_kernel::storage::{ModuleDb, Reader, StorageConfig};
use uuid::Uuid;

/// The payments module's event store.
struct Bounded;

struct Db {
    db: ModuleDb,
    snapshot_every: u32,
    _dir: Option<tempfile::TempDir>,
    /// Dropped (the database with it) on close.
    database: Option<TestDatabase>,
}

impl EventStoreUnderTest for Bounded {
    type Db = Db;

    fn name(&self) -> &'static str {
        "bounded"
    }

    fn versions(&self) -> String {
        "payments::store, sqlx 0.9".to_owned()
    }

    async fn open(&self, backend: &Backend, snapshot_every: u32) -> anyhow::Result<Db> {
        let (config, dir, database) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                (StorageConfig::sqlite(dir.path()), Some(dir), None)
            }
            Backend::Postgres { admin_url } => {
                let database = TestDatabase::create(admin_url).await;
                (
                    StorageConfig::postgres(database.url()),
                    None,
                    Some(database),
                )
            }
        };
        let db = ModuleDb::open(payments::NAME, &payments::MIGRATIONS, &config).await?;
        Ok(Db {
            db,
            snapshot_every,
            _dir: dir,
            database,
        })
    }

    async fn close(&self, db: Db) -> anyhow::Result<()> {
        db.db.close().await;
        drop(db.database);
        Ok(())
    }

    async fn server_version(&self, db: &Db) -> anyhow::Result<String> {
        let (version,): (String,) = match db.db.reader()? {
            Reader::Sqlite(pool) => {
                sqlx::query_as("SELECT 'SQLite ' || sqlite_version()")
                    .fetch_one(pool)
                    .await?
            }
            Reader::Postgres(pool) => {
                sqlx::query_as("SELECT 'PostgreSQL ' || current_setting('server_version')")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(version)
    }

    async fn reserve(&self, db: &Db, stream: Uuid, events: usize) -> anyhow::Result<usize> {
        let mut tx = db.db.begin().await?;
        tx.savepoint(ATTEMPT).await?;
        let account: Loaded<AccountState> =
            load(Source::Tx(&mut tx), stream, db.snapshot_every > 0).await?;
        let mut decided = account
            .state
            .decide_reserve(PaymentId::generate(), Uuid::now_v7(), 1, LIMIT_CENTS)
            .events;
        decided.extend((1..events).map(|_| AccountEvent::CreditReserved {
            payment_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            amount_cents: 1,
        }));
        append(&mut tx, &account, &decided, db.snapshot_every).await?;
        tx.release_savepoint(ATTEMPT).await?;
        tx.commit().await?;
        Ok(decided.len())
    }

    async fn load(&self, db: &Db, stream: Uuid, snapshots: bool) -> anyhow::Result<Account> {
        let account: Loaded<AccountState> =
            load(Source::Reader(db.db.reader()?), stream, snapshots).await?;
        Ok(Account {
            version: account.version,
            outstanding_cents: account.state.outstanding_cents,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = common::parse_args(true)? else {
        println!(
            "event store benchmarks run under `cargo bench -p payments --bench event_store`; \
             skipped"
        );
        return Ok(());
    };
    common::run(&Bounded, &args).await
}
