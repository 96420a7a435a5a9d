//! The inventory module: the product catalog and stock levels per warehouse.
//!
//! Owns `products` and `stock_levels` (in `inventory.sqlite` or schema `inventory`) and serves
//! `/products…`. Other modules reach it only through [`inventory_api::InventoryApi`].

mod domain;
mod http;
mod service;

use inventory_api::events::{ProductCreated, ProductUpdated};
use shared_kernel::messaging::IntegrationEvent;

pub use http::router;
pub use service::Inventory;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = "inventory";

/// The integration events the module publishes (see `inventory_api::events`).
pub const PUBLISHES: &[&str] = &[ProductCreated::TYPE, ProductUpdated::TYPE];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/inventory/sqlite"),
    postgres: sqlx::migrate!("../../migrations/inventory/postgres"),
};
