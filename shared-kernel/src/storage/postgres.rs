use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

use super::StorageConfig;

/// The login role a module's connections run as.
pub(crate) fn role_name(module: &str) -> String {
    format!("bounded_{module}")
}

/// Creates (idempotently) the module's login role and its schema, owned by that role, and
/// closes every door to it except the role's own.
///
/// Runs as the administrative user of `admin_url`. Concurrent bootstraps (several processes, or
/// parallel tests on one server) are safe: roles are cluster-wide, so a lost creation race is
/// swallowed.
async fn bootstrap(
    module: &str,
    admin: &PgConnectOptions,
    config: &StorageConfig,
) -> Result<(), sqlx::Error> {
    debug_assert!(module.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    let role = role_name(module);
    let mut conn = PgConnection::connect_with(admin).await?;
    let password = match &config.role_password {
        Some(p) => format!("PASSWORD '{}'", p.replace('\'', "''")),
        None => String::new(),
    };
    // Bootstraps of several modules (or processes) on one database would update the same
    // catalog rows (`GRANT CONNECT` rewrites the database's ACL) and fail with "tuple
    // concurrently updated": take turns. The lock is released when the connection closes.
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('bounded.bootstrap', 0))")
        .execute(&mut conn)
        .await?;
    let statements = [
        format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN {password}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
        format!(
            "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database()); END $$"
        ),
        format!("CREATE SCHEMA IF NOT EXISTS {module} AUTHORIZATION {role}"),
        format!("REVOKE ALL ON SCHEMA {module} FROM PUBLIC"),
    ];
    for sql in statements {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
    }
    if !password.is_empty() {
        sqlx::raw_sql(AssertSqlSafe(format!("ALTER ROLE {role} {password}")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// Bootstraps the module's role and schema, then opens a pool that logs in as that role.
pub(super) async fn open(
    module: &'static str,
    admin_url: &str,
    config: &StorageConfig,
) -> Result<PgPool, sqlx::Error> {
    let admin = PgConnectOptions::from_str(admin_url)?;
    bootstrap(module, &admin, config).await?;

    let mut options = admin
        .clone()
        .username(&role_name(module))
        .application_name(&format!("bounded-{module}"))
        .options([("search_path", module)]);
    if let Some(password) = &config.role_password {
        options = options.password(password);
    }
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
}
