//! `GET /orders/{id}/details` (API composition) over the real modules: a settled order with
//! everything, 404s, and a module whose database goes away: `/ready` names it, the details
//! name it in `degraded`, the other modules keep serving, and all recovers without a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Kind, TestApp};

/// A customer, a product with 10 units, and a confirmed order of 2 of them, settled (payment
/// captured, stock committed). Returns (customer, product, order).
async fn confirmed_order(app: &TestApp) -> (String, String, Value) {
    let customer = app.customer("Dee Tails").await;
    let product = app.product("DET-1", 250, &[("main", 10)]).await;
    let order = app.place(&customer, &[(&product, 2)]).await;
    let order = app.terminal(order["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    app.settled().await;
    (customer, product, order)
}

/// Whether a line of the Prometheus text starts with `metric` and has every label.
fn has_line(text: &str, metric: &str, labels: &[&str]) -> bool {
    text.lines()
        .any(|line| line.starts_with(metric) && labels.iter().all(|label| line.contains(label)))
}

async fn details(app: &TestApp, order: &Value) -> Value {
    let id = order["id"].as_str().unwrap();
    app.get(&format!("/orders/{id}/details"))
        .await
        .ok(200)
        .clone()
}

shared_kernel::both_backends! {
    async fn a_confirmed_order_has_every_part(app: crate::support::TestApp) {
        let (customer, product, order) = confirmed_order(&app).await;
        let details = details(&app, &order).await;
        assert_eq!(details["order"], order);
        assert_eq!(details["customer"]["id"], customer.as_str());
        assert_eq!(details["customer"]["name"], "Dee Tails");
        assert_eq!(
            details["items"],
            json!([{"product_id": product, "name": "Product DET-1", "quantity": 2, "available": 8}])
        );
        assert_eq!(details["payment"]["status"], "CAPTURED");
        assert_eq!(details["payment"]["order_id"], order["id"]);
        assert_eq!(details["payment"]["amount_cents"], 500);
        assert_eq!(details["degraded"], json!([]));

        let metrics = app.get("/metrics").await;
        let text = metrics.body.as_str().unwrap();
        for module in ["orders", "customers", "inventory", "payments"] {
            assert!(has_line(text, "bounded_composition_call_seconds_count", &[&format!("module=\"{module}\""), "outcome=\"ok\""]), "{module}");
            assert!(has_line(text, "bounded_circuit_breaker_state", &[&format!("module=\"{module}\"")]), "{module}");
        }
    }

    async fn unknown_and_malformed_order_ids_are_404(app: crate::support::TestApp) {
        let unknown = uuid::Uuid::now_v7();
        app.get(&format!("/orders/{unknown}/details")).await.problem(404);
        app.get("/orders/not-a-uuid/details").await.problem(404);
    }
}

/// On SQLite a module's database is taken away by putting a directory where its file
/// belongs: payments cannot open it, and keeps retrying in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_payments_down_degrades_the_details_alone_and_recovers() {
    let data_dir = tempfile::tempdir().unwrap();
    let blocker = data_dir.path().join("payments.sqlite");
    std::fs::create_dir_all(&blocker).unwrap();
    let settings = TestApp::settings(Kind::Sqlite, data_dir.path(), None);
    let app = TestApp::build(Kind::Sqlite, settings, data_dir, None).await;

    let customer = app.customer("Dee Tails").await;
    let product = app.product("DET-1", 250, &[("main", 10)]).await;
    let order = app.place(&customer, &[(&product, 2)]).await;

    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["modules"]["payments"], "down");
    let down = details(&app, &order).await;
    assert_eq!(down["degraded"], json!(["payments"]), "{down}");
    assert_eq!(down["payment"], Value::Null);
    assert_eq!(down["customer"]["id"], customer.as_str());
    // 10, or 8 once inventory has reserved the order's units.
    assert!(down["items"][0]["available"].is_i64(), "{down}");
    // The other modules keep serving; payments answers 503.
    app.get(&format!("/customers/{customer}")).await.ok(200);
    app.get(&format!("/products/{product}/availability"))
        .await
        .ok(200);
    app.get(&format!("/orders/{}", order["id"].as_str().unwrap()))
        .await
        .ok(200);
    app.get("/payments").await.problem(503);

    std::fs::remove_dir(&blocker).unwrap();
    tokio::time::timeout(Duration::from_secs(30), app.db("payments").opened())
        .await
        .expect("payments reopened within 30 s");
    assert_eq!(app.get("/ready").await.status, 200);
    // The saga goes on where it stood: payments authorizes, the order is confirmed.
    let order = app.terminal(order["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    app.settled().await;
    let up = details(&app, &order).await;
    assert_eq!(up["degraded"], json!([]), "{up}");
    assert_eq!(up["payment"]["status"], "CAPTURED");
    let metrics = app.get("/metrics").await;
    assert!(has_line(
        metrics.body.as_str().unwrap(),
        "bounded_composition_degraded_total",
        &["module=\"payments\"", "reason=\"error\""]
    ));
}

/// On Postgres a module loses its database at run time: its login role may no longer connect
/// and its sessions are ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_modules_locked_out_at_run_time_degrade_the_details_and_recover() {
    let Some(app) = TestApp::spawn(Kind::Postgres, "details_down").await else {
        return;
    };
    let (customer, _, order) = confirmed_order(&app).await;
    let order_id = order["id"].as_str().unwrap();
    let database = app.database.as_ref().unwrap();
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database.url())
        .await
        .unwrap();
    let db = database.name();

    for module in ["inventory", "payments"] {
        let role = format!("bounded_{module}");
        let lock_out = format!(
            "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; REVOKE CONNECT ON DATABASE {db} FROM {role}; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}' AND datname = '{db}'"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(lock_out))
            .execute(&admin)
            .await
            .unwrap();

        let ready = app.get("/ready").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.body["modules"][module], "down");
        assert_eq!(ready.body["modules"]["orders"], "up");
        let down = details(&app, &order).await;
        assert_eq!(down["degraded"], json!([module]), "{down}");
        assert_eq!(down["order"]["id"], order_id);
        assert_eq!(down["customer"]["id"], customer.as_str());
        match module {
            "inventory" => {
                assert_eq!(down["items"][0]["available"], Value::Null);
                assert_eq!(down["items"][0]["name"], "Product DET-1");
                assert_eq!(down["payment"]["status"], "CAPTURED");
            }
            _ => {
                assert_eq!(down["payment"], Value::Null);
                assert_eq!(down["items"][0]["available"], 8);
            }
        }
        // The other modules keep serving.
        app.get(&format!("/customers/{customer}")).await.ok(200);
        app.get(&format!("/orders/{order_id}")).await.ok(200);

        let let_in = format!("GRANT CONNECT ON DATABASE {db} TO {role}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(let_in))
            .execute(&admin)
            .await
            .unwrap();
        assert_eq!(app.get("/ready").await.status, 200);
        let up = details(&app, &order).await;
        assert_eq!(up["degraded"], json!([]), "{up}");
        assert_eq!(up["items"][0]["available"], 8);
        assert_eq!(up["payment"]["status"], "CAPTURED");
    }
    admin.close().await;
}
