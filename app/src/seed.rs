//! `bounded seed-history`: a benchmark tool that puts many settled orders into the stores fast,
//! so that throughput and reads can be measured against a large history (1M orders) instead of
//! an empty database, without placing them through the saga one by one.
//!
//! It respects the data boundaries: it reads the catalog (customers, products) through the
//! modules' APIs and hands each batch to every module's own `seed` function, where every module
//! bulk-writes its own tables with multi-row `INSERT`s in one transaction per batch. No
//! integration event is emitted: the history counts as delivered long ago and pruned from the
//! outboxes. Every order is CONFIRMED, its payment CAPTURED and its reservation committed, so
//! `bounded reconcile` still finds the modules in agreement. Run it with the server stopped,
//! after the catalog's own events have been delivered (e.g. after a short `bounded bench`).

use std::time::Instant;

use anyhow::Context as _;
use customers_api::Customer;
use inventory_api::Product;
use shared_kernel::clock;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::SeedHistoryArgs;
use crate::modules::Modules;
use crate::reconcile::all_pages;
use tools::demo::Lcg;

/// One confirmed order of the history, as the generator draws it from the catalog.
#[derive(Debug, Clone)]
pub struct SeedOrder {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub customer: Customer,
    /// Distinct products and their quantities (1–3 lines of 1–3 units).
    pub lines: Vec<(Product, i64)>,
    pub at: OffsetDateTime,
}

/// What a run wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seeded {
    pub orders: u64,
    pub lines: u64,
    pub seconds: f64,
}

/// Draws `n` orders over the catalog: 1–3 distinct products, 1–3 units each.
pub(crate) fn generate(
    rng: &mut Lcg,
    customers: &[Customer],
    products: &[Product],
    n: usize,
) -> Vec<SeedOrder> {
    let at = clock::now();
    (0..n)
        .map(|_| {
            let customer = customers[rng.below(customers.len())].clone();
            let count = 1 + rng.below(3.min(products.len()));
            let first = rng.below(products.len());
            let lines = (0..count)
                .map(|k| {
                    let quantity = 1 + rng.below(3) as i64;
                    (products[(first + k) % products.len()].clone(), quantity)
                })
                .collect();
            SeedOrder {
                id: Uuid::now_v7(),
                payment_id: Uuid::now_v7(),
                customer,
                lines,
                at,
            }
        })
        .collect()
}

/// The module implementations that write a batch of history, each into its own store. Built
/// here from the opened databases rather than kept in [`Modules`], which wires the running
/// service and has no business holding benchmark tools.
struct Writers {
    inventory: inventory::Inventory,
    payments: payments::Payments,
    orders: orders::Orders,
    read_model: orders::ReadModel,
}

impl Writers {
    fn of(modules: &Modules) -> anyhow::Result<Self> {
        let db = |name: &str| {
            modules
                .databases
                .iter()
                .find(|db| db.module() == name)
                .cloned()
                .with_context(|| format!("seeding history needs the {name} database"))
        };
        let (Some(customers), Some(inventory)) = (&modules.customers, &modules.inventory) else {
            anyhow::bail!("seeding history needs the customers and inventory modules");
        };
        Ok(Self {
            inventory: inventory::Inventory::new(db(inventory::NAME)?),
            // History draws on the accounts the catalog set up (`bounded bench` gives its
            // customers credit); a customer without an account has none to draw on.
            payments: payments::Payments::new(
                db(payments::NAME)?,
                customers.clone(),
                payments::PaymentsConfig {
                    default_credit_limit_cents: 0,
                    ..payments::PaymentsConfig::default()
                },
            ),
            orders: orders::Orders::new(
                db(orders::NAME)?,
                customers.clone(),
                inventory.clone(),
                orders::OrdersConfig::default(),
            ),
            read_model: orders::ReadModel::new(db(orders::READ_STORE)?),
        })
    }

