//! Reconciliation across modules without shared tables: every settled order is compared,
//! through the module APIs, with its payment and its stock reservation; every payment must
//! belong to an order. What a shared-database shop would check with one join, done over the
//! modules' contracts.
//!
//! It is set-based, so that it scales with the store: orders are read a page at a time, and
//! each page's payments and reservations with one batch read per module; payments are then
//! read a page at a time, and each page's orders with one batch read. Memory holds a page and
//! the orders still in doubt, not the store.
//!
//! It runs while orders flow, so a disagreement seen in one pass may be an effect still on its
//! way (an order confirmed whose capture payments has not applied yet). Such an order is a
//! *candidate*: after the pass the heads of the orders log are read, and the subscriptions
//! that carry orders' events to payments and inventory are given a bounded time to apply
//! them. Then the candidate's payment and reservation are read again, then the order itself.
//! An order still in the status it had, whose events were all applied before that read,
//! cannot be waiting for anything: a disagreement then is a discrepancy. An order that moved
//! on is checked again in its new status; one whose subscriptions did not get there in time
//! is counted as in flight, never reported.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use inventory_api::{InventoryApi, Reservation, ReservationStatus};
use orders_api::{Order, OrderFilter, OrderId, OrderStatus, OrdersApi};
use payments_api::{Payment, PaymentFilter, PaymentStatus, PaymentsApi};
use serde::Serialize;
use shared_kernel::http::{MAX_LIMIT, Page, PageRequest, decode_cursor};
use shared_kernel::messaging::Bus;
use utoipa::ToSchema;
use uuid::Uuid;

/// How long reconciliation waits, at most, for the subscriptions to apply the events its
/// candidates may be waiting for.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The source whose events payments and inventory follow up on (capture, commit, release,
/// void, refund, restock), and the modules that follow them.
const SOURCE: &str = orders_api::MODULE;
const FOLLOWERS: [&str; 2] = [inventory_api::MODULE, payments_api::MODULE];

/// One disagreement between modules about an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Discrepancy {
    pub order_id: Uuid,
    /// The order's status, or `null` for a payment whose order does not exist.
    pub order_status: Option<OrderStatus>,
    /// `payment` or `stock`.
    pub module: &'static str,
    /// What disagrees, in words.
    pub detail: String,
}

/// The result of one reconciliation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Report {
    /// Orders compared and judged: settled ones whose follow-up events had been applied.
    pub orders_checked: usize,
    /// Orders not judged because events about them are still in flight: `PENDING` ones (the
    /// saga is open) and `orders_settling`. With `orders_checked`, every order read.
    pub orders_in_flight: usize,
    pub payments_checked: usize,
    /// Empty when every module agrees.
    pub discrepancies: Vec<Discrepancy>,
    /// Settled orders that disagreed with their payment or reservation while the
    /// subscriptions carrying the order's events there had not applied them within the wait
    /// (part of `orders_in_flight`): not judged. Lag, a stopped server, or a real problem
    /// that the next run will tell.
    pub orders_settling: usize,
    /// The subscriptions that had not caught up within the wait, when `orders_settling` > 0.
    pub subscriptions_behind: Vec<String>,
}

/// Why reconciliation could not run.
#[derive(Debug, thiserror::Error)]
#[error("reconciliation could not read the {module} module")]
pub struct ReconcileError {
    pub module: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    module: &'static str,
) -> impl Fn(E) -> ReconcileError {
    move |e| ReconcileError {
        module,
        source: Box::new(e),
    }
}

/// The modules reconciliation reads, and the bus whose subscriptions carry their events.
#[derive(Clone)]
pub struct Reconciler {
    pub orders: Arc<dyn OrdersApi>,
    pub inventory: Arc<dyn InventoryApi>,
    pub payments: Arc<dyn PaymentsApi>,
    pub bus: Bus,
    /// How long to wait for the subscriptions before counting candidates as in flight.
    pub settle_timeout: Duration,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("settle_timeout", &self.settle_timeout)
            .finish_non_exhaustive()
    }
}

/// What the scan of the orders found.
struct OrdersScan {
    /// Settled orders that disagreed with their payment or reservation, as read.
    candidates: BTreeMap<Uuid, Order>,
    pending: usize,
    settled: usize,
}

/// What the modules hold about a page of orders.
struct Holdings {
    payments: HashMap<Uuid, Vec<Payment>>,
    reservations: HashMap<Uuid, Reservation>,
}

impl Reconciler {
    /// Compares every order with its payment and reservation, and every payment with its
    /// order; see the module documentation for how effects in flight are told apart.
    ///
    /// # Errors
    /// [`ReconcileError`] when a module (or the subscriptions' positions) cannot be read.
    pub async fn run(&self) -> Result<Report, ReconcileError> {
        // The two scans are independent: each looks its counterparts up directly.
        let (scan, orphans) = futures::join!(self.scan_orders(), self.orphan_payments());
        let scan = scan?;
        let (payments_checked, mut discrepancies) = orphans?;
        let (judged, settling, behind) = self.settle(scan.candidates).await?;
        discrepancies.extend(judged);
        discrepancies.sort_by(|a, b| (a.order_id, a.module).cmp(&(b.order_id, b.module)));
        Ok(Report {
            orders_checked: scan.settled - settling,
            orders_in_flight: scan.pending + settling,
            payments_checked,
            discrepancies,
            orders_settling: settling,
            subscriptions_behind: behind,
        })
    }

