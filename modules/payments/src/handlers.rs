//! Handlers of the events payments consumes. Each runs inside the subscription's transaction:
//! the event-store appends, the payment view and the outbox event commit together with the
//! inbox row and checkpoint. Business outcomes (a decline, a late or duplicate event) are
//! events or nothing; an `Err` means a transient failure, and the batch is retried.

use async_trait::async_trait;
use customers_api::events::CustomerRegistered;
use shared_kernel::messaging::{Batch, BatchError, Envelope, Handler, IntegrationEvent};
use shared_kernel::storage::Tx;

use crate::ledger::{Command, Ledger, apply_batch};

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

    /// This batch opens accounts that `payments<-orders` may open too (on first sight of a
    /// customer): both batches are serialized, so their inserts into account streams never
    /// wait on each other in opposite orders.
    fn serialized(&self) -> bool {
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
        match Command::decode(event).transpose()? {
            Some(Command::Authorize {
                order_id,
                customer_id,
                amount_cents,
            }) => {
                self.ledger
                    .authorize(tx, order_id, customer_id, amount_cents)
                    .await?;
            }
            Some(Command::Settle {
                order_id,
                settlement,
            }) => {
                self.ledger.settle(tx, order_id, settlement).await?;
            }
            None => {}
        }
        Ok(())
    }

    /// The whole batch at once, with the effects of [`Self::handle`] on each event in seq
    /// order (`ledger::apply_batch`).
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        apply_batch(&self.ledger, tx, batch.events()).await
    }

    /// Cheaper than `handle` even for one event.
    fn set_based(&self) -> bool {
        true
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(orders_api::events::TYPES)
    }

    /// Account streams are written, as `payments<-customers` writes them (see there).
    fn serialized(&self) -> bool {
        true
    }
}