    /// Writes `batch` as settled history into every module's own store, each module in one
    /// transaction of its own and without events (see `bounded seed-history`): inventory's
    /// committed reservations first (it checks the stock), then payments' captured payments
    /// (it checks the credit), then orders and their sagas, then their summaries.
    async fn write(&self, batch: &[SeedOrder]) -> anyhow::Result<()> {
        let Self {
            inventory,
            payments,
            orders,
            read_model,
        } = self;
        let reservations: Vec<inventory::SeedReservation> = batch
            .iter()
            .map(|order| inventory::SeedReservation {
                order_id: order.id,
                lines: order
                    .lines
                    .iter()
                    .map(|(product, quantity)| (product.id.0, *quantity))
                    .collect(),
                at: order.at,
            })
            .collect();
        inventory
            .seed_history(&reservations)
            .await
            .context("seeding inventory's reservations")?;
        let orders_batch: Vec<orders::SeedOrder> = batch
            .iter()
            .map(|order| orders::SeedOrder {
                id: order.id,
                customer_id: order.customer.id.0,
                customer_name: order.customer.name.clone(),
                customer_email: order.customer.email.clone(),
                payment_id: order.payment_id,
                lines: order
                    .lines
                    .iter()
                    .map(|(product, quantity)| orders::SeedLine {
                        product_id: product.id.0,
                        sku: product.sku.clone(),
                        name: product.name.clone(),
                        unit_price_cents: product.price_cents,
                        quantity: *quantity,
                    })
                    .collect(),
                at: order.at,
            })
            .collect();
        let payments_batch: Vec<payments::SeedPayment> = orders_batch
            .iter()
            .map(|order| payments::SeedPayment {
                payment_id: order.payment_id,
                order_id: order.id,
                customer_id: order.customer_id,
                amount_cents: order.total_cents(),
            })
            .collect();
        payments
            .seed_history(&payments_batch)
            .await
            .context("seeding payments")?;
        orders
            .seed_history(&orders_batch)
            .await
            .context("seeding orders")?;
        read_model
            .seed_history(&orders_batch)
            .await
            .context("seeding the order summaries")?;
        Ok(())
    }
}

/// Seeds `args.orders` orders in batches of `args.batch` into the opened `modules`.
///
/// # Errors
/// When the catalog is empty or cannot be read, or a module cannot write its part.
pub async fn seed(modules: &Modules, args: &SeedHistoryArgs) -> anyhow::Result<Seeded> {
    let (Some(customers_api), Some(inventory_api)) = (&modules.customers, &modules.inventory)
    else {
        anyhow::bail!("seeding history needs the customers and inventory modules");
    };
    let customers = all_pages(|page| customers_api.list(page))
        .await
        .context("listing customers")?;
    let products = all_pages(|page| inventory_api.list_products(page))
        .await
        .context("listing products")?;
    anyhow::ensure!(
        !customers.is_empty() && !products.is_empty(),
        "the catalog is empty: create customers and stocked products first (e.g. a short `bounded bench`)"
    );
    let writers = Writers::of(modules)?;
    let mut rng = Lcg(args.seed);
    let started = Instant::now();
    let (mut orders, mut lines) = (0_u64, 0_u64);
    while orders < args.orders {
        let n = args.batch.min(args.orders - orders);
        let batch = generate(
            &mut rng,
            &customers,
            &products,
            usize::try_from(n).context("batch too large")?,
        );
        writers.write(&batch).await?;
        orders += n;
        lines += batch.iter().map(|o| o.lines.len() as u64).sum::<u64>();
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "  {orders}/{} orders in {seconds:.1} s ({:.0} orders/s)",
            args.orders,
            orders as f64 / seconds
        );
    }
    Ok(Seeded {
        orders,
        lines,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `bounded seed-history`: opens every module's database, seeds, prints a summary.
///
/// # Errors
/// See [`seed`].
pub async fn run(args: &SeedHistoryArgs) -> anyhow::Result<()> {
    let modules = Modules::open_all(&args.storage.storage_config()).await?;
    let seeded = seed(&modules, args).await;
    modules.close().await;
    let seeded = seeded?;
    println!(
        "seeded {} orders ({} lines) in {:.1} s: {:.0} orders/s",
        seeded.orders,
        seeded.lines,
        seeded.seconds,
        seeded.orders as f64 / seeded.seconds
    );
    Ok(())
}
