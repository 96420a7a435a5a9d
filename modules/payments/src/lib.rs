//! The payments module. In this stage it owns its database (`payments.sqlite` or schema and
//! role `payments`) and opens a payment account on first sight of a customer; event-sourced
//! accounts and payments arrive with the saga issue.

mod accounts;

use std::sync::Arc;

use shared_kernel::messaging::Subscription;

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = "payments";

/// The integration events the module publishes (none yet).
pub const PUBLISHES: &[&str] = &[];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/payments/sqlite"),
    postgres: sqlx::migrate!("../../migrations/payments/postgres"),
};

/// The events payments consumes: a registered customer gets an account with the default limit.
pub fn subscriptions(default_credit_limit_cents: i64) -> Vec<Subscription> {
    vec![Subscription::new(
        NAME,
        "customers",
        Arc::new(accounts::AccountOpener {
            default_credit_limit_cents,
        }),
    )]
}
