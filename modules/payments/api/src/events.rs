//! Integration events of the payments module. Their JSON is a contract: see the snapshots.
//!
//! These are what other modules see; the payments module's own event store holds richer,
//! private domain events.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::PaymentId;

/// `payments.PaymentAuthorized@1`: the order's total is held on the customer's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
}

/// `payments.PaymentDeclined@1`: the customer's available credit does not cover the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub amount_cents: i64,
    /// `insufficient_credit`.
    pub reason: String,
}

/// `payments.PaymentCaptured@1`: the order is confirmed; the authorization is now a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub amount_cents: i64,
}

/// `payments.PaymentVoided@1`: the authorization was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub amount_cents: i64,
}

/// `payments.PaymentRefunded@1`: a captured payment was given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub amount_cents: i64,
}

shared_kernel::integration_events! {
    module "payments";
    "payment" by payment_id:
        PaymentAuthorized, PaymentDeclined, PaymentCaptured, PaymentVoided, PaymentRefunded;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_kernel::messaging::IntegrationEvent as _;

    fn ids() -> (PaymentId, Uuid, Uuid) {
        (
            PaymentId("0190f3a0-0000-7000-8000-000000000004".parse().unwrap()),
            "0190f3a0-0000-7000-8000-000000000003".parse().unwrap(),
            "0190f3a0-0000-7000-8000-000000000001".parse().unwrap(),
        )
    }

    #[test]
    fn payment_contracts() {
        let (payment_id, order_id, customer_id) = ids();
        insta::assert_json_snapshot!(
            "payments.PaymentAuthorized@1",
            PaymentAuthorized {
                payment_id,
                order_id,
                customer_id,
                amount_cents: 3998
            }
        );
        insta::assert_json_snapshot!(
            "payments.PaymentDeclined@1",
            PaymentDeclined {
                payment_id,
                order_id,
                customer_id,
                amount_cents: 3998,
                reason: "insufficient_credit".into()
            }
        );
        let settled = (payment_id, order_id, 3998);
        insta::assert_json_snapshot!(
            "payments.PaymentCaptured@1",
            PaymentCaptured {
                payment_id: settled.0,
                order_id: settled.1,
                amount_cents: settled.2
            }
        );
        insta::assert_json_snapshot!(
            "payments.PaymentVoided@1",
            PaymentVoided {
                payment_id: settled.0,
                order_id: settled.1,
                amount_cents: settled.2
            }
        );
        insta::assert_json_snapshot!(
            "payments.PaymentRefunded@1",
            PaymentRefunded {
                payment_id: settled.0,
                order_id: settled.1,
                amount_cents: settled.2
            }
        );
        assert_eq!(PaymentDeclined::TYPE, "payments.PaymentDeclined");
    }
}
