//! The event-sourced aggregates: their private domain events, pure fold functions
//! (`apply(state, event)`) and pure decisions. Nothing here touches storage.
//!
//! - **Account** (stream id = customer id): opened with a limit, limit changed, credit reserved
//!   for a payment, credit released for a payment.
//! - **Payment** (stream id = payment id): authorized or declined, then captured, voided or
//!   refunded.

use payments_api::{Account, Payment, PaymentId, PaymentStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where and when a stored event was recorded: what a fold needs besides the event itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The event's version in its stream (1 = first).
    pub version: i64,
    pub recorded_at: OffsetDateTime,
}

/// A domain event: serialized as `{"type": <name>, "data": {...}}`, stored as its type name
/// plus its data.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// Schema version of the stored payload; older versions would be upcast on load.
    const SCHEMA_VERSION: i32 = 1;
}

/// An event-sourced aggregate: a state folded from its stream.
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + Sync {
    /// `stream_type` of the aggregate's streams.
    const STREAM_TYPE: &'static str;
    type Event: DomainEvent;

    /// Folds one event into the state. Total: decisions, not the fold, enforce the rules.
    fn apply(&mut self, event: &Self::Event, recorded: Recorded);
}

/// Why credit held for a payment went back to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Voided,
    Refunded,
}

/// Events of an account stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    AccountOpened {
        credit_limit_cents: i64,
    },
    CreditLimitChanged {
        credit_limit_cents: i64,
    },
    CreditReserved {
        payment_id: Uuid,
        order_id: Uuid,
        amount_cents: i64,
    },
    CreditReleased {
        payment_id: Uuid,
        order_id: Uuid,
        amount_cents: i64,
        reason: ReleaseReason,
    },
}

impl DomainEvent for AccountEvent {}

/// A customer's account: unopened (the default) until its first event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub opened: bool,
    pub credit_limit_cents: i64,
    /// Held for authorized and captured payments.
    pub outstanding_cents: i64,
}

impl Aggregate for AccountState {
    const STREAM_TYPE: &'static str = "account";
    type Event = AccountEvent;

    fn apply(&mut self, event: &AccountEvent, _recorded: Recorded) {
        match event {
            AccountEvent::AccountOpened { credit_limit_cents }
            | AccountEvent::CreditLimitChanged { credit_limit_cents } => {
                self.opened = true;
                self.credit_limit_cents = *credit_limit_cents;
            }
            AccountEvent::CreditReserved { amount_cents, .. } => {
                self.outstanding_cents = self.outstanding_cents.saturating_add(*amount_cents);
            }
            AccountEvent::CreditReleased { amount_cents, .. } => {
                self.outstanding_cents = self.outstanding_cents.saturating_sub(*amount_cents);
            }
        }
    }
}

impl AccountState {
    /// `max(0, limit − outstanding)`.
    pub fn available_cents(&self) -> i64 {
        self.credit_limit_cents
            .saturating_sub(self.outstanding_cents)
            .max(0)
    }

    /// The account as the API shows it, at stream `version`.
    pub fn to_dto(&self, customer_id: Uuid, version: i64) -> Account {
        Account {
            customer_id,
            credit_limit_cents: self.credit_limit_cents,
            outstanding_cents: self.outstanding_cents,
            available_cents: self.available_cents(),
            version,
        }
    }

    /// Opens the account with `limit` unless it is open already.
    pub fn decide_open(&self, limit: i64) -> Vec<AccountEvent> {
        if self.opened {
            Vec::new()
        } else {
            vec![AccountEvent::AccountOpened {
                credit_limit_cents: limit,
            }]
        }
    }

    /// Sets the limit, opening the account with it if needed; the same limit again changes
    /// nothing.
    pub fn decide_set_limit(&self, limit: i64) -> Vec<AccountEvent> {
        if !self.opened {
            self.decide_open(limit)
        } else if self.credit_limit_cents == limit {
            Vec::new()
        } else {
            vec![AccountEvent::CreditLimitChanged {
                credit_limit_cents: limit,
            }]
        }
    }

