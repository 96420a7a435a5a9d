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

async fn accounts(app: &TestApp) -> Vec<(Uuid, i64)> {
    let reader = app.db("payments").reader().unwrap();
    with_reader!(reader, |pool| {
        sqlx::query_as("SELECT customer_id, credit_limit_cents FROM accounts ORDER BY customer_id")
            .fetch_all(pool)
            .await
    })
    .unwrap()
}

fn uuid_of(value: &Value) -> Uuid {
    value["id"].as_str().unwrap().parse().unwrap()
}

both_backends! {
    async fn a_new_and_renamed_customer_reaches_orders_and_opens_an_account(app) {
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
        assert_eq!(accounts(&app).await, vec![(id, 1_000_000)]);

        let status = app.get("/ops/subscriptions").await;
        let status = status.ok(200).as_array().unwrap().clone();
        let names: Vec<_> = status.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, ["orders<-customers", "orders<-inventory", "payments<-customers"]);
        for subscription in &status {
            assert_eq!(subscription["lag"], 0, "{subscription}");
            assert_eq!(subscription["checkpoint"], subscription["head_seq"]);
            assert_eq!(subscription["head_seq"], 2, "{subscription}");
        }
    }

    async fn events_committed_while_delivery_is_stopped_are_delivered_after_restart(app) {
        let mut app = app;
        app.stop_delivery().await;
        let ada = register(&app, "Ada", "ada@example.com").await;
        // Committed, not delivered: the event waits in the outbox.
        assert!(customer_replicas(&app).await.is_empty());
        let status = app.get("/ops/subscriptions").await;
        assert_eq!(status.ok(200)[0]["lag"], 1);

        app.start_delivery();
        app.settled().await;
        assert_eq!(customer_replicas(&app).await.len(), 1);
        assert_eq!(accounts(&app).await, vec![(uuid_of(&ada), 1_000_000)]);
    }

    async fn rewinding_to_zero_redelivers_without_repeating_effects(app) {
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
        app.json(Method::POST, "/ops/subscriptions/orders%3C-customers/rewind", json!({"to_seq": -1})).await.problem(422);
        app.json(Method::POST, "/ops/subscriptions/orders%3C-customers/rewind", json!({"seq": 0})).await.problem(422);
    }

    async fn a_handler_that_fails_after_writing_rolls_back_and_applies_once_on_retry(app) {
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
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO customer_replicas (customer_id, name, email, source_seq, updated_at) \
                 VALUES ($1, $2, 'test-handler', $3, $4)",
            )
            .bind(marker_id(registered.customer_id.0))
            .bind(&registered.name)
            .bind(event.seq)
            .bind(shared_kernel::clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
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
    let graph = app::arch::check(root).unwrap().graph;
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
}