    /// Every order, a page at a time, against its payment and reservation: the settled orders
    /// that disagree are candidates.
    async fn scan_orders(&self) -> Result<OrdersScan, ReconcileError> {
        let mut scan = OrdersScan {
            candidates: BTreeMap::new(),
            pending: 0,
            settled: 0,
        };
        let mut page = first_page();
        let mut next = self.orders.list(OrderFilter::default(), page).await;
        loop {
            let batch = next.map_err(failed(SOURCE))?;
            let following = batch.next.as_deref().and_then(decode_cursor);
            let (orders, rest): (Vec<Order>, Vec<Order>) = batch
                .items
                .into_iter()
                .partition(|o| o.status.is_terminal());
            scan.pending += rest.len();
            scan.settled += orders.len();
            // The next page is read while this one's payments and reservations are.
            let ids: Vec<Uuid> = orders.iter().map(|o| o.id.0).collect();
            let read_next = async {
                match following {
                    Some(after) => {
                        page.after = Some(after);
                        Some(self.orders.list(OrderFilter::default(), page).await)
                    }
                    None => None,
                }
            };
            let (holdings, read_next) = futures::join!(self.holdings(&ids), read_next);
            let holdings = holdings?;
            for order in orders {
                if !check_order(&order, &holdings).is_empty() {
                    scan.candidates.insert(order.id.0, order);
                }
            }
            match read_next {
                Some(read) => next = read,
                None => return Ok(scan),
            }
        }
    }

    /// The payments and reservations of `ids`, one batch read per module.
    async fn holdings(&self, ids: &[Uuid]) -> Result<Holdings, ReconcileError> {
        let (payments, reservations) = futures::join!(
            self.payments.payments_of_orders(ids),
            self.inventory.reservations(ids)
        );
        let mut by_order: HashMap<Uuid, Vec<Payment>> = HashMap::new();
        for payment in payments.map_err(failed(payments_api::MODULE))? {
            by_order.entry(payment.order_id).or_default().push(payment);
        }
        let reservations = reservations
            .map_err(failed(inventory_api::MODULE))?
            .into_iter()
            .map(|r| (r.order_id, r))
            .collect();
        Ok(Holdings {
            payments: by_order,
            reservations,
        })
    }

    /// Every payment, a page at a time, with the orders of the page looked up directly: a
    /// payment whose order does not exist (even placed after the orders were read) belongs
    /// to no order. A payment is only ever made for an order already committed, so this
    /// needs no waiting.
    async fn orphan_payments(&self) -> Result<(usize, Vec<Discrepancy>), ReconcileError> {
        let mut checked = 0;
        let mut orphans = Vec::new();
        let mut page = first_page();
        loop {
            let batch = self
                .payments
                .list_payments(PaymentFilter::default(), page)
                .await
                .map_err(failed(payments_api::MODULE))?;
            checked += batch.items.len();
            let ids: Vec<OrderId> = batch.items.iter().map(|p| OrderId(p.order_id)).collect();
            let known: HashSet<Uuid> = self
                .orders
                .get_many(&ids)
                .await
                .map_err(failed(SOURCE))?
                .into_iter()
                .map(|o| o.id.0)
                .collect();
            for payment in batch.items.iter().filter(|p| !known.contains(&p.order_id)) {
                orphans.push(Discrepancy {
                    order_id: payment.order_id,
                    order_status: None,
                    module: "payment",
                    detail: format!(
                        "payment {} ({:?}, {} cents) belongs to no order",
                        payment.id, payment.status, payment.amount_cents
                    ),
                });
            }
            match batch.next.as_deref().and_then(decode_cursor) {
                Some(after) => page.after = Some(after),
                None => return Ok((checked, orphans)),
            }
        }
    }

