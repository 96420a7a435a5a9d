//! Reconciliation across modules without shared tables: every settled order is compared,
//! through the module APIs, with its payment and its stock reservation; every payment must
//! belong to an order. What a shared-database shop would check with one join, done over the
//! modules' contracts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream;
use inventory_api::{InventoryApi, ReservationStatus};
use orders_api::{Order, OrderFilter, OrderStatus, OrdersApi};
use payments_api::{PaymentFilter, PaymentStatus, PaymentsApi};
use serde::Serialize;
use shared_kernel::http::{MAX_LIMIT, Page, PageRequest, decode_cursor};
use utoipa::ToSchema;
use uuid::Uuid;

/// Orders checked at once.
const CONCURRENCY: usize = 16;

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
    /// Orders compared (settled ones).
    pub orders_checked: usize,
    /// Orders still `PENDING`: their saga is in flight, so they are not judged.
    pub orders_in_flight: usize,
    pub payments_checked: usize,
    /// Empty when every module agrees.
    pub discrepancies: Vec<Discrepancy>,
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

/// Compares every order with its payment and reservation, and every payment with its order.
///
/// # Errors
/// [`ReconcileError`] when a module cannot be read.
pub async fn reconcile(
    orders: Arc<dyn OrdersApi>,
    inventory: Arc<dyn InventoryApi>,
    payments: Arc<dyn PaymentsApi>,
) -> Result<Report, ReconcileError> {
    let all = all_pages(|page| orders.list(OrderFilter::default(), page))
        .await
        .map_err(failed("orders"))?;
    let known: HashSet<Uuid> = all.iter().map(|o| o.id.0).collect();
    let in_flight = all
        .iter()
        .filter(|o| o.status == OrderStatus::Pending)
        .count();
    let settled: Vec<Order> = all
        .into_iter()
        .filter(|o| o.status != OrderStatus::Pending)
        .collect();
    let checked = settled.len();
    let results: Vec<Result<Vec<Discrepancy>, ReconcileError>> = stream::iter(settled)
        .map(|order| {
            let (inventory, payments) = (inventory.clone(), payments.clone());
            async move { check_order(&order, inventory.as_ref(), payments.as_ref()).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut discrepancies = Vec::new();
    for result in results {
        discrepancies.extend(result?);
    }
    // Payments of orders that do not exist.
    let all_payments = all_pages(|page| payments.list_payments(PaymentFilter::default(), page))
        .await
        .map_err(failed("payments"))?;
    let payments_checked = all_payments.len();
    for payment in all_payments.iter().filter(|p| !known.contains(&p.order_id)) {
        discrepancies.push(Discrepancy {
            order_id: payment.order_id,
            order_status: None,
            module: "payment",
            detail: format!(
                "payment {} ({:?}, {} cents) belongs to no order",
                payment.id, payment.status, payment.amount_cents
            ),
        });
    }
    discrepancies.sort_by(|a, b| (a.order_id, a.module).cmp(&(b.order_id, b.module)));
    Ok(Report {
        orders_checked: checked,
        orders_in_flight: in_flight,
        payments_checked,
        discrepancies,
    })
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

/// What a settled order implies for its payment and its reservation.
async fn check_order(
    order: &Order,
    inventory: &dyn InventoryApi,
    payments: &dyn PaymentsApi,
) -> Result<Vec<Discrepancy>, ReconcileError> {
    let filter = PaymentFilter {
        order_id: Some(order.id.0),
        customer_id: None,
    };
    let page = PageRequest {
        limit: 2,
        after: None,
    };
    let (found, reservation) = futures::join!(
        payments.list_payments(filter, page),
        inventory.reservation(order.id.0)
    );
    let found = found.map_err(failed("payments"))?.items;
    let reservation = reservation.map_err(failed("inventory"))?;
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
    Ok(out)
}
