//! Mutations a browser sends on behalf of another site are refused (403 problem+json) before
//! any handler runs; same-origin browser requests and clients without those headers pass.

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};

use crate::support::{Answer, TestApp};

/// Where a request comes from, as a browser would say it.
#[derive(Debug, Clone, Copy)]
enum Site {
    /// `Sec-Fetch-Site: cross-site`, no Origin.
    CrossSiteFetch,
    /// An Origin on another port of the same host.
    OtherOrigin,
    /// An opaque origin (sandboxed frame, file: page).
    NullOrigin,
    /// The service's own origin, as a page it served would send.
    SameOrigin,
    /// No browser headers: curl or a service client.
    NoBrowser,
}

impl TestApp {
    async fn from(&self, from: Site, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost:8080");
        request = match from {
            Site::CrossSiteFetch => request.header("sec-fetch-site", "cross-site"),
            Site::OtherOrigin => request
                .header("origin", "http://localhost:3000")
                .header("sec-fetch-site", "same-site"),
            Site::NullOrigin => request.header("origin", "null"),
            Site::SameOrigin => request
                .header("origin", "http://localhost:8080")
                .header("sec-fetch-site", "same-origin"),
            Site::NoBrowser => request,
        };
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }
}

const REFUSED: [Site; 3] = [Site::CrossSiteFetch, Site::OtherOrigin, Site::NullOrigin];

shared_kernel::both_backends! {
    async fn cross_site_mutations_are_refused_and_change_nothing(app: crate::support::TestApp) {
        let customer = app.customer("Ada").await;
        let product = app.product("CS-1", 500, &[("east", 5)]).await;
        let order = app.place(&customer, &[(&product, 1)]).await;
        let order_id = order["id"].as_str().unwrap().to_owned();
        app.terminal(&order_id).await;
        // Every module has applied the saga's events (the stock commit follows the
        // confirmation), so what is read now stays put unless a request changes it.
        app.settled().await;
        let stock = app.stock(&product).await;
        let before = app.get(&format!("/orders/{order_id}")).await.ok(200).clone();
        let subscription = app.get("/ops/subscriptions").await.ok(200)[0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let rewind_path = format!("/ops/subscriptions/{}/rewind", subscription.replace('<', "%3C"));

        for from in REFUSED {
            let attempts: Vec<(Method, String, Option<Value>)> = vec![
                (Method::POST, "/customers".into(), Some(json!({"name": "Eve", "email": "eve@example.com"}))),
                (Method::PATCH, format!("/customers/{customer}"), Some(json!({"name": "Eve"}))),
                (Method::PUT, format!("/products/{product}/stock/east"), Some(json!({"on_hand": 0}))),
                (Method::PUT, format!("/payment-accounts/{customer}"), Some(json!({"credit_limit_cents": 0}))),
                (Method::POST, format!("/orders/{order_id}/cancel"), None),
                (Method::POST, "/ops/projections/order_summaries/rebuild".into(), None),
                (Method::POST, format!("/ops/dead-letters/{}/retry", uuid::Uuid::now_v7()), None),
                (Method::POST, format!("/ops/dead-letters/{}/discard", uuid::Uuid::now_v7()), None),
                (Method::POST, rewind_path.clone(), Some(json!({"to_seq": 0}))),
                (Method::DELETE, "/customers".into(), None),
            ];
            for (method, path, body) in attempts {
                let answer = app.from(from, method.clone(), &path, body).await;
                let problem = answer.problem(403);
                assert_eq!(problem["type"], "/problems/cross-site-request", "{from:?} {method} {path}");
            }
        }

        // Nothing changed.
        assert_eq!(app.list_all("/customers").await.len(), 1);
        assert_eq!(app.get(&format!("/customers/{customer}")).await.ok(200)["name"], "Ada");
        assert_eq!(app.stock(&product).await, stock);
        assert_eq!(app.account(&customer).await["credit_limit_cents"], 1_000_000);
        assert_eq!(app.get(&format!("/orders/{order_id}")).await.ok(200), &before);
        // The refused rebuilds never ran: the first allowed one makes generation 2.
        let rebuilt = app
            .from(Site::NoBrowser, Method::POST, "/ops/projections/order_summaries/rebuild", None)
            .await;
        assert_eq!(rebuilt.ok(200)["generation"], 2);
    }

    async fn same_origin_and_non_browser_mutations_pass(app: crate::support::TestApp) {
        for (from, email) in [(Site::SameOrigin, "same@example.com"), (Site::NoBrowser, "curl@example.com")] {
            let answer = app
                .from(from, Method::POST, "/customers", Some(json!({"name": "Ada", "email": email})))
                .await;
            let id = answer.ok(201)["id"].as_str().unwrap().to_owned();
            app.from(from, Method::PATCH, &format!("/customers/{id}"), Some(json!({"name": "Bea"})))
                .await
                .ok(200);
            // A bodyless mutation reaches its handler: an unknown dead letter is a 404.
            app.from(from, Method::POST, &format!("/ops/dead-letters/{}/retry", uuid::Uuid::now_v7()), None)
                .await
                .problem(404);
        }
        // The page a user opened themselves (`none`) and reads from anywhere pass too.
        let typed = Request::builder()
            .method(Method::POST)
            .uri(format!("/ops/dead-letters/{}/discard", uuid::Uuid::now_v7()))
            .header("sec-fetch-site", "none")
            .body(Body::empty())
            .unwrap();
        app.send(typed).await.problem(404);
        let read = app.from(Site::CrossSiteFetch, Method::GET, "/customers", None).await;
        assert_eq!(read.ok(200)["items"].as_array().unwrap().len(), 2);
    }
}
