//! Integration events of the customers module. Their JSON is a contract: see the snapshots.

use serde::{Deserialize, Serialize};

use crate::CustomerId;

/// `customers.CustomerRegistered@1`: a customer registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: CustomerId,
    pub name: String,
    pub email: String,
}

/// `customers.CustomerUpdated@1`: a customer's name or email changed; carries both, current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerUpdated {
    pub customer_id: CustomerId,
    pub name: String,
    pub email: String,
}

shared_kernel::integration_events! {
    module "customers";
    "customer" by customer_id: CustomerRegistered, CustomerUpdated;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_kernel::messaging::IntegrationEvent as _;

    fn id() -> CustomerId {
        CustomerId("0190f3a0-0000-7000-8000-000000000001".parse().unwrap())
    }

    #[test]
    fn customer_registered_contract() {
        let event = CustomerRegistered {
            customer_id: id(),
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        };
        assert_eq!(CustomerRegistered::TYPE, "customers.CustomerRegistered");
        insta::assert_json_snapshot!("customers.CustomerRegistered@1", event);
    }

    #[test]
    fn customer_updated_contract() {
        let event = CustomerUpdated {
            customer_id: id(),
            name: "Ada King".into(),
            email: "ada@example.com".into(),
        };
        insta::assert_json_snapshot!("customers.CustomerUpdated@1", event);
    }

    #[test]
    fn readers_ignore_unknown_fields() {
        let json = serde_json::json!({
            "customer_id": id(), "name": "Ada", "email": "ada@example.com", "loyalty": "gold"
        });
        let event: CustomerRegistered = serde_json::from_value(json).unwrap();
        assert_eq!(event.name, "Ada");
    }
}
