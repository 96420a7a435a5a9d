//! Handlers of the events payments consumes. Each runs inside the subscription's transaction:
//! the event-store appends, the payment view and the outbox event commit together with the
//! inbox row and checkpoint. Business outcomes (a decline, a late or duplicate event) are
//! events or nothing; an `Err` means a transient failure, and the batch is retried.

use async_trait::async_trait;
use customers_api::events::CustomerRegistered;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected};
use shared_kernel::messaging::{Envelope, Handler, IntegrationEvent};
use shared_kernel::storage::Tx;

use crate::domain::Settlement;
use crate::ledger::Ledger;

/// `payments<-customers`: opens an account with the default limit for every newly registered
/// customer; an account that exists already is left as it is.
#[derive(Debug, Clone)]
pub struct CustomerEvents {
    pub(crate) ledger: Ledger,
}

#[async_trait]
impl Handler for CustomerEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(registered) = event.decode::<CustomerRegistered>() else {
            return Ok(());
        };
        let registered = registered?;
        self.ledger
            .open_account(tx, registered.customer_id.0)
            .await?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[CustomerRegistered::TYPE])
    }

    /// This batch publishes nothing, but it opens accounts that `payments<-orders` may open too
    /// (on first sight of a customer): both batches take the outbox lock first, so their
    /// inserts into account streams never wait on each other in opposite orders.
    fn locks_outbox(&self) -> bool {
        true
    }
}

/// `payments<-orders`: the payment side of the order saga.
///
/// - `OrderPlaced`: authorize the total (or decline it), once per order.
/// - `OrderConfirmed`: capture an authorized payment.
/// - `OrderRejected`: void an authorized payment, releasing its credit.
/// - `OrderCancelled`: void an authorized payment or refund a captured one, releasing credit.
///
/// Anything else — no payment, a payment in another state, a repeat — changes nothing.
#[derive(Debug, Clone)]
pub struct OrderEvents {
    pub(crate) ledger: Ledger,
}

#[async_trait]
impl Handler for OrderEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        if let Some(placed) = event.decode::<OrderPlaced>() {
            let placed = placed?;
            self.ledger
                .authorize(
                    tx,
                    placed.order_id.0,
                    placed.customer_id,
                    placed.total_cents,
                )
                .await?;
            return Ok(());
        }
        let (order_id, settlement) = if let Some(e) = event.decode::<OrderConfirmed>() {
            (e?.order_id, Settlement::Capture)
        } else if let Some(e) = event.decode::<OrderRejected>() {
            (e?.order_id, Settlement::Void)
        } else if let Some(e) = event.decode::<OrderCancelled>() {
            (e?.order_id, Settlement::Cancel)
        } else {
            return Ok(());
        };
        self.ledger.settle(tx, order_id.0, settlement).await?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(orders_api::events::TYPES)
    }

    /// Streams are written and events published.
    fn locks_outbox(&self) -> bool {
        true
    }
}
