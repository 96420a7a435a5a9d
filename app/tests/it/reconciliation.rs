//! `/ops/reconciliation` while orders flow: what is still in flight is not a discrepancy, and a
//! real disagreement is still found among it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use shared_kernel::with_tx;

use crate::support::TestApp;

/// Clients placing orders at the same time.
const CLIENTS: usize = 4;
/// Reconciliations run during the load before a real discrepancy is planted, and after.
const CLEAN_ROUNDS: usize = 6;
const PLANTED_ROUNDS: usize = 2;
/// Orders placed during the clean rounds, at least.
const MIN_PLACED: usize = 60;

/// Places orders until `stop`, cancelling every third one right away (pending or confirmed,
/// whichever it is by then), so that payments and reservations move through every state.
async fn place_until(
    app: Arc<TestApp>,
    customer: String,
    product: String,
    stop: Arc<AtomicBool>,
    placed: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::SeqCst) {
        let order = app.place(&customer, &[(&product, 1)]).await;
        let n = placed.fetch_add(1, Ordering::SeqCst);
        if n.is_multiple_of(3) {
            let id = order["id"].as_str().unwrap();
            let answer = app.post(&format!("/orders/{id}/cancel"), json!({})).await;
            // A rejected order cannot be cancelled (409); anything else is a failure.
            assert!(matches!(answer.status.as_u16(), 202 | 409), "{answer:?}");
        }
    }
}

/// A confirmed order whose reservation inventory shows as released, as a lost commit would
/// leave it: a real disagreement, planted in inventory's own database.
async fn plant_released_reservation(app: &TestApp, customer: &str, product: &str) -> String {
    let order = app.place(customer, &[(product, 1)]).await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(app.terminal(&id).await["status"], "CONFIRMED");
    // The commit of the reservation follows the confirmation; wait for it before breaking it.
    let mut applied = app.modules.bus.applied("inventory<-orders").unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let answer = app.get(&format!("/reservations/{id}")).await;
        if answer.status == 200 && answer.body["status"] == "committed" {
            break;
        }
        let changed = tokio::time::timeout_at(deadline, applied.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "never committed: {answer:?}");
    }
    let mut tx = app.db("inventory").begin().await.unwrap();
    with_tx!(&mut tx, |conn| {
        sqlx::query("UPDATE reservations SET status = 'released' WHERE order_id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .execute(conn)
            .await
            .map(drop)
    })
    .unwrap();
    tx.commit().await.unwrap();
    id
}

shared_kernel::both_backends! {
    async fn reconciliation_during_load_reports_only_real_discrepancies(app: crate::support::TestApp) {
        let app = Arc::new(app);
        let customer = app.customer("Load").await;
        let product = app.product("LOAD-1", 100, &[("a", 1_000_000)]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                tokio::spawn(place_until(
                    app.clone(),
                    customer.clone(),
                    product.clone(),
                    stop.clone(),
                    placed.clone(),
                ))
            })
            .collect();
        // Reconcile again and again while at least MIN_PLACED orders go through.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut rounds = 0;
        while rounds < CLEAN_ROUNDS || placed.load(Ordering::SeqCst) < MIN_PLACED {
            assert!(tokio::time::Instant::now() < deadline, "the load did not get going");
            let answer = app.get("/ops/reconciliation").await;
            let report = answer.ok(200);
            assert_eq!(report["discrepancies"], json!([]), "a false report during load: {report}");
            rounds += 1;
        }
        let planted = plant_released_reservation(&app, &customer, &product).await;
        for _ in 0..PLANTED_ROUNDS {
            let answer = app.get("/ops/reconciliation").await;
            let report = answer.ok(200);
            let found = report["discrepancies"].as_array().unwrap();
            assert_eq!(found.len(), 1, "only the planted discrepancy: {report}");
            assert_eq!(found[0]["order_id"], planted.as_str(), "{report}");
            assert_eq!(found[0]["module"], "stock", "{report}");
            assert!(found[0]["detail"].as_str().unwrap().contains("released"), "{report}");
        }
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        // Once the load has settled every order is judged and only the planted one disagrees.
        app.settled().await;
        let answer = app.get("/ops/reconciliation").await;
        let last = answer.ok(200);
        assert_eq!(last["orders_in_flight"], 0, "{last}");
        let total = placed.load(Ordering::SeqCst) as u64 + 1;
        assert_eq!(last["orders_checked"].as_u64(), Some(total), "{last}");
        assert_eq!(last["discrepancies"].as_array().unwrap().len(), 1, "{last}");
    }
}
