//! Integration events of the inventory module. Their JSON is a contract: see the snapshots.

use serde::{Deserialize, Serialize};
use shared_kernel::messaging::IntegrationEvent;

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

impl IntegrationEvent for ProductCreated {
    const TYPE: &'static str = "inventory.ProductCreated";
    const VERSION: i32 = 1;
    const AGGREGATE_TYPE: &'static str = "product";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

impl IntegrationEvent for ProductUpdated {
    const TYPE: &'static str = "inventory.ProductUpdated";
    const VERSION: i32 = 1;
    const AGGREGATE_TYPE: &'static str = "product";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
