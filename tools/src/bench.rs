//! `bounded bench`: a closed-loop load generator over the HTTP API. It seeds a realistic
//! catalog (many products in several warehouses, many customers with ample credit), then runs
//! `--clients` concurrent clients for `--duration`; each places an order and long-polls it to a
//! terminal state, then places the next. It reports placements/s, confirmed orders/s and the
//! place→terminal latency (p50/p95/p99/max), as a summary and optionally as JSON.
//!
//! Beside the rates it reports what the orders cost the server, counted, not estimated: it
//! scrapes the server's `/metrics` just before the clients start and just after they end, each
//! time once every subscription has caught up (`/ops/subscriptions?wait=settled`, where the
//! server has it), so the window holds all the work of its orders and none of the seeding's.
//! The differences of `bounded_db_statements_total`, `bounded_db_commits_total` and
//! `bounded_process_cpu_seconds_total` per confirmed order, and confirmed orders per server CPU
//! second (orders/s per core used). A counter the server does not export (`serve` without
//! `--count-statements` has no statement count) is reported as not counted, never guessed.
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
    /// What the confirmed orders cost the server, from its `/metrics`.
    pub server: ServerCost,
}

/// The server's counts at one scrape of `/metrics`: each the sum over its label sets, `None`
/// when the server does not export it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub statements: Option<f64>,
    pub commits: Option<f64>,
    pub cpu_seconds: Option<f64>,
}

impl Counts {
    /// Reads the counts from Prometheus text.
    pub fn parse(text: &str) -> Self {
        Self {
            statements: sample_sum(text, "bounded_db_statements_total"),
            commits: sample_sum(text, "bounded_db_commits_total"),
            cpu_seconds: sample_sum(text, "bounded_process_cpu_seconds_total"),
        }
    }
}

/// The sum of every sample of metric `name` in Prometheus text (all its label sets); `None`
/// when it has none.
fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.strip_prefix('{') {
            Some(labels) => labels.rsplit_once('}').map(|(_, value)| value),
            None if rest.starts_with(' ') => Some(rest),
            None => None, // another metric whose name starts with `name`
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// What the window's confirmed orders cost the server: the differences of its counts between
/// the two scrapes, and those per confirmed order. `None` (JSON `null`): not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerCost {
    pub statements: Option<f64>,
    pub commits: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub statements_per_order: Option<f64>,
    pub commits_per_order: Option<f64>,
    pub cpu_ms_per_order: Option<f64>,
    /// Confirmed orders per second of server CPU time: orders/s per CPU core used.
    pub orders_per_cpu_second: Option<f64>,
}

impl ServerCost {
    fn between(before: Counts, after: Counts, confirmed: u64) -> Self {
        // A counter appears at its first increment, so one missing before the window was 0;
        // one missing after it is not counted. A counter that went down means the server
        // restarted in between: not counted either.
        let delta =
            |b: Option<f64>, a: Option<f64>| Some(a? - b.unwrap_or(0.0)).filter(|d| *d >= 0.0);
        let statements = delta(before.statements, after.statements);
        let commits = delta(before.commits, after.commits);
        let cpu_seconds = delta(before.cpu_seconds, after.cpu_seconds);
        let orders = Some(confirmed as f64).filter(|n| *n > 0.0);
        let per_order = |d: Option<f64>| Some(d? / orders?);
        Self {
            statements,
            commits,
            cpu_seconds,
            statements_per_order: per_order(statements),
            commits_per_order: per_order(commits),
            cpu_ms_per_order: per_order(cpu_seconds).map(|s| s * 1_000.0),
            orders_per_cpu_second: orders
                .zip(cpu_seconds.filter(|s| *s > 0.0))
                .map(|(n, s)| n / s),
        }
    }
}

/// Waits until the server's subscriptions have caught up (a server without the endpoint, like
/// the baseline, has nothing to wait for), then reads its counts; a server without `/metrics`
/// has none.
async fn settled_counts(client: &reqwest::Client, url: &str) -> Counts {
    let settled = client
        .get(format!(
            "{url}/ops/subscriptions?wait=settled&timeout_ms=60000"
        ))
        .send()
        .await;
    if let Err(error) = settled {
        eprintln!("  could not wait for the subscriptions to settle: {error}");
    }
    let text = match client.get(format!("{url}/metrics")).send().await {
        Ok(response) if response.status().is_success() => response.text().await.ok(),
        _ => None,
    };
    text.as_deref().map(Counts::parse).unwrap_or_default()
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
    let before = settled_counts(&client, &url).await;
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
    let after = settled_counts(&client, &url).await;
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
        server: ServerCost::between(before, after, total.confirmed),
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
    let cost = figures.server;
    let counted = |value: Option<f64>, decimals: usize, unit: &str| {
        value.map_or_else(
            || format!("{unit} not counted"),
            |v| format!("{v:.decimals$} {unit}"),
        )
    };
    println!(
        "server per confirmed order: {}, {}, {}; {} (confirmed orders/s per CPU core used)",
        counted(cost.statements_per_order, 1, "statements"),
        counted(cost.commits_per_order, 2, "commits"),
        counted(cost.cpu_ms_per_order, 2, "ms CPU"),
        counted(cost.orders_per_cpu_second, 1, "orders per CPU second"),
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

    const SCRAPE: &str = "\
# HELP bounded_db_commits_total Committed transactions of each module database.
# TYPE bounded_db_commits_total counter
bounded_db_commits_total{module=\"orders\"} 120
bounded_db_commits_total{module=\"inventory\"} 30
bounded_db_commits_total_extra 99
bounded_db_statements_total 1500
# TYPE bounded_process_cpu_seconds_total gauge
bounded_process_cpu_seconds_total 2.5
";

    #[test]
    fn counts_are_the_sums_of_their_samples_and_absent_ones_are_none() {
        let counts = Counts::parse(SCRAPE);
        assert_eq!(counts.commits, Some(150.0));
        assert_eq!(counts.statements, Some(1500.0));
        assert_eq!(counts.cpu_seconds, Some(2.5));
        let without = Counts::parse("bounded_db_commits_total{module=\"a\"} 7 1700000000000\n");
        assert_eq!(without.commits, Some(7.0), "a timestamp after the value");
        assert_eq!((without.statements, without.cpu_seconds), (None, None));
        assert_eq!(Counts::parse(""), Counts::default());
    }

    #[test]
    fn cost_per_order_is_the_difference_over_the_confirmed_orders() {
        let before = Counts::parse(SCRAPE);
        let after = Counts {
            statements: Some(2_500.0),
            commits: Some(250.0),
            cpu_seconds: Some(4.5),
        };
        let cost = ServerCost::between(before, after, 20);
        assert_eq!(cost.statements_per_order, Some(50.0));
        assert_eq!(cost.commits_per_order, Some(5.0));
        assert_eq!(cost.cpu_ms_per_order, Some(100.0));
        assert_eq!(cost.orders_per_cpu_second, Some(10.0));
        // Not counted stays not counted; a restarted server's counts are not differences.
        let uncounted = Counts {
            statements: None,
            ..after
        };
        assert_eq!(
            ServerCost::between(before, uncounted, 20).statements_per_order,
            None
        );
        let first = ServerCost::between(Counts::default(), after, 20);
        assert_eq!(first.commits_per_order, Some(12.5), "absent before: from 0");
        let restarted = Counts {
            commits: Some(3.0),
            ..after
        };
        assert_eq!(ServerCost::between(before, restarted, 20).commits, None);
        assert_eq!(ServerCost::between(before, after, 0).cpu_ms_per_order, None);
    }
}
