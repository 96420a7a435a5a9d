//! Public contract of the payments module: the [`PaymentsApi`] trait, its DTOs (also the HTTP
//! wire format), its error enum and its integration events.
//!
//! Payments are event-sourced: every state below is a fold over an immutable stream of events,
//! which is why a payment can be read as it stood at any version or instant.
//!
//! Other modules' ids (customers, orders) appear as plain UUIDs: an api crate depends on no
//! other api crate.
//!
//! **Architecture Invariant:** this crate depends only on `shared-kernel` and an allow-list of
//! third-party crates.

/// The module's name: the source of its events (`payments.<Event>`), its database file, its
/// Postgres schema and role suffix.
pub const MODULE: &str = "payments";

pub mod events;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared_kernel::http::{FieldError, Page, PageRequest};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

shared_kernel::define_id!(
    /// Identifies a payment (one per order).
    PaymentId
);

/// Largest accepted `credit_limit_cents` (10^15).
pub const MAX_CREDIT_LIMIT_CENTS: i64 = 1_000_000_000_000_000;

/// A customer's payment account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    pub customer_id: Uuid,
    pub credit_limit_cents: i64,
    /// Authorized + captured − voided − refunded.
    pub outstanding_cents: i64,
    /// `max(0, credit_limit − outstanding)`.
    pub available_cents: i64,
    /// Version of the account's event stream.
    pub version: i64,
}

/// Body of `PUT /payment-accounts/{customer_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCreditLimit {
    /// 0..=10^15; may be below what is outstanding.
    #[schema(minimum = 0, maximum = 1000000000000000_i64)]
    pub credit_limit_cents: i64,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Credit is held while the order is pending.
    Authorized,
    /// The order is confirmed.
    Captured,
    /// The authorization was released (order rejected or cancelled while pending).
    Voided,
    /// A captured payment was given back (confirmed order cancelled).
    Refunded,
    /// There was not enough credit.
    Declined,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Voided => "VOIDED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Declined => "DECLINED",
        }
    }
}

/// A payment for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    pub id: PaymentId,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
    pub status: PaymentStatus,
    /// Version of the payment's event stream this state reflects.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One event of a payment's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PaymentEvent {
    pub version: i64,
    /// `PaymentAuthorized`, `PaymentCaptured`, …
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub data: serde_json::Value,
}

/// Filters of `GET /payments`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    pub order_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
}

/// Which state of a payment to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    Latest,
    /// As of this stream version (1 = the first event).
    Version(i64),
    /// As it stood at this instant.
    AsOf(OffsetDateTime),
}

/// Everything a payments operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// One or more fields are invalid; nothing was changed.
    #[error("invalid payments request")]
    Invalid(Vec<FieldError>),
    /// The customers module does not know this customer.
    #[error("no customer with id {0}")]
    CustomerNotFound(Uuid),
    /// The customer has no payment account yet.
    #[error("no payment account for customer {0}")]
    AccountNotFound(Uuid),
    #[error("no payment with id {0}")]
    PaymentNotFound(PaymentId),
    /// The payment did not exist yet at the requested version or instant.
    #[error("payment {0} did not exist at that point")]
    NotYet(PaymentId),
    /// A module the operation depends on (`payments` itself, `customers`) cannot be reached.
    #[error("the {0} module is unavailable")]
    Unavailable(&'static str),
    #[error("unexpected payments failure")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The payments module, as every other part of the system sees it.
#[async_trait]
pub trait PaymentsApi: Send + Sync + 'static {
    /// Sets a customer's credit limit, opening the account if it does not exist yet.
    ///
    /// # Errors
    /// - [`PaymentsError::Invalid`] when the limit is outside 0..=10^15.
    /// - [`PaymentsError::CustomerNotFound`] when the customers module does not know the
    ///   customer.
    /// - [`PaymentsError::Unavailable`] when payments or customers cannot be reached.
    async fn set_credit_limit(
        &self,
        customer_id: Uuid,
        limit: SetCreditLimit,
    ) -> Result<Account, PaymentsError>;

    /// Reads a customer's account.
    ///
    /// # Errors
    /// - [`PaymentsError::AccountNotFound`]; [`PaymentsError::Unavailable`].
    async fn account(&self, customer_id: Uuid) -> Result<Account, PaymentsError>;

    /// Lists payments in creation order, optionally of one order and/or one customer.
    ///
    /// # Errors
    /// - [`PaymentsError::Unavailable`].
    async fn list_payments(
        &self,
        filter: PaymentFilter,
        page: PageRequest,
    ) -> Result<Page<Payment>, PaymentsError>;

    /// The payments of the orders among `order_ids` that have one, by order id; orders without
    /// a payment are left out. One indexed read for the whole batch (reconciliation looks
    /// payments up a page of orders at a time).
    ///
    /// # Errors
    /// - [`PaymentsError::Unavailable`].
    async fn payments_of_orders(&self, order_ids: &[Uuid]) -> Result<Vec<Payment>, PaymentsError>;

    /// Reads a payment, now or as it stood at a version or instant.
    ///
    /// # Errors
    /// - [`PaymentsError::PaymentNotFound`]; [`PaymentsError::NotYet`] when the payment did
    ///   not exist at that point; [`PaymentsError::Invalid`] for a version below 1;
    ///   [`PaymentsError::Unavailable`].
    async fn payment(&self, id: PaymentId, at: PointInTime) -> Result<Payment, PaymentsError>;

    /// The full, immutable history of a payment, oldest first.
    ///
    /// # Errors
    /// - [`PaymentsError::PaymentNotFound`]; [`PaymentsError::Unavailable`].
    async fn payment_events(&self, id: PaymentId) -> Result<Vec<PaymentEvent>, PaymentsError>;
}

shared_kernel::storage_errors_stop_at_the_boundary!(PaymentsError, unavailable: PaymentsError::Unavailable(MODULE));
