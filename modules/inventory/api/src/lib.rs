//! Public contract of the inventory module (catalog + stock): the [`InventoryApi`] trait, its
//! DTOs (also the HTTP wire format) and its error enum.
//!
//! **Architecture Invariant:** this crate depends only on `shared-kernel` and an allow-list of
//! third-party crates.

/// The module's name: the source of its events (`inventory.<Event>`), its database file, its
/// Postgres schema and role suffix.
pub const MODULE: &str = "inventory";

pub mod events;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shared_kernel::http::{FieldError, Page, PageRequest};
use shared_kernel::storage::idempotency::{IdempotencyKey, IdempotencyKeyReused};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

shared_kernel::define_id!(
    /// Identifies a product of the catalog.
    ProductId
);

/// Largest accepted `price_cents` (10^12).
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// Largest accepted `on_hand` per warehouse (10^9).
pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: ProductId,
    /// 1..=64 characters of `[A-Za-z0-9._-]`, unique, never changes.
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Body of `POST /products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// 1..=64 characters of `[A-Za-z0-9._-]`, unique.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    /// 1..=200 characters after trimming, no control characters.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    pub name: String,
    /// 0..=10^12.
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    pub price_cents: i64,
}

/// Body of `PATCH /products/{id}`: absent (or `null`) fields stay as they are. The SKU is
/// immutable, so it is an unknown field here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    #[serde(default)]
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,198}[^\s\x00-\x1f\x7f-\x9f])?\s*$"
    )]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    pub price_cents: Option<i64>,
}

/// Body of `PUT /products/{id}/stock/{warehouse}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// 0..=10^9.
    #[schema(minimum = 0, maximum = 1000000000)]
    pub on_hand: i64,
}

/// Stock of one product in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockLevel {
    pub product_id: ProductId,
    pub warehouse: String,
    pub on_hand: i64,
    /// Held for orders that are not settled yet.
    pub reserved: i64,
    /// `on_hand - reserved`, never negative.
    pub available: i64,
}

/// Stock of one product over all warehouses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    pub product_id: ProductId,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Per warehouse, by warehouse name.
    pub warehouses: Vec<StockLevel>,
}

/// Where the stock reservation of an order stands.
///
/// `reserved` → `committed` (order confirmed) | `released` (order rejected or cancelled while
/// pending); `committed` → `restocked` (order cancelled after confirmation). `failed` is final:
/// some line could not be covered and nothing was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Reserved,
    Failed,
    Committed,
    Released,
    Restocked,
}

impl ReservationStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ReservationStatus; 5] = [
        ReservationStatus::Reserved,
        ReservationStatus::Failed,
        ReservationStatus::Committed,
        ReservationStatus::Released,
        ReservationStatus::Restocked,
    ];

    /// The stored and wire name (`reserved`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Reserved => "reserved",
            ReservationStatus::Failed => "failed",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Restocked => "restocked",
        }
    }

    /// The status named `value`, if any.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether units are still held for the order (reserved, not yet committed or released).
    pub fn holds_stock(self) -> bool {
        self == ReservationStatus::Reserved
    }
}

/// Units of one product taken from one warehouse for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReservationLine {
    pub product_id: ProductId,
    pub warehouse: String,
    pub quantity: i64,
}

