//! The orders module. In this stage it owns its database (`orders.sqlite` or schema and role
//! `orders`) and nothing else: its tables and endpoints arrive with its own issue. Wiring it now
//! means its isolation from the other modules is tested from the start.

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = "orders";

/// The module's own migrations, nobody else's (none yet).
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/orders/sqlite"),
    postgres: sqlx::migrate!("../../migrations/orders/postgres"),
};
