use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StorageConfig;

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 512;

/// `<data_dir>/<module>.sqlite`.
pub(super) fn path(module: &str, data_dir: &Path) -> PathBuf {
    data_dir.join(format!("{module}.sqlite"))
}

/// Opens `<data_dir>/<module>.sqlite`: one writer connection and a pool of read-only readers.
/// With `create`, the directory and the file are created if missing; without, a missing file
/// is an error.
///
/// `synchronous = FULL` makes every commit durable before it is acknowledged; WAL keeps readers
/// from blocking the writer. Readers are `query_only`, so a write through them is an error
/// rather than a second writer competing for the lock.
pub(super) async fn open(
    module: &str,
    data_dir: &Path,
    config: &StorageConfig,
    create: bool,
) -> Result<(SqlitePool, SqlitePool), sqlx::Error> {
    if create {
        std::fs::create_dir_all(data_dir)?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path(module, data_dir))
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // Above sqlx's 100: a module's multi-row statements are one prepared statement per
        // row count up to `bulk::CACHED_ROWS`, beside its fixed ones.
        .statement_cache_capacity(STATEMENT_CACHE);

    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options.clone())
        .await?;

    let reader = SqlitePoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options.pragma("query_only", "ON"))
        .await?;
    Ok((writer, reader))
}
