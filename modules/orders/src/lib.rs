//! The orders module: placing and cancelling orders, and orchestrating the order saga.
//!
//! Owns `orders`, `order_lines`, `sagas`, `saga_steps` and the replicas of customers and
//! products (in `orders.sqlite` or schema `orders`); and, in a second database of its own (the
//! read store `orders_read`), the CQRS read model `order_summaries` (see [`ReadModel`]). Checks customers and products through
//! their modules' contracts at placement; stock and payment answer through events. Other
//! modules reach it only through [`orders_api::OrdersApi`] and its events.

mod domain;
mod handlers;
mod http;
mod placement;
mod read_model;
mod replicas;
mod saga;
mod seed;
mod service;

use std::sync::Arc;

use shared_kernel::messaging::Subscription;

pub use http::{read_problem, router, summaries_router};
pub use read_model::{
    OrderSummary, PROJECTION, READ_MIGRATIONS, READ_STORE, ReadModel, ReadModelError,
    RebuildReport, SummaryFilter, SwapHold,
};
pub use seed::{SeedLine, SeedOrder};
pub use service::Orders;

/// The set-based write of placed orders, for the orders tests (`tests/placements.rs`,
/// `tests/placement_statements.rs`) only: not part of the module's API, which other modules
/// reach through [`orders_api::OrdersApi`]. Re-exports, nothing new.
#[doc(hidden)]
pub mod test_support {
    pub use crate::placement::{Placed, write_placements};
}

/// Settings of the orders module.
#[derive(Debug, Clone, Copy)]
pub struct OrdersConfig {
    /// How long a saga waits for stock and payment before rejecting with `timeout`.
    pub saga_timeout: std::time::Duration,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            saga_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = orders_api::MODULE;

/// The integration events the module publishes (see `orders_api::events`).
pub const PUBLISHES: &[&str] = orders_api::events::TYPES;

/// The modules whose APIs this module calls: customers and inventory, to check an order.
pub const CALLS: &[&str] = &[customers_api::MODULE, inventory_api::MODULE];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/orders/sqlite"),
    postgres: sqlx::migrate!("../../migrations/orders/postgres"),
};

/// The events orders consumes: customers' into its replica; inventory's into the product
/// replica and the saga (stock replies); payments' into the saga (payment replies).
pub fn subscriptions() -> Vec<Subscription> {
    vec![
        Subscription::new(
            NAME,
            customers_api::MODULE,
            Arc::new(handlers::CustomerEvents),
        ),
        Subscription::new(
            NAME,
            inventory_api::MODULE,
            Arc::new(handlers::InventoryEvents),
        ),
        Subscription::new(
            NAME,
            payments_api::MODULE,
            Arc::new(handlers::PaymentEvents),
        ),
    ]
}
