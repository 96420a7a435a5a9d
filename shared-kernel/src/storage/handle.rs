use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use tokio::sync::{broadcast, watch};

use crate::messaging::Envelope;
use crate::messaging::outbox::{self, Outgoing};
use crate::messaging::recent::Recent;

use super::{
    Backend, Migrated, Migrations, OpenError, StorageConfig, StorageError, postgres, sqlite,
};

/// Name of the table that tracks the kernel's own migrations (idempotency keys, later the
/// outbox and inbox) inside every module's database, apart from the module's `_sqlx_migrations`.
const KERNEL_MIGRATIONS_TABLE: &str = "_kernel_migrations";

/// Where sqlx tracks a module's own migrations.
const MODULE_MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The kernel's own migrations for one backend, tracked in [`KERNEL_MIGRATIONS_TABLE`].
fn kernel_migrator(postgres: bool) -> sqlx::migrate::Migrator {
    let mut kernel = if postgres {
        sqlx::migrate!("migrations/postgres")
    } else {
        sqlx::migrate!("migrations/sqlite")
    };
    kernel.dangerous_set_table_name(KERNEL_MIGRATIONS_TABLE);
    kernel
}

/// Names the store in an open failure; a missing Postgres database says how to create it.
fn open_error(module: &'static str, backend: &Backend, source: sqlx::Error) -> OpenError {
    if let Backend::Postgres { admin_url } = backend
        && let Some(missing) = postgres::missing_database(admin_url, &source)
    {
        return missing;
    }
    OpenError::Failed {
        module,
        location: backend.location(module),
        source,
    }
}

/// An open module database: the native pools of one backend.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite {
        /// The single writer connection; writers queue on it instead of contending for the lock.
        writer: SqlitePool,
        /// `query_only` connections for reads, concurrent with the writer thanks to WAL.
        reader: SqlitePool,
    },
    Postgres(PgPool),
}

/// A pool to read from, borrowed from a [`Db`]; see [`with_reader!`](crate::with_reader).
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl Reader<'_> {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Reader::Postgres(_))
    }
}

/// A write transaction on a module database; see [`with_tx!`](crate::with_tx).
///
/// Committing a transaction that appended to the outbox wakes the module's publisher at once.
#[derive(Debug)]
pub struct Tx {
    #[doc(hidden)]
    pub conn: TxConn,
    /// Events appended to the outbox in this transaction: the commit wakes the publisher and
    /// announces them to [`ModuleDb::committed_events`].
    pub(crate) appended_events: Vec<AppendedEvent>,
    /// Events appended to the outbox and not written yet: [`Tx::commit`] writes them last.
    pub(crate) pending: Vec<Outgoing>,
    /// The open savepoints, innermost last, each with how many events were pending when it
    /// was taken.
    savepoints: Vec<(&'static str, usize)>,
    /// The events written at commit, as a reader of the outbox would get them: kept in the
    /// module handle's [`Recent`] once the commit went through.
    pub(crate) written: Vec<Envelope>,
    /// Where the module handle keeps its recently committed events (`None`: a transaction of a
    /// bare [`Db`], which keeps none).
    pub(crate) recent: Option<Arc<Recent>>,
    /// This transaction holds its module's batch lock (see `Handler::serialized`): taking it
    /// again is a no-op.
    pub(crate) serialized: bool,
    commits: Option<watch::Sender<u64>>,
    committed: Option<broadcast::Sender<Arc<[AppendedEvent]>>>,
    /// The module whose database this is, for metrics and the events it writes.
    pub(crate) module: Option<&'static str>,
    /// The handle's tag, sent with the commit notification (see [`ModuleDb::tag`]).
    pub(crate) tag: Option<Arc<str>>,
}

/// How a batch transaction (a subscription's batch, a group commit: [`ModuleDb::begin_keyed`])
/// begins on Postgres, in the same round trip as `BEGIN`.
///
/// Every statement of such a transaction reaches its rows through keys the transaction holds
/// (a batch's ids), and each has an index. Yet a statement's plan is made once per
/// connection and then reused (a prepared statement's generic plan), and the plan made while a
/// table was small — every table of a new store — joins a batch's ids to it with a hash join
/// over a sequential scan. Nothing re-plans it until the table is analyzed, which autovacuum
/// does only after a minute and more, so the scan grows with the table: a 15-second benchmark on
/// a fresh store read 12 million rows of `orders.sagas` this way. Sequential scans being
/// costed as a last resort here, the plans seek their keys at any size; a statement with no
/// index to use still scans. Other write transactions begin plainly: maintenance (pruning, a
/// projection's rebuild) reads whole tables, which a sequential scan serves best.
const BEGIN_KEYED: &str = "BEGIN; SET LOCAL enable_seqscan = off";

/// How many commits' announcements a slow [`ModuleDb::committed_events`] receiver may fall
/// behind before it is told it lagged.
const COMMITTED_CAPACITY: usize = 1024;

/// One event a committed transaction appended to the outbox, as announced by
/// [`ModuleDb::committed_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    pub seq: i64,
    pub aggregate_id: String,
    /// `module.EventName`.
    pub event_type: &'static str,
}