/// The stock reservation of one order, as the inventory module keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    /// Where the units came from, by product and warehouse; empty when the reservation failed.
    pub lines: Vec<ReservationLine>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Everything an inventory operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// One or more fields are invalid; nothing was changed.
    #[error("invalid inventory data")]
    Invalid(Vec<FieldError>),
    #[error("no product with id {0}")]
    ProductNotFound(ProductId),
    #[error("a product with sku {0:?} already exists")]
    SkuTaken(String),
    /// `on_hand` would drop below what is reserved in that warehouse.
    #[error(
        "on_hand {requested} is below the {reserved} units reserved in warehouse {warehouse:?}"
    )]
    BelowReserved {
        warehouse: String,
        requested: i64,
        reserved: i64,
    },
    #[error(transparent)]
    IdempotencyKeyReused(#[from] IdempotencyKeyReused),
    /// The inventory database cannot be reached right now.
    #[error("the inventory module is unavailable")]
    Unavailable,
    #[error("unexpected inventory failure")]
    Unexpected(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The inventory module, as every other part of the system sees it.
#[async_trait]
pub trait InventoryApi: Send + Sync + 'static {
    /// Adds a product to the catalog.
    ///
    /// # Errors
    /// - [`InventoryError::Invalid`] when the sku is not 1..=64 characters of
    ///   `[A-Za-z0-9._-]`, the name is empty or longer than 200 characters after trimming, or
    ///   `price_cents` is outside `0..=10^12`.
    /// - [`InventoryError::SkuTaken`] when the sku exists.
    /// - [`InventoryError::IdempotencyKeyReused`] when `key` was used with another request.
    /// - [`InventoryError::Unavailable`] when the module's database is down.
    async fn create_product(
        &self,
        input: NewProduct,
        key: Option<IdempotencyKey>,
    ) -> Result<Product, InventoryError>;

    /// Reads one product.
    ///
    /// # Errors
    /// - [`InventoryError::ProductNotFound`]; [`InventoryError::Unavailable`].
    async fn get_product(&self, id: ProductId) -> Result<Product, InventoryError>;

    /// Reads the products among `ids` that exist, in id order; unknown ids are left out. One
    /// indexed read for them all (placing an order looks up every line's product).
    ///
    /// # Errors
    /// - [`InventoryError::Unavailable`].
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, InventoryError>;

    /// Changes a product's name and/or price.
    ///
    /// # Errors
    /// - [`InventoryError::ProductNotFound`], [`InventoryError::Invalid`] (as for
    ///   [`InventoryApi::create_product`]), [`InventoryError::Unavailable`].
    async fn update_product(
        &self,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, InventoryError>;

    /// Lists products in creation order, one page at a time.
    ///
    /// # Errors
    /// - [`InventoryError::Unavailable`].
    async fn list_products(&self, page: PageRequest) -> Result<Page<Product>, InventoryError>;

    /// Sets the units on hand of a product in a warehouse (creating the stock level).
    ///
    /// # Errors
    /// - [`InventoryError::Invalid`] when the warehouse is not 1..=64 characters of
    ///   `[A-Za-z0-9._-]` or `on_hand` is outside `0..=10^9`.
    /// - [`InventoryError::ProductNotFound`] when the product does not exist.
    /// - [`InventoryError::BelowReserved`] when `on_hand` is below the warehouse's reserved units.
    /// - [`InventoryError::Unavailable`].
    async fn set_stock(
        &self,
        product: ProductId,
        warehouse: String,
        stock: SetStock,
    ) -> Result<StockLevel, InventoryError>;

    /// Stock of a product, in total and per warehouse.
    ///
    /// # Errors
    /// - [`InventoryError::ProductNotFound`]; [`InventoryError::Unavailable`].
    async fn availability(&self, product: ProductId) -> Result<Availability, InventoryError>;

    /// The stock reservation of an order, or `None` when inventory has not seen the order
    /// (not placed yet, or its `OrderPlaced` not processed yet). For reconciliation: the
    /// saga learns outcomes from events, this answers "where does it stand now".
    ///
    /// # Errors
    /// - [`InventoryError::Unavailable`] when the module's database is down.
    async fn reservation(&self, order_id: Uuid) -> Result<Option<Reservation>, InventoryError>;

    /// The stock reservations of the orders among `order_ids` that inventory has seen, by
    /// order id; the others are left out (as [`InventoryApi::reservation`] answers `None`).
    /// One indexed read for the whole batch (reconciliation looks reservations up a page of
    /// orders at a time).
    ///
    /// # Errors
    /// - [`InventoryError::Unavailable`] when the module's database is down.
    async fn reservations(&self, order_ids: &[Uuid]) -> Result<Vec<Reservation>, InventoryError>;
}

shared_kernel::storage_errors_stop_at_the_boundary!(InventoryError, unavailable: InventoryError::Unavailable);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_statuses_are_lower_case_on_the_wire_and_in_storage() {
        for status in ReservationStatus::ALL {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, status.as_str());
            assert_eq!(ReservationStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ReservationStatus::Restocked.as_str(), "restocked");
        assert_eq!(ReservationStatus::parse("RESERVED"), None);
        assert!(ReservationStatus::Reserved.holds_stock());
        assert!(!ReservationStatus::Committed.holds_stock());
    }
}
