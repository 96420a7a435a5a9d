//! `/openapi.json` documents every endpoint, and the unknown is a problem too.

use axum::http::Method;

use crate::support::{Kind, TestApp};

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() {
    let app = TestApp::spawn(Kind::Sqlite, "openapi").await.unwrap();
    let answer = app.get("/openapi.json").await;
    let doc = answer.ok(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/customers", "post"),
        ("/customers", "get"),
        ("/customers/{id}", "get"),
        ("/customers/{id}", "patch"),
        ("/products", "post"),
        ("/products", "get"),
        ("/products/{id}", "get"),
        ("/products/{id}", "patch"),
        ("/products/{id}/stock/{warehouse}", "put"),
        ("/products/{id}/availability", "get"),
        ("/orders/{id}/details", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/ops/modules", "get"),
        ("/ops/subscriptions", "get"),
        ("/ops/subscriptions/{name}/rewind", "post"),
        ("/ops/dead-letters", "get"),
        ("/ops/dead-letters/{id}/retry", "post"),
        ("/ops/dead-letters/{id}/discard", "post"),
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{id}", "get"),
        ("/orders/{id}/cancel", "post"),
        ("/payment-accounts/{customer_id}", "put"),
        ("/payment-accounts/{customer_id}", "get"),
        ("/payments", "get"),
        ("/payments/{id}", "get"),
        ("/payments/{id}/events", "get"),
        ("/reservations/{order_id}", "get"),
        ("/ops/sagas", "get"),
        ("/ops/sagas/{order_id}", "get"),
        ("/ops/timeline/{order_id}", "get"),
        ("/ops/reconciliation", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing"
        );
    }
    insta::assert_json_snapshot!("openapi", doc);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = TestApp::spawn(Kind::Sqlite, "routes").await.unwrap();
    app.get("/nowhere").await.problem(404);
    app.raw(Method::DELETE, "/customers", None, "")
        .await
        .problem(405);
    let health = app.get("/health").await;
    assert_eq!(health.ok(200), &serde_json::json!({"status": "ok"}));
    assert!(health.headers.contains_key("x-request-id"));
}
