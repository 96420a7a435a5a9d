//! Bulk history for benchmarks: settled (`CONFIRMED`) orders written straight into the orders
//! store and the read store, as if their sagas had run long ago and their events had been
//! delivered and pruned from the outbox. Nothing is appended to the outbox, so no subscription
//! sees these orders; a projection rebuild replays the log only, so it drops their summaries
//! (as it would for orders whose events retention has pruned).

use orders_api::Participant;
use shared_kernel::bulk_insert;
use shared_kernel::storage::Tx;
use shared_kernel::with_tx;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::read_model::ReadModel;
use crate::saga;
use crate::service::Orders;

/// One line of a [`SeedOrder`]: the catalog data copied at placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedLine {
    pub product_id: Uuid,
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
}

/// An order that was placed, reserved, paid and confirmed at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOrder {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// The customer as the read model shows it.
    pub customer_name: String,
    pub customer_email: String,
    /// The payment that authorized it (named in the saga's `payment_authorized` step).
    pub payment_id: Uuid,
    pub lines: Vec<SeedLine>,
    pub at: OffsetDateTime,
}

impl SeedOrder {
    /// The sum of the lines' totals.
    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .map(|l| l.unit_price_cents * l.quantity)
            .sum()
    }
}

/// The steps of a confirmed saga, in order, with their details.
fn steps(order: &SeedOrder) -> [(i32, &'static str, Option<String>); 4] {
    [
        (1, saga::Step::Placed.as_str(), None),
        (2, saga::Step::StockReserved.as_str(), None),
        (
            3,
            saga::Step::PaymentAuthorized.as_str(),
            Some(format!("payment {}", order.payment_id)),
        ),
        (4, saga::Step::Confirmed.as_str(), None),
    ]
}

impl Orders {
    /// Bulk-inserts `orders` as settled history: `orders` (CONFIRMED), `order_lines`, `sagas`
    /// (both participants succeeded, settled at `at`) and `saga_steps` (placed, stock reserved,
    /// payment authorized, confirmed), with multi-row `INSERT`s in one transaction. Appends
    /// no outbox event. For benchmarks (`bounded seed-history`); the ids must be new.
    ///
    /// # Errors
    /// The storage error; nothing is written then.
    pub async fn seed_history(&self, orders: &[SeedOrder]) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        insert_orders(&mut tx, orders).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_orders(tx: &mut Tx, orders: &[SeedOrder]) -> Result<(), sqlx::Error> {
    bulk_insert!(
        tx,
        "INSERT INTO orders (id, customer_id, status, total_cents, created_at, updated_at)",
        6,
        orders,
        |q, o| q
            .bind(o.id)
            .bind(o.customer_id)
            .bind("CONFIRMED")
            .bind(o.total_cents())
            .bind(o.at)
            .bind(o.at)
    )?;
    let lines: Vec<(Uuid, i32, &SeedLine)> = orders
        .iter()
        .flat_map(|o| {
            o.lines
                .iter()
                .enumerate()
                .map(move |(n, line)| (o.id, i32::try_from(n).unwrap_or(i32::MAX), line))
        })
        .collect();
    bulk_insert!(
        tx,
        "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, unit_price_cents, \
           quantity, line_total_cents)",
        8,
        lines,
        |q, row| q
            .bind(row.0)
            .bind(row.1)
            .bind(row.2.product_id)
            .bind(row.2.sku.as_str())
            .bind(row.2.name.as_str())
            .bind(row.2.unit_price_cents)
            .bind(row.2.quantity)
            .bind(row.2.unit_price_cents * row.2.quantity)
    )?;
    bulk_insert!(
        tx,
        "INSERT INTO sagas (order_id, stock, payment, deadline_us, settled_at, steps)",
        6,
        orders,
        |q, o| q
            .bind(o.id)
            .bind(Participant::Succeeded.as_str())
            .bind(Participant::Succeeded.as_str())
            .bind(saga::unix_micros(o.at))
            .bind(o.at)
            .bind(4_i32)
    )?;
    let steps: Vec<(Uuid, i32, &'static str, Option<String>, OffsetDateTime)> = orders
        .iter()
        .flat_map(|o| {
            steps(o)
                .into_iter()
                .map(move |(n, step, detail)| (o.id, n, step, detail, o.at))
        })
        .collect();
    bulk_insert!(
        tx,
        "INSERT INTO saga_steps (order_id, n, step, detail, at)",
        5,
        steps,
        |q, s| q
            .bind(s.0)
            .bind(s.1)
            .bind(s.2)
            .bind(s.3.as_deref())
            .bind(s.4)
    )
}

impl ReadModel {
    /// Bulk-inserts the summaries of `orders` (see [`Orders::seed_history`]) into the active
    /// generation of `order_summaries`: CONFIRMED, payment CAPTURED, the customer's name and
    /// email as given, every source's seq 0 (so any later event about them wins). One
    /// transaction; no outbox event. For benchmarks (`bounded seed-history`).
    ///
    /// # Errors
    /// The storage error; nothing is written then.
    pub async fn seed_history(&self, orders: &[SeedOrder]) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        let (generation,): (i64,) = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "SELECT active_generation FROM read_models WHERE name = 'order_summaries'",
            )
            .fetch_one(&mut *conn)
            .await
        })?;
        bulk_insert!(
            &mut tx,
            "INSERT INTO order_summaries (generation, order_id, customer_id, status, item_count, \
               total_cents, created_at, order_changed_at, order_seq, customer_name, \
               customer_email, customer_seq, customer_changed_at, payment_status, payment_seq, \
               payment_changed_at)",
            16,
            orders,
            |q, o| q
                .bind(generation)
                .bind(o.id)
                .bind(o.customer_id)
                .bind("CONFIRMED")
                .bind(o.lines.iter().map(|l| l.quantity).sum::<i64>())
                .bind(o.total_cents())
                .bind(o.at)
                .bind(o.at)
                .bind(0_i64)
                .bind(o.customer_name.as_str())
                .bind(o.customer_email.as_str())
                .bind(0_i64)
                .bind(o.at)
                .bind("CAPTURED")
                .bind(0_i64)
                .bind(o.at)
        )?;
        tx.commit().await?;
        Ok(())
    }
}
