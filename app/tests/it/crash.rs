//! Crash recovery of the real binary: orders placed concurrently while the process is killed
//! with SIGKILL, several times; after a restart every answered order exists and settles, and
//! stock and money add up exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shared_kernel::storage::testing::{TestDatabase, postgres_url};

use crate::support::{Kind, init_tracing, read_log_until_url};

const BIN: &str = env!("CARGO_BIN_EXE_bounded");
/// Kills per run.
const ROUNDS: usize = 3;
/// Answered placements per round before the kill.
const ACCEPTED_PER_ROUND: usize = 30;
const CLIENTS: usize = 8;
/// Units on hand per warehouse.
type Stock = [(&'static str, i64); 2];
/// Products: (sku, price, stock).
const CATALOG: [(&str, i64, Stock); 4] = [
    ("CRASH-A", 1_000, [("east", 12), ("west", 9)]),
    ("CRASH-B", 2_500, [("east", 7), ("west", 7)]),
    ("CRASH-C", 400, [("north", 30), ("south", 3)]),
    ("CRASH-D", 9_900, [("east", 5), ("west", 1)]),
];

/// A `bounded serve` child process.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data_dir: &Path, database_url: Option<&str>) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("BOUNDED_LOG", "warn,app=info")
            .env_remove("BOUNDED_DATABASE_URL")
            .env_remove("BOUNDED_MODULES")
            .env_remove("BOUNDED_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let mut child = command.spawn().unwrap();
        let (_log, _lines, url) = read_log_until_url(&mut child);
        Self { child, url }
    }

    /// SIGKILL: no shutdown, no flush, no goodbye.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn seed(client: &reqwest::Client, url: &str) -> (Vec<String>, Vec<(String, i64)>) {
    let mut customers = Vec::new();
    for i in 0..8 {
        let (status, body) = send(
            client,
            reqwest::Method::POST,
            format!("{url}/customers"),
            Some(json!({"name": format!("Crash {i}"), "email": format!("crash{i}@example.com")})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        // Half the customers have little credit, so declines happen too.
        let limit = if i % 2 == 0 { 1_000_000 } else { 15_000 };
        let (status, body) = send(
            client,
            reqwest::Method::PUT,
            format!("{url}/payment-accounts/{id}"),
            Some(json!({"credit_limit_cents": limit})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        customers.push(id);
    }
    let mut products = Vec::new();
    for (sku, price, stock) in CATALOG {
        let (status, body) = send(
            client,
            reqwest::Method::POST,
            format!("{url}/products"),
            Some(json!({"sku": sku, "name": sku, "price_cents": price})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        for (warehouse, on_hand) in stock {
            let (status, body) = send(
                client,
                reqwest::Method::PUT,
                format!("{url}/products/{id}/stock/{warehouse}"),
                Some(json!({"on_hand": on_hand})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        products.push((id, stock.iter().map(|(_, n)| n).sum()));
    }
    (customers, products)
}

/// Places orders from `CLIENTS` concurrent clients until the server dies; returns the ids of
/// the orders it answered 202 for. Kills the server after `ACCEPTED_PER_ROUND` answers.
async fn load_until_killed(
    server: Server,
    customers: &[String],
    products: &[(String, i64)],
    seed: u64,
) -> Vec<String> {
    let url = server.url.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(tokio::sync::Notify::new());
    let dead = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (url, accepted, dead) = (url.clone(), accepted.clone(), dead.clone());
        let answered = answered.clone();
        let customers = customers.to_vec();
        let products: Vec<String> = products.iter().map(|(id, _)| id.clone()).collect();
        clients.spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = Lcg(seed * 1_000 + c as u64);
            let mut mine = Vec::new();
            while !dead.load(Ordering::SeqCst) {
                let customer = &customers[rng.below(customers.len() as u64) as usize];
                let mut lines = BTreeMap::new();
                for _ in 0..=rng.below(2) {
                    let product = &products[rng.below(products.len() as u64) as usize];
                    lines.insert(product.clone(), 1 + rng.below(3) as i64);
                }
                let items: Vec<Value> = lines
                    .iter()
                    .map(|(p, q)| json!({"product_id": p, "quantity": q}))
                    .collect();
                let sent = client
                    .post(format!("{url}/orders"))
                    .json(&json!({"customer_id": customer, "items": items}))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                let status = response.status().as_u16();
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                assert_eq!(status, 202, "{body}");
                mine.push(body["id"].as_str().unwrap().to_owned());
                accepted.fetch_add(1, Ordering::SeqCst);
                answered.notify_one();
            }
            mine
        });
    }
    // Kill mid-load: requests are in flight when the process dies.
    while accepted.load(Ordering::SeqCst) < ACCEPTED_PER_ROUND {
        tokio::time::timeout(Duration::from_secs(120), answered.notified())
            .await
            .expect("load stalled: no order answered for 120 s");
    }
    server.kill();
    dead.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    while let Some(mine) = clients.join_next().await {
        ids.extend(mine.unwrap());
    }
    ids
}

async fn crash_recovery(kind: Kind) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let database = match kind {
        Kind::Sqlite => None,
        Kind::Postgres => match postgres_url("crash_recovery") {
            Some(url) => Some(TestDatabase::create(&url).await),
            None => return,
        },
    };
    let db_url = database.as_ref().map(|db| db.url().to_owned());
    let client = reqwest::Client::new();
    let server = Server::start(dir.path(), db_url.as_deref());
    let (customers, products) = seed(&client, &server.url).await;
    let mut answered = Vec::new();
    let mut server = Some(server);
    for round in 0..ROUNDS {
        let running = server
            .take()
            .unwrap_or_else(|| Server::start(dir.path(), db_url.as_deref()));
        answered.extend(load_until_killed(running, &customers, &products, round as u64 + 1).await);
    }
    let server = Server::start(dir.path(), db_url.as_deref());
    let url = &server.url;

    // Every answered order exists and settles.
    let mut orders = BTreeMap::new();
    for id in &answered {
        let (status, order) = send(
            &client,
            reqwest::Method::GET,
            format!("{url}/orders/{id}?wait=terminal&timeout_ms=30000"),
            None,
        )
        .await;
        assert_eq!(status, 200, "answered order {id} is gone: {order}");
        assert_ne!(order["status"], "PENDING", "{order}");
        orders.insert(id.clone(), order);
    }
    // Orders committed whose answer was lost in the kill count as well: take every order.
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page_url = match &next {
            Some(after) => format!("{url}/orders?limit=500&after={after}"),
            None => format!("{url}/orders?limit=500"),
        };
        let (status, page) = send(&client, reqwest::Method::GET, page_url, None).await;
        assert_eq!(status, 200);
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => break,
        }
    }
    let listed: BTreeSet<String> = all
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(answered.iter().all(|id| listed.contains(id)));
    assert!(answered.len() >= ROUNDS * ACCEPTED_PER_ROUND);
    let mut settled = Vec::new();
    for order in &all {
        let id = order["id"].as_str().unwrap();
        let (_, order) = send(
            &client,
            reqwest::Method::GET,
            format!("{url}/orders/{id}?wait=terminal&timeout_ms=30000"),
            None,
        )
        .await;
        assert_ne!(order["status"], "PENDING", "{order}");
        settled.push(order);
    }
    // Then every subscription catches up (nothing else produces events once sagas are
    // settled): the ops endpoint waits for that itself.
    let (status, subscriptions) = send(
        &client,
        reqwest::Method::GET,
        format!("{url}/ops/subscriptions?wait=settled&timeout_ms=60000"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let subscriptions = subscriptions.as_array().unwrap().clone();
    assert!(
        subscriptions.iter().all(|s| s["parked"] == 0),
        "{subscriptions:?}"
    );
    assert!(
        subscriptions.iter().all(|s| s["lag"] == 0),
        "subscriptions did not catch up within 60 s: {subscriptions:?}"
    );

    let confirmed: Vec<&Value> = settled
        .iter()
        .filter(|o| o["status"] == "CONFIRMED")
        .collect();
    let rejected = settled.iter().filter(|o| o["status"] == "REJECTED").count();
    eprintln!(
        "crash recovery ({kind:?}): {} answered, {} stored, {} confirmed, {rejected} rejected over {ROUNDS} kills",
        answered.len(),
        all.len(),
        confirmed.len()
    );
    assert!(!confirmed.is_empty());
    for (product, initial) in &products {
        let sold: i64 = confirmed
            .iter()
            .flat_map(|o| o["items"].as_array().unwrap())
            .filter(|line| line["product_id"] == product.as_str())
            .map(|line| line["quantity"].as_i64().unwrap())
            .sum();
        let (_, availability) = send(
            &client,
            reqwest::Method::GET,
            format!("{url}/products/{product}/availability"),
            None,
        )
        .await;
        assert_eq!(availability["on_hand"], initial - sold, "{availability}");
        assert_eq!(availability["reserved"], 0, "{availability}");
    }
    for customer in &customers {
        let owed: i64 = confirmed
            .iter()
            .filter(|o| o["customer_id"] == customer.as_str())
            .map(|o| o["total_cents"].as_i64().unwrap())
            .sum();
        let (_, account) = send(
            &client,
            reqwest::Method::GET,
            format!("{url}/payment-accounts/{customer}"),
            None,
        )
        .await;
        assert_eq!(account["outstanding_cents"], owed, "{account}");
    }
    drop(server);
}

mod killed_mid_load_recovers_every_answered_order {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        crash_recovery(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        crash_recovery(Kind::Postgres).await;
    }
}
