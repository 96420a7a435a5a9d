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
pub mod group_commit;
mod handle;
pub mod idempotency;
mod postgres;
mod query;
mod sqlite;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use sqlx::migrate::Migrator;

pub use config::{Backend, StorageConfig, redact_password};
pub use handle::{AppendedEvent, Db, ModuleDb, Reader, Tx, TxConn};
pub use query::{IdSet, equal_filters};

/// The two migration sets of one module. Both sets use the same version numbers.
#[derive(Debug)]
pub struct Migrations {
    pub sqlite: Migrator,
    pub postgres: Migrator,
}

/// What opening a store applied: the versions of the kernel's and of the module's own
/// migrations that were pending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    pub kernel: Vec<i64>,
    pub module: Vec<i64>,
}

impl Migrated {
    pub fn is_empty(&self) -> bool {
        self.kernel.is_empty() && self.module.is_empty()
    }
}

/// `applied 3 migrations (0001..0003) and 6 kernel migrations (0001..0006)`, or `up to date`.
impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn count(versions: &[i64], what: &str) -> String {
            let plural = if versions.len() == 1 { "" } else { "s" };
            let range = match versions {
                [one] => format!("{one:04}"),
                [first, .., last] if last - first + 1 == versions.len() as i64 => {
                    format!("{first:04}..{last:04}")
                }
                _ => versions
                    .iter()
                    .map(|v| format!("{v:04}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            format!("{} {what}{plural} ({range})", versions.len())
        }
        let parts: Vec<String> = [
            (&self.module, "migration"),
            (&self.kernel, "kernel migration"),
        ]
        .into_iter()
        .filter(|(versions, _)| !versions.is_empty())
        .map(|(versions, what)| count(versions, what))
        .collect();
        if parts.is_empty() {
            f.write_str("up to date")
        } else {
            write!(f, "applied {}", parts.join(" and "))
        }
    }
}

/// Why a module's store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A command that only reads found no store where the configuration points.
    #[error(
        "the {module} store {location} does not exist; check --data-dir / --database-url, or create it with `bounded migrate`"
    )]
    MissingStore {
        module: &'static str,
        location: String,
    },
    /// The Postgres server answers, but the database named in the URL does not exist.
    #[error(
        "the Postgres database {database:?} does not exist on {server}; create it first (`{create}`)"
    )]
    MissingDatabase {
        database: String,
        server: String,
        /// A command that creates it.
        create: String,
    },
    /// A command that only reads found a store whose migrations are not all applied.
    #[error(
        "the {module} store {location} is not up to date ({pending} migrations pending); run `bounded migrate` first"
    )]
    NotMigrated {
        module: &'static str,
        location: String,
        pending: usize,
    },
    /// The store could not be opened or migrated now (unreachable, locked out, …).
    #[error("cannot open the {module} store {location}")]
    Failed {
        module: &'static str,
        location: String,
        #[source]
        source: sqlx::Error,
    },
}

impl OpenError {
    /// A mistake in the configuration, which retrying cannot fix (as opposed to a database
    /// that is unreachable right now).
    pub fn is_configuration(&self) -> bool {
        !matches!(self, OpenError::Failed { .. })
    }
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

/// Maps [`StorageError`] into a module's error enum, which must have an
/// `Unexpected(Box<dyn Error + Send + Sync>)` arm: storage failures stop at the module boundary,
/// so callers learn only "unavailable" (the given arm) or "unexpected", never a table or a
/// constraint. Every module's error enum gets the same mapping from this one place.
#[macro_export]
macro_rules! storage_errors_stop_at_the_boundary {
    ($error:ty, unavailable: $unavailable:expr) => {
        impl From<$crate::storage::StorageError> for $error {
            fn from(error: $crate::storage::StorageError) -> Self {
                if error.is_unavailable() {
                    $unavailable
                } else {
                    Self::Unexpected(Box::new(error))
                }
            }
        }
    };
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
