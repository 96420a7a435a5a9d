//! Test support: a throwaway Postgres database per test, dropped when the test ends.
//!
//! Postgres tests run when `BOUNDED_TEST_DATABASE_URL` names an administrative connection
//! (`postgres://postgres@127.0.0.1:5432/test`). Without it they announce that they are skipped —
//! unless `BOUNDED_REQUIRE_POSTGRES=1`, which CI sets so that a skip cannot pass silently.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The two backends every storage test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

/// A test fixture [`both_backends!`](crate::both_backends) builds afresh for each backend.
pub trait OnBackend: Sized {
    /// The fixture of test `test` on `backend`, or `None` when that backend's tests are not
    /// configured (Postgres without `BOUNDED_TEST_DATABASE_URL`: see [`postgres_url`]). SQLite
    /// needs nothing, so it always gives `Some`.
    fn on_backend(backend: TestBackend, test: &'static str) -> impl Future<Output = Option<Self>>;
}

/// Runs each test body once per backend, as `<name>::sqlite` and `<name>::postgres`, with a
/// fixture of the declared type built by its [`OnBackend`] (a Postgres test is skipped, loudly,
/// without `BOUNDED_TEST_DATABASE_URL`, and fails with `BOUNDED_REQUIRE_POSTGRES=1`). The one
/// copy every crate's tests use:
///
/// ```text
/// shared_kernel::both_backends! {
///     async fn orders_are_listed(app: TestApp) { /* … */ }
/// }
/// ```
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($fixture:ident: $type:ty) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let $fixture = <$type as $crate::storage::testing::OnBackend>::on_backend(
                        $crate::storage::testing::TestBackend::Sqlite,
                        stringify!($name),
                    )
                    .await
                    .expect("SQLite tests need nothing");
                    $body
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some($fixture) =
                        <$type as $crate::storage::testing::OnBackend>::on_backend(
                            $crate::storage::testing::TestBackend::Postgres,
                            stringify!($name),
                        )
                        .await
                    {
                        $body
                    }
                }
            }
        )*
    };
}

/// The admin URL for Postgres tests, or `None` (after saying so) when they are not configured.
///
/// # Panics
/// When `BOUNDED_REQUIRE_POSTGRES=1` and no URL is configured.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("BOUNDED_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("BOUNDED_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "BOUNDED_REQUIRE_POSTGRES=1 but BOUNDED_TEST_DATABASE_URL is not set"
            );
            eprintln!("skipped {test} on Postgres: BOUNDED_TEST_DATABASE_URL is not set");
            None
        }
    }
}

/// A fresh database on the test server; dropped (with its connections) on `Drop`.
#[derive(Debug)]
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
    url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        let admin = PgConnectOptions::from_str(admin_url)
            .expect("BOUNDED_TEST_DATABASE_URL is a valid URL");
        let name = format!("bounded_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to the Postgres test server");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        let url = replace_database(admin_url, &name);
        Self { admin, name, url }
    }

    /// Admin URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside async context rules: use a private runtime on its own thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test database");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The plan `db` chooses for `sql`, one step per line: SQLite's `EXPLAIN QUERY PLAN` (its plan
/// does not depend on the values bound), and on Postgres the *generic* plan of the statement
/// prepared with parameters of `param_types` (what a cached prepared statement runs whatever
/// the values), executed with the SQL literals `args`, with sequential scans disabled so that
/// a small test table does not hide whether an index can serve the statement.
///
/// # Panics
/// When the statement cannot be planned.
pub async fn query_plan(
    db: &super::ModuleDb,
    sql: &str,
    param_types: &[&str],
    args: &[&str],
) -> String {
    let plan: Vec<String> = match db.reader().expect("the database is open") {
        super::Reader::Sqlite(pool) => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(pool)
                    .await
                    .expect("EXPLAIN QUERY PLAN");
            rows.into_iter().map(|row| row.3).collect()
        }
        super::Reader::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("a Postgres transaction");
            let prepare = format!(
                "SET LOCAL plan_cache_mode = force_generic_plan; \
                 SET LOCAL enable_seqscan = off; \
                 PREPARE plan_probe ({}) AS {sql}",
                param_types.join(", ")
            );
            sqlx::raw_sql(AssertSqlSafe(prepare))
                .execute(&mut *tx)
                .await
                .expect("PREPARE");
            let explain = format!("EXPLAIN EXECUTE plan_probe ({})", args.join(", "));
            let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(explain))
                .fetch_all(&mut *tx)
                .await
                .expect("EXPLAIN EXECUTE");
            sqlx::raw_sql("DEALLOCATE plan_probe")
                .execute(&mut *tx)
                .await
                .expect("DEALLOCATE");
            rows.into_iter().map(|row| row.0).collect()
        }
    };
    plan.join("\n")
}

