//! Integration events of the inventory module. Their JSON is a contract: see the snapshots.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ProductId;

/// `inventory.ProductCreated@1`: a product entered the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// `inventory.ProductUpdated@1`: a product's name or price changed; carries the current values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

/// Units of one product held in one warehouse for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    pub product_id: ProductId,
    pub warehouse: String,
    pub quantity: i64,
}

/// `inventory.StockReserved@1`: every line of the order is held (a line may span warehouses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
    pub lines: Vec<ReservedLine>,
}

/// `inventory.StockReservationFailed@1`: a line could not be covered; nothing was held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReservationFailed {
    pub order_id: Uuid,
    /// The first line that could not be covered.
    pub product_id: ProductId,
    pub requested: i64,
    pub available: i64,
}

/// `inventory.StockReleased@1`: the units held for the order are available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: Uuid,
}

/// `inventory.StockCommitted@1`: the held units left the warehouses (on hand and reserved
/// dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: Uuid,
}

/// `inventory.StockRestocked@1`: the units of a cancelled, committed order are back on hand in
/// the warehouses they left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRestocked {
    pub order_id: Uuid,
}

// A reservation is about one order: its events carry the order's id as the aggregate's.
shared_kernel::integration_events! {
    module "inventory";
    "product" by product_id: ProductCreated, ProductUpdated;
    "reservation" by order_id:
        StockReserved, StockReservationFailed, StockReleased, StockCommitted, StockRestocked;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_kernel::messaging::IntegrationEvent as _;

    fn example() -> ProductCreated {
        ProductCreated {
            product_id: ProductId("0190f3a0-0000-7000-8000-000000000002".parse().unwrap()),
            sku: "WIDGET-1".into(),
            name: "Widget".into(),
            price_cents: 1999,
        }
    }

    #[test]
    fn product_created_contract() {
        insta::assert_json_snapshot!("inventory.ProductCreated@1", example());
    }

    #[test]
    fn product_updated_contract() {
        let ProductCreated {
            product_id,
            sku,
            name,
            price_cents,
        } = example();
        let event = ProductUpdated {
            product_id,
            sku,
            name,
            price_cents: price_cents + 1,
        };
        insta::assert_json_snapshot!("inventory.ProductUpdated@1", event);
    }

    #[test]
    fn reservation_contracts() {
        let order_id: Uuid = "0190f3a0-0000-7000-8000-000000000003".parse().unwrap();
        let product_id = example().product_id;
        insta::assert_json_snapshot!(
            "inventory.StockReserved@1",
            StockReserved {
                order_id,
                lines: vec![
                    ReservedLine {
                        product_id,
                        warehouse: "east".into(),
                        quantity: 3
                    },
                    ReservedLine {
                        product_id,
                        warehouse: "west".into(),
                        quantity: 1
                    },
                ],
            }
        );
        insta::assert_json_snapshot!(
            "inventory.StockReservationFailed@1",
            StockReservationFailed {
                order_id,
                product_id,
                requested: 5,
                available: 4
            }
        );
        insta::assert_json_snapshot!("inventory.StockReleased@1", StockReleased { order_id });
        insta::assert_json_snapshot!("inventory.StockCommitted@1", StockCommitted { order_id });
        insta::assert_json_snapshot!("inventory.StockRestocked@1", StockRestocked { order_id });
        assert_eq!(StockRestocked::TYPE, "inventory.StockRestocked");
    }
}
