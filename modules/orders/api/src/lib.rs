//! Public contract of the orders module: the [`OrdersApi`] trait, its DTOs (also the HTTP wire
//! format), its error enum and its integration events.
//!
//! Other modules' ids appear here as plain UUIDs: an api crate depends on no other api crate.
//!
//! **Architecture Invariant:** this crate depends only on `shared-kernel` and an allow-list of
//! third-party crates.

/// The module's name: the source of its events (`orders.<Event>`), its database file, its
/// Postgres schema and role suffix.
pub const MODULE: &str = "orders";

pub mod events;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared_kernel::http::{FieldError, Page, PageRequest};
use shared_kernel::storage::idempotency::{IdempotencyKey, IdempotencyKeyReused};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

shared_kernel::define_id!(
    /// Identifies an order.
    OrderId
);

/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 10_000;

/// Where an order stands. `PENDING` → `CONFIRMED` | `REJECTED`; `PENDING`/`CONFIRMED` →
/// `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// What a field holding a status must be, for validation messages.
    pub const EXPECTED: &'static str = "must be one of PENDING, CONFIRMED, REJECTED, CANCELLED";

    /// The stored and wire name (`PENDING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Rejected,
            OrderStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// `REJECTED` and `CANCELLED` are final; `CONFIRMED` is terminal for the saga, though a
    /// confirmed order can still be cancelled.
    pub fn is_terminal(self) -> bool {
        self != OrderStatus::Pending
    }
}

/// Why an order is `REJECTED` or `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    OutOfStock,
    PaymentDeclined,
    Timeout,
    Cancelled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OutOfStock => "out_of_stock",
            Reason::PaymentDeclined => "payment_declined",
            Reason::Timeout => "timeout",
            Reason::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Reason::OutOfStock,
            Reason::PaymentDeclined,
            Reason::Timeout,
            Reason::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == value)
    }
}

/// One line of an order, with the catalog data copied at placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub reason: Option<Reason>,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One requested line of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderItem {
    pub product_id: Uuid,
    /// 1..=10 000.
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

/// Body of `POST /orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub customer_id: Uuid,
    /// 1..=100 lines, each product at most once.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<NewOrderItem>,
}

/// Filters of `GET /orders`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderFilter {
    pub customer_id: Option<Uuid>,
    pub status: Option<OrderStatus>,
}

/// Where the saga of an order stands with one participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Participant {
    /// No reply yet.
    Waiting,
    /// Stock reserved, or payment authorized.
    Succeeded,
    /// Out of stock, or payment declined.
    Failed,
}

impl Participant {
    /// The stored and wire name (`waiting`, `succeeded`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Participant::Waiting => "waiting",
            Participant::Succeeded => "succeeded",
            Participant::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Participant::Waiting,
            Participant::Succeeded,
            Participant::Failed,
        ]
        .into_iter()
        .find(|p| p.as_str() == value)
    }
}

/// One recorded step of a saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SagaStep {
    /// 1, 2, … in the order the steps happened.
    pub n: i64,
    /// `placed`, `stock_reserved`, `payment_declined`, `confirmed`, `timed_out`, …
    pub step: String,
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The persisted state of an order's saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Saga {
    pub order_id: OrderId,
    /// The order's status, which is the saga's state.
    pub status: OrderStatus,
    pub stock: Participant,
    pub payment: Participant,
    /// When a pending saga gives up waiting (`REJECTED(timeout)`).
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    pub steps: Vec<SagaStep>,
}

