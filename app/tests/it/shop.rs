//! Shop set-up and checks shared by the saga tests: customers, products with stock, orders.

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};

use crate::support::TestApp;

/// Long-poll limit of one wait for a terminal order.
const WAIT_MS: u64 = 30_000;

impl TestApp {
    /// Registers a customer and returns its id.
    pub async fn customer(&self, name: &str) -> String {
        let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
        let answer = self
            .post("/customers", json!({"name": name, "email": email}))
            .await;
        answer.ok(201)["id"].as_str().unwrap().to_owned()
    }

    /// Creates a product with stock per warehouse and returns its id.
    pub async fn product(&self, sku: &str, price_cents: i64, stock: &[(&str, i64)]) -> String {
        let answer = self
            .post(
                "/products",
                json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents}),
            )
            .await;
        let id = answer.ok(201)["id"].as_str().unwrap().to_owned();
        for (warehouse, on_hand) in stock {
            let path = format!("/products/{id}/stock/{warehouse}");
            self.json(Method::PUT, &path, json!({"on_hand": on_hand}))
                .await
                .ok(200);
        }
        id
    }

    /// Places an order (`(product, quantity)` lines); asserts 202 PENDING and returns it.
    pub async fn place(&self, customer: &str, lines: &[(&str, i64)]) -> Value {
        let answer = self.post("/orders", order_body(customer, lines)).await;
        let order = answer.ok(202).clone();
        assert_eq!(order["status"], "PENDING", "{order}");
        order
    }

    /// The order once it is no longer `PENDING` (long poll); fails if it stays pending.
    pub async fn terminal(&self, order_id: &str) -> Value {
        let answer = self
            .get(&format!(
                "/orders/{order_id}?wait=terminal&timeout_ms={WAIT_MS}"
            ))
            .await;
        let order = answer.ok(200).clone();
        assert_ne!(order["status"], "PENDING", "still pending: {order}");
        order
    }

    /// `(on_hand, reserved)` of a product over all warehouses.
    pub async fn stock(&self, product: &str) -> (i64, i64) {
        let answer = self.get(&format!("/products/{product}/availability")).await;
        let body = answer.ok(200);
        (
            body["on_hand"].as_i64().unwrap(),
            body["reserved"].as_i64().unwrap(),
        )
    }

    /// `on_hand` per warehouse of a product.
    pub async fn warehouses(&self, product: &str) -> BTreeMap<String, (i64, i64)> {
        let answer = self.get(&format!("/products/{product}/availability")).await;
        answer.ok(200)["warehouses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["warehouse"].as_str().unwrap().to_owned(),
                    (
                        w["on_hand"].as_i64().unwrap(),
                        w["reserved"].as_i64().unwrap(),
                    ),
                )
            })
            .collect()
    }

    /// The customer's payment account.
    pub async fn account(&self, customer: &str) -> Value {
        let answer = self.get(&format!("/payment-accounts/{customer}")).await;
        answer.ok(200).clone()
    }

    /// Sets a customer's credit limit.
    pub async fn credit_limit(&self, customer: &str, cents: i64) -> Value {
        let answer = self
            .json(
                Method::PUT,
                &format!("/payment-accounts/{customer}"),
                json!({"credit_limit_cents": cents}),
            )
            .await;
        answer.ok(200).clone()
    }

    /// The payment of an order, if payments has seen the order.
    pub async fn payment_of(&self, order_id: &str) -> Option<Value> {
        let answer = self.get(&format!("/payments?order_id={order_id}")).await;
        let items = answer.ok(200)["items"].as_array().unwrap().clone();
        assert!(items.len() <= 1, "one payment per order: {items:?}");
        items.into_iter().next()
    }

    /// The saga of an order.
    pub async fn saga(&self, order_id: &str) -> orders_api::Saga {
        let orders = self.modules.orders.as_ref().unwrap();
        orders
            .saga(orders_api::OrderId(order_id.parse().unwrap()))
            .await
            .unwrap()
    }
}

pub fn order_body(customer: &str, lines: &[(&str, i64)]) -> Value {
    json!({
        "customer_id": customer,
        "items": lines
            .iter()
            .map(|(product, quantity)| json!({"product_id": product, "quantity": quantity}))
            .collect::<Vec<_>>(),
    })
}

/// Names of the saga's steps in order.
pub fn steps(saga: &orders_api::Saga) -> Vec<String> {
    saga.steps.iter().map(|s| s.step.clone()).collect()
}
