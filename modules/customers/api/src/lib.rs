//! Public contract of the customers module: the [`CustomersApi`] trait other modules and the
//! gateway call, its DTOs (which are also the HTTP wire format) and its error enum.
//!
//! **Architecture Invariant:** this crate depends only on `shared-kernel` and an allow-list of
//! third-party crates; callers never see how or where customers are stored.

/// The module's name: the source of its events (`customers.<Event>`), its database file, its
/// Postgres schema and role suffix.
pub const MODULE: &str = "customers";

pub mod events;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared_kernel::http::{FieldError, Page, PageRequest};
use shared_kernel::storage::idempotency::{IdempotencyKey, IdempotencyKeyReused};
use time::OffsetDateTime;
use utoipa::ToSchema;

shared_kernel::define_id!(
    /// Identifies a customer.
    CustomerId
);

/// A registered customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    pub id: CustomerId,
    /// 1..=200 characters, stored trimmed.
    pub name: String,
    /// As given at registration or last update; unique case-insensitively.
    pub email: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Body of `POST /customers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// 1..=200 characters after trimming, no control characters.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    pub name: String,
    /// A valid address with a dotted domain, at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

/// Body of `PATCH /customers/{id}`: absent (or `null`) fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    #[serde(default)]
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(format = Email, max_length = 254)]
    pub email: Option<String>,
}

/// Everything a customers operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CustomersError {
    /// One or more fields are invalid; nothing was changed.
    #[error("invalid customer data")]
    Invalid(Vec<FieldError>),
    #[error("no customer with id {0}")]
    NotFound(CustomerId),
    /// Another customer already uses this email (compared case-insensitively).
    #[error("a customer with email {0:?} already exists")]
    EmailTaken(String),
    #[error(transparent)]
    IdempotencyKeyReused(#[from] IdempotencyKeyReused),
    /// The customers database cannot be reached right now.
    #[error("the customers module is unavailable")]
    Unavailable,
    #[error("unexpected customers failure")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The customers module, as every other part of the system sees it.
#[async_trait]
pub trait CustomersApi: Send + Sync + 'static {
    /// Registers a customer.
    ///
    /// # Errors
    /// - [`CustomersError::Invalid`] when the name is empty or longer than 200 characters after
    ///   trimming, or the email is not a valid address of at most 254 characters.
    /// - [`CustomersError::EmailTaken`] when the email is already registered (any case).
    /// - [`CustomersError::IdempotencyKeyReused`] when `key` was used with a different request;
    ///   a repeat with the same request returns the customer created the first time.
    /// - [`CustomersError::Unavailable`] when the module's database is down.
    async fn register(
        &self,
        input: NewCustomer,
        key: Option<IdempotencyKey>,
    ) -> Result<Customer, CustomersError>;

    /// Reads one customer.
    ///
    /// # Errors
    /// - [`CustomersError::NotFound`] when no customer has this id.
    /// - [`CustomersError::Unavailable`] when the module's database is down.
    async fn get(&self, id: CustomerId) -> Result<Customer, CustomersError>;

    /// Changes a customer's name and/or email.
    ///
    /// # Errors
    /// - [`CustomersError::NotFound`], [`CustomersError::Invalid`],
    ///   [`CustomersError::EmailTaken`] (another customer has the email) and
    ///   [`CustomersError::Unavailable`] as for [`CustomersApi::register`].
    async fn update(
        &self,
        id: CustomerId,
        patch: CustomerPatch,
    ) -> Result<Customer, CustomersError>;

    /// Lists customers in creation order, one page at a time.
    ///
    /// # Errors
    /// - [`CustomersError::Unavailable`] when the module's database is down.
    async fn list(&self, page: PageRequest) -> Result<Page<Customer>, CustomersError>;
}

shared_kernel::storage_errors_stop_at_the_boundary!(CustomersError, unavailable: CustomersError::Unavailable);
