//! Requests axum itself would refuse in plain text — a query parameter given twice, a path
//! segment that is not UTF-8 — are problems like every other error of the API.

use axum::http::Method;
use serde_json::json;

use crate::support::{Kind, TestApp};

#[tokio::test]
async fn a_repeated_query_parameter_is_a_400_problem_everywhere() {
    let app = TestApp::spawn(Kind::Sqlite, "repeated_query")
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    for path in [
        "/customers?limit=1&limit=2".to_owned(),
        "/products?limit=1&limit=2".to_owned(),
        "/orders?limit=1&limit=2".to_owned(),
        format!("/orders/{id}?timeout_ms=1&timeout_ms=2"),
        "/order-summaries?limit=1&limit=2".to_owned(),
        "/payments?limit=1&limit=2".to_owned(),
        format!("/payments/{id}?at_version=1&at_version=2"),
        "/ops/subscriptions?wait=settled&wait=settled".to_owned(),
        "/ops/sagas?limit=1&limit=2".to_owned(),
    ] {
        let answer = app.get(&path).await;
        let problem = answer.problem(400);
        assert!(
            problem["detail"].as_str().unwrap().contains("duplicate"),
            "{path}: {problem}"
        );
    }
}

/// A parameter whose value cannot be read (here a percent-escape that is not UTF-8) is an
/// invalid field like any other (API.md): 422, `errors` naming the parameter.
#[tokio::test]
async fn a_malformed_query_parameter_is_a_422_problem_naming_it_everywhere() {
    let app = TestApp::spawn(Kind::Sqlite, "malformed_query")
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    for (path, parameter) in [
        ("/customers".to_owned(), "limit"),
        ("/products".to_owned(), "limit"),
        ("/orders".to_owned(), "status"),
        (format!("/orders/{id}"), "timeout_ms"),
        ("/order-summaries".to_owned(), "status"),
        ("/payments".to_owned(), "order_id"),
        (format!("/payments/{id}"), "at_version"),
        ("/ops/subscriptions".to_owned(), "wait"),
        ("/ops/sagas".to_owned(), "limit"),
    ] {
        let answer = app.get(&format!("{path}?{parameter}=%ff")).await;
        let problem = answer.problem(422);
        assert_eq!(
            problem["errors"][0]["field"], parameter,
            "{path}: {problem}"
        );
    }
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_problem() {
    let app = TestApp::spawn(Kind::Sqlite, "utf8_path").await.unwrap();
    // Where a UUID is expected, it names no resource: 404.
    for path in [
        "/customers/%ff",
        "/products/%ff",
        "/products/%ff/availability",
        "/reservations/%ff",
        "/orders/%ff",
        "/orders/%ff/details",
        "/payment-accounts/%ff",
        "/payments/%ff",
        "/payments/%ff/events",
        "/ops/sagas/%ff",
        "/ops/timeline/%ff",
    ] {
        app.get(path).await.problem(404);
    }
    for path in [
        "/orders/%ff/cancel",
        "/ops/dead-letters/%ff/retry",
        "/ops/dead-letters/%ff/discard",
    ] {
        app.raw(Method::POST, path, None, "").await.problem(404);
    }
    // Elsewhere, a malformed request: 400.
    let product = uuid::Uuid::now_v7();
    let stock = app
        .json(
            Method::PUT,
            &format!("/products/{product}/stock/%ff"),
            json!({"on_hand": 1}),
        )
        .await;
    stock.problem(400);
    app.post("/ops/subscriptions/%ff/rewind", json!({"to_seq": 0}))
        .await
        .problem(400);
    app.raw(Method::POST, "/ops/projections/%ff/rebuild", None, "")
        .await
        .problem(400);
}
