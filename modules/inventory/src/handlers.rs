//! The handlers of the events inventory consumes, named after their source: each decodes the
//! source's events and dispatches them to the module's logic, inside the subscription's
//! transaction.

use async_trait::async_trait;
use orders_api::events::{OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected};
use shared_kernel::messaging::{Envelope, Handler};
use shared_kernel::storage::Tx;

use crate::reservations::{self, Settlement};

/// `inventory<-orders`: applies `orders.*` events to stock — reserve, commit, release,
/// restock (see [`crate::reservations`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderEvents;

#[async_trait]
impl Handler for OrderEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        if let Some(placed) = event.decode::<OrderPlaced>() {
            reservations::reserve(tx, &placed?).await
        } else if let Some(confirmed) = event.decode::<OrderConfirmed>() {
            reservations::settle(tx, confirmed?.order_id.0, Settlement::Commit).await
        } else if let Some(rejected) = event.decode::<OrderRejected>() {
            reservations::settle(tx, rejected?.order_id.0, Settlement::Release).await
        } else if let Some(cancelled) = event.decode::<OrderCancelled>() {
            reservations::settle(tx, cancelled?.order_id.0, Settlement::Cancel).await
        } else {
            Ok(())
        }
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(orders_api::events::TYPES)
    }

    /// Stock rows are locked and events published.
    fn locks_outbox(&self) -> bool {
        true
    }
}