/// The native transaction inside a [`Tx`].
#[derive(Debug)]
pub enum TxConn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// Writes the events appended to the outbox (see [`outbox::append_many`]), then commits.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        outbox::write(&mut self).await?;
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await?,
            // A Postgres transaction that appended has announced its events already: the
            // outbox insert itself calls `pg_notify`, delivered at this commit.
            TxConn::Postgres(tx) => tx.commit().await?,
        }
        metrics::counter!(crate::prometheus::COMMITS, "module" => self.module.unwrap_or("unknown"))
            .increment(1);
        // Kept before the wake-up below, so a subscriber it wakes finds them.
        if let Some(recent) = &self.recent
            && !self.written.is_empty()
        {
            recent.insert(self.written);
        }
        let appended = self.appended_events.len() as u64;
        if appended > 0 {
            if let Some(commits) = &self.commits {
                commits.send_modify(|n| *n += 1);
            }
            if let Some(committed) = &self.committed
                && committed.receiver_count() > 0
            {
                // Nobody listening is not an error: the announcement is only a wake-up.
                let _ = committed.send(Arc::from(self.appended_events));
            }
            let source = self.module.unwrap_or("unknown");
            metrics::counter!("bounded_outbox_appended_events_total", "source" => source)
                .increment(appended);
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, TxConn::Postgres(_))
    }

    /// Takes savepoint `name` (`SAVEPOINT "name"`, the same SQL on both backends; a name is
    /// any text without a double quote).
    pub async fn savepoint(&mut self, name: &'static str) -> Result<(), sqlx::Error> {
        if name.contains('"') {
            return Err(sqlx::Error::InvalidArgument(format!(
                "a savepoint's name has no double quote: {name}"
            )));
        }
        self.run(format!("SAVEPOINT \"{name}\"")).await?;
        self.savepoints.push((name, self.pending.len()));
        Ok(())
    }

    /// Rolls back to savepoint `name`, which stays open: the statements since, and the events
    /// appended to the outbox since, are undone; savepoints taken since are gone.
    pub async fn rollback_to_savepoint(&mut self, name: &'static str) -> Result<(), sqlx::Error> {
        let at = self.open_savepoint(name)?;
        self.run(format!("ROLLBACK TO SAVEPOINT \"{name}\""))
            .await?;
        let pending = self.savepoints[at].1;
        self.savepoints.truncate(at + 1);
        self.pending.truncate(pending);
        Ok(())
    }

    /// Releases savepoint `name` (and any taken since), keeping what was done since.
    pub async fn release_savepoint(&mut self, name: &'static str) -> Result<(), sqlx::Error> {
        let at = self.open_savepoint(name)?;
        self.run(format!("RELEASE SAVEPOINT \"{name}\"")).await?;
        self.savepoints.truncate(at);
        Ok(())
    }

    /// Where the innermost open savepoint `name` is.
    fn open_savepoint(&self, name: &str) -> Result<usize, sqlx::Error> {
        self.savepoints
            .iter()
            .rposition(|(open, _)| *open == name)
            .ok_or_else(|| sqlx::Error::InvalidArgument(format!("no savepoint {name} is open")))
    }

    async fn run(&mut self, sql: String) -> Result<(), sqlx::Error> {
        // The savepoint names are the callers' `&'static str`s, quoted, never input.
        crate::with_tx!(self, |conn| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(conn)
                .await
                .map(drop)
        })
    }
}

