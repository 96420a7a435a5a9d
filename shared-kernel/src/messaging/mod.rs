//! The messaging runtime: integration events, the transactional outbox, durable subscriptions
//! with an inbox for exactly-once effects, and the in-process bus that runs them.
//!
//! Publishing: a module calls [`outbox::append`] (or [`outbox::append_many`]) inside the
//! transaction of its change; the commit wakes the subscribers of that module. Consuming: a
//! module supplies a [`Handler`] per source (per event, or set-based per batch:
//! [`Handler::handle_batch`]); [`Bus`] runs each as a [`Subscription`] whose checkpoint and
//! inbox live in the consumer's database and are written in the transaction of the handler's
//! effects.

mod bus;
pub mod dead_letters;
mod event;
mod log;
pub mod outbox;
pub(crate) mod recent;
mod subscription;

pub use bus::{Bus, BusError, SubscriptionStatus, Workers};
pub use event::{Envelope, EventContext, IntegrationEvent, MalformedEvent};
pub use log::{EventLog, OutboxLog};
pub use subscription::{
    Batch, BatchError, DeliveryConfig, Handler, Subscription, checkpoint, lock_checkpoint, rewind,
    run_handler, run_handler_batch,
};
