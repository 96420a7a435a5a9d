//! `/ops/sagas`, `/ops/timeline/{order_id}`, `/ops/reconciliation` and `bounded reconcile`:
//! views across modules, gathered through their APIs and event logs.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Value, json};
use shared_kernel::storage::Backend;
use shared_kernel::with_tx;

use crate::shop::steps;
use crate::support::TestApp;

/// Event names of a timeline, in its order.
fn names(timeline: &[Value]) -> Vec<String> {
    timeline
        .iter()
        .map(|e| {
            e["event"]
                .as_str()
                .unwrap()
                .trim_end_matches("@1")
                .to_owned()
        })
        .collect()
}

/// Every event's cause, when it is in the timeline, comes before it.
fn assert_causal(timeline: &[Value]) {
    let position: HashMap<&str, usize> = timeline
        .iter()
        .enumerate()
        .map(|(i, e)| (e["id"].as_str().unwrap(), i))
        .collect();
    for (i, event) in timeline.iter().enumerate() {
        if let Some(cause) = event["causation_id"].as_str().and_then(|c| position.get(c)) {
            assert!(*cause < i, "{event} comes before its cause");
        }
    }
}

async fn timeline(app: &TestApp, order: &str) -> Vec<Value> {
    let answer = app.get(&format!("/ops/timeline/{order}")).await;
    answer.ok(200).as_array().unwrap().clone()
}

/// Makes payments fail to capture (a trigger in payments' own database), as a bug or a broken
/// disk would: the capture is retried, then parked in dead letters.
pub(crate) async fn plant_capture_failure(app: &TestApp) {
    let mut tx = app.db("payments").begin().await.unwrap();
    if tx.is_postgres() {
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "CREATE FUNCTION planted_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.event_type = 'PaymentCaptured' THEN \
                   RAISE EXCEPTION 'planted capture failure'; END IF; RETURN NEW; END $$",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER planted_capture_failure BEFORE INSERT ON events \
                 FOR EACH ROW EXECUTE FUNCTION planted_failure()",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
        });
    } else {
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "CREATE TRIGGER planted_capture_failure BEFORE INSERT ON events \
                 WHEN NEW.event_type = 'PaymentCaptured' \
                 BEGIN SELECT RAISE(ABORT, 'planted capture failure'); END",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
        });
    }
    tx.commit().await.unwrap();
}

async fn remove_capture_failure(app: &TestApp) {
    let mut tx = app.db("payments").begin().await.unwrap();
    let sql = if tx.is_postgres() {
        "DROP TRIGGER planted_capture_failure ON events"
    } else {
        "DROP TRIGGER planted_capture_failure"
    };
    with_tx!(&mut tx, |conn| sqlx::query(sql)
        .execute(conn)
        .await
        .map(drop)
        .unwrap());
    tx.commit().await.unwrap();
}

