//! `bounded bench`: a closed-loop load generator over the HTTP API. It seeds a realistic
//! catalog (many products in several warehouses, many customers with ample credit), then runs
//! `--clients` concurrent clients for `--duration`; each places an order and long-polls it to a
//! terminal state, then places the next. It reports placements/s, confirmed orders/s and the
//! place→terminal latency (p50/p95/p99/max), as a summary and optionally as JSON.
//!
//! Closed loop keeps the generator's own cost proportional to the work it measures: one POST
//! and one long poll per order, no polling loops. With `--rate R` it runs an open loop
//! instead: an order starts every 1/R s whatever the instance's pace, and latency is measured
//! from each order's scheduled start — the way to measure latency at a given load (say, half
//! the closed loop's peak).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{Value, json};

use clap::Args;

use crate::demo::{Lcg, id, send};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Base URL of the running instance.
    #[arg(long, env = "BOUNDED_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// How long to place orders (`30s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Concurrent clients; each places an order and waits for it to settle, then the next.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Open loop instead: start this many orders per second, each placed and waited for by a
    /// task of its own, whatever the instance's pace (`--clients` is then unused).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Customers of the catalog the load is drawn from.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub customers: u32,
    /// Products of the catalog, each stocked in every warehouse.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub products: u32,
    /// Warehouses per product.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub warehouses: u32,
    /// Write the figures as JSON to this file (`-` for stdout).
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of orders per second"))?;
    if (0.1..=100_000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} orders/s is outside 0.1..=100000"))
    }
}