/// Runs one body against the reader pool of either backend. `$conn` is `&SqlitePool` or
/// `&PgPool`; the body is compiled once per backend, so every bind is type-checked for both.
#[macro_export]
macro_rules! with_reader {
    ($reader:expr, |$conn:ident| $body:expr) => {
        match $reader {
            $crate::storage::Reader::Sqlite($conn) => $body,
            $crate::storage::Reader::Postgres($conn) => $body,
        }
    };
}

/// Runs one body inside a [`Tx`](crate::storage::Tx) of either backend, given a `&mut Tx`.
/// `$conn` is a
/// `&mut SqliteConnection` or `&mut PgConnection`; reborrow it (`&mut *conn`) to run several
/// statements.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut (*$tx).conn {
            $crate::storage::TxConn::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::storage::TxConn::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

impl Db {
    /// Opens (and on Postgres bootstraps) the module's database and brings its schema up to
    /// date: first the kernel's tables, then the module's own migrations. Returns what it
    /// applied.
    pub async fn open(
        module: &'static str,
        migrations: &Migrations,
        config: &StorageConfig,
    ) -> Result<(Db, Migrated), OpenError> {
        let backend = config.backend_for(module);
        let failed = |source| open_error(module, backend, source);
        let db = match backend {
            Backend::Sqlite { data_dir } => {
                let (writer, reader) = sqlite::open(module, data_dir, config, true)
                    .await
                    .map_err(failed)?;
                Db::Sqlite { writer, reader }
            }
            Backend::Postgres { admin_url } => Db::Postgres(
                postgres::open(module, admin_url, config)
                    .await
                    .map_err(failed)?,
            ),
        };
        match db.migrate(migrations).await {
            Ok(migrated) => Ok((db, migrated)),
            Err(error) => {
                db.close().await;
                Err(failed(error))
            }
        }
    }

    /// Opens a store that must already exist and be migrated, creating and changing nothing:
    /// for commands that only read.
    pub async fn open_existing(
        module: &'static str,
        migrations: &Migrations,
        config: &StorageConfig,
    ) -> Result<Db, OpenError> {
        let backend = config.backend_for(module);
        let failed = |source| open_error(module, backend, source);
        let missing = || OpenError::MissingStore {
            module,
            location: backend.location(module),
        };
        let db = match backend {
            Backend::Sqlite { data_dir } => {
                if !sqlite::path(module, data_dir).is_file() {
                    return Err(missing());
                }
                let (writer, reader) = sqlite::open(module, data_dir, config, false)
                    .await
                    .map_err(failed)?;
                Db::Sqlite { writer, reader }
            }
            Backend::Postgres { admin_url } => {
                match postgres::open_existing(module, admin_url, config)
                    .await
                    .map_err(failed)?
                {
                    Some(pool) => Db::Postgres(pool),
                    None => return Err(missing()),
                }
            }
        };
        let pending = match db.pending(migrations).await {
            Ok(pending) => pending,
            Err(error) => {
                db.close().await;
                return Err(failed(error));
            }
        };
        if !pending.is_empty() {
            db.close().await;
            return Err(OpenError::NotMigrated {
                module,
                location: backend.location(module),
                pending: pending.kernel.len() + pending.module.len(),
            });
        }
        Ok(db)
    }

    /// The migrations of each set not applied yet.
    async fn pending(&self, migrations: &Migrations) -> Result<Migrated, sqlx::Error> {
        let (kernel, module) = match self {
            Db::Sqlite { .. } => (kernel_migrator(false), &migrations.sqlite),
            Db::Postgres(_) => (kernel_migrator(true), &migrations.postgres),
        };
        Ok(Migrated {
            kernel: self.not_applied(&kernel, KERNEL_MIGRATIONS_TABLE).await?,
            module: self.not_applied(module, MODULE_MIGRATIONS_TABLE).await?,
        })
    }

