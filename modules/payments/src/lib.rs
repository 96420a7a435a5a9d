//! The payments module: event-sourced payment accounts and payments, the payment side of the
//! order saga.
//!
//! Payments store events, not state. Its database (`payments.sqlite` or schema `payments`)
//! holds an append-only event store (`events`, unique per stream and version: optimistic
//! concurrency), `snapshots` of long streams, and `payment_views`, an inline projection of
//! payment streams for lookups and lists, written in the transaction of each append.
//!
//! - Accounts (stream id = customer id) are opened on first sight of a customer
//!   (`customers.CustomerRegistered`, an order, or `PUT /payment-accounts/{id}`).
//! - Payments (stream id = payment id, one per order) follow the order saga: authorized or
//!   declined on `orders.OrderPlaced`, captured on `OrderConfirmed`, voided on `OrderRejected`,
//!   voided or refunded on `OrderCancelled`.
//!
//! Other modules reach it only through [`payments_api::PaymentsApi`] and its integration
//! events.

mod domain;
mod handlers;
mod http;
mod ledger;
mod seed;
mod service;
mod store;

use std::sync::Arc;

use shared_kernel::messaging::Subscription;

pub use handlers::{CustomerEvents, OrderEvents};
pub use http::router;
pub use seed::SeedPayment;
pub use service::Payments;

/// The event store and the account aggregate, for the event-store benchmark
/// (`benches/event_store.rs`) only: not part of the module's API, which other modules reach
/// through [`payments_api::PaymentsApi`]. Re-exports, nothing new.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::domain::{AccountEvent, AccountState, Aggregate};
    pub use crate::store::{ATTEMPT, Loaded, Source, StoreError, append, load};
}

/// Settings of the payments module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentsConfig {
    /// Credit limit of an account opened on first sight of a customer (event or order).
    pub default_credit_limit_cents: i64,
    /// Snapshot a stream every this many events (0 = never).
    pub snapshot_every: u32,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            default_credit_limit_cents: 1_000_000,
            snapshot_every: 20,
        }
    }
}

/// The module's name: its database file, Postgres schema and role suffix.
pub const NAME: &str = payments_api::MODULE;

/// The integration events the module publishes (see `payments_api::events`).
pub const PUBLISHES: &[&str] = payments_api::events::TYPES;

/// The modules whose APIs this module calls: customers, to check a customer before opening an
/// account for it.
pub const CALLS: &[&str] = &[customers_api::MODULE];

/// The module's own migrations, nobody else's.
pub static MIGRATIONS: shared_kernel::storage::Migrations = shared_kernel::storage::Migrations {
    sqlite: sqlx::migrate!("../../migrations/payments/sqlite"),
    postgres: sqlx::migrate!("../../migrations/payments/postgres"),
};

/// The events payments consumes: `payments<-customers` (open accounts) and `payments<-orders`
/// (authorize, capture, void, refund).
pub fn subscriptions(payments: &Payments) -> Vec<Subscription> {
    vec![
        Subscription::new(
            NAME,
            customers_api::MODULE,
            Arc::new(payments.customer_events()),
        ),
        Subscription::new(NAME, orders_api::MODULE, Arc::new(payments.order_events())),
    ]
}

impl Payments {
    /// The handler of `payments<-customers`.
    pub fn customer_events(&self) -> CustomerEvents {
        CustomerEvents {
            ledger: self.ledger.clone(),
        }
    }

    /// The handler of `payments<-orders`.
    pub fn order_events(&self) -> OrderEvents {
        OrderEvents {
            ledger: self.ledger.clone(),
        }
    }
}
