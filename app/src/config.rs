//! Command line and environment. Every flag also reads `BOUNDED_<FLAG>`.
//!
//! | flag | env | default |
//! |---|---|---|
//! | `--listen` | `BOUNDED_LISTEN` | `127.0.0.1:8080` |
//! | `--data-dir` | `BOUNDED_DATA_DIR` | `./data` (SQLite files, one per module) |
//! | `--database-url` | `BOUNDED_DATABASE_URL` | none: SQLite; else Postgres admin URL |
//! | `--module-database-url m=URL` | `BOUNDED_MODULE_DATABASE_URL` (comma-separated) | none |
//! | `--db-role-password` | `BOUNDED_DB_ROLE_PASSWORD` | none: server's auth rules |
//! | `--modules` | `BOUNDED_MODULES` | `all` |
//! | `--default-credit-limit-cents` | `BOUNDED_DEFAULT_CREDIT_LIMIT_CENTS` | `1000000` |
//! | `--saga-timeout` | `BOUNDED_SAGA_TIMEOUT` | `30s` |
//! | `--composition-timeout` | `BOUNDED_COMPOSITION_TIMEOUT` | `500ms` (per module call of `/orders/{id}/details`) |
//! | `--header-read-timeout` | `BOUNDED_HEADER_READ_TIMEOUT` | `10s` (a request's head, and an HTTP/1 keep-alive wait) |
//! | `--idle-timeout` | `BOUNDED_IDLE_TIMEOUT` | `60s` (a connection with no request in flight) |
//! | `--max-connections` | `BOUNDED_MAX_CONNECTIONS` | `512` (idle ones are closed to admit more) |
//! | `--outbox-retention` | `BOUNDED_OUTBOX_RETENTION` | `7d` (`forever` keeps all) |
//! | `--log-format` | `BOUNDED_LOG_FORMAT` | `text`; `json` for machines |
//! | `--count-statements` (`serve`, `baseline`) | `BOUNDED_COUNT_STATEMENTS` | off: `bounded_db_statements_total` absent |
//! | log filter | `BOUNDED_LOG` (or `RUST_LOG`) | `info` |

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shared_kernel::storage::{Backend, StorageConfig};
use tools::arch::ArchCommand;
use tools::bench::BenchArgs;
use tools::demo::DemoArgs;

/// The modules of the shop, in wiring order.
pub const MODULES: [&str; 4] = [
    customers_api::MODULE,
    inventory_api::MODULE,
    orders_api::MODULE,
    payments_api::MODULE,
];