    /// Versions of `migrator` that its table `table` does not list as applied.
    async fn not_applied(
        &self,
        migrator: &sqlx::migrate::Migrator,
        table: &'static str,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let exists = match self {
            Db::Sqlite { .. } => {
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)"
            }
            Db::Postgres(_) => {
                "SELECT EXISTS (SELECT 1 FROM pg_tables \
                 WHERE schemaname = current_schema() AND tablename = $1)"
            }
        };
        let (exists,): (bool,) = crate::with_reader!(self.reader(), |pool| {
            sqlx::query_as(exists).bind(table).fetch_one(pool).await
        })?;
        let applied: Vec<(i64,)> = if exists {
            let sql = match table {
                KERNEL_MIGRATIONS_TABLE => "SELECT version FROM _kernel_migrations WHERE success",
                _ => "SELECT version FROM _sqlx_migrations WHERE success",
            };
            crate::with_reader!(self.reader(), |pool| {
                sqlx::query_as(sql).fetch_all(pool).await
            })?
        } else {
            Vec::new()
        };
        let applied: std::collections::HashSet<i64> = applied.into_iter().map(|(v,)| v).collect();
        Ok(migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| m.version)
            .collect())
    }

    async fn migrate(&self, migrations: &Migrations) -> Result<Migrated, sqlx::Error> {
        let pending = self.pending(migrations).await?;
        match self {
            Db::Sqlite { writer, .. } => {
                kernel_migrator(false).run(writer).await?;
                migrations.sqlite.run(writer).await?;
            }
            Db::Postgres(pool) => {
                kernel_migrator(true).run(pool).await?;
                migrations.postgres.run(pool).await?;
            }
        }
        Ok(pending)
    }

    pub fn reader(&self) -> Reader<'_> {
        match self {
            Db::Sqlite { reader, .. } => Reader::Sqlite(reader),
            Db::Postgres(pool) => Reader::Postgres(pool),
        }
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.begin_as(false).await
    }

    /// Begins a write transaction; `keyed` for a batch transaction, whose statements all reach
    /// their rows by keys it holds (see [`BEGIN_KEYED`]).
    pub(crate) async fn begin_as(&self, keyed: bool) -> Result<Tx, sqlx::Error> {
        let conn = match self {
            Db::Sqlite { writer, .. } => TxConn::Sqlite(writer.begin().await?),
            Db::Postgres(pool) if keyed => TxConn::Postgres(pool.begin_with(BEGIN_KEYED).await?),
            Db::Postgres(pool) => TxConn::Postgres(pool.begin().await?),
        };
        Ok(Tx {
            conn,
            appended_events: Vec::new(),
            pending: Vec::new(),
            savepoints: Vec::new(),
            written: Vec::new(),
            recent: None,
            serialized: false,
            commits: None,
            committed: None,
            module: None,
            tag: None,
        })
    }

    /// A cheap round trip that fails when the database cannot serve reads.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::with_reader!(self.reader(), |pool| {
            sqlx::query("SELECT 1").execute(pool).await.map(drop)
        })
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// A module's handle to its own database.
///
/// If the database cannot be opened at startup, the handle still exists: every use answers
/// [`StorageError::Unavailable`] while a background task keeps retrying, so one module's
/// broken database never stops the others from serving.
#[derive(Debug, Clone)]
pub struct ModuleDb {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    module: &'static str,
    db: OnceLock<Db>,
    /// Flips to `true` once `db` is set, for whoever waits on [`ModuleDb::opened`].
    opened: watch::Sender<bool>,
    /// Counts commits that appended to the outbox: the publisher's wake-up call.
    commits: watch::Sender<u64>,
    /// Counts the outbox commits other processes announced (a subset of `commits`).
    remote_commits: watch::Sender<u64>,
    /// Announces what each local commit appended to the outbox.
    committed: broadcast::Sender<Arc<[AppendedEvent]>>,
    /// The events local commits appended lately, for in-process readers of the outbox.
    recent: Arc<Recent>,
    /// Names this handle (in practice: this process) in outbox commit notifications.
    tag: Arc<str>,
}

impl Inner {
    fn new(module: &'static str) -> Self {
        Self {
            module,
            db: OnceLock::new(),
            opened: watch::Sender::new(false),
            commits: watch::Sender::new(0),
            remote_commits: watch::Sender::new(0),
            committed: broadcast::Sender::new(COMMITTED_CAPACITY),
            recent: Arc::new(Recent::default()),
            tag: Arc::from(uuid::Uuid::now_v7().simple().to_string()),
        }
    }

    fn set(&self, db: Db) {
        let _ = self.db.set(db);
        self.opened.send_replace(true);
    }
}

impl ModuleDb {
    /// Opens (creating and migrating) the database now, failing if it cannot be opened.
    pub async fn open(
        module: &'static str,
        migrations: &Migrations,
        config: &StorageConfig,
    ) -> Result<Self, OpenError> {
        let (db, _) = Db::open(module, migrations, config).await?;
        Ok(Self::from_db(module, db))
    }

