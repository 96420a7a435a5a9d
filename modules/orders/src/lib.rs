//! The orders module. In this stage it owns its database (`orders.sqlite` or schema and role
//! `orders`) and keeps local replicas of customers and products, fed by their events; orders
//! themselves and the saga arrive with their own issue.

mod replicas;

use std::sync::Arc;

use shared_kernel::messaging::Subscription;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = "orders";

/// The integration events the module publishes (none yet).
pub const PUBLISHES: &[&str] = &[];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/orders/sqlite"),
    postgres: sqlx::migrate!("../../migrations/orders/postgres"),
};

/// The events orders consumes: customers' and inventory's, into its replicas.
pub fn subscriptions() -> Vec<Subscription> {
    vec![
        Subscription::new(NAME, "customers", Arc::new(replicas::CustomerReplicator)),
        Subscription::new(NAME, "inventory", Arc::new(replicas::ProductReplicator)),
    ]
}