/// Everything an orders operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    /// One or more fields are invalid (including unknown customer or product); nothing was
    /// stored.
    #[error("invalid order")]
    Invalid(Vec<FieldError>),
    #[error("no order with id {0}")]
    NotFound(OrderId),
    /// The order is in a state that does not allow the operation (e.g. cancelling a rejected
    /// order).
    #[error("order {id} is {status:?} and cannot be {action}")]
    Conflict {
        id: OrderId,
        status: OrderStatus,
        action: &'static str,
    },
    #[error(transparent)]
    IdempotencyKeyReused(#[from] IdempotencyKeyReused),
    /// A module the operation depends on (`orders` itself, `customers`, `inventory`) cannot be
    /// reached right now.
    #[error("the {0} module is unavailable")]
    Unavailable(&'static str),
    #[error("unexpected orders failure")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The orders module, as every other part of the system sees it.
#[async_trait]
pub trait OrdersApi: Send + Sync + 'static {
    /// Places an order: checks the customer and the products with their modules, copies sku,
    /// name and unit price from the catalog, and stores the order `PENDING` together with its
    /// saga and `orders.OrderPlaced`. Stock and payment follow asynchronously.
    ///
    /// # Errors
    /// - [`OrdersError::Invalid`] when the items are empty or more than 100, a quantity is
    ///   outside 1..=10 000, a product appears twice, or the customer or a product is unknown
    ///   (the field names which).
    /// - [`OrdersError::IdempotencyKeyReused`] when `key` was used with another request; a
    ///   repeat with the same request returns the order placed the first time.
    /// - [`OrdersError::Unavailable`] when orders, customers or inventory cannot be reached.
    async fn place(
        &self,
        order: NewOrder,
        key: Option<IdempotencyKey>,
    ) -> Result<Order, OrdersError>;

    /// Reads one order.
    ///
    /// # Errors
    /// - [`OrdersError::NotFound`]; [`OrdersError::Unavailable`].
    async fn get(&self, id: OrderId) -> Result<Order, OrdersError>;

    /// Reads the orders among `ids` that exist, in id order; unknown ids are left out. One
    /// indexed read for the whole batch (reconciliation looks orders up a page at a time).
    ///
    /// # Errors
    /// - [`OrdersError::Unavailable`].
    async fn get_many(&self, ids: &[OrderId]) -> Result<Vec<Order>, OrdersError>;

    /// Reads one order once it is no longer `PENDING`, or as it stands after `timeout`.
    ///
    /// # Errors
    /// - [`OrdersError::NotFound`]; [`OrdersError::Unavailable`].
    async fn wait_terminal(&self, id: OrderId, timeout: Duration) -> Result<Order, OrdersError>;

    /// Lists orders, newest last, optionally of one customer and/or in one status.
    ///
    /// # Errors
    /// - [`OrdersError::Unavailable`].
    async fn list(
        &self,
        filter: OrderFilter,
        page: PageRequest,
    ) -> Result<Page<Order>, OrdersError>;

    /// Cancels a `PENDING` or `CONFIRMED` order (`CANCELLED` + `orders.OrderCancelled`, after
    /// which inventory releases or restocks and payments voids or refunds). Cancelling a
    /// cancelled order returns it unchanged.
    ///
    /// # Errors
    /// - [`OrdersError::NotFound`]; [`OrdersError::Conflict`] when the order is `REJECTED`;
    ///   [`OrdersError::Unavailable`].
    async fn cancel(&self, id: OrderId) -> Result<Order, OrdersError>;

    /// The saga of an order: participants' replies, deadline and step history.
    ///
    /// # Errors
    /// - [`OrdersError::NotFound`]; [`OrdersError::Unavailable`].
    async fn saga(&self, id: OrderId) -> Result<Saga, OrdersError>;

    /// Sagas in placement order, optionally only those whose order is in `status` (`PENDING`:
    /// still open), with their step history.
    ///
    /// # Errors
    /// - [`OrdersError::Unavailable`].
    async fn list_sagas(
        &self,
        status: Option<OrderStatus>,
        page: PageRequest,
    ) -> Result<Page<Saga>, OrdersError>;
}

shared_kernel::storage_errors_stop_at_the_boundary!(OrdersError, unavailable: OrdersError::Unavailable(MODULE));

#[cfg(test)]
mod tests {
    use super::*;

    /// A participant's stored name is its wire name, and parsing gives the participant back.
    #[test]
    fn participant_names_are_the_wire_names() {
        for participant in [
            Participant::Waiting,
            Participant::Succeeded,
            Participant::Failed,
        ] {
            let wire = serde_json::to_value(participant).unwrap();
            assert_eq!(wire, participant.as_str());
            assert_eq!(Participant::parse(participant.as_str()), Some(participant));
        }
        assert_eq!(Participant::parse("Waiting"), None);
    }
}
