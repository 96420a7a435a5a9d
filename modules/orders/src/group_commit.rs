//! Group commit of placements: concurrent `POST /orders` share one transaction, so one commit
//! (one flush to disk, one hold of the outbox's append lock) serves them all.
//!
//! A placement joins the queue and waits for its answer. If no committer is running, it starts
//! one: a spawned task (not the request's future, which a disconnecting client could drop) that
//! takes everything queued, writes it in one transaction, commits and answers each placement,
//! then takes what queued up meanwhile, until the queue is empty. An idle system therefore
//! commits a lone placement at once, and a busy one commits larger groups. A placement is only
//! answered after the commit that holds it: durability is that of a single placement.
//!
//! If a group's transaction fails, each of its placements is retried in a transaction of its
//! own, so one bad placement fails alone.

use std::sync::{Arc, Mutex, PoisonError};

use orders_api::events::{OrderPlaced, PlacedLine};
use orders_api::{Order, OrdersError};
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::Tx;
use tokio::sync::oneshot;

use crate::saga;
use crate::service::{Orders, insert_order};

/// The most placements one transaction takes.
const MAX_GROUP: usize = 64;

/// An order to store as placed, with the context of the request that placed it.
pub(crate) struct Placement {
    pub order: Order,
    pub deadline_us: i64,
    pub context: EventContext,
    done: oneshot::Sender<Result<(), OrdersError>>,
}

/// The placements waiting for a commit, and whether a committer is running.
#[derive(Debug, Default)]
pub(crate) struct PlacementQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Placement>,
    committing: bool,
}

impl std::fmt::Debug for QueueState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueState")
            .field("pending", &self.pending.len())
            .field("committing", &self.committing)
            .finish()
    }
}

impl PlacementQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ends a committer: whatever way it ends, the next placement can start another, and if it
/// ended early (a panic) the placements it held are answered with an error, not left hanging.
struct CommitterGuard(Arc<PlacementQueue>);

impl Drop for CommitterGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.committing = false;
        // Dropping their senders answers the waiters with an error.
        state.pending.clear();
    }
}

impl Orders {
    /// Stores `order` as placed (order, lines, saga, step, `OrderPlaced`) in the next group
    /// commit, and returns once that commit is durable.
    pub(crate) async fn commit_placement(
        &self,
        order: Order,
        deadline_us: i64,
        context: EventContext,
    ) -> Result<(), OrdersError> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut state = self.placements.lock();
            state.pending.push(Placement {
                order,
                deadline_us,
                context,
                done,
            });
            !std::mem::replace(&mut state.committing, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.run_committer().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(OrdersError::Unexpected(
                "the placement committer stopped".into(),
            ))
        })
    }

    async fn run_committer(&self) {
        let _guard = CommitterGuard(Arc::clone(&self.placements));
        loop {
            let group: Vec<Placement> = {
                let mut state = self.placements.lock();
                if state.pending.is_empty() {
                    state.committing = false;
                    return;
                }
                let take = state.pending.len().min(MAX_GROUP);
                state.pending.drain(..take).collect()
            };
            metrics::histogram!("bounded_order_placement_group_size").record(group.len() as f64);
            match self.write_placements(&group).await {
                Ok(()) => {
                    for placement in group {
                        let _ = placement.done.send(Ok(()));
                    }
                }
                Err(error) if group.len() == 1 => {
                    if let Some(placement) = group.into_iter().next() {
                        let _ = placement.done.send(Err(error));
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, placements = group.len(), "A group of placements failed; placing each alone.");
                    for placement in group {
                        let alone = self
                            .write_placements(std::slice::from_ref(&placement))
                            .await;
                        let _ = placement.done.send(alone);
                    }
                }
            }
        }
    }

    /// Writes the placements in one transaction and commits it.
    async fn write_placements(&self, group: &[Placement]) -> Result<(), OrdersError> {
        let mut tx = self.db.begin().await?;
        for placement in group {
            write_placement(
                &mut tx,
                &placement.order,
                placement.deadline_us,
                &placement.context,
            )
            .await
            .map_err(|e| self.storage(e))?;
        }
        tx.commit().await.map_err(|e| self.storage(e))
    }
}

/// Writes a placed order: the order and its lines, the saga with its first step, and
/// `OrderPlaced` in the outbox.
pub(crate) async fn write_placement(
    tx: &mut Tx,
    order: &Order,
    deadline_us: i64,
    context: &EventContext,
) -> Result<(), sqlx::Error> {
    insert_order(tx, order, deadline_us).await?;
    saga::record_step(tx, order.id.0, 1, "placed", None, order.created_at).await?;
    outbox::append(tx, &placed_event(order), context).await?;
    Ok(())
}

/// The `OrderPlaced` event of a new order.
fn placed_event(order: &Order) -> OrderPlaced {
    OrderPlaced {
        order_id: order.id,
        customer_id: order.customer_id,
        lines: order
            .items
            .iter()
            .map(|line| PlacedLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price_cents: line.unit_price_cents,
            })
            .collect(),
        total_cents: order.total_cents,
    }
}
