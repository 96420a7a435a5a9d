//! The messaging runtime end to end: outbox → subscriptions → replicas, across restarts,
//! rewinds and failing handlers, on real databases.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::http::Method;
use serde_json::{Value, json};
use shared_kernel::messaging::{Envelope, Handler, Subscription};
use shared_kernel::storage::Tx;
use shared_kernel::{with_reader, with_tx};
use uuid::Uuid;

use crate::customers::register;
use crate::support::TestApp;

/// The orders module's replica of customers, read from its own database.
async fn customer_replicas(app: &TestApp) -> Vec<(Uuid, String, String)> {
    let reader = app.db("orders").reader().unwrap();
    with_reader!(reader, |pool| {
        sqlx::query_as(
            "SELECT customer_id, name, email FROM customer_replicas ORDER BY customer_id",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap()
}

async fn product_replicas(app: &TestApp) -> Vec<(Uuid, String, String, i64)> {
    let reader = app.db("orders").reader().unwrap();
    with_reader!(reader, |pool| {
        sqlx::query_as(
            "SELECT product_id, sku, name, price_cents FROM product_replicas ORDER BY product_id",
        )
        .fetch_all(pool)
        .await
    })
    .unwrap()
}

/// Every customer's payment account as `(customer, limit, stream version)`, read through the
/// payments API (payments stores events, not account rows).
async fn accounts(app: &TestApp) -> Vec<(Uuid, i64, i64)> {
    let payments = app.modules.payments.as_ref().unwrap();
    let mut accounts = Vec::new();
    for customer in app.list_all("/customers").await {
        match payments.account(uuid_of(&customer)).await {
            Ok(account) => accounts.push((
                account.customer_id,
                account.credit_limit_cents,
                account.version,
            )),
            Err(payments_api::PaymentsError::AccountNotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    accounts.sort();
    accounts
}

fn uuid_of(value: &Value) -> Uuid {
    value["id"].as_str().unwrap().parse().unwrap()
}

shared_kernel::both_backends! {
    async fn a_new_and_renamed_customer_reaches_orders_and_opens_an_account(app: crate::support::TestApp) {
        let ada = register(&app, "Ada", "ada@example.com").await;
        let id = uuid_of(&ada);
        let renamed = app.json(Method::PATCH, &format!("/customers/{id}"), json!({"name": "Ada King"})).await;
        renamed.ok(200);
        let product = crate::inventory::create_product(&app, "A1", 100).await;
        let product_path = format!("/products/{}", product["id"].as_str().unwrap());
        app.json(Method::PATCH, &product_path, json!({"price_cents": 150})).await.ok(200);
        app.settled().await;

        assert_eq!(customer_replicas(&app).await, vec![(id, "Ada King".into(), "ada@example.com".into())]);
        assert_eq!(product_replicas(&app).await, vec![(uuid_of(&product), "A1".into(), "Product A1".into(), 150)]);
        assert_eq!(accounts(&app).await, vec![(id, 1_000_000, 1)]);

        let status = app.get("/ops/subscriptions").await;
        let status = status.ok(200).as_array().unwrap().clone();
        let names: Vec<_> = status.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, [
            "orders<-customers", "orders<-inventory", "orders<-payments",
            "order_summaries<-customers", "order_summaries<-orders", "order_summaries<-payments",
            "inventory<-orders", "payments<-customers", "payments<-orders",
        ]);
        for subscription in &status {
            assert_eq!(subscription["lag"], 0, "{subscription}");
            assert_eq!(subscription["checkpoint"], subscription["head_seq"]);
            // Two events each from customers and inventory; no orders, so nothing else.
            let published = if ["customers", "inventory"].contains(&subscription["source"].as_str().unwrap()) { 2 } else { 0 };
            assert_eq!(subscription["head_seq"], published, "{subscription}");
        }
    }

    async fn events_committed_while_delivery_is_stopped_are_delivered_after_restart(app: crate::support::TestApp) {
        let mut app = app;
        app.stop_delivery().await;
        let ada = register(&app, "Ada", "ada@example.com").await;
        // Committed, not delivered: the event waits in the outbox.
        assert!(customer_replicas(&app).await.is_empty());
        let status = app.get("/ops/subscriptions").await;
        let status = status.ok(200).as_array().unwrap().clone();
        let replica = status.iter().find(|s| s["name"] == "orders<-customers").unwrap();
        assert_eq!(replica["lag"], 1);

        app.start_delivery();
        app.settled().await;
        assert_eq!(customer_replicas(&app).await.len(), 1);
        assert_eq!(accounts(&app).await, vec![(uuid_of(&ada), 1_000_000, 1)]);
    }

    async fn rewinding_to_zero_redelivers_without_repeating_effects(app: crate::support::TestApp) {
        for i in 0..3 {
            register(&app, &format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        let first = register(&app, "Ada", "ada@example.com").await;
        app.json(Method::PATCH, &format!("/customers/{}", uuid_of(&first)), json!({"email": "ada@king.example"})).await.ok(200);
        app.settled().await;
        let replicas = customer_replicas(&app).await;
        let opened = accounts(&app).await;
        assert_eq!(replicas.len(), 4);

        for name in ["orders%3C-customers", "payments%3C-customers"] {
            let rewound = app.json(Method::POST, &format!("/ops/subscriptions/{name}/rewind"), json!({"to_seq": 0})).await;
            let rewound = rewound.ok(200);
            assert_eq!(rewound["head_seq"], 5);
        }
        app.settled().await;
        assert_eq!(customer_replicas(&app).await, replicas);
        assert_eq!(accounts(&app).await, opened);

        app.json(Method::POST, "/ops/subscriptions/nope/rewind", json!({"to_seq": 0})).await.problem(404);
        let settled = app.get("/ops/subscriptions?wait=settled&timeout_ms=30000").await;
        assert!(settled.ok(200).as_array().unwrap().iter().all(|s| s["lag"] == 0), "{}", settled.body);
        assert_eq!(app.get("/ops/subscriptions?wait=soon").await.problem(422)["errors"][0]["field"], "wait");
        assert_eq!(app.get("/ops/subscriptions?wait=settled&timeout_ms=60001").await.problem(422)["errors"][0]["field"], "timeout_ms");
        app.json(Method::POST, "/ops/subscriptions/orders%3C-customers/rewind", json!({"to_seq": -1})).await.problem(422);
        app.json(Method::POST, "/ops/subscriptions/orders%3C-customers/rewind", json!({"seq": 0})).await.problem(422);
    }

    async fn a_handler_that_fails_after_writing_rolls_back_and_applies_once_on_retry(app: crate::support::TestApp) {
        let mut app = app;
        // A second subscription of orders to customers whose handler writes, then fails on
        // its first attempt. Were the failed batch not rolled back, the retry's insert would
        // hit the primary key.
        let attempts = Arc::new(AtomicUsize::new(0));
        let handler = FailsOnce { attempts: attempts.clone() };
        app.stop_delivery().await;
        app.modules.bus.subscribe(Subscription::named("orders<-customers:test", "orders", "customers", Arc::new(handler)));
        app.start_delivery();

        let ada = register(&app, "Ada", "ada@example.com").await;
        app.settled().await;
        assert!(attempts.load(Ordering::SeqCst) >= 2, "the handler was retried");
        let reader = app.db("orders").reader().unwrap();
        let rows: Vec<(Uuid, String)> = with_reader!(reader, |pool| {
            sqlx::query_as("SELECT customer_id, name FROM customer_replicas WHERE email = 'test-handler'")
                .fetch_all(pool)
                .await
        })
        .unwrap();
        assert_eq!(rows, vec![(marker_id(uuid_of(&ada)), "Ada".to_owned())]);
    }
}

/// The id of the test handler's marker row for a customer (apart from the real replica's).
fn marker_id(customer: Uuid) -> Uuid {
    Uuid::from_u128(customer.as_u128() ^ 1)
}

/// Inserts a test handler's marker row for a registered customer (tagged in `email`); a
/// second insert for the same customer violates the primary key.
async fn insert_marker(
    tx: &mut Tx,
    registered: &customers_api::events::CustomerRegistered,
    tag: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO customer_replicas (customer_id, name, email, source_seq, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(marker_id(registered.customer_id.0))
        .bind(&registered.name)
        .bind(tag)
        .bind(seq)
        .bind(shared_kernel::clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Writes a marker row for each event, and fails the first time after writing it.
struct FailsOnce {
    attempts: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for FailsOnce {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(registered) = event.decode::<customers_api::events::CustomerRegistered>() else {
            return Ok(());
        };
        let registered = registered?;
        insert_marker(tx, &registered, "test-handler", event.seq).await?;
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            anyhow::bail!("injected failure after writing");
        }
        Ok(())
    }
}

#[tokio::test]
async fn ops_modules_shows_the_graph_that_arch_graph_draws() {
    let app = TestApp::spawn(crate::support::Kind::Sqlite, "ops_modules")
        .await
        .unwrap();
    let answer = app.get("/ops/modules").await;
    let map = answer.ok(200);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let graph = tools::arch::check(root).unwrap().graph;
    let edges = |key: &str| -> Vec<(String, String)> {
        let mut edges: Vec<_> = map[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["from"].as_str().unwrap().to_owned(),
                    e["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        edges.dedup();
        edges
    };
    assert_eq!(edges("event_edges"), graph.event_edges);
    assert_eq!(edges("call_edges"), graph.call_edges);
    assert_eq!(map["modules"].as_array().unwrap().len(), 4);
    let orders = &map["modules"][2];
    assert_eq!(orders["name"], "orders");
    assert_eq!(
        orders["consumes"],
        json!([
            "customers.CustomerRegistered",
            "customers.CustomerUpdated",
            "inventory.ProductCreated",
            "inventory.ProductUpdated",
            "inventory.StockReservationFailed",
            "inventory.StockReserved",
            "orders.OrderCancelled",
            "orders.OrderConfirmed",
            "orders.OrderPlaced",
            "orders.OrderRejected",
            "payments.PaymentAuthorized",
            "payments.PaymentCaptured",
            "payments.PaymentDeclined",
            "payments.PaymentRefunded",
            "payments.PaymentVoided"
        ])
    );
    assert_eq!(
        map["modules"][0]["publishes"],
        json!(["customers.CustomerRegistered", "customers.CustomerUpdated"])
    );
}

/// Fails for customers whose name starts with "Poison" while `poisoned` is set; otherwise
/// writes a marker row (a plain upsert, so an out-of-order application would show).
struct Poisonable {
    poisoned: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Handler for Poisonable {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        use customers_api::events::{CustomerRegistered, CustomerUpdated};
        let (id, name) = if let Some(e) = event.decode::<CustomerRegistered>() {
            let e = e?;
            (e.customer_id.0, e.name)
        } else if let Some(e) = event.decode::<CustomerUpdated>() {
            let e = e?;
            (e.customer_id.0, e.name)
        } else {
            return Ok(());
        };
        if name.starts_with("Poison") && self.poisoned.load(Ordering::SeqCst) {
            anyhow::bail!("poisoned customer {name}");
        }
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO customer_replicas (customer_id, name, email, source_seq, updated_at) \
                 VALUES ($1, $2, 'poison-test', $3, $4) \
                 ON CONFLICT (customer_id) DO UPDATE SET name = excluded.name, source_seq = excluded.source_seq",
            )
            .bind(marker_id(id))
            .bind(&name)
            .bind(event.seq)
            .bind(shared_kernel::clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(())
    }
}

const POISON_SUBSCRIPTION: &str = "orders<-customers:poison";

/// Starts a poisonable subscription next to the real ones.
async fn with_poisonable(app: &mut TestApp) -> Arc<std::sync::atomic::AtomicBool> {
    let poisoned = Arc::new(std::sync::atomic::AtomicBool::new(true));
    app.stop_delivery().await;
    let handler = Poisonable {
        poisoned: poisoned.clone(),
    };
    app.modules.bus.subscribe(Subscription::named(
        POISON_SUBSCRIPTION,
        "orders",
        "customers",
        Arc::new(handler),
    ));
    app.start_delivery();
    poisoned
}

async fn marker_name(app: &TestApp, customer: Uuid) -> Option<String> {
    let reader = app.db("orders").reader().unwrap();
    let row: Option<(String,)> = with_reader!(reader, |pool| {
        sqlx::query_as("SELECT name FROM customer_replicas WHERE customer_id = $1")
            .bind(marker_id(customer))
            .fetch_optional(pool)
            .await
    })
    .unwrap();
    row.map(|(name,)| name)
}

async fn poison_status(app: &TestApp) -> Value {
    let status = app.get("/ops/subscriptions").await;
    status
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == POISON_SUBSCRIPTION)
        .unwrap()
        .clone()
}

/// Registers a poisoned and a healthy customer and renames both; returns their ids.
async fn poison_scenario(app: &TestApp) -> (Uuid, Uuid) {
    let poison = uuid_of(&register(app, "Poison", "poison@example.com").await);
    let fine = uuid_of(&register(app, "Fine", "fine@example.com").await);
    app.json(
        Method::PATCH,
        &format!("/customers/{poison}"),
        json!({"name": "Poison Renamed"}),
    )
    .await
    .ok(200);
    app.json(
        Method::PATCH,
        &format!("/customers/{fine}"),
        json!({"name": "Fine Two"}),
    )
    .await
    .ok(200);
    app.settled().await;
    (poison, fine)
}

shared_kernel::both_backends! {
    async fn a_poison_event_is_parked_and_blocks_only_its_aggregate_until_retried(app: crate::support::TestApp) {
        let mut app = app;
        let poisoned = with_poisonable(&mut app).await;
        let (poison, fine) = poison_scenario(&app).await;

        // The other aggregate flowed; the poisoned one waits, its later event behind it.
        assert_eq!(marker_name(&app, fine).await.as_deref(), Some("Fine Two"));
        assert_eq!(marker_name(&app, poison).await, None);
        let status = poison_status(&app).await;
        assert_eq!((status["lag"].clone(), status["parked"].clone(), status["blocked"].clone()), (json!(0), json!(1), json!(1)));
        let letters = app.get("/ops/dead-letters").await;
        let letters: Vec<Value> = letters.ok(200).as_array().unwrap().iter().filter(|d| d["subscription"] == POISON_SUBSCRIPTION).cloned().collect();
        assert_eq!(letters.len(), 2);
        let parked = &letters[0];
        assert_eq!(parked["status"], "parked");
        assert_eq!(parked["attempts"], 5);
        assert!(parked["error"].as_str().unwrap().contains("poisoned customer Poison"), "{parked}");
        assert_eq!(parked["event"]["event_type"], "customers.CustomerRegistered");
        assert_eq!(letters[1]["status"], "blocked");
        assert_eq!(letters[1]["event"]["event_type"], "customers.CustomerUpdated");
        let id = parked["id"].as_str().unwrap().to_owned();

        // Still poisoned: the retry fails and counts.
        let again = app.post(&format!("/ops/dead-letters/{id}/retry"), json!({})).await;
        again.problem(409);
        app.post(&format!("/ops/dead-letters/{}/retry", letters[1]["id"].as_str().unwrap()), json!({})).await.problem(409);

        // Fixed: the retry applies it, and the blocked rename follows in order.
        poisoned.store(false, Ordering::SeqCst);
        let retried = app.post(&format!("/ops/dead-letters/{id}/retry"), json!({})).await;
        let retried = retried.ok(200);
        assert_eq!(retried["status"], "retried");
        assert_eq!(retried["attempts"], 7);
        assert_eq!(marker_name(&app, poison).await.as_deref(), Some("Poison Renamed"));
        let status = poison_status(&app).await;
        assert_eq!((status["parked"].clone(), status["blocked"].clone()), (json!(0), json!(0)));

        // Later events of the aggregate flow normally again.
        app.json(Method::PATCH, &format!("/customers/{poison}"), json!({"name": "Poison Third"})).await.ok(200);
        app.settled().await;
        assert_eq!(marker_name(&app, poison).await.as_deref(), Some("Poison Third"));
        app.post(&format!("/ops/dead-letters/{}/retry", Uuid::now_v7()), json!({})).await.problem(404);
        app.post("/ops/dead-letters/not-an-id/discard", json!({})).await.problem(404);
    }

    async fn discarding_a_parked_event_releases_the_events_behind_it(app: crate::support::TestApp) {
        let mut app = app;
        let poisoned = with_poisonable(&mut app).await;
        let (poison, _) = poison_scenario(&app).await;
        poisoned.store(false, Ordering::SeqCst);
        let letters = app.get("/ops/dead-letters").await;
        let parked = letters.ok(200).as_array().unwrap().iter().find(|d| d["status"] == "parked").unwrap().clone();
        let discarded = app.post(&format!("/ops/dead-letters/{}/discard", parked["id"].as_str().unwrap()), json!({})).await;
        assert_eq!(discarded.ok(200)["status"], "discarded");
        // The registration was dropped; the rename behind it was applied.
        assert_eq!(marker_name(&app, poison).await.as_deref(), Some("Poison Renamed"));
        app.post(&format!("/ops/dead-letters/{}/discard", parked["id"].as_str().unwrap()), json!({})).await.problem(409);
    }
}

/// Counts invocations and writes one marker row per event.
struct Counting {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(registered) = event.decode::<customers_api::events::CustomerRegistered>() else {
            return Ok(());
        };
        let registered = registered?;
        insert_marker(tx, &registered, "counted", event.seq).await?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_handle_every_event_exactly_once() {
    let Some(mut first) = TestApp::spawn(crate::support::Kind::Postgres, "two_processes").await
    else {
        return;
    };
    // A second "process" on the same database: its own pools, bus and workers.
    let data_dir = tempfile::tempdir().unwrap();
    let settings = TestApp::settings(
        crate::support::Kind::Postgres,
        data_dir.path(),
        first.database.as_ref(),
    );
    let mut second = TestApp::build(crate::support::Kind::Postgres, settings, data_dir, None).await;

    let calls = Arc::new(AtomicUsize::new(0));
    for app in [&mut first, &mut second] {
        app.stop_delivery().await;
        let handler = Counting {
            calls: calls.clone(),
        };
        app.modules.bus.subscribe(Subscription::named(
            "orders<-customers:count",
            "orders",
            "customers",
            Arc::new(handler),
        ));
        app.start_delivery();
    }
    let registrations = (0..40).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        async move { register(app, &format!("C{i}"), &format!("c{i}@example.com")).await }
    });
    futures::future::join_all(registrations).await;
    first.settled().await;
    second.settled().await;

    assert_eq!(
        calls.load(Ordering::SeqCst),
        40,
        "each event handled exactly once"
    );
    let reader = first.db("orders").reader().unwrap();
    let (count,): (i64,) = with_reader!(reader, |pool| {
        sqlx::query_as("SELECT COUNT(*) FROM customer_replicas WHERE email = 'counted'")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    assert_eq!(count, 40);
    assert_eq!(accounts(&first).await.len(), 40);
    second.stop_delivery().await;
}

shared_kernel::both_backends! {
    async fn events_of_one_aggregate_apply_in_commit_order_under_concurrent_producers(app: crate::support::TestApp) {
        let ada = uuid_of(&register(&app, "Ada", "ada@example.com").await);
        let path = format!("/customers/{ada}");
        // Many concurrent renames of one customer, interleaved with other customers' events.
        let renames = (0..30).map(|i| {
            let (app, path) = (&app, &path);
            async move {
                if i % 3 == 0 {
                    register(app, &format!("Other {i}"), &format!("o{i}@example.com")).await;
                }
                app.json(Method::PATCH, path, json!({"name": format!("Ada {i}")})).await.ok(200).clone()
            }
        });
        futures::future::join_all(renames).await;
        app.settled().await;
        // The replica ends with what the owner has now: the last committed rename won, in both.
        let current = app.get(&path).await.ok(200)["name"].clone();
        let replica = customer_replicas(&app).await.into_iter().find(|(id, _, _)| *id == ada).unwrap();
        assert_eq!(json!(replica.1), current);
        // And the log the replica followed is the owner's commit order, without gaps.
        let reader = app.db("customers").reader().unwrap();
        let seqs: Vec<(i64,)> = with_reader!(reader, |pool| {
            sqlx::query_as("SELECT seq FROM outbox ORDER BY seq").fetch_all(pool).await
        })
        .unwrap();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs.into_iter().map(|(s,)| s).collect::<Vec<_>>(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_appends_handling_lag_and_http_latency() {
    let app = TestApp::spawn(crate::support::Kind::Sqlite, "metrics")
        .await
        .unwrap();
    register(&app, "Ada", "ada@example.com").await;
    app.settled().await;
    let answer = app.get("/metrics").await;
    assert_eq!(answer.status, 200);
    assert!(answer.content_type().starts_with("text/plain"));
    let text = answer.body.as_str().unwrap();
    // The recorder is process-wide and tests run in parallel: check the series, not values.
    for series in [
        r#"bounded_outbox_appended_events_total{source="customers"}"#,
        r#"bounded_events_handled_total{subscription="orders<-customers"}"#,
        r#"bounded_subscription_lag_events{subscription="payments<-customers"}"#,
        r#"bounded_subscription_lag_seconds{subscription="orders<-inventory"}"#,
        r#"bounded_subscription_parked_events{subscription="orders<-customers"}"#,
        // payments reads only registrations: a rename is a tolerated, counted unknown.
        r#"bounded_events_ignored_total{subscription="payments<-customers",type="customers.CustomerUpdated"}"#,
        r#"bounded_http_request_duration_seconds_bucket{method="POST",route="/customers",status="201""#,
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
}

async fn outbox_seqs(app: &TestApp, module: &str) -> Vec<i64> {
    let reader = app.db(module).reader().unwrap();
    let rows: Vec<(i64,)> = with_reader!(reader, |pool| {
        sqlx::query_as("SELECT seq FROM outbox ORDER BY seq")
            .fetch_all(pool)
            .await
    })
    .unwrap();
    rows.into_iter().map(|(seq,)| seq).collect()
}

shared_kernel::both_backends! {
    async fn pruning_never_drops_an_event_a_subscription_has_not_processed(app: crate::support::TestApp) {
        let mut app = app;
        for i in 0..3 {
            register(&app, &format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        app.settled().await;
        app.stop_delivery().await;
        // payments is behind at seq 1; two more events nobody has processed.
        app.json(Method::POST, "/ops/subscriptions/payments%3C-customers/rewind", json!({"to_seq": 1})).await.ok(200);
        for i in 3..5 {
            register(&app, &format!("C{i}"), &format!("c{i}@example.com")).await;
        }
        let deleted = app.modules.bus.prune(std::time::Duration::ZERO).await.unwrap();
        assert_eq!(deleted, 1, "only seq 1 is processed by every subscription of customers");
        assert_eq!(outbox_seqs(&app, "customers").await, vec![2, 3, 4, 5]);
        // A retention longer than the events' age keeps them all.
        assert_eq!(app.modules.bus.prune(std::time::Duration::from_secs(3600)).await.unwrap(), 0);

        app.start_delivery();
        app.settled().await;
        assert_eq!(customer_replicas(&app).await.len(), 5);
        assert_eq!(accounts(&app).await.len(), 5);
        assert_eq!(app.modules.bus.prune(std::time::Duration::ZERO).await.unwrap(), 4);
        assert!(outbox_seqs(&app, "customers").await.is_empty());
        // The log is empty but the numbering goes on: the next event is seq 6.
        register(&app, "C5", "c5@example.com").await;
        app.settled().await;
        assert_eq!(outbox_seqs(&app, "customers").await, vec![6]);
        assert_eq!(customer_replicas(&app).await.len(), 6);
    }
}

shared_kernel::both_backends! {
    async fn events_carry_the_request_trace_context_and_their_causes(app: crate::support::TestApp) {
        let request_id = Uuid::now_v7();
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/customers")
            .header("content-type", "application/json")
            .header("x-request-id", request_id.to_string())
            .header("traceparent", traceparent)
            .body(axum::body::Body::from(json!({"name": "Ada", "email": "ada@example.com"}).to_string()))
            .unwrap();
        app.send(request).await.ok(201);
        let events = shared_kernel::messaging::outbox::read_after(app.db("customers"), 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event_type, "customers.CustomerRegistered");
        assert_eq!(event.correlation_id, Some(request_id));
        assert_eq!(event.headers.get("traceparent").map(String::as_str), Some(traceparent));
        assert_eq!(event.source, "customers");
        assert_eq!((event.aggregate_type.as_str(), event.seq), ("customer", 1));
    }
}

shared_kernel::both_backends! {
    async fn commits_announce_what_they_appended_and_rollbacks_announce_nothing(app: crate::support::TestApp) {
        use customers_api::events::CustomerUpdated;
        use shared_kernel::messaging::{EventContext, outbox};
        let db = app.db("customers").clone();
        let mut announced = db.committed_events();

        let registered = register(&app, "Ada", "ada@example.com").await;
        let id = uuid_of(&registered);
        let events = announced.recv().await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].seq, events[0].aggregate_id.as_str(), events[0].event_type),
            (1, id.to_string().as_str(), "customers.CustomerRegistered")
        );

        // Two appends in one transaction: one announcement with both, in seq order.
        let renamed = |name: &str| CustomerUpdated {
            customer_id: customers_api::CustomerId(id),
            name: name.into(),
            email: "ada@example.com".into(),
        };
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &renamed("B"), &EventContext::default()).await.unwrap();
        outbox::append(&mut tx, &renamed("C"), &EventContext::default()).await.unwrap();
        tx.commit().await.unwrap();
        let events = announced.recv().await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);

        // A rolled-back append announces nothing, and its seq is taken again.
        let mut tx = db.begin().await.unwrap();
        outbox::append(&mut tx, &renamed("D"), &EventContext::default()).await.unwrap();
        drop(tx);
        assert!(matches!(
            announced.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ));
        let mut tx = db.begin().await.unwrap();
        let (_, seq) = outbox::append(&mut tx, &renamed("E"), &EventContext::default()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(seq, 4);
        assert_eq!(outbox_seqs(&app, "customers").await, vec![1, 2, 3, 4]);
    }
}

/// The status of one subscription, from `/ops/subscriptions`.
async fn subscription_status(app: &TestApp, name: &str) -> Value {
    let status = app.get("/ops/subscriptions").await;
    let all = status.ok(200).as_array().unwrap().clone();
    all.into_iter().find(|s| s["name"] == name).unwrap()
}

/// Places an order of one unit and waits for its outcome.
async fn place_and_settle(app: &TestApp, customer: &str, product: &str) -> Value {
    let order = app.place(customer, &[(product, 1)]).await;
    app.terminal(order["id"].as_str().unwrap()).await
}

shared_kernel::both_backends! {
    async fn a_rewind_never_moves_a_checkpoint_forward(app: crate::support::TestApp) {
        let customer = app.customer("Rhea Wind").await;
        let product = app.product("RW-1", 100, &[("main", 10)]).await;
        assert_eq!(place_and_settle(&app, &customer, &product).await["status"], "CONFIRMED");
        app.settled().await;
        let before = subscription_status(&app, "payments<-orders").await;
        let (checkpoint, head) = (before["checkpoint"].as_i64().unwrap(), before["head_seq"].as_i64().unwrap());
        assert_eq!(checkpoint, head);

        // Ahead of the checkpoint (and of the head): refused, naming both, nothing changed.
        let path = "/ops/subscriptions/payments%3C-orders/rewind";
        let refused = app.post(path, json!({"to_seq": 1_000_000})).await;
        let detail = refused.problem(422)["detail"].as_str().unwrap().to_owned();
        assert_eq!(refused.fields(), ["to_seq"]);
        assert!(detail.contains(&format!("checkpoint {checkpoint}")), "{detail}");
        assert!(detail.contains(&format!("head is {head}")), "{detail}");
        assert_eq!(subscription_status(&app, "payments<-orders").await, before);
        // One past the checkpoint is a skip too.
        app.post(path, json!({"to_seq": checkpoint + 1})).await.problem(422);
        app.post(path, json!({"to_seq": -1})).await.problem(422);
        // To the checkpoint itself: a no-op.
        let same = app.post(path, json!({"to_seq": checkpoint})).await;
        assert_eq!(same.ok(200)["checkpoint"], checkpoint);

        // Later orders still confirm: payments still sees every OrderPlaced.
        assert_eq!(place_and_settle(&app, &customer, &product).await["status"], "CONFIRMED");
        app.settled().await;
        let account = app.account(&customer).await;
        assert_eq!(account["outstanding_cents"], 200, "{account}");

        // Back to 0 still works, and applies nothing twice. Delivery is stopped meanwhile so
        // that the answer shows the rewound checkpoint, not how far the worker got since.
        let mut app = app;
        app.stop_delivery().await;
        let rewound = app.post(path, json!({"to_seq": 0})).await;
        assert_eq!(rewound.ok(200)["checkpoint"], 0);
        app.start_delivery();
        app.settled().await;
        assert_eq!(app.account(&customer).await, account);
        assert_eq!(app.list_all("/payments").await.len(), 2);
        for status in app.get("/ops/subscriptions").await.ok(200).as_array().unwrap() {
            assert_eq!(status["lag"], 0, "{status}");
        }
    }

    async fn a_checkpoint_left_past_the_head_shows_no_negative_lag_and_can_be_rewound(app: crate::support::TestApp) {
        let mut app = app;
        let ada = register(&app, "Ada", "ada@example.com").await;
        app.settled().await;
        app.stop_delivery().await;
        // What a forward rewind used to leave behind.
        let mut tx = app.db("orders").begin().await.unwrap();
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE subscription_checkpoints SET seq = 1000000 WHERE name = 'orders<-customers'")
                .execute(conn)
                .await
                .map(drop)
        })
        .unwrap();
        tx.commit().await.unwrap();
        let stuck = subscription_status(&app, "orders<-customers").await;
        assert_eq!((stuck["checkpoint"].as_i64(), stuck["head_seq"].as_i64(), stuck["lag"].as_i64()), (Some(1_000_000), Some(1), Some(0)), "{stuck}");

        // Rewinding to the head repairs it: the next customer arrives.
        app.post("/ops/subscriptions/orders%3C-customers/rewind", json!({"to_seq": 1})).await.ok(200);
        app.start_delivery();
        let bob = register(&app, "Bob", "bob@example.com").await;
        app.settled().await;
        let ids: Vec<Uuid> = customer_replicas(&app).await.into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&uuid_of(&ada)) && ids.contains(&uuid_of(&bob)));
    }
}