    /// Judges the candidates once the subscriptions have applied what was committed before
    /// they were read: returns the discrepancies, how many candidates are still in flight at
    /// the deadline, and the subscriptions that were behind.
    async fn settle(
        &self,
        mut candidates: BTreeMap<Uuid, Order>,
    ) -> Result<(Vec<Discrepancy>, usize, Vec<String>), ReconcileError> {
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        let mut discrepancies = Vec::new();
        while !candidates.is_empty() {
            // Read after the candidates' orders were: every event that put an order in the
            // status read is at or below these heads.
            let targets: BTreeMap<String, i64> = self
                .bus
                .status()
                .await
                .map_err(failed("messaging"))?
                .into_iter()
                .filter(|s| s.source == SOURCE && FOLLOWERS.contains(&s.consumer.as_str()))
                .map(|s| (s.name, s.head_seq))
                .collect();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let behind = self
                .bus
                .reached(&targets, left)
                .await
                .map_err(failed("messaging"))?;
            if !behind.is_empty() {
                tracing::info!(orders = candidates.len(), subscriptions = ?behind, "Reconciliation counts orders as in flight: their subscriptions did not catch up.");
                return Ok((discrepancies, candidates.len(), behind));
            }
            // Payments and reservations first, then the orders: an order found in the status
            // it had was in it while they were read, with its events applied.
            let ids: Vec<Uuid> = candidates.keys().copied().collect();
            let holdings = self.holdings(&ids).await?;
            let order_ids: Vec<OrderId> = ids.iter().copied().map(OrderId).collect();
            let fresh = self
                .orders
                .get_many(&order_ids)
                .await
                .map_err(failed(SOURCE))?;
            let mut moved_on = BTreeMap::new();
            for order in fresh {
                let Some(before) = candidates.remove(&order.id.0) else {
                    continue;
                };
                let found = check_order(&order, &holdings);
                if found.is_empty() {
                    continue;
                }
                if order.status == before.status {
                    discrepancies.extend(found);
                } else {
                    moved_on.insert(order.id.0, order);
                }
            }
            // An order that vanished is judged as it was read.
            for order in candidates.values() {
                discrepancies.extend(check_order(order, &holdings));
            }
            candidates = moved_on;
            if tokio::time::Instant::now() >= deadline && !candidates.is_empty() {
                return Ok((discrepancies, candidates.len(), Vec::new()));
            }
        }
        Ok((discrepancies, 0, Vec::new()))
    }
}

fn first_page() -> PageRequest {
    PageRequest {
        limit: MAX_LIMIT,
        after: None,
    }
}

/// Every item of a list, following its cursors.
pub(crate) async fn all_pages<T, E, Fut>(
    mut fetch: impl FnMut(PageRequest) -> Fut,
) -> Result<Vec<T>, E>
where
    Fut: std::future::Future<Output = Result<Page<T>, E>>,
{
    let mut items = Vec::new();
    let mut page = PageRequest {
        limit: MAX_LIMIT,
        after: None,
    };
    loop {
        let batch = fetch(page).await?;
        items.extend(batch.items);
        match batch.next.as_deref().and_then(decode_cursor) {
            Some(after) => page.after = Some(after),
            None => return Ok(items),
        }
    }
}

/// What a settled order implies for its payment and its reservation: the disagreements.
fn check_order(order: &Order, holdings: &Holdings) -> Vec<Discrepancy> {
    let found = holdings
        .payments
        .get(&order.id.0)
        .map_or(&[][..], Vec::as_slice);
    let reservation = holdings.reservations.get(&order.id.0);
    let mut out = Vec::new();
    let mut report = |module: &'static str, detail: String| {
        out.push(Discrepancy {
            order_id: order.id.0,
            order_status: Some(order.status),
            module,
            detail,
        });
    };
    if found.len() > 1 {
        report("payment", format!("{} payments for one order", found.len()));
    }
    let payment = found.first();
    let payment_ok = match (order.status, payment.map(|p| p.status)) {
        (OrderStatus::Confirmed, Some(PaymentStatus::Captured)) => true,
        (OrderStatus::Confirmed, _) => false,
        (_, None | Some(PaymentStatus::Voided | PaymentStatus::Declined)) => true,
        (OrderStatus::Cancelled, Some(PaymentStatus::Refunded)) => true,
        _ => false,
    };
    if !payment_ok {
        report(
            "payment",
            match payment {
                Some(p) => format!(
                    "order is {:?} but its payment is {:?}",
                    order.status, p.status
                ),
                None => format!("order is {:?} but has no payment", order.status),
            },
        );
    }
    if let Some(p) = payment
        && p.status != PaymentStatus::Declined
        && p.amount_cents != order.total_cents
    {
        report(
            "payment",
            format!(
                "payment of {} cents for an order of {}",
                p.amount_cents, order.total_cents
            ),
        );
    }
    let status = reservation.as_ref().map(|r| r.status);
    let stock_ok = match (order.status, status) {
        (OrderStatus::Confirmed, Some(ReservationStatus::Committed)) => true,
        (OrderStatus::Confirmed, _) => false,
        (_, None | Some(ReservationStatus::Failed | ReservationStatus::Released)) => true,
        (OrderStatus::Cancelled, Some(ReservationStatus::Restocked)) => true,
        _ => false,
    };
    if !stock_ok {
        report(
            "stock",
            match status {
                Some(s) => format!(
                    "order is {:?} but its reservation is {}",
                    order.status,
                    s.as_str()
                ),
                None => format!("order is {:?} but has no reservation", order.status),
            },
        );
    }
    if let Some(reservation) = reservation.filter(|r| r.status == ReservationStatus::Committed) {
        let mut held: BTreeMap<Uuid, i64> = BTreeMap::new();
        for line in &reservation.lines {
            *held.entry(line.product_id.0).or_default() += line.quantity;
        }
        let ordered: BTreeMap<Uuid, i64> = order
            .items
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect();
        if held != ordered {
            report(
                "stock",
                format!("committed units {held:?} differ from the order's {ordered:?}"),
            );
        }
    }
    out
}