/// Asserts that the plan of `sql` (see [`query_plan`]) has every step of `sqlite` or of
/// `postgres`, whichever backend `db` is.
///
/// # Panics
/// When a step is missing, naming the statement and the plan.
pub async fn assert_plan(
    db: &super::ModuleDb,
    sql: &str,
    (param_types, args): (&[&str], &[&str]),
    sqlite: &[&str],
    postgres: &[&str],
) {
    let plan = query_plan(db, sql, param_types, args).await;
    let postgres_db = db.reader().expect("the database is open").is_postgres();
    for step in if postgres_db { postgres } else { sqlite } {
        assert!(
            plan.contains(step),
            "{step:?} is not in the plan of {sql}:\n{plan}"
        );
    }
}

/// Asserts, on each backend (see [`on_each_backend`]) of `module`'s fresh database, that the
/// batch read `sql(postgres)`, whose `$1` is a set of ids, has every step of `sqlite` or
/// `postgres` in its plan: the read seeks its keys instead of walking a table.
///
/// # Panics
/// When a step is missing, or a database cannot be opened.
pub async fn assert_batch_read_plan(
    module: &'static str,
    migrations: &super::Migrations,
    sqlite_dir: &std::path::Path,
    sql: fn(bool) -> String,
    sqlite: &[&str],
    postgres: &[&str],
) {
    on_each_backend(module, migrations, sqlite_dir, |db| async move {
        let sql = sql(db.reader().expect("the database is open").is_postgres());
        let ids: (&[&str], &[&str]) = (&["uuid[]"], &["ARRAY[gen_random_uuid()]"]);
        assert_plan(&db, &sql, ids, sqlite, postgres).await;
    })
    .await;
}

/// Where a test's fresh database lives on `backend`: in `sqlite_dir`, or in a fresh Postgres
/// database (returned too: dropping it drops the database); `None` when Postgres tests are
/// not configured (see [`postgres_url`]).
pub async fn fresh_config(
    backend: TestBackend,
    test: &str,
    sqlite_dir: &std::path::Path,
) -> Option<(super::StorageConfig, Option<TestDatabase>)> {
    match backend {
        TestBackend::Sqlite => Some((super::StorageConfig::sqlite(sqlite_dir), None)),
        TestBackend::Postgres => {
            let database = TestDatabase::create(&postgres_url(test)?).await;
            Some((
                super::StorageConfig::postgres(database.url()),
                Some(database),
            ))
        }
    }
}

/// Runs `check` on `module`'s database freshly opened on SQLite (in `sqlite_dir`), then on a
/// fresh Postgres database when Postgres tests are configured (see [`postgres_url`]).
///
/// # Panics
/// When a database cannot be opened.
pub async fn on_each_backend<F, Fut>(
    module: &'static str,
    migrations: &super::Migrations,
    sqlite_dir: &std::path::Path,
    check: F,
) where
    F: Fn(super::ModuleDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let database = match postgres_url(module) {
        Some(url) => Some(TestDatabase::create(&url).await),
        None => None,
    };
    let mut configs = vec![super::StorageConfig::sqlite(sqlite_dir)];
    configs.extend(
        database
            .iter()
            .map(|database| super::StorageConfig::postgres(database.url())),
    );
    for config in configs {
        let db = super::ModuleDb::open(module, migrations, &config)
            .await
            .expect("open the module's test database");
        check(db.clone()).await;
        db.close().await;
    }
}