shared_kernel::both_backends! {
    async fn sagas_are_listed_with_state_deadline_and_history(app: crate::support::TestApp) {
        let mut app = app;
        let customer = app.customer("Sage").await;
        let product = app.product("SAGA-1", 100, &[("a", 1)]).await;
        let confirmed = app.place(&customer, &[(&product, 1)]).await;
        let confirmed = confirmed["id"].as_str().unwrap().to_owned();
        app.terminal(&confirmed).await;
        app.settled().await;
        app.stop_delivery().await;
        let pending = app.place(&customer, &[(&product, 1)]).await;
        let pending = pending["id"].as_str().unwrap().to_owned();

        let open = app.get("/ops/sagas?status=PENDING").await;
        let open = open.ok(200)["items"].as_array().unwrap().clone();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0]["order_id"], pending.as_str());
        assert_eq!((open[0]["stock"].as_str(), open[0]["payment"].as_str()), (Some("waiting"), Some("waiting")));
        assert!(open[0]["deadline"].is_string());
        let all = app.get("/ops/sagas").await;
        assert_eq!(all.ok(200)["items"].as_array().unwrap().len(), 2);
        let one = app.get(&format!("/ops/sagas/{confirmed}")).await;
        let one = one.ok(200);
        assert_eq!(one["status"], "CONFIRMED");
        let history: Vec<&str> = one["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(history.first(), Some(&"placed"));
        assert_eq!(history.last(), Some(&"confirmed"));
        assert_eq!(history.len(), 4);

        app.get("/ops/sagas/nope").await.problem(404);
        app.get(&format!("/ops/sagas/{}", uuid::Uuid::now_v7())).await.problem(404);
        let bad = app.get("/ops/sagas?status=OPEN&limit=0").await;
        bad.problem(422);
        assert_eq!(bad.fields(), ["limit", "status"]);
        app.start_delivery();
        app.settled().await;
    }

    async fn timelines_show_every_module_s_events_about_an_order_in_causal_order(app: crate::support::TestApp) {
        let customer = app.customer("Tim").await;
        let product = app.product("TL-1", 250, &[("a", 3)]).await;

        let confirmed = app.place(&customer, &[(&product, 2)]).await;
        let confirmed = confirmed["id"].as_str().unwrap().to_owned();
        app.terminal(&confirmed).await;
        app.settled().await;
        let events = timeline(&app, &confirmed).await;
        assert_causal(&events);
        let mut seen = names(&events);
        assert_eq!(seen[0], "orders.OrderPlaced");
        assert_eq!(seen.len(), 6, "{seen:?}");
        seen.sort();
        assert_eq!(seen, ["inventory.StockCommitted", "inventory.StockReserved", "orders.OrderConfirmed", "orders.OrderPlaced", "payments.PaymentAuthorized", "payments.PaymentCaptured"]);
        // One flow: every event shares the placement's correlation id.
        let correlation = &events[0]["correlation_id"];
        assert!(correlation.is_string());
        assert!(events.iter().all(|e| &e["correlation_id"] == correlation), "{events:?}");
        assert!(events.iter().skip(1).all(|e| e["causation_id"].is_string()));

        let rejected = app.place(&customer, &[(&product, 5)]).await;
        let rejected = rejected["id"].as_str().unwrap().to_owned();
        app.terminal(&rejected).await;
        app.settled().await;
        let events = timeline(&app, &rejected).await;
        assert_causal(&events);
        let seen = names(&events);
        assert!(seen.contains(&"inventory.StockReservationFailed".to_owned()), "{seen:?}");
        assert!(seen.contains(&"orders.OrderRejected".to_owned()), "{seen:?}");
        assert!(!seen.iter().any(|e| e.starts_with("inventory.StockReserved")), "{seen:?}");

        app.post(&format!("/orders/{confirmed}/cancel"), json!({})).await.ok(202);
        app.settled().await;
        let events = timeline(&app, &confirmed).await;
        assert_causal(&events);
        let seen = names(&events);
        assert_eq!(seen[seen.len() - 3], "orders.OrderCancelled", "the cancel comes before its effects: {seen:?}");
        for expected in ["orders.OrderCancelled", "inventory.StockRestocked", "payments.PaymentRefunded"] {
            assert!(seen.contains(&expected.to_owned()), "{seen:?}");
        }
        // The cancel is a new flow, caused by its own request.
        let cancel = events.iter().find(|e| e["event"] == "orders.OrderCancelled@1").unwrap();
        assert_ne!(cancel["correlation_id"], events[0]["correlation_id"]);

        app.get(&format!("/ops/timeline/{}", uuid::Uuid::now_v7())).await.problem(404);
        app.get("/ops/timeline/x").await.problem(404);
    }

    async fn reconciliation_is_clean_on_a_healthy_run_and_reports_a_parked_capture(app: crate::support::TestApp) {
        let customer = app.customer("Rec").await;
        let product = app.product("REC-1", 1_000, &[("a", 3)]).await;
        let mut orders = Vec::new();
        for quantity in [1, 5, 1] {
            let placed = app.place(&customer, &[(&product, quantity)]).await;
            orders.push(placed["id"].as_str().unwrap().to_owned());
        }
        for order in &orders {
            app.terminal(order).await;
        }
        app.post(&format!("/orders/{}/cancel", orders[2]), json!({})).await.ok(202);
        app.settled().await;
        let clean = app.get("/ops/reconciliation").await;
        let clean = clean.ok(200);
        assert_eq!(clean["discrepancies"], json!([]), "{clean}");
        assert_eq!((clean["orders_checked"].as_i64(), clean["orders_in_flight"].as_i64(), clean["payments_checked"].as_i64()), (Some(3), Some(0), Some(3)));

        // Payments cannot capture: the OrderConfirmed is parked in its dead letters.
        plant_capture_failure(&app).await;
        let placed = app.place(&customer, &[(&product, 1)]).await;
        let stuck = placed["id"].as_str().unwrap().to_owned();
        assert_eq!(app.terminal(&stuck).await["status"], "CONFIRMED");
        app.settled().await;
        let report = app.get("/ops/reconciliation").await;
        let report = report.ok(200).clone();
        let found = report["discrepancies"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{report}");
        assert_eq!(found[0]["order_id"], stuck.as_str());
        assert_eq!(found[0]["module"], "payment");
        assert_eq!(found[0]["order_status"], "CONFIRMED");
        assert!(found[0]["detail"].as_str().unwrap().contains("Authorized"), "{report}");
        let letters = app.get("/ops/dead-letters").await;
        let parked = letters.ok(200).as_array().unwrap().iter().find(|d| d["status"] == "parked").cloned().unwrap();
        assert_eq!(parked["subscription"], "payments<-orders");
        assert!(parked["error"].as_str().unwrap().contains("planted capture failure"), "{parked}");

        // Fixed and retried: the modules agree again.
        remove_capture_failure(&app).await;
        let id = parked["id"].as_str().unwrap();
        app.post(&format!("/ops/dead-letters/{id}/retry"), json!({})).await.ok(200);
        app.settled().await;
        let again = app.get("/ops/reconciliation").await;
        assert_eq!(again.ok(200)["discrepancies"], json!([]));
        assert_eq!(steps(&app.saga(&stuck).await).last().map(String::as_str), Some("confirmed"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_reconcile_reads_the_databases_and_fails_on_a_discrepancy() {
    let app = TestApp::spawn(crate::support::Kind::Sqlite, "cli_reconcile")
        .await
        .unwrap();
    let customer = app.customer("Cli").await;
    let product = app.product("CLI-1", 100, &[("a", 5)]).await;
    let placed = app.place(&customer, &[(&product, 2)]).await;
    app.terminal(placed["id"].as_str().unwrap()).await;
    app.settled().await;
    let Backend::Sqlite { data_dir } = app.backend() else {
        unreachable!()
    };
    let bin = env!("CARGO_BIN_EXE_bounded");
    let run = || {
        Command::new(bin)
            .args(["reconcile", "--data-dir"])
            .arg(&data_dir)
            .env("BOUNDED_LOG", "error")
            .env_remove("BOUNDED_DATABASE_URL")
            .output()
            .unwrap()
    };
    let clean = run();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let report: Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["orders_checked"], 1);
    assert_eq!(report["discrepancies"], json!([]));

    plant_capture_failure(&app).await;
    let placed = app.place(&customer, &[(&product, 1)]).await;
    app.terminal(placed["id"].as_str().unwrap()).await;
    app.settled().await;
    let failing = run();
    assert_eq!(failing.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&failing.stdout).unwrap();
    assert_eq!(report["discrepancies"][0]["order_id"], placed["id"]);
    assert!(String::from_utf8_lossy(&failing.stderr).contains("1 discrepancies"));
}

/// `bounded reconcile` against `app`'s databases: its exit code and its report.
fn reconcile_cli(app: &TestApp) -> (Option<i32>, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bounded"));
    command
        .arg("reconcile")
        .env("BOUNDED_LOG", "error")
        .env_remove("BOUNDED_DATABASE_URL");
    match app.backend() {
        Backend::Sqlite { data_dir } => command.arg("--data-dir").arg(data_dir),
        Backend::Postgres { admin_url } => command.args(["--database-url", &admin_url]),
    };
    let output = command.output().unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code(), report)
}

shared_kernel::both_backends! {
    async fn bounded_reconcile_counts_unapplied_follow_ups_as_in_flight(app: crate::support::TestApp) {
        let mut app = app;
        let customer = app.customer("Lag").await;
        let product = app.product("LAG-1", 100, &[("a", 5)]).await;
        let placed = app.place(&customer, &[(&product, 2)]).await;
        let id = placed["id"].as_str().unwrap().to_owned();
        assert_eq!(app.terminal(&id).await["status"], "CONFIRMED");
        app.settled().await;
        // No server delivers events: the cancel is committed, its refund and restock are not.
        app.stop_delivery().await;
        app.post(&format!("/orders/{id}/cancel"), json!({})).await.ok(202);
        let (code, report) = reconcile_cli(&app);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!(report["discrepancies"], json!([]), "{report}");
        assert_eq!((report["orders_checked"].as_i64(), report["orders_in_flight"].as_i64(), report["orders_settling"].as_i64()), (Some(0), Some(1), Some(1)), "{report}");
        assert_eq!(report["subscriptions_behind"], json!(["inventory<-orders", "payments<-orders"]), "{report}");

        // Delivered: the order is judged, and agrees.
        app.start_delivery();
        app.settled().await;
        let (code, report) = reconcile_cli(&app);
        assert_eq!(code, Some(0), "{report}");
        assert_eq!((report["orders_checked"].as_i64(), report["orders_in_flight"].as_i64()), (Some(1), Some(0)), "{report}");
        assert_eq!(report["subscriptions_behind"], json!([]), "{report}");
    }
}