    /// Creates or upgrades the database and closes it again; returns what was applied
    /// (`bounded migrate`).
    pub async fn migrate(
        module: &'static str,
        migrations: &Migrations,
        config: &StorageConfig,
    ) -> Result<Migrated, OpenError> {
        let (db, migrated) = Db::open(module, migrations, config).await?;
        db.close().await;
        Ok(migrated)
    }

    /// Opens a database that must exist and be up to date, creating and migrating nothing:
    /// for commands that only read (`bounded reconcile`).
    pub async fn open_existing(
        module: &'static str,
        migrations: &Migrations,
        config: &StorageConfig,
    ) -> Result<Self, OpenError> {
        let db = Db::open_existing(module, migrations, config).await?;
        Ok(Self::from_db(module, db))
    }

    /// Wraps an already opened database.
    pub fn from_db(module: &'static str, db: Db) -> Self {
        let inner = Inner::new(module);
        inner.set(db);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Opens the database, or — when that fails — returns a handle that reports the module
    /// unavailable and keeps retrying in the background with capped exponential backoff.
    ///
    /// # Errors
    /// A configuration mistake that retrying cannot fix ([`OpenError::is_configuration`]: the
    /// Postgres database does not exist) fails at once instead.
    pub async fn connect(
        module: &'static str,
        migrations: &'static Migrations,
        config: StorageConfig,
    ) -> Result<Self, OpenError> {
        let handle = Self {
            inner: Arc::new(Inner::new(module)),
        };
        match Db::open(module, migrations, &config).await {
            Ok((db, _)) => {
                handle.inner.set(db);
            }
            Err(error) if error.is_configuration() => return Err(error),
            Err(error) => {
                tracing::error!(module, error = %crate::http::error_chain(&error), "Module database unavailable at startup; retrying in the background.");
                let inner = Arc::clone(&handle.inner);
                tokio::spawn(async move {
                    let mut delay = Duration::from_millis(100);
                    loop {
                        tokio::time::sleep(delay).await;
                        match Db::open(module, migrations, &config).await {
                            Ok((db, _)) => {
                                tracing::info!(module, "Module database is available again.");
                                inner.set(db);
                                return;
                            }
                            Err(error) => {
                                tracing::warn!(module, error = %crate::http::error_chain(&error), retry_in_ms = delay.as_millis() as u64, "Module database still unavailable.");
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                });
            }
        }
        Ok(handle)
    }

    /// Resolves once the database is open (at once if it already is).
    pub async fn opened(&self) {
        let mut opened = self.inner.opened.subscribe();
        // The sender lives in `inner`, which `self` keeps alive: the wait cannot fail.
        let _ = opened.wait_for(|open| *open).await;
    }

    pub fn module(&self) -> &'static str {
        self.inner.module
    }

    /// The open database, or `Unavailable` while it could not be opened yet.
    pub fn db(&self) -> Result<&Db, StorageError> {
        self.inner.db.get().ok_or(StorageError::Unavailable {
            module: self.inner.module,
            source: None,
        })
    }

    pub fn reader(&self) -> Result<Reader<'_>, StorageError> {
        Ok(self.db()?.reader())
    }

    pub async fn begin(&self) -> Result<Tx, StorageError> {
        self.begin_as(false).await
    }

    /// A write transaction for a batch whose statements all reach their rows by the keys it
    /// holds: on Postgres its plans seek those keys even when they were made on a small table
    /// (see `BEGIN_KEYED`); on SQLite the same as [`ModuleDb::begin`].
    pub async fn begin_keyed(&self) -> Result<Tx, StorageError> {
        self.begin_as(true).await
    }

    async fn begin_as(&self, keyed: bool) -> Result<Tx, StorageError> {
        let mut tx = self
            .db()?
            .begin_as(keyed)
            .await
            .map_err(|e| self.classify(e))?;
        tx.commits = Some(self.inner.commits.clone());
        tx.committed = Some(self.inner.committed.clone());
        tx.recent = Some(Arc::clone(&self.inner.recent));
        tx.module = Some(self.inner.module);
        tx.tag = Some(Arc::clone(&self.inner.tag));
        Ok(tx)
    }

    /// Up to `limit` events of this module's outbox after `after_seq`, from memory, when this
    /// process committed the very next one lately (see [`Recent::after`]); `None` otherwise.
    pub(crate) fn recent_after(&self, after_seq: i64, limit: i64) -> Option<Vec<Envelope>> {
        self.inner.recent.after(after_seq, limit)
    }

    /// Wakes this module's subscribers as a local commit would: another process committed to
    /// the outbox (announced by Postgres NOTIFY).
    pub fn signal_outbox_commit(&self) {
        self.inner.commits.send_modify(|n| *n += 1);
        self.inner.remote_commits.send_modify(|n| *n += 1);
    }

    /// Changes whenever another process announces an outbox commit to this database (Postgres
    /// NOTIFY): such commits are not in [`ModuleDb::committed_events`].
    pub fn remote_outbox_commits(&self) -> watch::Receiver<u64> {
        self.inner.remote_commits.subscribe()
    }

    /// What each transaction of this process appended to the outbox, announced after its
    /// commit: a waiter for one aggregate can tell whether a commit concerns it without a
    /// query. A receiver that falls behind gets `Lagged` and should re-read what it waits for;
    /// commits of other processes only show in [`ModuleDb::remote_outbox_commits`].
    pub fn committed_events(&self) -> broadcast::Receiver<Arc<[AppendedEvent]>> {
        self.inner.committed.subscribe()
    }

    /// Identifies this handle in the Postgres notifications of its outbox commits, so that its
    /// own listener can skip what the local wake-up has already delivered.
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }

    /// Changes whenever a transaction that appended to this module's outbox commits.
    pub fn outbox_commits(&self) -> watch::Receiver<u64> {
        self.inner.commits.subscribe()
    }

    /// Turns a connection-level failure into `Unavailable` naming this module.
    pub fn classify(&self, error: sqlx::Error) -> StorageError {
        if super::is_connection_error(&error) {
            StorageError::Unavailable {
                module: self.inner.module,
                source: Some(error),
            }
        } else {
            StorageError::Unexpected(error)
        }
    }

    /// Fails when the module cannot currently serve reads; used by `/ready`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), StorageError> {
        let db = self.db()?;
        match tokio::time::timeout(timeout, db.ping()).await {
            Ok(result) => result.map_err(|e| StorageError::Unavailable {
                module: self.inner.module,
                source: Some(e),
            }),
            Err(_) => Err(StorageError::Unavailable {
                module: self.inner.module,
                source: None,
            }),
        }
    }