    /// Reserves `amount_cents` for a payment if it fits what is available, opening the account
    /// with `default_limit` first when it is not open. Returns the events and whether the
    /// amount was reserved; `available` (after any opening) is returned for a decline.
    pub fn decide_reserve(
        &self,
        payment_id: PaymentId,
        order_id: Uuid,
        amount_cents: i64,
        default_limit: i64,
    ) -> Reservation {
        let mut events = self.decide_open(default_limit);
        let mut state = self.clone();
        for event in &events {
            state.apply(event, Recorded::NONE);
        }
        let available_cents = state.available_cents();
        let reserved = amount_cents >= 0 && amount_cents <= available_cents;
        if reserved {
            events.push(AccountEvent::CreditReserved {
                payment_id: payment_id.0,
                order_id,
                amount_cents,
            });
        }
        Reservation {
            events,
            reserved,
            available_cents,
        }
    }

    /// Gives back what a payment held.
    pub fn decide_release(payment: &Payment, reason: ReleaseReason) -> Vec<AccountEvent> {
        vec![AccountEvent::CreditReleased {
            payment_id: payment.id.0,
            order_id: payment.order_id,
            amount_cents: payment.amount_cents,
            reason,
        }]
    }
}

/// The outcome of [`AccountState::decide_reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub events: Vec<AccountEvent>,
    pub reserved: bool,
    pub available_cents: i64,
}

impl Recorded {
    /// For folds whose result is only inspected for a decision, never stored.
    pub const NONE: Recorded = Recorded {
        version: 0,
        recorded_at: OffsetDateTime::UNIX_EPOCH,
    };
}

/// Events of a payment stream. Variant names are the stored event types, which the history
/// endpoint shows (`PaymentAuthorized`, `PaymentCaptured`, …).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PaymentStreamEvent {
    PaymentAuthorized {
        payment_id: PaymentId,
        order_id: Uuid,
        customer_id: Uuid,
        amount_cents: i64,
    },
    PaymentDeclined {
        payment_id: PaymentId,
        order_id: Uuid,
        customer_id: Uuid,
        amount_cents: i64,
        /// `insufficient_credit`.
        reason: String,
        /// What was available when the payment was declined.
        available_cents: i64,
    },
    PaymentCaptured {},
    PaymentVoided {
        /// `order_rejected` or `order_cancelled`.
        reason: String,
    },
    PaymentRefunded {},
}

impl DomainEvent for PaymentStreamEvent {}

/// A payment: `None` until its first event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState(pub Option<Payment>);

impl Aggregate for PaymentState {
    const STREAM_TYPE: &'static str = "payment";
    type Event = PaymentStreamEvent;

    fn apply(&mut self, event: &PaymentStreamEvent, recorded: Recorded) {
        let created = |id: PaymentId, order_id, customer_id, amount_cents, status| Payment {
            id,
            order_id,
            customer_id,
            amount_cents,
            status,
            version: recorded.version,
            created_at: recorded.recorded_at,
            updated_at: recorded.recorded_at,
        };
        let status = match event {
            PaymentStreamEvent::PaymentAuthorized {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
            } => {
                self.0 = Some(created(
                    *payment_id,
                    *order_id,
                    *customer_id,
                    *amount_cents,
                    PaymentStatus::Authorized,
                ));
                return;
            }
            PaymentStreamEvent::PaymentDeclined {
                payment_id,
                order_id,
                customer_id,
                amount_cents,
                ..
            } => {
                self.0 = Some(created(
                    *payment_id,
                    *order_id,
                    *customer_id,
                    *amount_cents,
                    PaymentStatus::Declined,
                ));
                return;
            }
            PaymentStreamEvent::PaymentCaptured {} => PaymentStatus::Captured,
            PaymentStreamEvent::PaymentVoided { .. } => PaymentStatus::Voided,
            PaymentStreamEvent::PaymentRefunded {} => PaymentStatus::Refunded,
        };
        if let Some(payment) = &mut self.0 {
            payment.status = status;
            payment.version = recorded.version;
            payment.updated_at = recorded.recorded_at;
        }
    }
}

/// What an order event asks of its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The order is confirmed: capture an authorization.
    Capture,
    /// The order is rejected: void an authorization.
    Void,
    /// The order is cancelled: void an authorization, refund a capture.
    Cancel,
}

/// The decision on a payment for a [`Settlement`]: its new event, and whether the account's
/// credit goes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub event: PaymentStreamEvent,
    pub release: Option<ReleaseReason>,
}

