//! `bounded seed-history`: settled orders bulk-written into every module's own store, without
//! events, agree across modules and leave the shop working.

use std::collections::BTreeMap;
use std::process::Command;

use app::config::{SeedHistoryArgs, StorageArgs};
use serde_json::{Value, json};

use crate::shop::steps;
use crate::support::TestApp;

const HISTORY: u64 = 300;

fn args(orders: u64, batch: u64) -> SeedHistoryArgs {
    SeedHistoryArgs {
        storage: StorageArgs {
            data_dir: "unused".into(),
            database_url: None,
            module_database_urls: Vec::new(),
            db_role_password: None,
        },
        orders,
        batch,
        seed: 7,
    }
}

/// `head_seq` of every subscription: what the outboxes hold.
async fn heads(app: &TestApp) -> Vec<(String, i64)> {
    let answer = app.get("/ops/subscriptions").await;
    answer
        .ok(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["head_seq"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Units on hand over every product.
async fn on_hand(app: &TestApp, products: &[String]) -> i64 {
    let mut total = 0;
    for product in products {
        total += app.stock(product).await.0;
    }
    total
}

shared_kernel::both_backends! {
    async fn seeded_history_agrees_across_modules_and_the_shop_keeps_working(app: crate::support::TestApp) {
        let mut customers = Vec::new();
        for i in 0..3 {
            let customer = app.customer(&format!("History {i}")).await;
            app.credit_limit(&customer, 1_000_000_000).await;
            customers.push(customer);
        }
        let mut products = Vec::new();
        for i in 0..4 {
            products.push(app.product(&format!("HIST-{i}"), 100 + i * 10, &[("a", 2_000), ("b", 1_500)]).await);
        }
        let live = app.place(&customers[0], &[(&products[0], 2)]).await;
        assert_eq!(app.terminal(live["id"].as_str().unwrap()).await["status"], "CONFIRMED");
        app.settled().await;
        let stock_before = on_hand(&app, &products).await;
        let heads_before = heads(&app).await;

        let seeded = app::seed::seed(&app.modules, &args(HISTORY, 128)).await.unwrap();
        assert_eq!(seeded.orders, HISTORY);

        // No event: every outbox is where it was.
        assert_eq!(heads(&app).await, heads_before);
        let orders = app.list_all("/orders").await;
        assert_eq!(orders.len() as u64, HISTORY + 1);
        assert!(orders.iter().all(|o| o["status"] == "CONFIRMED"), "{orders:?}");
        let history: Vec<&Value> = orders.iter().filter(|o| o["id"] != live["id"]).collect();
        let units: i64 = history
            .iter()
            .flat_map(|o| o["items"].as_array().unwrap())
            .map(|line| line["quantity"].as_i64().unwrap())
            .sum();
        assert!(units >= HISTORY as i64, "every order has at least one unit");
        // Committed reservations took the units off the shelves.
        assert_eq!(on_hand(&app, &products).await, stock_before - units);
        // Captured payments of the orders' totals, held on the accounts.
        let payments = app.list_all("/payments").await;
        assert_eq!(payments.len() as u64, HISTORY + 1);
        assert!(payments.iter().all(|p| p["status"] == "CAPTURED"), "{payments:?}");
        let mut owed: BTreeMap<String, i64> = BTreeMap::new();
        for order in &orders {
            *owed.entry(order["customer_id"].as_str().unwrap().to_owned()).or_default() +=
                order["total_cents"].as_i64().unwrap();
        }
        for customer in &customers {
            let account = app.account(customer).await;
            assert_eq!(account["outstanding_cents"].as_i64().unwrap(), owed.get(customer).copied().unwrap_or(0), "{account}");
        }
        // Summaries, sagas and the API composition see the history.
        let summaries = app.list_all("/order-summaries").await;
        assert_eq!(summaries.len() as u64, HISTORY + 1);
        let old = history[0]["id"].as_str().unwrap();
        let summary = summaries.iter().find(|s| s["order_id"] == old).unwrap();
        assert_eq!((&summary["status"], &summary["payment_status"]), (&json!("CONFIRMED"), &json!("CAPTURED")));
        assert!(summary["customer_name"].as_str().unwrap().starts_with("History "), "{summary}");
        assert_eq!(steps(&app.saga(old).await), ["placed", "stock_reserved", "payment_authorized", "confirmed"]);
        let answer = app.get(&format!("/orders/{old}/details")).await;
        let details = answer.ok(200);
        assert_eq!(details["degraded"], json!([]), "{details}");
        assert_eq!(details["payment"]["status"], "CAPTURED");
        // The modules agree, order by order.
        let answer = app.get("/ops/reconciliation").await;
        let report = answer.ok(200);
        assert_eq!(report["orders_checked"].as_u64().unwrap(), HISTORY + 1);
        assert_eq!(report["discrepancies"], json!([]), "{report}");

        // The saga still runs on top of the history: the accounts' snapshots and the stock
        // levels are where the next order expects them.
        let next = app.place(&customers[1], &[(&products[1], 3), (&products[2], 1)]).await;
        let id = next["id"].as_str().unwrap();
        assert_eq!(app.terminal(id).await["status"], "CONFIRMED");
        app.settled().await;
        let account = app.account(&customers[1]).await;
        let expected = owed.get(&customers[1]).copied().unwrap_or(0) + next["total_cents"].as_i64().unwrap();
        assert_eq!(account["outstanding_cents"].as_i64().unwrap(), expected);
        let answer = app.get("/ops/reconciliation").await;
        assert_eq!(answer.ok(200)["discrepancies"], json!([]));
    }

    async fn seeding_history_needs_a_catalog(app: crate::support::TestApp) {
        let error = app::seed::seed(&app.modules, &args(10, 10)).await.unwrap_err();
        assert!(format!("{error:#}").contains("catalog is empty"), "{error:#}");
        assert!(app.list_all("/orders").await.is_empty());
    }

    async fn history_beyond_the_stock_fails_without_writing(app: crate::support::TestApp) {
        let customer = app.customer("Scarce").await;
        app.credit_limit(&customer, 1_000_000_000).await;
        let product = app.product("SCARCE-1", 100, &[("a", 5)]).await;
        app.settled().await;
        let error = app::seed::seed(&app.modules, &args(50, 50)).await.unwrap_err();
        assert!(format!("{error:#}").contains("not enough stock"), "{error:#}");
        assert!(app.list_all("/orders").await.is_empty());
        assert!(app.list_all("/payments").await.is_empty());
        assert_eq!(app.stock(&product).await, (5, 0));
    }
}

#[test]
fn the_cli_opens_the_stores_and_refuses_an_empty_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bounded"))
        .args(["seed-history", "--orders", "10", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("BOUNDED_LOG", "error")
        .env_remove("BOUNDED_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("catalog is empty"), "{stderr}");
}
