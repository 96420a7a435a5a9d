//! The messaging runtime as the shop uses it: its modules' subscriptions (replicas, accounts),
//! the module graph, metrics, trace context from requests, and the HTTP face of the operations
//! endpoints. The runtime itself (retries, dead letters, rewinds, restarts, pruning, two
//! processes, the outbox's numbering) is tested in the kernel, on scratch modules:
//! `shared-kernel/tests/messaging`.

use axum::http::Method;
use serde_json::{Value, json};
use shared_kernel::with_reader;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_appends_handling_lag_and_http_latency() {
    let app = TestApp::spawn(crate::support::Kind::Sqlite, "metrics")
        .await
        .unwrap();
    let ada = register(&app, "Ada", "ada@example.com").await;
    // A rename: payments' subscription skips it (the ignored-events series below).
    let renamed = app
        .json(
            Method::PATCH,
            &format!("/customers/{}", uuid_of(&ada)),
            json!({"name": "Ada King"}),
        )
        .await;
    renamed.ok(200);
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
    async fn the_subscription_endpoints_answer_rewinds_and_waits_over_http(app: crate::support::TestApp) {
        let mut app = app;
        register(&app, "Ada", "ada@example.com").await;
        let settled = app.get("/ops/subscriptions?wait=settled&timeout_ms=30000").await;
        assert!(settled.ok(200).as_array().unwrap().iter().all(|s| s["lag"] == 0), "{}", settled.body);
        assert_eq!(app.get("/ops/subscriptions?wait=soon").await.problem(422)["errors"][0]["field"], "wait");
        assert_eq!(app.get("/ops/subscriptions?wait=settled&timeout_ms=60001").await.problem(422)["errors"][0]["field"], "timeout_ms");

        // A refused rewind is a problem of field `to_seq` naming the checkpoint and the head.
        let path = "/ops/subscriptions/orders%3C-customers/rewind";
        let refused = app.post(path, json!({"to_seq": 1_000_000})).await;
        let detail = refused.problem(422)["detail"].as_str().unwrap().to_owned();
        assert_eq!(refused.fields(), ["to_seq"]);
        assert!(detail.contains("checkpoint 1") && detail.contains("head is 1"), "{detail}");
        app.post(path, json!({"to_seq": -1})).await.problem(422);
        app.post(path, json!({"seq": 0})).await.problem(422);
        app.post("/ops/subscriptions/nope/rewind", json!({"to_seq": 0})).await.problem(404);

        // A rewind answers the subscription's position after it (delivery stopped meanwhile, so
        // that the answer shows the rewound checkpoint); the replica stays as it was.
        app.stop_delivery().await;
        let rewound = app.post(path, json!({"to_seq": 0})).await;
        let rewound = rewound.ok(200);
        assert_eq!(
            (&rewound["name"], &rewound["checkpoint"], &rewound["head_seq"], &rewound["lag"]),
            (&json!("orders<-customers"), &json!(0), &json!(1), &json!(1)),
            "{rewound}"
        );
        app.start_delivery();
        app.settled().await;
        assert_eq!(customer_replicas(&app).await.len(), 1);
    }

    async fn the_dead_letter_endpoints_answer_retries_and_discards_over_http(app: crate::support::TestApp) {
        // payments cannot capture: the OrderConfirmed is parked in its dead letters.
        crate::ops_views::plant_capture_failure(&app).await;
        let customer = app.customer("Dee").await;
        let product = app.product("DL-1", 100, &[("a", 1)]).await;
        let order = app.place(&customer, &[(&product, 1)]).await;
        assert_eq!(app.terminal(order["id"].as_str().unwrap()).await["status"], "CONFIRMED");
        app.settled().await;
        let letters = app.get("/ops/dead-letters").await;
        let parked = letters.ok(200).as_array().unwrap().iter().find(|d| d["status"] == "parked").cloned().unwrap();
        assert_eq!(parked["subscription"], "payments<-orders");
        let id = parked["id"].as_str().unwrap();

        // Still failing: 409, and the letter stays parked with one more attempt.
        let again = app.post(&format!("/ops/dead-letters/{id}/retry"), json!({})).await;
        assert!(again.problem(409)["detail"].as_str().unwrap().contains("planted capture failure"), "{}", again.body);
        app.post(&format!("/ops/dead-letters/{}/retry", Uuid::now_v7()), json!({})).await.problem(404);
        app.post("/ops/dead-letters/not-an-id/discard", json!({})).await.problem(404);

        let discarded = app.post(&format!("/ops/dead-letters/{id}/discard"), json!({})).await;
        let discarded = discarded.ok(200);
        assert_eq!((&discarded["status"], &discarded["attempts"]), (&json!("discarded"), &json!(parked["attempts"].as_i64().unwrap() + 1)), "{discarded}");
        // Only a parked letter can be retried or discarded.
        app.post(&format!("/ops/dead-letters/{id}/discard"), json!({})).await.problem(409);
        app.post(&format!("/ops/dead-letters/{id}/retry"), json!({})).await.problem(409);
    }
}
