//! The inventory module: the product catalog and stock levels per warehouse.
//!
//! Owns `products`, `stock_levels`, `reservations` and `reservation_lines` (in
//! `inventory.sqlite` or schema `inventory`) and serves `/products…` and `/reservations…`.
//! Other modules reach it only through [`inventory_api::InventoryApi`] and its events; it
//! takes part in the order saga by following the orders module's events (see
//! [`subscriptions`]).

mod domain;
mod handlers;
mod http;
mod reservations;
mod seed;
mod service;

use std::sync::Arc;

use shared_kernel::messaging::Subscription;

pub use handlers::OrderEvents;
pub use http::router;
pub use reservations::RESERVATIONS_METRIC;
pub use seed::SeedReservation;
pub use service::Inventory;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = inventory_api::MODULE;

/// The integration events the module publishes (see `inventory_api::events`).
pub const PUBLISHES: &[&str] = inventory_api::events::TYPES;

/// The module whose events drive reservations.
const ORDERS: &str = orders_api::MODULE;

/// The modules whose APIs this module calls: none.
pub const CALLS: &[&str] = &[];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/inventory/sqlite"),
    postgres: sqlx::migrate!("../../migrations/inventory/postgres"),
};

/// The events inventory consumes: the orders module's, into stock reservations
/// (`inventory<-orders`, handled by [`OrderEvents`]).
pub fn subscriptions() -> Vec<Subscription> {
    vec![Subscription::new(NAME, ORDERS, Arc::new(OrderEvents))]
}