/// Credit of every bench customer: the load measures the saga, not declines.
const CREDIT_CENTS: i64 = 1_000_000_000_000;
/// Units per product and warehouse: enough that stock rarely runs out.
const STOCK: i64 = 1_000_000;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples` (milliseconds).
    fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let index = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index]
        };
        Self {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub duration_s: f64,
    pub clients: u32,
    /// Orders started per second in open loop (`--rate`); `None` for the closed loop.
    pub rate: Option<f64>,
    pub placed: u64,
    pub placements_per_s: f64,
    pub confirmed: u64,
    pub confirmed_per_s: f64,
    pub rejected: u64,
    /// Requests that failed (transport errors or unexpected statuses).
    pub errors: u64,
    /// From sending `POST /orders` to the long poll answering a terminal order.
    pub place_to_terminal_ms: Latency,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    confirmed: u64,
    rejected: u64,
    errors: u64,
}

async fn seed(
    client: &reqwest::Client,
    url: &str,
    args: &BenchArgs,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    // The random end of a v7 id: its first 8 digits are the clock, the same for ~65 s, so two
    // runs a minute apart would register the same emails and SKUs.
    let tag = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    let concurrency = 16;
    let customers: Vec<anyhow::Result<String>> = futures::stream::iter(0..args.customers)
        .map(|i| {
            let (client, url, tag) = (client.clone(), url.to_owned(), tag.clone());
            async move {
                let body = json!({"name": format!("Bench customer {i}"), "email": format!("bench-{tag}-{i}@example.com")});
                let customer = id(&send(&client, client.post(format!("{url}/customers")).json(&body), 201).await?)?;
                let limit = json!({"credit_limit_cents": CREDIT_CENTS});
                send(&client, client.put(format!("{url}/payment-accounts/{customer}")).json(&limit), 200).await?;
                Ok(customer)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let customers = customers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let products: Vec<anyhow::Result<String>> = futures::stream::iter(0..args.products)
        .map(|i| {
            let (client, url, tag) = (client.clone(), url.to_owned(), tag.clone());
            let warehouses = args.warehouses;
            async move {
                let price = 100 + i64::from(i % 97) * 37;
                let body = json!({"sku": format!("BENCH-{tag}-{i}"), "name": format!("Bench product {i}"), "price_cents": price});
                let product = id(&send(&client, client.post(format!("{url}/products")).json(&body), 201).await?)?;
                for w in 0..warehouses {
                    let path = format!("{url}/products/{product}/stock/wh-{w}");
                    send(&client, client.put(path).json(&json!({"on_hand": STOCK})), 200).await?;
                }
                Ok(product)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let products = products.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((customers, products))
}

/// How one order ended, as the generator saw it.
enum Outcome {
    Confirmed,
    Rejected,
    Failed,
}

/// A random order of 1–3 lines over the catalog.
fn random_order(rng: &mut Lcg, customers: &[String], products: &[String]) -> Value {
    let customer = &customers[rng.below(customers.len())];
    let lines = 1 + rng.below(3.min(products.len()));
    let first = rng.below(products.len());
    let items: Vec<Value> = (0..lines)
        .map(|k| json!({"product_id": products[(first + k * 7) % products.len()], "quantity": 1 + rng.below(3)}))
        .collect();
    json!({"customer_id": customer, "items": items})
}

/// Places one order and long-polls it to a terminal state; counts the placement once the
/// instance has answered it.
async fn place_and_wait(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    placed: &AtomicU64,
) -> Outcome {
    let Ok(order) = send(client, client.post(format!("{url}/orders")).json(body), 202).await else {
        return Outcome::Failed;
    };
    placed.fetch_add(1, Ordering::Relaxed);
    let Ok(order_id) = id(&order) else {
        return Outcome::Failed;
    };
    let wait = client.get(format!(
        "{url}/orders/{order_id}?wait=terminal&timeout_ms=30000"
    ));
    match send(client, wait, 200).await {
        Ok(done) if done["status"] == "CONFIRMED" => Outcome::Confirmed,
        Ok(done) if done["status"] == "PENDING" => Outcome::Failed,
        Ok(_) => Outcome::Rejected,
        Err(_) => Outcome::Failed,
    }
}

impl Tally {
    /// Counts an order's outcome; a settled one adds its latency.
    fn count(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Confirmed => self.confirmed += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Failed => {
                self.errors += 1;
                return;
            }
        }
        self.latencies_ms.push(latency.as_secs_f64() * 1_000.0);
    }
}

/// One client: place, wait for the outcome, repeat until `until`.
async fn client_loop(
    client: reqwest::Client,
    url: String,
    customers: Arc<Vec<String>>,
    products: Arc<Vec<String>>,
    seed: u64,
    until: Instant,
    placed: Arc<AtomicU64>,
) -> Tally {
    let mut rng = Lcg(seed);
    let mut tally = Tally::default();
    while Instant::now() < until {
        let body = random_order(&mut rng, &customers, &products);
        let started = Instant::now();
        let outcome = place_and_wait(&client, &url, &body, &placed).await;
        tally.count(&outcome, started.elapsed());
    }
    tally
}

/// Open loop: starts an order every `1/rate` seconds until `until`, whether or not earlier
/// ones have settled. Latency runs from each order's scheduled start, so a stalled instance
/// shows as latency rather than as a lower offered rate (no coordinated omission).
async fn open_loop(
    client: reqwest::Client,
    url: String,
    customers: Arc<Vec<String>>,
    products: Arc<Vec<String>>,
    rate: f64,
    until: Instant,
    placed: Arc<AtomicU64>,
) -> Tally {
    let mut rng = Lcg(1);
    let mut orders = tokio::task::JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = Instant::now();
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let body = random_order(&mut rng, &customers, &products);
        let (client, url, placed) = (client.clone(), url.clone(), placed.clone());
        let scheduled = next;
        orders.spawn(async move {
            let outcome = place_and_wait(&client, &url, &body, &placed).await;
            (outcome, scheduled.elapsed())
        });
        next += interval;
    }
    let mut tally = Tally::default();
    while let Some(done) = orders.join_next().await {
        match done {
            Ok((outcome, latency)) => tally.count(&outcome, latency),
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// Runs the load and returns its figures.
///
/// # Errors
/// When the instance cannot be reached or seeded.
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder()
        // Keep a connection per client; the open loop keeps them all (reqwest's default), or
        // orders beyond the idle pool would each pay a new connection.
        .pool_max_idle_per_host(match args.rate {
            Some(_) => usize::MAX,
            None => usize::try_from(args.clients).unwrap_or(16),
        })
        .build()
        .context("building the HTTP client")?;
    let url = args.url.trim_end_matches('/').to_owned();
    let (customers, products) = seed(&client, &url, args).await?;
    eprintln!(
        "seeded {} customers and {} products in {} warehouses; running {} for {:?}",
        customers.len(),
        products.len(),
        args.warehouses,
        args.rate.map_or_else(
            || format!("{} clients", args.clients),
            |rate| format!("an open loop of {rate} orders/s")
        ),
        args.duration
    );
    let (customers, products) = (Arc::new(customers), Arc::new(products));
    let placed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + args.duration;
    let mut clients = tokio::task::JoinSet::new();
    if let Some(rate) = args.rate {
        clients.spawn(open_loop(
            client.clone(),
            url.clone(),
            customers.clone(),
            products.clone(),
            rate,
            until,
            placed.clone(),
        ));
    } else {
        for c in 0..args.clients {
            clients.spawn(client_loop(
                client.clone(),
                url.clone(),
                customers.clone(),
                products.clone(),
                u64::from(c) + 1,
                until,
                placed.clone(),
            ));
        }
    }
    // A progress line a second, while the clients run.
    let progress = {
        let placed = placed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = placed.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("  {secs:5.1} s  {n} placed  {:.0}/s", n as f64 / secs);
            }
        })
    };
    let mut total = Tally::default();
    while let Some(tally) = clients.join_next().await {
        let tally = tally.context("a client panicked")?;
        total.latencies_ms.extend(tally.latencies_ms);
        total.confirmed += tally.confirmed;
        total.rejected += tally.rejected;
        total.errors += tally.errors;
    }
    progress.abort();
    let elapsed = started.elapsed().as_secs_f64();
    let placed = placed.load(Ordering::Relaxed);
    Ok(Figures {
        duration_s: elapsed,
        clients: args.clients,
        rate: args.rate,
        placed,
        placements_per_s: placed as f64 / elapsed,
        confirmed: total.confirmed,
        confirmed_per_s: total.confirmed as f64 / elapsed,
        rejected: total.rejected,
        errors: total.errors,
        place_to_terminal_ms: Latency::of(total.latencies_ms),
    })
}

/// `bounded bench`: measures, prints a summary, writes JSON if asked.
///
/// # Errors
/// When the instance cannot be reached, or the JSON cannot be written.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let figures = measure(args).await?;
    let l = figures.place_to_terminal_ms;
    println!(
        "{} orders placed in {:.1} s by {} clients: {:.1} placements/s, {:.1} confirmed/s \
         ({} confirmed, {} rejected, {} errors); place→terminal ms p50 {:.1} p95 {:.1} p99 {:.1} max {:.1}",
        figures.placed,
        figures.duration_s,
        figures.clients,
        figures.placements_per_s,
        figures.confirmed_per_s,
        figures.confirmed,
        figures.rejected,
        figures.errors,
        l.p50,
        l.p95,
        l.p99,
        l.max
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&figures)?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(samples);
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Latency::of(vec![7.0]).p99, 7.0);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}
