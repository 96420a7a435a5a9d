//! The HTTP surface: status codes, problem+json for every bad input, nothing stored.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use payments_api::PaymentsApi;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

use crate::support::Env;

struct Client {
    router: Router,
}

impl Client {
    fn new(env: &Env) -> Self {
        let api: Arc<dyn PaymentsApi> = Arc::new(env.payments.clone());
        let (router, _openapi) = payments::router(api).split_for_parts();
        Self { router }
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, String, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Body::from(body.unwrap_or("").to_owned()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, String, Value) {
        self.call(Method::GET, uri, None).await
    }

    /// Asserts a problem+json answer and returns the fields it names.
    #[track_caller]
    fn problem(answer: &(StatusCode, String, Value), status: u16) -> Vec<String> {
        let (code, content_type, body) = answer;
        assert_eq!(code.as_u16(), status, "{body}");
        assert_eq!(content_type, "application/problem+json", "{body}");
        assert_eq!(body["status"], status);
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
        body["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["field"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

shared_kernel::both_backends! {
    async fn accounts_over_http(kind: crate::support::Kind) {
        let env = Env::new(kind, "accounts_over_http").await;
        let client = Client::new(&env);
        let customer = env.customer();
        let path = format!("/payment-accounts/{customer}");

        Client::problem(&client.get(&path).await, 404);
        Client::problem(&client.get("/payment-accounts/not-a-uuid").await, 404);
        Client::problem(&client.call(Method::PUT, "/payment-accounts/not-a-uuid", Some(r#"{"credit_limit_cents": 5}"#)).await, 404);
        let unknown = format!("/payment-accounts/{}", Uuid::now_v7());
        Client::problem(&client.call(Method::PUT, &unknown, Some(r#"{"credit_limit_cents": 5}"#)).await, 404);

        for (body, field) in [
            (r#"{"credit_limit_cents": -1}"#, "credit_limit_cents"),
            (r#"{"credit_limit_cents": 1000000000000001}"#, "credit_limit_cents"),
            (r#"{"credit_limit_cents": 1e30}"#, "credit_limit_cents"),
            (r#"{"credit_limit_cents": "5"}"#, "credit_limit_cents"),
            (r#"{"credit_limit_cents": 5.5}"#, "credit_limit_cents"),
            (r#"{}"#, "credit_limit_cents"),
            (r#"{"credit_limit_cents": 5, "currency": "EUR"}"#, "currency"),
            (r#"[5]"#, "body"),
        ] {
            let answer = client.call(Method::PUT, &path, Some(body)).await;
            assert_eq!(Client::problem(&answer, 422), [field], "{body}");
        }
        Client::problem(&client.call(Method::PUT, &path, Some(r#"{"credit_limit_cents": "#)).await, 400);
        let no_json = client.router.clone().oneshot(
            Request::builder().method(Method::PUT).uri(&path).body(Body::from(r#"{"credit_limit_cents": 5}"#)).unwrap(),
        ).await.unwrap();
        assert_eq!(no_json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // Nothing was stored by any of them.
        Client::problem(&client.get(&path).await, 404);
        assert!(env.payments.account_events(customer).await.is_err());

        let (status, _, body) = client.call(Method::PUT, &path, Some(r#"{"credit_limit_cents": 1000000000000000}"#)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"customer_id": customer, "credit_limit_cents": 1_000_000_000_000_000_i64, "outstanding_cents": 0, "available_cents": 1_000_000_000_000_000_i64, "version": 1}));
        let (status, _, read) = client.get(&path).await;
        assert_eq!((status, read), (StatusCode::OK, body));
    }

    async fn payments_over_http(kind: crate::support::Kind) {
        let env = Env::new(kind, "payments_over_http").await;
        let client = Client::new(&env);
        let (customer, order) = (env.customer(), Uuid::now_v7());
        env.place(order, customer, 42).await;
        env.confirm(order).await;
        let id = env.payment_of(order).await.id;

        let (status, _, list) = client.get(&format!("/payments?order_id={order}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["id"], id.to_string());
        assert_eq!(list["items"][0]["status"], "CAPTURED");
        assert_eq!(list["next"], Value::Null);
        let (_, _, none) = client.get(&format!("/payments?customer_id={}", Uuid::now_v7())).await;
        assert_eq!(none, json!({"items": [], "next": null}));

        let (status, _, at1) = client.get(&format!("/payments/{id}?at_version=1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((at1["status"].as_str(), at1["version"].as_i64()), (Some("AUTHORIZED"), Some(1)));
        let (_, _, events) = client.get(&format!("/payments/{id}/events")).await;
        assert_eq!(events["next"], Value::Null);
        let items = events["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[1]["version"].as_i64(), items[1]["type"].as_str()), (Some(2), Some("PaymentCaptured")));
        assert!(items[0]["occurred_at"].is_string() && items[0]["data"].is_object());
        let as_of = items[0]["occurred_at"].as_str().unwrap();
        let (status, _, then) = client.get(&format!("/payments/{id}?as_of={as_of}")).await;
        assert_eq!((status, then["status"].as_str()), (StatusCode::OK, Some("AUTHORIZED")), "{then}");

        for (query, fields) in [
            ("?limit=0", vec!["limit"]),
            ("?limit=501", vec!["limit"]),
            ("?limit=ten", vec!["limit"]),
            ("?after=%%%", vec!["after"]),
            ("?order_id=123", vec!["order_id"]),
            ("?customer_id=x&limit=-1", vec!["customer_id", "limit"]),
        ] {
            let answer = client.get(&format!("/payments{query}")).await;
            assert_eq!(Client::problem(&answer, 422), fields, "{query}");
        }
        Client::problem(&client.get("/payments?limit=1&limit=2").await, 400);

        for (query, field) in [
            ("at_version=0", "at_version"),
            ("at_version=-3", "at_version"),
            ("at_version=two", "at_version"),
            ("at_version=99999999999999999999", "at_version"),
            ("as_of=yesterday", "as_of"),
            ("as_of=2024-13-01T00:00:00Z", "as_of"),
            ("at_version=1&as_of=2024-01-01T00:00:00Z", "at_version"),
        ] {
            let answer = client.get(&format!("/payments/{id}?{query}")).await;
            assert_eq!(Client::problem(&answer, 422), [field], "{query}");
        }
        let beyond = client.get(&format!("/payments/{id}?at_version=3")).await;
        Client::problem(&beyond, 404);
        assert!(beyond.2["detail"].as_str().unwrap().contains("no version 3"), "{}", beyond.2);
        Client::problem(&client.get(&format!("/payments/{id}?as_of=2000-01-01T00:00:00Z")).await, 404);
        Client::problem(&client.get("/payments/not-a-uuid").await, 404);
        Client::problem(&client.get("/payments/not-a-uuid/events").await, 404);
        Client::problem(&client.get(&format!("/payments/{}", Uuid::now_v7())).await, 404);
        Client::problem(&client.get(&format!("/payments/{}/events", Uuid::now_v7())).await, 404);
        // The account's stream is not reachable as a payment.
        Client::problem(&client.get(&format!("/payments/{customer}/events")).await, 404);
    }
}
