//! The handlers of the events inventory consumes, named after their source: each decodes the
//! source's events and dispatches them to the module's logic, inside the subscription's
//! transaction.

use async_trait::async_trait;
use shared_kernel::messaging::{Batch, BatchError, Envelope, Handler};
use shared_kernel::storage::Tx;

use crate::reservations::{self, OrderEvent};

/// `inventory<-orders`: applies `orders.*` events to stock — reserve, commit, release,
/// restock (see the `reservations` module).
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderEvents;

#[async_trait]
impl Handler for OrderEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        match OrderEvent::decode(event) {
            Some(decoded) => decoded?.apply(tx).await,
            None => Ok(()),
        }
    }

    /// The whole batch with a constant number of statements, with the effects of `handle` on
    /// each event in seq order (`reservations::apply_batch`).
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        reservations::apply_batch(tx, batch.events()).await
    }

    /// Cheaper than `handle` even for one event.
    fn set_based(&self) -> bool {
        true
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(orders_api::events::TYPES)
    }
}
