//! `/ready` names a module whose database is unavailable while the others keep serving, and
//! the module comes back without a restart.

use std::time::Duration;

use serde_json::json;

use crate::support::{Kind, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_module_whose_file_cannot_be_opened_is_down_alone_and_recovers() {
    let data_dir = tempfile::tempdir().unwrap();
    // A directory where inventory's database file belongs: the file cannot be opened.
    let blocker = data_dir.path().join("inventory.sqlite");
    std::fs::create_dir_all(&blocker).unwrap();
    let settings = TestApp::settings(Kind::Sqlite, data_dir.path(), None);
    let app = TestApp::build(Kind::Sqlite, settings, data_dir, None).await;

    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body,
        json!({"modules": {"customers": "up", "inventory": "down", "orders": "up", "payments": "up"}})
    );
    // The other modules serve; the down one answers 503 problem+json.
    crate::customers::register(&app, "Ada", "ada@example.com").await;
    app.get("/products").await.problem(503);
    // Metrics still answer, and say which subscriptions cannot be read.
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("bounded_subscription_up{subscription=\"inventory<-orders\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("bounded_subscription_up{subscription=\"orders<-customers\"} 1"),
        "{text}"
    );
    app.post(
        "/products",
        json!({"sku": "A1", "name": "P", "price_cents": 1}),
    )
    .await
    .problem(503);

    std::fs::remove_dir(&blocker).unwrap();
    tokio::time::timeout(Duration::from_secs(30), app.db("inventory").opened())
        .await
        .expect("inventory reopened within 30 s");
    assert_eq!(app.get("/ready").await.status, 200);
    crate::inventory::create_product(&app, "A1", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_module_locked_out_at_run_time_is_down_alone_and_recovers() {
    let Some(app) = TestApp::spawn(Kind::Postgres, "readiness").await else {
        return;
    };
    assert_eq!(app.get("/ready").await.status, 200);
    let product = crate::inventory::create_product(&app, "A1", 100).await;

    // Take inventory's database away from it: no right to connect, sessions ended.
    let database = app.database.as_ref().unwrap();
    let admin = admin(database.url()).await;
    let lock_out = format!(
        "REVOKE CONNECT ON DATABASE {db} FROM PUBLIC; REVOKE CONNECT ON DATABASE {db} FROM bounded_inventory; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'bounded_inventory' AND datname = '{db}'",
        db = database.name()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock_out))
        .execute(&admin)
        .await
        .unwrap();

    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["modules"]["inventory"], "down");
    assert_eq!(ready.body["modules"]["customers"], "up");
    crate::customers::register(&app, "Ada", "ada@example.com").await;
    let id = product["id"].as_str().unwrap();
    app.get(&format!("/products/{id}")).await.problem(503);
    assert_eq!(
        app.get("/metrics").await.status,
        200,
        "metrics survive a module outage"
    );

    let let_in = format!(
        "GRANT CONNECT ON DATABASE {} TO bounded_inventory",
        database.name()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(let_in))
        .execute(&admin)
        .await
        .unwrap();
    assert_eq!(app.get("/ready").await.status, 200);
    assert_eq!(app.get(&format!("/products/{id}")).await.ok(200), &product);
    admin.close().await;
}

async fn admin(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap()
}
