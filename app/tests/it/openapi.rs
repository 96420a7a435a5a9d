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

/// The document types every parameter: the ids are UUIDs, every page size an integer from 1
/// to 500, and no parameter is a bare string with no constraint.
#[tokio::test]
async fn every_parameter_is_typed_and_constrained() {
    let app = TestApp::spawn(Kind::Sqlite, "openapi_params")
        .await
        .unwrap();
    let doc = app.get("/openapi.json").await.ok(200).clone();
    let mut limits = 0;
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in parameters(operation) {
                count += 1;
                let name = parameter["name"].as_str().unwrap();
                let schema = &parameter["schema"];
                let place = format!("{method} {path} {name}: {schema}");
                if name == "limit" {
                    limits += 1;
                    assert_eq!(schema["type"], "integer", "{place}");
                    assert_eq!(schema["minimum"], 1, "{place}");
                    assert_eq!(schema["maximum"], 500, "{place}");
                } else if name == "id" || name.ends_with("_id") {
                    assert_eq!(schema["type"], "string", "{place}");
                    assert_eq!(schema["format"], "uuid", "{place}");
                } else if schema["type"] == "string"
                    || schema["type"] == serde_json::json!(["string", "null"])
                {
                    let constrained = ["format", "pattern", "enum", "minLength"]
                        .iter()
                        .any(|key| !schema[key].is_null());
                    assert!(constrained, "an unconstrained string: {place}");
                } else {
                    assert_eq!(schema["type"], "integer", "{place}");
                    assert!(!schema["minimum"].is_null(), "{place}");
                }
            }
        }
    }
    assert_eq!(limits, 6, "every list endpoint has its limit");
    assert!(count >= 40, "only {count} parameters");
}

/// Every operation lists the answers the shared layers give it.
#[tokio::test]
async fn every_operation_lists_the_statuses_it_can_answer() {
    let app = TestApp::spawn(Kind::Sqlite, "openapi_statuses")
        .await
        .unwrap();
    let doc = app.get("/openapi.json").await.ok(200).clone();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let has = |status: &str| responses.contains_key(status);
            let place = format!("{method} {path}");
            if !operation["requestBody"].is_null() {
                for status in ["400", "413", "415", "422"] {
                    assert!(has(status), "{place} lacks {status}");
                }
            }
            if method != "get" {
                assert!(has("403"), "{place} lacks 403");
            }
            let has_id = parameters(operation)
                .any(|p| p["in"] == "path" && p["name"].as_str().unwrap().ends_with("id"));
            if has_id {
                assert!(has("404"), "{place} lacks 404");
            }
            let has_query = parameters(operation).any(|p| p["in"] == "query");
            if has_query {
                assert!(has("400") && has("422"), "{place} lacks 400 or 422");
            }
        }
    }
}

fn parameters(operation: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    operation["parameters"].as_array().into_iter().flatten()
}
