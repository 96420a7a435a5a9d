//! Integration events of the orders module. Their JSON is a contract: see the snapshots.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{OrderId, Reason};

/// One line of [`OrderPlaced`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// `orders.OrderPlaced@1`: an order was placed and waits for stock and payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub customer_id: Uuid,
    pub lines: Vec<PlacedLine>,
    pub total_cents: i64,
}

/// `orders.OrderConfirmed@1`: stock is reserved and payment authorized; commit and capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
}

/// `orders.OrderRejected@1`: the order will not be fulfilled; release and void what is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: OrderId,
    pub reason: Reason,
}

/// `orders.OrderCancelled@1`: the customer cancelled a pending or confirmed order; release or
/// restock, void or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
}

shared_kernel::integration_events! {
    module "orders";
    "order" by order_id: OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_kernel::messaging::IntegrationEvent as _;

    fn order_id() -> OrderId {
        OrderId("0190f3a0-0000-7000-8000-000000000003".parse().unwrap())
    }

    #[test]
    fn order_placed_contract() {
        let event = OrderPlaced {
            order_id: order_id(),
            customer_id: "0190f3a0-0000-7000-8000-000000000001".parse().unwrap(),
            lines: vec![PlacedLine {
                product_id: "0190f3a0-0000-7000-8000-000000000002".parse().unwrap(),
                quantity: 2,
                unit_price_cents: 1999,
            }],
            total_cents: 3998,
        };
        assert_eq!(OrderPlaced::TYPE, "orders.OrderPlaced");
        insta::assert_json_snapshot!("orders.OrderPlaced@1", event);
    }

    #[test]
    fn order_outcome_contracts() {
        let id = order_id();
        insta::assert_json_snapshot!("orders.OrderConfirmed@1", OrderConfirmed { order_id: id });
        insta::assert_json_snapshot!(
            "orders.OrderRejected@1",
            OrderRejected {
                order_id: id,
                reason: Reason::OutOfStock
            }
        );
        insta::assert_json_snapshot!("orders.OrderCancelled@1", OrderCancelled { order_id: id });
        assert_eq!(OrderCancelled::TYPE, "orders.OrderCancelled");
    }
}
