//! Per-module storage: one SQLite file or one Postgres schema + login role per module.
//!
//! A module never sees a connection string. `app` builds a [`StorageConfig`], and each module
//! asks [`ModuleDb::connect`] for its own handle, passing its own migrations. The handle is the
//! only way to reach the module's data, and it can only reach that module's data:
//!
//! - SQLite: `<data-dir>/<module>.sqlite` in WAL mode with one writer connection (so concurrent
//!   writers queue instead of failing with `SQLITE_BUSY`) and a pool of `query_only` readers.
//! - Postgres: bootstrap (as the configured admin user) creates login role `bounded_<module>`
//!   and schema `<module>` owned by it; the module's pool logs in as that role with
//!   `search_path = <module>`, so another module's schema is a permission error, not a convention.
//!
//! SQL is written once with `$1…$N` placeholders (sqlx's SQLite driver maps `$N` to argument N)
//! and run on whichever native pool is configured through [`with_reader!`](crate::with_reader)
//! and [`with_tx!`](crate::with_tx), which expand one body for both backends.

pub mod bulk;
mod config;
mod handle;
pub mod idempotency;
mod postgres;
mod query;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use sqlx::migrate::Migrator;

pub use config::{Backend, StorageConfig};
pub use handle::{AppendedEvent, Db, ModuleDb, Reader, Tx, TxConn};
pub use query::{IdSet, equal_filters};

/// The two migration sets of one module. Both sets use the same version numbers.
#[derive(Debug)]
pub struct Migrations {
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

/// Failures of the storage layer, as a module sees them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The module's database could not be opened or reached; other modules are unaffected.
    #[error("the {module} database is unavailable")]
    Unavailable {
        module: &'static str,
        #[source]
        source: Option<sqlx::Error>,
    },
    #[error(transparent)]
    Unexpected(#[from] sqlx::Error),
}

impl StorageError {
    /// Whether the error means "the database is not there right now" rather than a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Unavailable { .. } => true,
            StorageError::Unexpected(e) => is_connection_error(e),
        }
    }
}

/// Errors that say the database cannot be reached or will not let the module in (as opposed
/// to a bad statement).
pub fn is_connection_error(error: &sqlx::Error) -> bool {
    if matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    ) {
        return true;
    }
    let Some(db) = error.as_database_error() else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    // Postgres: connection exceptions (08…), failed authentication (28…), missing database
    // (3D000), too many connections (53300), shutdown or startup (57P01..57P03), and losing the
    // CONNECT privilege ("permission denied for database").
    code.starts_with("08")
        || code.starts_with("28")
        || code.starts_with("57P0")
        || code == "3D000"
        || code == "53300"
        || (code == "42501" && db.message().contains("for database"))
}

/// Whether `error` is a unique violation of the named constraint.
///
/// Postgres reports the constraint (or unique index) name; SQLite reports either
/// `index '<name>'` (expression indexes) or `<table>.<column>`, so `sqlite_detail` is matched
/// against its message.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str, sqlite_detail: &str) -> bool {
    let Some(db) = error.as_database_error() else {
        return false;
    };
    if !db.is_unique_violation() {
        return false;
    }
    match db.constraint() {
        Some(name) => name == constraint,
        None => db.message().contains(sqlite_detail),
    }
}

/// Whether `error` is a check-constraint violation of the named constraint.
pub fn is_check_violation(error: &sqlx::Error, constraint: &str) -> bool {
    let Some(db) = error.as_database_error() else {
        return false;
    };
    db.is_check_violation()
        && (db.constraint() == Some(constraint) || db.message().contains(constraint))
}
