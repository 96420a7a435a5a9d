//! `/products…`: catalog, stock levels and availability, as API.md describes them.

use axum::http::Method;
use serde_json::{Value, json};
use shared_kernel::with_tx;

use crate::support::TestApp;

pub async fn create_product(app: &TestApp, sku: &str, price_cents: i64) -> Value {
    app.post(
        "/products",
        json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents}),
    )
    .await
    .ok(201)
    .clone()
}

async fn set_stock(
    app: &TestApp,
    id: &str,
    warehouse: &str,
    on_hand: Value,
) -> crate::support::Answer {
    app.json(
        Method::PUT,
        &format!("/products/{id}/stock/{warehouse}"),
        json!({"on_hand": on_hand}),
    )
    .await
}

fn bad_products() -> Vec<(&'static str, String, u16, &'static str)> {
    let long_sku = "S".repeat(65);
    let long_name = "n".repeat(201);
    vec![
        (
            "sku with a space",
            r#"{"sku": "A 1", "name": "P", "price_cents": 1}"#.into(),
            422,
            "sku",
        ),
        (
            "sku with a slash",
            r#"{"sku": "A/1", "name": "P", "price_cents": 1}"#.into(),
            422,
            "sku",
        ),
        (
            "empty sku",
            r#"{"sku": "", "name": "P", "price_cents": 1}"#.into(),
            422,
            "sku",
        ),
        (
            "name with a right-to-left override",
            r#"{"sku": "A1", "name": "\u202eP", "price_cents": 1}"#.into(),
            422,
            "name",
        ),
        (
            "name of zero-width characters only",
            r#"{"sku": "A1", "name": "\u200b", "price_cents": 1}"#.into(),
            422,
            "name",
        ),
        (
            "over-long sku",
            format!(r#"{{"sku": "{long_sku}", "name": "P", "price_cents": 1}}"#),
            422,
            "sku",
        ),
        (
            "non-ASCII sku",
            r#"{"sku": "SKÜ", "name": "P", "price_cents": 1}"#.into(),
            422,
            "sku",
        ),
        (
            "empty name",
            r#"{"sku": "A1", "name": " ", "price_cents": 1}"#.into(),
            422,
            "name",
        ),
        (
            "over-long name",
            format!(r#"{{"sku": "A1", "name": "{long_name}", "price_cents": 1}}"#),
            422,
            "name",
        ),
        (
            "negative price",
            r#"{"sku": "A1", "name": "P", "price_cents": -1}"#.into(),
            422,
            "price_cents",
        ),
        (
            "price above 10^12",
            r#"{"sku": "A1", "name": "P", "price_cents": 1000000000001}"#.into(),
            422,
            "price_cents",
        ),
        (
            "price beyond i64",
            r#"{"sku": "A1", "name": "P", "price_cents": 99999999999999999999}"#.into(),
            422,
            "price_cents",
        ),
        (
            "fractional price",
            r#"{"sku": "A1", "name": "P", "price_cents": 1.5}"#.into(),
            422,
            "price_cents",
        ),
        (
            "price as string",
            r#"{"sku": "A1", "name": "P", "price_cents": "1"}"#.into(),
            422,
            "price_cents",
        ),
        (
            "missing price",
            r#"{"sku": "A1", "name": "P"}"#.into(),
            422,
            "price_cents",
        ),
        (
            "unknown field",
            r#"{"sku": "A1", "name": "P", "price_cents": 1, "stock": 3}"#.into(),
            422,
            "stock",
        ),
    ]
}

shared_kernel::both_backends! {
    async fn creating_a_product_returns_it_and_it_is_readable_at_once(app: crate::support::TestApp) {
        let product = create_product(&app, "SKU-1.a_b", 1999).await;
        assert_eq!(product["sku"], "SKU-1.a_b");
        assert_eq!(product["price_cents"], 1999);
        let id = product["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/products/{id}")).await.ok(200), &product);
        assert_eq!(app.list_all("/products").await, vec![product.clone()]);
        let bounds = app.post("/products", json!({"sku": "S".repeat(64), "name": "n".repeat(200), "price_cents": 1_000_000_000_000_i64})).await;
        bounds.ok(201);
    }

    async fn a_sku_is_unique(app: crate::support::TestApp) {
        create_product(&app, "A1", 100).await;
        app.post("/products", json!({"sku": "A1", "name": "Again", "price_cents": 5})).await.problem(409);
        assert_eq!(app.list_all("/products").await.len(), 1);
    }

    async fn bad_products_are_refused_and_store_nothing(app: crate::support::TestApp) {
        for (case, body, status, field) in bad_products() {
            let answer = app.raw(Method::POST, "/products", Some("application/json"), body).await;
            assert_eq!(answer.status.as_u16(), status, "{case}: {}", answer.body);
            answer.problem(status);
            assert!(answer.fields().contains(&field.to_owned()), "{case}: {}", answer.body);
        }
        app.raw(Method::POST, "/products", Some("application/json"), "{").await.problem(400);
        app.raw(Method::POST, "/products", Some("text/plain"), "{}").await.problem(415);
        let huge = format!(r#"{{"sku": "A1", "name": "{}", "price_cents": 1}}"#, "x".repeat(1024 * 1024 + 1));
        app.raw(Method::POST, "/products", Some("application/json"), huge).await.problem(413);
        assert!(app.list_all("/products").await.is_empty());
    }

    async fn patching_changes_name_and_price_but_never_the_sku(app: crate::support::TestApp) {
        let product = create_product(&app, "A1", 100).await;
        let path = format!("/products/{}", product["id"].as_str().unwrap());
        let patched = app.json(Method::PATCH, &path, json!({"price_cents": 250})).await;
        let patched = patched.ok(200);
        assert_eq!((patched["price_cents"].clone(), patched["name"].clone()), (json!(250), product["name"].clone()));
        let renamed = app.json(Method::PATCH, &path, json!({"name": " Better "})).await;
        assert_eq!(renamed.ok(200)["name"], "Better");
        app.json(Method::PATCH, &path, json!({"sku": "B2"})).await.problem(422);
        app.json(Method::PATCH, &path, json!({"price_cents": -5})).await.problem(422);
        app.json(Method::PATCH, &path, json!({"price_cents": 1_000_000_000_001_i64})).await.problem(422);
        app.json(Method::PATCH, &path, json!({"name": ""})).await.problem(422);
        let now = app.get(&path).await;
        assert_eq!((now.body["sku"].clone(), now.body["price_cents"].clone(), now.body["name"].clone()), (json!("A1"), json!(250), json!("Better")));
        app.json(Method::PATCH, &format!("/products/{}", uuid::Uuid::now_v7()), json!({"name": "X"})).await.problem(404);
    }

    async fn stock_levels_add_up_in_availability(app: crate::support::TestApp) {
        let product = create_product(&app, "A1", 100).await;
        let id = product["id"].as_str().unwrap();
        let empty = app.get(&format!("/products/{id}/availability")).await;
        assert_eq!(empty.ok(200), &json!({"product_id": id, "on_hand": 0, "reserved": 0, "available": 0, "warehouses": []}));
        let level = set_stock(&app, id, "west", json!(7)).await;
        assert_eq!(level.ok(200), &json!({"product_id": id, "warehouse": "west", "on_hand": 7, "reserved": 0, "available": 7}));
        set_stock(&app, id, "East-1", json!(3)).await.ok(200);
        set_stock(&app, id, "west", json!(5)).await.ok(200);
        let availability = app.get(&format!("/products/{id}/availability")).await;
        let availability = availability.ok(200);
        assert_eq!(availability["on_hand"], 8);
        assert_eq!(availability["available"], 8);
        let names: Vec<_> = availability["warehouses"].as_array().unwrap().iter().map(|w| w["warehouse"].clone()).collect();
        assert_eq!(names, [json!("East-1"), json!("west")]);
    }

    async fn bad_stock_settings_are_refused_and_change_nothing(app: crate::support::TestApp) {
        let product = create_product(&app, "A1", 100).await;
        let id = product["id"].as_str().unwrap();
        set_stock(&app, id, "w1", json!(4)).await.ok(200);
        assert_eq!(set_stock(&app, id, "w1", json!(-1)).await.problem(422)["errors"][0]["field"], "on_hand");
        set_stock(&app, id, "w1", json!(1_000_000_001)).await.problem(422);
        set_stock(&app, id, "w1", json!(1.5)).await.problem(422);
        set_stock(&app, id, "w1", json!("3")).await.problem(422);
        set_stock(&app, id, "bad%20name", json!(1)).await.problem(422);
        set_stock(&app, id, &"w".repeat(65), json!(1)).await.problem(422);
        set_stock(&app, id, "w%2F1", json!(1)).await.problem(422);
        set_stock(&app, &uuid::Uuid::now_v7().to_string(), "w1", json!(1)).await.problem(404);
        set_stock(&app, "nope", "w1", json!(1)).await.problem(404);
        let level = set_stock(&app, id, "w1", json!(1_000_000_000)).await;
        assert_eq!(level.ok(200)["on_hand"], 1_000_000_000);
        let availability = app.get(&format!("/products/{id}/availability")).await;
        assert_eq!(availability.ok(200)["warehouses"].as_array().unwrap().len(), 1);
    }

    async fn on_hand_below_reserved_is_a_conflict(app: crate::support::TestApp) {
        let product = create_product(&app, "A1", 100).await;
        let id = product["id"].as_str().unwrap();
        set_stock(&app, id, "w1", json!(10)).await.ok(200);
        // Reservations arrive with the order saga; hold 6 units the way it will, in the
        // inventory module's own database.
        let db = app.db("inventory").db().unwrap();
        let mut tx = db.begin().await.unwrap();
        with_tx!(&mut tx, |conn| {
            sqlx::query("UPDATE stock_levels SET reserved = 6").execute(conn).await.map(drop)
        })
        .unwrap();
        tx.commit().await.unwrap();
        let conflict = set_stock(&app, id, "w1", json!(5)).await;
        assert!(conflict.problem(409)["detail"].as_str().unwrap().contains("6"));
        let level = set_stock(&app, id, "w1", json!(6)).await;
        assert_eq!(level.ok(200), &json!({"product_id": id, "warehouse": "w1", "on_hand": 6, "reserved": 6, "available": 0}));
    }

    async fn unknown_products_are_not_found(app: crate::support::TestApp) {
        let unknown = uuid::Uuid::now_v7();
        app.get(&format!("/products/{unknown}")).await.problem(404);
        app.get(&format!("/products/{unknown}/availability")).await.problem(404);
        app.get("/products/123/availability").await.problem(404);
        app.get("/products/zzz").await.problem(404);
    }

    async fn a_repeated_idempotency_key_returns_the_original_product(app: crate::support::TestApp) {
        let body = json!({"sku": "A1", "name": "P", "price_cents": 5});
        let first = app.post_with_key("/products", "k", body.clone()).await.ok(201).clone();
        assert_eq!(app.post_with_key("/products", "k", body).await.ok(201), &first);
        app.post_with_key("/products", "k", json!({"sku": "B2", "name": "P", "price_cents": 5})).await.problem(422);
        assert_eq!(app.list_all("/products").await.len(), 1);
    }
}
