//! The inventory module: the product catalog and stock levels per warehouse.
//!
//! Owns `products` and `stock_levels` (in `inventory.sqlite` or schema `inventory`) and serves
//! `/products…`. Other modules reach it only through [`inventory_api::InventoryApi`].

mod domain;
mod http;
mod service;

pub use http::router;
pub use service::Inventory;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = "inventory";

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/inventory/sqlite"),
    postgres: sqlx::migrate!("../../migrations/inventory/postgres"),
};