#[derive(Debug, Parser)]
#[command(
    name = "bounded",
    version,
    about = "A modular monolith with enforced data boundaries."
)]
pub struct Cli {
    #[arg(long, env = "BOUNDED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Create or upgrade every module's database, then exit.
    Migrate(StorageArgs),
    /// Compare orders, payments and stock through the module APIs; exit 1 listing every
    /// discrepancy.
    Reconcile(StorageArgs),
    /// Seed sample customers, products, stock and a stream of orders into a running instance.
    Demo(DemoArgs),
    /// Load generator: concurrent clients place orders against a running instance for a fixed
    /// time and report throughput and place→terminal latency.
    Bench(BenchArgs),
    /// The single-transaction baseline `bench` compares against: the whole shop operation in
    /// one transaction on one shared database.
    Baseline(BaselineArgs),
    /// Benchmark tool: bulk-write N settled (CONFIRMED) orders of history straight into every
    /// module's own store (orders and their sagas and summaries, captured payments, committed
    /// reservations), without events, over the existing catalog. The catalog must exist first:
    /// customers and stocked products, e.g. from a short `bounded bench` (or `bounded demo`)
    /// against a server on the same store, and that server stopped before seeding.
    SeedHistory(SeedHistoryArgs),
    /// The architecture lint.
    Arch {
        #[command(subcommand)]
        command: ArchCommand,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Folder of the SQLite databases, one file per module (created if missing).
    #[arg(long, env = "BOUNDED_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Postgres administrative URL; each module gets its own schema and login role there.
    #[arg(long, env = "BOUNDED_DATABASE_URL")]
    pub database_url: Option<String>,
    /// A module's own database: `inventory=postgres://…` or `inventory=sqlite:/var/lib/inv`.
    #[arg(long = "module-database-url", env = "BOUNDED_MODULE_DATABASE_URL", value_delimiter = ',', value_parser = parse_module_backend)]
    pub module_database_urls: Vec<(String, Backend)>,
    /// Password of the per-module Postgres login roles.
    #[arg(long, env = "BOUNDED_DB_ROLE_PASSWORD", hide_env_values = true)]
    pub db_role_password: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BOUNDED_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Count every statement the databases execute into `bounded_db_statements_total` at
    /// `/metrics` (for `bounded bench`'s statements per order). Off by default: it makes sqlx
    /// build a log summary of each statement. The log itself does not change.
    #[arg(long, env = "BOUNDED_COUNT_STATEMENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub count_statements: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SeedHistoryArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Orders of history to write.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub orders: u64,
    /// Orders per batch: each module writes a batch in one transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// Seed of the generator (customers, products and quantities are drawn from it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "BOUNDED_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Modules this process runs: `all` or a comma-separated list.
    #[arg(long, env = "BOUNDED_MODULES", default_value = "all", value_parser = parse_modules)]
    pub modules: ModuleSet,
    /// Credit limit of a payment account opened on first sight of a customer (0..=10^15).
    #[arg(long, env = "BOUNDED_DEFAULT_CREDIT_LIMIT_CENTS", default_value_t = 1_000_000, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000_000_000))]
    pub default_credit_limit_cents: i64,
    /// How long an order's saga waits for stock and payment before rejecting it (`timeout`).
    #[arg(long, env = "BOUNDED_SAGA_TIMEOUT", default_value = "30s", value_parser = parse_saga_timeout)]
    pub saga_timeout: std::time::Duration,
    /// Longest wait for one module's answer in `GET /orders/{id}/details`; a slower part is
    /// `null` and its module `degraded` (`500ms`, `2s`; at most 60s).
    #[arg(long, env = "BOUNDED_COMPOSITION_TIMEOUT", default_value = "500ms", value_parser = parse_composition_timeout)]
    pub composition_timeout: std::time::Duration,
    /// How long processed events stay in each outbox for rewinds (`7d`, `12h`, or `forever`).
    #[arg(long, env = "BOUNDED_OUTBOX_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub outbox_retention: Retention,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Count every statement the databases execute into `bounded_db_statements_total` at
    /// `/metrics` (for `bounded bench`'s statements per order). Off by default: it makes sqlx
    /// build a log summary of each statement. The log itself does not change.
    #[arg(long, env = "BOUNDED_COUNT_STATEMENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub count_statements: bool,
}

/// Limits on client connections, so that idle or slow sockets cannot use up the process's file
/// descriptors (which the module databases need too).
#[derive(Debug, Clone, Copy, Args)]
pub struct ConnectionArgs {
    /// Longest wait for the head of a request (request line and headers); on HTTP/1 it also
    /// bounds the wait for the next request of a kept-alive connection (`10s`; 100ms..=10m).
    #[arg(long, env = "BOUNDED_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_connection_timeout)]
    pub header_read_timeout: std::time::Duration,
    /// A connection with no request in flight for this long is closed (`60s`; 100ms..=10m).
    #[arg(long, env = "BOUNDED_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_connection_timeout)]
    pub idle_timeout: std::time::Duration,
    /// Most client connections open at once; past it the least recently active idle connection
    /// is closed to admit a new one, and with none idle new ones wait in the listen backlog.
    #[arg(long, env = "BOUNDED_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

fn parse_connection_timeout(value: &str) -> Result<std::time::Duration, String> {
    let timeout = humantime::parse_duration(value)
        .map_err(|e| format!("expected a duration like 10s or 500ms: {e}"))?;
    if timeout < std::time::Duration::from_millis(100)
        || timeout > std::time::Duration::from_secs(600)
    {
        return Err("must be from 100ms to 10m".into());
    }
    Ok(timeout)
}

/// Outbox retention: a duration, or forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<std::time::Duration>);

fn parse_retention(value: &str) -> Result<Retention, String> {
    if value == "forever" {
        return Ok(Retention(None));
    }
    humantime::parse_duration(value)
        .map(|d| Retention(Some(d)))
        .map_err(|e| format!("expected a duration like 7d or 12h, or `forever`: {e}"))
}

fn parse_saga_timeout(value: &str) -> Result<std::time::Duration, String> {
    let timeout = humantime::parse_duration(value)
        .map_err(|e| format!("expected a duration like 30s or 2m: {e}"))?;
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(24 * 3600) {
        return Err("must be more than 0 and at most 24h".into());
    }
    Ok(timeout)
}

fn parse_composition_timeout(value: &str) -> Result<std::time::Duration, String> {
    let timeout = humantime::parse_duration(value)
        .map_err(|e| format!("expected a duration like 500ms or 2s: {e}"))?;
    if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
        return Err("must be more than 0 and at most 60s".into());
    }
    Ok(timeout)
}

/// The modules a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSet(pub Vec<&'static str>);

impl ModuleSet {
    pub fn all() -> Self {
        Self(MODULES.to_vec())
    }

