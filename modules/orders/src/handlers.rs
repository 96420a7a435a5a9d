//! The handlers of the events orders consumes, named after their source: each decodes the
//! source's events and dispatches them to the replicas ([`crate::replicas`]) or the saga
//! ([`crate::saga`]), inside the subscription's transaction.

use async_trait::async_trait;
use customers_api::events::{CustomerRegistered, CustomerUpdated};
use inventory_api::events::{
    ProductCreated, ProductUpdated, StockReservationFailed, StockReserved,
};
use payments_api::events::{PaymentAuthorized, PaymentDeclined};
use shared_kernel::messaging::{Batch, BatchError, Envelope, Handler, IntegrationEvent};
use shared_kernel::storage::Tx;

use crate::replicas::{self, ProductReplica};
use crate::saga::{self, Party, Reply};

/// `orders<-customers`: the customer replicas.
#[derive(Debug)]
pub(crate) struct CustomerEvents;

#[async_trait]
impl Handler for CustomerEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let (id, name, email) = if let Some(e) = event.decode::<CustomerRegistered>() {
            let e = e?;
            (e.customer_id.0, e.name, e.email)
        } else if let Some(e) = event.decode::<CustomerUpdated>() {
            let e = e?;
            (e.customer_id.0, e.name, e.email)
        } else {
            return Ok(());
        };
        replicas::upsert_customer(tx, id, &name, &email, event.seq).await?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[CustomerRegistered::TYPE, CustomerUpdated::TYPE])
    }
}

/// An inventory event orders applies: a stock reply to the saga, or a product's data.
enum FromInventory {
    Reply(Reply),
    Product(ProductReplica),
}

/// `orders<-inventory`: the product replicas, and stock replies to the saga.
#[derive(Debug)]
pub(crate) struct InventoryEvents;

impl InventoryEvents {
    /// What `event` says to orders; `None` for an event it does not apply.
    fn decode(event: &Envelope) -> anyhow::Result<Option<FromInventory>> {
        let decoded = if let Some(reserved) = event.decode::<StockReserved>() {
            let reserved = reserved?;
            let units: i64 = reserved.lines.iter().map(|l| l.quantity).sum();
            let detail = format!("{units} units in {} allocations", reserved.lines.len());
            FromInventory::Reply(Reply {
                order_id: reserved.order_id,
                party: Party::Stock,
                succeeded: true,
                detail: Some(detail),
            })
        } else if let Some(failed) = event.decode::<StockReservationFailed>() {
            let failed = failed?;
            let detail = format!(
                "product {} requested {} available {}",
                failed.product_id, failed.requested, failed.available
            );
            FromInventory::Reply(Reply {
                order_id: failed.order_id,
                party: Party::Stock,
                succeeded: false,
                detail: Some(detail),
            })
        } else {
            let (id, sku, name, price_cents) = if let Some(e) = event.decode::<ProductCreated>() {
                let e = e?;
                (e.product_id, e.sku, e.name, e.price_cents)
            } else if let Some(e) = event.decode::<ProductUpdated>() {
                let e = e?;
                (e.product_id, e.sku, e.name, e.price_cents)
            } else {
                return Ok(None);
            };
            FromInventory::Product(ProductReplica {
                id: id.0,
                sku,
                name,
                price_cents,
            })
        };
        Ok(Some(decoded))
    }
}

#[async_trait]
impl Handler for InventoryEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        match Self::decode(event)? {
            Some(FromInventory::Reply(reply)) => saga::on_reply(tx, reply).await,
            Some(FromInventory::Product(product)) => {
                Ok(replicas::upsert_products(tx, &[(product, event.seq)]).await?)
            }
            None => Ok(()),
        }
    }

    /// The whole batch with a constant number of statements, with the effects of `handle` on
    /// each event in seq order: the product replicas in one upsert (the latest event of each
    /// product), the replies through `saga::apply_replies`.
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        let mut replies = Vec::new();
        let mut products = Vec::new();
        for (i, event) in batch.events().iter().enumerate() {
            match Self::decode(event).map_err(|e| BatchError::at(i, e))? {
                Some(FromInventory::Reply(reply)) => replies.push((i, *event, reply)),
                Some(FromInventory::Product(product)) => products.push((product, event.seq)),
                None => {}
            }
        }
        replicas::upsert_products(tx, &products).await?;
        saga::apply_replies(tx, replies).await
    }

    /// Cheaper than `handle` even for one event.
    fn set_based(&self) -> bool {
        true
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[
            StockReserved::TYPE,
            StockReservationFailed::TYPE,
            ProductCreated::TYPE,
            ProductUpdated::TYPE,
        ])
    }
}

/// `orders<-payments`: payment replies to the saga.
#[derive(Debug)]
pub(crate) struct PaymentEvents;

impl PaymentEvents {
    /// The reply `event` carries; `None` for an event orders does not apply.
    fn decode(event: &Envelope) -> anyhow::Result<Option<Reply>> {
        Ok(
            if let Some(authorized) = event.decode::<PaymentAuthorized>() {
                let authorized = authorized?;
                Some(Reply {
                    order_id: authorized.order_id,
                    party: Party::Payment,
                    succeeded: true,
                    detail: Some(format!("payment {}", authorized.payment_id)),
                })
            } else if let Some(declined) = event.decode::<PaymentDeclined>() {
                let declined = declined?;
                Some(Reply {
                    order_id: declined.order_id,
                    party: Party::Payment,
                    succeeded: false,
                    detail: Some(declined.reason),
                })
            } else {
                None
            },
        )
    }
}

#[async_trait]
impl Handler for PaymentEvents {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        match Self::decode(event)? {
            Some(reply) => saga::on_reply(tx, reply).await,
            None => Ok(()),
        }
    }

    /// The whole batch with a constant number of statements, with the effects of `handle` on
    /// each event in seq order (`saga::apply_replies`).
    async fn handle_batch(&self, tx: &mut Tx, batch: &Batch<'_>) -> Result<(), BatchError> {
        let mut replies = Vec::new();
        for (i, event) in batch.events().iter().enumerate() {
            if let Some(reply) = Self::decode(event).map_err(|e| BatchError::at(i, e))? {
                replies.push((i, *event, reply));
            }
        }
        saga::apply_replies(tx, replies).await
    }

    /// Cheaper than `handle` even for one event.
    fn set_based(&self) -> bool {
        true
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[PaymentAuthorized::TYPE, PaymentDeclined::TYPE])
    }
}