    pub async fn close(&self) {
        if let Some(db) = self.inner.db.get() {
            db.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::AssertSqlSafe;

    use super::*;
    use crate::storage::testing::{OnBackend, ScratchDb, TestBackend};

    /// The generic plan (what a prepared statement runs once reused) of a batch's keyed join
    /// made in a batch transaction while the table is empty, as on a new store: it seeks the
    /// keys through the index, so it stays cheap as the table grows. Other transactions keep
    /// the planner's defaults.
    #[tokio::test]
    async fn a_batch_transaction_plans_a_keyed_join_on_an_empty_table_as_index_seeks() {
        let Some(scratch) = ScratchDb::on_backend(TestBackend::Postgres, "keyed_plans").await
        else {
            return;
        };
        scratch
            .execute("CREATE TABLE keyed (id uuid PRIMARY KEY, n int8 NOT NULL)")
            .await;
        let mut plain = scratch.db.begin().await.unwrap();
        let TxConn::Postgres(conn) = &mut plain.conn else {
            panic!("a Postgres transaction");
        };
        let seqscan: String = sqlx::query_scalar("SHOW enable_seqscan")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(seqscan, "on");
        drop(plain);
        let mut tx = scratch.db.begin_keyed().await.unwrap();
        let TxConn::Postgres(conn) = &mut tx.conn else {
            panic!("a Postgres transaction");
        };
        let plan: Vec<String> = async {
            sqlx::raw_sql(
                "SET LOCAL plan_cache_mode = force_generic_plan; \
                 PREPARE keyed_join (uuid[], int8[]) AS \
                   UPDATE keyed k SET n = k.n + v.n FROM UNNEST($1, $2) AS v(id, n) \
                   WHERE k.id = v.id",
            )
            .execute(&mut **conn)
            .await?;
            sqlx::query_scalar(AssertSqlSafe(
                "EXPLAIN EXECUTE keyed_join (ARRAY[gen_random_uuid()], ARRAY[1::int8])",
            ))
            .fetch_all(&mut **conn)
            .await
        }
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains("Index Scan using keyed_pkey"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}