    pub fn contains(&self, module: &str) -> bool {
        self.0.contains(&module)
    }
}

fn parse_modules(value: &str) -> Result<ModuleSet, String> {
    if value.trim() == "all" {
        return Ok(ModuleSet::all());
    }
    let mut set = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let module = MODULES
            .iter()
            .find(|m| **m == name)
            .ok_or_else(|| format!("unknown module {name:?}; expected one of {MODULES:?}"))?;
        if !set.contains(module) {
            set.push(*module);
        }
    }
    if set.is_empty() {
        return Err("name at least one module, or `all`".into());
    }
    Ok(ModuleSet(set))
}

fn parse_module_backend(value: &str) -> Result<(String, Backend), String> {
    let (module, url) = value
        .split_once('=')
        .ok_or_else(|| format!("expected <module>=<url>, got {value:?}"))?;
    if !MODULES.contains(&module) {
        return Err(format!(
            "unknown module {module:?}; expected one of {MODULES:?}"
        ));
    }
    Ok((module.to_owned(), StorageConfig::parse_backend(url)?))
}

impl StorageArgs {
    pub fn storage_config(&self) -> StorageConfig {
        let mut config = match &self.database_url {
            Some(url) => StorageConfig::postgres(url.clone()),
            None => StorageConfig::sqlite(self.data_dir.clone()),
        };
        config.overrides = self.module_database_urls.iter().cloned().collect();
        config.role_password = self.db_role_password.clone();
        config
    }
}

/// An open-loop rate: orders per second, from 0.1 to 100 000.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_without_flags_uses_sqlite_under_data_and_every_module() {
        let cli = Cli::try_parse_from(["bounded", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.modules, ModuleSet::all());
        assert_eq!(args.saga_timeout, std::time::Duration::from_secs(30));
        assert_eq!(
            args.composition_timeout,
            std::time::Duration::from_millis(500)
        );
        let config = args.storage.storage_config();
        assert_eq!(
            config.default,
            Backend::Sqlite {
                data_dir: "./data".into()
            }
        );
    }

    #[test]
    fn module_lists_and_overrides_are_validated() {
        assert_eq!(
            parse_modules("inventory, customers").unwrap(),
            ModuleSet(vec!["inventory", "customers"])
        );
        assert!(parse_modules("shipping").is_err());
        assert!(parse_module_backend("inventory=postgres://u@h/db").is_ok());
        assert!(parse_module_backend("inventory=mysql://h").is_err());
        assert!(parse_module_backend("shipping=postgres://h").is_err());
        assert_eq!(
            parse_saga_timeout("250ms").unwrap(),
            std::time::Duration::from_millis(250)
        );
        assert!(parse_saga_timeout("0s").is_err());
        assert!(parse_saga_timeout("soon").is_err());
        assert_eq!(
            parse_composition_timeout("2s").unwrap(),
            std::time::Duration::from_secs(2)
        );
        assert!(parse_composition_timeout("0ms").is_err());
        assert!(parse_composition_timeout("2m").is_err());
        assert_eq!(
            parse_connection_timeout("250ms").unwrap(),
            std::time::Duration::from_millis(250)
        );
        assert!(parse_connection_timeout("10ms").is_err());
        assert!(parse_connection_timeout("1h").is_err());
    }

    #[test]
    fn connection_limits_default_and_parse() {
        let cli = Cli::try_parse_from(["bounded", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(
            (
                args.connections.header_read_timeout,
                args.connections.idle_timeout,
                args.connections.max_connections
            ),
            (
                ConnectionArgs::default().header_read_timeout,
                ConnectionArgs::default().idle_timeout,
                ConnectionArgs::default().max_connections
            )
        );
        let cli = Cli::try_parse_from([
            "bounded",
            "serve",
            "--header-read-timeout",
            "2s",
            "--idle-timeout",
            "5s",
            "--max-connections",
            "64",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.connections.max_connections, 64);
        assert_eq!(
            args.connections.idle_timeout,
            std::time::Duration::from_secs(5)
        );
        assert!(Cli::try_parse_from(["bounded", "serve", "--max-connections", "0"]).is_err());
    }
}
