//! `bounded demo`: seeds a running instance over its HTTP API — customers, products with
//! stock in two warehouses, then a stream of orders — printing progress, and waits for every
//! order to settle.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::{Value, json};

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Base URL of the running instance.
    #[arg(long, env = "BOUNDED_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Orders to place.
    #[arg(long, env = "BOUNDED_DEMO_ORDERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub orders: u32,
    /// Customers to register.
    #[arg(long, env = "BOUNDED_DEMO_CUSTOMERS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub customers: u32,
    /// Products to create, each with stock in two warehouses.
    #[arg(long, env = "BOUNDED_DEMO_PRODUCTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub products: u32,
    /// Orders in flight at once.
    #[arg(long, env = "BOUNDED_DEMO_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
}

/// A small deterministic generator: the same flags give the same shop.
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % (n.max(1) as u64)).unwrap_or(0)
    }
}

pub(crate) async fn send(
    client: &reqwest::Client,
    request: reqwest::RequestBuilder,
    expect: u16,
) -> anyhow::Result<Value> {
    let response = client
        .execute(request.build().context("building a request")?)
        .await
        .context("calling the instance (is `bounded serve` running at --url?)")?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != expect {
        bail!("expected {expect}, got {status}: {body}");
    }
    Ok(body)
}

pub(crate) fn id(body: &Value) -> anyhow::Result<String> {
    body["id"]
        .as_str()
        .map(str::to_owned)
        .context("the answer has no id")
}

/// Runs the demo against `args.url`.
///
/// # Errors
/// When the instance cannot be reached or answers unexpectedly.
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_owned();
    // A run tag keeps emails and SKUs unique when the demo runs again on the same data.
    // The random end of a v7 id: its first 8 digits are the clock, the same for ~65 s, so two
    // runs a minute apart would register the same emails and SKUs.
    let tag = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    let started = Instant::now();

    let mut customers = Vec::new();
    for i in 0..args.customers {
        let body = json!({"name": format!("Demo customer {i}"), "email": format!("demo-{tag}-{i}@example.com")});
        let created = send(
            &client,
            client.post(format!("{url}/customers")).json(&body),
            201,
        )
        .await?;
        customers.push(id(&created)?);
    }
    println!("registered {} customers", customers.len());

    let mut products = Vec::new();
    for i in 0..args.products {
        let price = 500 + i64::from(i % 7) * 450;
        let body = json!({"sku": format!("DEMO-{tag}-{i}"), "name": format!("Demo product {i}"), "price_cents": price});
        let created = send(
            &client,
            client.post(format!("{url}/products")).json(&body),
            201,
        )
        .await?;
        let product = id(&created)?;
        for (warehouse, on_hand) in [("east", 20 + i64::from(i % 5) * 10), ("west", 15)] {
            let path = format!("{url}/products/{product}/stock/{warehouse}");
            send(
                &client,
                client.put(path).json(&json!({"on_hand": on_hand})),
                200,
            )
            .await?;
        }
        products.push(product);
    }
    println!(
        "created {} products with stock in east and west",
        products.len()
    );

    let mut rng = Lcg(u64::from(args.orders) ^ 0x5eed);
    let bodies: Vec<Value> = (0..args.orders)
        .map(|_| {
            let customer = &customers[rng.below(customers.len())];
            let mut items: Vec<Value> = Vec::new();
            let lines = 1 + rng.below(3.min(products.len()));
            let first = rng.below(products.len());
            for k in 0..lines {
                let product = &products[(first + k) % products.len()];
                items.push(json!({"product_id": product, "quantity": 1 + rng.below(3)}));
            }
            json!({"customer_id": customer, "items": items})
        })
        .collect();
    let total = bodies.len();
    let concurrency = usize::try_from(args.concurrency).unwrap_or(1);
    let mut placed = Vec::with_capacity(total);
    let mut stream = futures::stream::iter(bodies)
        .map(|body| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let request = client.post(format!("{url}/orders")).json(&body);
                send(&client, request, 202).await
            }
        })
        .buffer_unordered(concurrency);
    let mut last_report = Instant::now();
    while let Some(order) = stream.next().await {
        placed.push(id(&order?)?);
        if last_report.elapsed() >= Duration::from_secs(1) || placed.len() == total {
            println!("placed {}/{total} orders", placed.len());
            last_report = Instant::now();
        }
    }

    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut settled = futures::stream::iter(placed)
        .map(|order| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let path = format!("{url}/orders/{order}?wait=terminal&timeout_ms=30000");
                send(&client, client.get(path), 200).await
            }
        })
        .buffer_unordered(concurrency.max(16));
    while let Some(order) = settled.next().await {
        let order = order?;
        let key = match order["reason"].as_str() {
            Some(reason) => format!("{} ({reason})", order["status"].as_str().unwrap_or("?")),
            None => order["status"].as_str().unwrap_or("?").to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "settled {total} orders in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        summary.join(", ")
    );
    Ok(())
}
