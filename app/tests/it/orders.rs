//! `/orders`, as API.md describes it: placement, validation, reads, lists, idempotency.

use axum::http::Method;
use futures::future::join_all;
use serde_json::json;

use crate::shop::order_body;

/// Bodies of `POST /orders` that must be refused: (case, body, status, field named).
fn bad_orders(customer: &str, product: &str) -> Vec<(&'static str, String, u16, Option<String>)> {
    let line = |q: i64| json!({"product_id": product, "quantity": q});
    let body =
        |items: serde_json::Value| json!({"customer_id": customer, "items": items}).to_string();
    let many: Vec<_> = (0..101)
        .map(|_| json!({"product_id": uuid::Uuid::now_v7(), "quantity": 1}))
        .collect();
    vec![
        ("malformed JSON", r#"{"customer_id": "#.into(), 400, None),
        ("not an object", "[]".into(), 422, Some("body".into())),
        ("no items", body(json!([])), 422, Some("items".into())),
        ("101 lines", body(json!(many)), 422, Some("items".into())),
        (
            "quantity 0",
            body(json!([line(0)])),
            422,
            Some("items[0].quantity".into()),
        ),
        (
            "quantity 10 001",
            body(json!([line(10_001)])),
            422,
            Some("items[0].quantity".into()),
        ),
        (
            "negative quantity",
            body(json!([line(-1)])),
            422,
            Some("items[0].quantity".into()),
        ),
        (
            "fractional quantity",
            body(json!([{"product_id": product, "quantity": 1.5}])),
            422,
            Some("items[0].quantity".into()),
        ),
        (
            "huge quantity",
            body(json!([{"product_id": product, "quantity": 1e30}])),
            422,
            Some("items[0].quantity".into()),
        ),
        (
            "product twice",
            body(json!([line(1), line(2)])),
            422,
            Some("items[1].product_id".into()),
        ),
        (
            "malformed product id",
            body(json!([{"product_id": "nope", "quantity": 1}])),
            422,
            Some("items[0].product_id".into()),
        ),
        (
            "unknown product",
            body(json!([{"product_id": uuid::Uuid::now_v7(), "quantity": 1}])),
            422,
            Some("items[0].product_id".into()),
        ),
        (
            "malformed customer id",
            json!({"customer_id": "x", "items": [line(1)]}).to_string(),
            422,
            Some("customer_id".into()),
        ),
        (
            "unknown customer",
            json!({"customer_id": uuid::Uuid::now_v7(), "items": [line(1)]}).to_string(),
            422,
            Some("customer_id".into()),
        ),
        (
            "missing customer",
            json!({"items": [line(1)]}).to_string(),
            422,
            Some("customer_id".into()),
        ),
        (
            "unknown field",
            json!({"customer_id": customer, "items": [line(1)], "coupon": "X"}).to_string(),
            422,
            Some("coupon".into()),
        ),
        (
            "unknown line field",
            body(json!([{"product_id": product, "quantity": 1, "price_cents": 1}])),
            422,
            Some("items[0].price_cents".into()),
        ),
    ]
}

shared_kernel::both_backends! {
    async fn bad_orders_are_refused_with_the_field_and_store_nothing(app: crate::support::TestApp) {
        let customer = app.customer("Val Idate").await;
        let product = app.product("VAL-1", 100, &[("a", 5)]).await;
        for (case, body, status, field) in bad_orders(&customer, &product) {
            let answer = app.raw(Method::POST, "/orders", Some("application/json"), body).await;
            answer.problem(status);
            if let Some(field) = field {
                assert_eq!(answer.fields(), [field], "{case}: {}", answer.body);
            }
        }
        let wrong_type = app.raw(Method::POST, "/orders", Some("text/plain"), order_body(&customer, &[(&product, 1)]).to_string()).await;
        wrong_type.problem(415);
        let huge = app.raw(Method::POST, "/orders", Some("application/json"), vec![b' '; 1024 * 1024 + 1]).await;
        huge.problem(413);
        assert!(app.list_all("/orders").await.is_empty(), "nothing was stored");
        app.settled().await;
        assert_eq!(app.stock(&product).await, (5, 0));
    }

    async fn a_placed_order_is_readable_at_once_with_catalog_data_copied(app: crate::support::TestApp) {
        let customer = app.customer("Reader").await;
        let a = app.product("COPY-A", 250, &[("a", 10)]).await;
        let b = app.product("COPY-B", 1_000, &[("a", 10)]).await;
        let placed = app.place(&customer, &[(&a, 2), (&b, 1)]).await;
        let id = placed["id"].as_str().unwrap();
        let read = app.get(&format!("/orders/{id}")).await;
        assert_eq!(read.ok(200)["id"], placed["id"], "read-your-writes");
        assert_eq!(placed["total_cents"], 1_500);
        assert_eq!(placed["customer_id"], customer.as_str());
        let items = placed["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0]["sku"].as_str(), items[0]["name"].as_str(), items[0]["unit_price_cents"].as_i64(), items[0]["line_total_cents"].as_i64()), (Some("COPY-A"), Some("Product COPY-A"), Some(250), Some(500)));
        // Later catalog changes do not touch the order.
        app.json(Method::PATCH, &format!("/products/{a}"), json!({"name": "Renamed", "price_cents": 999})).await.ok(200);
        let after = app.terminal(id).await;
        assert_eq!(after["items"][0]["name"], "Product COPY-A");
        assert_eq!(after["items"][0]["unit_price_cents"], 250);
        assert_eq!(after["total_cents"], 1_500);
    }

    async fn order_reads_and_lists_validate_their_parameters(app: crate::support::TestApp) {
        app.get("/orders/not-a-uuid").await.problem(404);
        app.get(&format!("/orders/{}", uuid::Uuid::now_v7())).await.problem(404);
        app.get(&format!("/orders/{}?wait=terminal", uuid::Uuid::now_v7())).await.problem(404);
        let customer = app.customer("Lister").await;
        let other = app.customer("Other Lister").await;
        let product = app.product("LIST-1", 100, &[("a", 2)]).await;
        let first = app.place(&customer, &[(&product, 1)]).await;
        let id = first["id"].as_str().unwrap();
        for (query, field) in [
            ("wait=soon", "wait"),
            ("wait=terminal&timeout_ms=30001", "timeout_ms"),
            ("wait=terminal&timeout_ms=-1", "timeout_ms"),
        ] {
            let answer = app.get(&format!("/orders/{id}?{query}")).await;
            answer.problem(422);
            assert_eq!(answer.fields(), [field], "{query}");
        }
        // A zero timeout answers at once, whatever the status.
        app.get(&format!("/orders/{id}?wait=terminal&timeout_ms=0")).await.ok(200);

        app.terminal(id).await;
        let second = app.place(&customer, &[(&product, 1)]).await;
        let third = app.place(&other, &[(&product, 1)]).await;
        for order in [&second, &third] {
            app.terminal(order["id"].as_str().unwrap()).await;
        }
        let all = app.list_all("/orders").await;
        assert_eq!(all.len(), 3);
        let ids: Vec<_> = all.iter().map(|o| o["id"].clone()).collect();
        assert_eq!(ids, [first["id"].clone(), second["id"].clone(), third["id"].clone()], "placement order");
        let mine = app.get(&format!("/orders?customer_id={customer}")).await;
        assert_eq!(mine.ok(200)["items"].as_array().unwrap().len(), 2);
        // Two units for three orders: the third is out of stock.
        let rejected = app.get("/orders?status=REJECTED").await;
        let rejected = rejected.ok(200)["items"].as_array().unwrap().clone();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0]["id"], third["id"]);
        let page = app.get("/orders?limit=2").await;
        let page = page.ok(200);
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        let next = page["next"].as_str().unwrap();
        let rest = app.get(&format!("/orders?limit=2&after={next}")).await;
        assert_eq!(rest.ok(200)["items"][0]["id"], third["id"]);
        for (query, field) in [
            ("status=SHIPPED", "status"),
            ("status=pending", "status"),
            ("customer_id=42", "customer_id"),
            ("limit=0", "limit"),
            ("after=garbage", "after"),
        ] {
            let answer = app.get(&format!("/orders?{query}")).await;
            answer.problem(422);
            assert_eq!(answer.fields(), [field], "{query}");
        }
    }

    async fn a_repeated_idempotency_key_returns_the_original_order(app: crate::support::TestApp) {
        let customer = app.customer("Repeat").await;
        let product = app.product("IDEM-1", 100, &[("a", 100)]).await;
        let body = order_body(&customer, &[(&product, 1)]);
        let first = app.post_with_key("/orders", "order-1", body.clone()).await;
        let first = first.ok(202).clone();
        let again = app.post_with_key("/orders", "order-1", body.clone()).await;
        assert_eq!(again.ok(202), &first, "same status and body");
        let other = app.post_with_key("/orders", "order-1", order_body(&customer, &[(&product, 2)])).await;
        other.problem(422);
        // Concurrent first uses of one key place one order.
        let racing = join_all((0..8).map(|_| app.post_with_key("/orders", "order-2", body.clone()))).await;
        let ids: std::collections::BTreeSet<String> = racing.iter().map(|a| a.ok(202)["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 1);
        assert_eq!(app.list_all("/orders").await.len(), 2);
        app.settled().await;
        assert_eq!(app.stock(&product).await, (98, 0));
    }
}
