//! The customers module: registration and profile of the shop's customers.
//!
//! Owns the `customers` table (in `customers.sqlite` or schema `customers`), and serves the
//! `/customers` endpoints. Other modules reach it only through
//! [`customers_api::CustomersApi`].

mod domain;
mod http;
mod service;

pub use http::router;
pub use service::Customers;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = customers_api::MODULE;

/// The integration events the module publishes (see `customers_api::events`).
pub const PUBLISHES: &[&str] = customers_api::events::TYPES;

/// The modules whose APIs this module calls: none.
pub const CALLS: &[&str] = &[];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/customers/sqlite"),
    postgres: sqlx::migrate!("../../migrations/customers/postgres"),
};