/// The kernel's own tests' fixture: a database of module `scratch` holding only the kernel's
/// tables (outbox, inbox, checkpoints, dead letters, idempotency keys), in a temporary
/// directory or a fresh Postgres database; a test creates whatever table it needs.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ScratchDb {
    pub db: super::ModuleDb,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

#[cfg(test)]
impl ScratchDb {
    /// Runs `sql` (one statement) in a transaction of its own.
    pub async fn execute(&self, sql: &'static str) {
        let mut tx = self.db.begin().await.expect("begin");
        crate::with_tx!(&mut tx, |conn| sqlx::query(sql)
            .execute(conn)
            .await
            .map(drop))
        .expect("the statement runs");
        tx.commit().await.expect("commit");
    }
}

#[cfg(test)]
impl OnBackend for ScratchDb {
    async fn on_backend(backend: TestBackend, test: &'static str) -> Option<Self> {
        static NO_MIGRATIONS: super::Migrations = super::Migrations {
            sqlite: sqlx::migrate::Migrator::DEFAULT,
            postgres: sqlx::migrate::Migrator::DEFAULT,
        };
        let (config, dir, database) = match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                (super::StorageConfig::sqlite(dir.path()), Some(dir), None)
            }
            TestBackend::Postgres => {
                let database = TestDatabase::create(&postgres_url(test)?).await;
                (
                    super::StorageConfig::postgres(database.url()),
                    None,
                    Some(database),
                )
            }
        };
        let db = super::ModuleDb::open("scratch", &NO_MIGRATIONS, &config)
            .await
            .expect("open the scratch database");
        Some(Self {
            db,
            _dir: dir,
            _database: database,
        })
    }
}

/// `admin_url` with its database path replaced by `database`.
fn replace_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            super::replace_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::replace_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            super::replace_database("postgres://h", "x"),
            "postgres://h/x"
        );
    }
}

/// A small deterministic generator (xorshift64*) for seeded scenarios: the same seed gives the
/// same scenario on every run.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (which must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// An index into a slice of `len` (which must not be 0) items.
    pub fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(len)).unwrap_or(usize::MAX)
    }

    pub fn uuid(&mut self) -> uuid::Uuid {
        uuid::Uuid::from_u64_pair(self.below(u64::MAX), self.below(u64::MAX))
    }
}

/// Counts every event of the target `sqlx::query`: one per statement.
struct StatementCounter(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts the statements sqlx runs in this process from now on (its per-statement
/// `sqlx::query` event, as the app's `--count-statements` does): installs the global `tracing`
/// subscriber, so it is called once, in a test binary of its own (any other test running in
/// the process would be counted too).
///
/// # Panics
/// When a global subscriber is installed already.
pub fn count_statements() -> Arc<AtomicUsize> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let count = Arc::new(AtomicUsize::new(0));
    let only_statements = tracing_subscriber::filter::Targets::new()
        .with_target("sqlx::query", tracing::Level::TRACE);
    tracing_subscriber::registry()
        .with(StatementCounter(Arc::clone(&count)).with_filter(only_statements))
        .init();
    count
}

/// A published event without what differs by nature between two databases that received the
/// same events (its id, seq and time): what differential tests compare.
#[derive(Debug, PartialEq)]
pub struct PublishedEvent {
    pub event_type: String,
    pub aggregate_id: String,
    pub payload: serde_json::Value,
    pub correlation_id: Option<uuid::Uuid>,
    pub causation_id: Option<uuid::Uuid>,
}

impl From<crate::messaging::Envelope> for PublishedEvent {
    fn from(e: crate::messaging::Envelope) -> Self {
        Self {
            event_type: e.event_type,
            aggregate_id: e.aggregate_id,
            payload: e.payload,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
        }
    }
}