impl PaymentState {
    /// What `settlement` does to this payment; `None` when nothing (a duplicate, a late event,
    /// or a payment in a state the settlement does not apply to).
    pub fn decide_settlement(&self, settlement: Settlement) -> Option<Settled> {
        let status = self.0.as_ref()?.status;
        match (settlement, status) {
            (Settlement::Capture, PaymentStatus::Authorized) => Some(Settled {
                event: PaymentStreamEvent::PaymentCaptured {},
                release: None,
            }),
            (Settlement::Void, PaymentStatus::Authorized) => Some(Settled {
                event: PaymentStreamEvent::PaymentVoided {
                    reason: "order_rejected".into(),
                },
                release: Some(ReleaseReason::Voided),
            }),
            (Settlement::Cancel, PaymentStatus::Authorized) => Some(Settled {
                event: PaymentStreamEvent::PaymentVoided {
                    reason: "order_cancelled".into(),
                },
                release: Some(ReleaseReason::Voided),
            }),
            (Settlement::Cancel, PaymentStatus::Captured) => Some(Settled {
                event: PaymentStreamEvent::PaymentRefunded {},
                release: Some(ReleaseReason::Refunded),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(version: i64) -> Recorded {
        Recorded {
            version,
            recorded_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(version),
        }
    }

    fn fold<A: Aggregate>(events: &[A::Event]) -> A {
        let mut state = A::default();
        for (i, event) in events.iter().enumerate() {
            state.apply(event, at(i as i64 + 1));
        }
        state
    }

    #[test]
    fn reservations_fit_the_available_credit_and_open_the_account() {
        let fresh = AccountState::default();
        let payment = PaymentId::generate();
        let order = Uuid::now_v7();
        let decision = fresh.decide_reserve(payment, order, 100, 100);
        assert!(decision.reserved);
        assert_eq!(decision.events.len(), 2);
        let state: AccountState = fold(&decision.events);
        assert_eq!((state.outstanding_cents, state.available_cents()), (100, 0));
        let again = state.decide_reserve(PaymentId::generate(), order, 1, 100);
        assert!(!again.reserved);
        assert!(again.events.is_empty());
        assert_eq!(again.available_cents, 0);
    }

    #[test]
    fn available_never_goes_below_zero() {
        let state: AccountState = fold(&[
            AccountEvent::AccountOpened {
                credit_limit_cents: 500,
            },
            AccountEvent::CreditReserved {
                payment_id: Uuid::now_v7(),
                order_id: Uuid::now_v7(),
                amount_cents: 400,
            },
            AccountEvent::CreditLimitChanged {
                credit_limit_cents: 100,
            },
        ]);
        assert_eq!((state.outstanding_cents, state.available_cents()), (400, 0));
        assert!(state.decide_set_limit(100).is_empty());
        assert_eq!(state.decide_set_limit(101).len(), 1);
    }

    #[test]
    fn settlements_follow_the_payment_state_machine() {
        let id = PaymentId::generate();
        let authorized: PaymentState = fold(&[PaymentStreamEvent::PaymentAuthorized {
            payment_id: id,
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            amount_cents: 5,
        }]);
        assert!(
            PaymentState::default()
                .decide_settlement(Settlement::Capture)
                .is_none()
        );
        let capture = authorized.decide_settlement(Settlement::Capture).unwrap();
        assert_eq!(capture.release, None);
        let mut captured = authorized.clone();
        captured.apply(&capture.event, at(2));
        let payment = captured.0.clone().unwrap();
        assert_eq!(
            (payment.status, payment.version),
            (PaymentStatus::Captured, 2)
        );
        assert_ne!(payment.created_at, payment.updated_at);
        assert!(captured.decide_settlement(Settlement::Capture).is_none());
        assert!(captured.decide_settlement(Settlement::Void).is_none());
        assert_eq!(
            captured
                .decide_settlement(Settlement::Cancel)
                .unwrap()
                .release,
            Some(ReleaseReason::Refunded)
        );
        assert_eq!(
            authorized
                .decide_settlement(Settlement::Void)
                .unwrap()
                .release,
            Some(ReleaseReason::Voided)
        );
    }

    #[test]
    fn events_serialize_as_type_and_data() {
        let event = AccountEvent::CreditLimitChanged {
            credit_limit_cents: 7,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "CreditLimitChanged");
        assert_eq!(json["data"]["credit_limit_cents"], 7);
        let captured = serde_json::to_value(PaymentStreamEvent::PaymentCaptured {}).unwrap();
        assert_eq!(captured["data"], serde_json::json!({}));
    }
}
