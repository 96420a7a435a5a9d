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
    let mut conn = PgConnection::connect_with(&quiet(admin.clone())).await?;
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

/// Connections that do not report NOTICEs: `CREATE … IF NOT EXISTS` on every start (the
/// bootstrap, the migration tables) would otherwise log "already exists, skipping" each time.
fn quiet(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("client_min_messages", "warning")])
}

/// Bootstraps the module's role and schema, then opens a pool that logs in as that role.
pub(super) async fn open(
    module: &'static str,
    admin_url: &str,
    config: &StorageConfig,
) -> Result<PgPool, sqlx::Error> {
    let admin = PgConnectOptions::from_str(admin_url)?;
    bootstrap(module, &admin, config).await?;
    connect(module, &admin, config).await
}

/// Opens a pool on a store that must already exist: no role, schema or database is created.
/// `None` when the database exists but the module's schema does not.
pub(super) async fn open_existing(
    module: &'static str,
    admin_url: &str,
    config: &StorageConfig,
) -> Result<Option<PgPool>, sqlx::Error> {
    let admin = PgConnectOptions::from_str(admin_url)?;
    // As the administrative user first: a missing database is reported as such (3D000), not
    // hidden behind a missing module role.
    let mut conn = PgConnection::connect_with(&quiet(admin.clone())).await?;
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(module)
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    if !exists {
        return Ok(None);
    }
    connect(module, &admin, config).await.map(Some)
}

/// A pool logging in as the module's role, confined to its schema.
async fn connect(
    module: &'static str,
    admin: &PgConnectOptions,
    config: &StorageConfig,
) -> Result<PgPool, sqlx::Error> {
    let mut options = quiet(admin.clone())
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

/// `database "x" does not exist` when `error` says the database in `admin_url` is missing.
pub(super) fn missing_database(admin_url: &str, error: &sqlx::Error) -> Option<super::OpenError> {
    let code = error.as_database_error()?.code()?;
    if code != "3D000" {
        return None;
    }
    let admin = PgConnectOptions::from_str(admin_url).ok()?;
    let database = admin
        .get_database()
        .unwrap_or(admin.get_username())
        .to_owned();
    Some(super::OpenError::MissingDatabase {
        server: format!("{}:{}", admin.get_host(), admin.get_port()),
        create: format!(
            "createdb -h {} -p {} -U {} {database}",
            admin.get_host(),
            admin.get_port(),
            admin.get_username()
        ),
        database,
    })
}
