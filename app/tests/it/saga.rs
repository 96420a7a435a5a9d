//! The order saga end to end through the HTTP API: every path, compensation, duplicates, late
//! replies, the durable deadline and races for the last units and the last credit.

use std::time::Duration;

use futures::future::join_all;
use inventory_api::events::{ReservedLine, StockReserved};
use orders_api::events::OrderConfirmed;
use orders_api::{OrderId, Participant};
use payments_api::events::PaymentDeclined;
use serde_json::{Value, json};
use shared_kernel::messaging::{EventContext, outbox};

use crate::shop::steps;
use crate::support::{Kind, TestApp};

shared_kernel::both_backends! {
    async fn an_order_with_stock_and_credit_is_confirmed_and_settles_stock_and_money(app: crate::support::TestApp) {
        let customer = app.customer("Ada").await;
        let product = app.product("CONF-1", 1_250, &[("a", 10)]).await;
        let placed = app.place(&customer, &[(&product, 3)]).await;
        assert_eq!(placed["total_cents"], 3_750);
        assert_eq!(placed["items"][0]["line_total_cents"], 3_750);
        assert_eq!(placed["items"][0]["sku"], "CONF-1");
        let id = placed["id"].as_str().unwrap();

        let order = app.terminal(id).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
        assert_eq!(order["reason"], Value::Null);
        app.settled().await;
        assert_eq!(app.stock(&product).await, (7, 0));
        let account = app.account(&customer).await;
        assert_eq!(account["outstanding_cents"], 3_750);
        assert_eq!(account["available_cents"], 1_000_000 - 3_750);
        let payment = app.payment_of(id).await.unwrap();
        assert_eq!(payment["status"], "CAPTURED");
        assert_eq!(payment["amount_cents"], 3_750);

        let saga = app.saga(id).await;
        assert_eq!((saga.stock, saga.payment), (Participant::Succeeded, Participant::Succeeded));
        let history = steps(&saga);
        assert_eq!(history.first().map(String::as_str), Some("placed"));
        assert_eq!(history.last().map(String::as_str), Some("confirmed"));
        assert!(history.contains(&"stock_reserved".to_owned()), "{history:?}");
        assert!(history.contains(&"payment_authorized".to_owned()), "{history:?}");
        let metrics = app.get("/metrics").await;
        let metrics = metrics.body.as_str().unwrap();
        assert!(metrics.contains("bounded_saga_outcomes_total{outcome=\"confirmed\"}"), "{metrics}");
        assert!(metrics.contains("bounded_saga_duration_seconds"), "{metrics}");
    }

    async fn an_order_beyond_stock_is_rejected_out_of_stock_and_holds_nothing(app: crate::support::TestApp) {
        let customer = app.customer("Bob").await;
        let product = app.product("OOS-1", 100, &[("a", 4), ("b", 6)]).await;
        let other = app.product("OOS-2", 100, &[("a", 5)]).await;
        // The first line alone could be reserved; the second cannot: none is.
        let placed = app.place(&customer, &[(&other, 2), (&product, 11)]).await;
        let order = app.terminal(placed["id"].as_str().unwrap()).await;
        assert_eq!((order["status"].as_str(), order["reason"].as_str()), (Some("REJECTED"), Some("out_of_stock")));
        app.settled().await;
        assert_eq!(app.stock(&product).await, (10, 0));
        assert_eq!(app.stock(&other).await, (5, 0));
        // Payments may have authorized before the rejection; the rejection voided it.
        assert_eq!(app.account(&customer).await["outstanding_cents"], 0);
        if let Some(payment) = app.payment_of(placed["id"].as_str().unwrap()).await {
            assert_eq!(payment["status"], "VOIDED", "{payment}");
        }
    }

    async fn an_order_beyond_credit_is_rejected_payment_declined_and_releases_stock(app: crate::support::TestApp) {
        let customer = app.customer("Cy").await;
        let product = app.product("DECL-1", 1_000, &[("a", 10)]).await;
        app.credit_limit(&customer, 2_999).await;
        let placed = app.place(&customer, &[(&product, 3)]).await;
        let id = placed["id"].as_str().unwrap();
        let order = app.terminal(id).await;
        assert_eq!((order["status"].as_str(), order["reason"].as_str()), (Some("REJECTED"), Some("payment_declined")));
        app.settled().await;
        assert_eq!(app.stock(&product).await, (10, 0), "the reservation was released");
        let account = app.account(&customer).await;
        assert_eq!((account["outstanding_cents"].as_i64(), account["credit_limit_cents"].as_i64()), (Some(0), Some(2_999)));
        assert_eq!(app.payment_of(id).await.unwrap()["status"], "DECLINED");
    }

    async fn cancelling_a_pending_order_releases_the_stock_and_voids_the_payment(app: crate::support::TestApp) {
        let mut app = app;
        let customer = app.customer("Dee").await;
        let product = app.product("CANP-1", 500, &[("a", 10)]).await;
        app.settled().await;
        // With delivery stopped the order stays pending, as if the participants were slow.
        app.stop_delivery().await;
        let placed = app.place(&customer, &[(&product, 4)]).await;
        let id = placed["id"].as_str().unwrap();
        let cancelled = app.post(&format!("/orders/{id}/cancel"), json!({})).await;
        let cancelled = cancelled.ok(202);
        assert_eq!((cancelled["status"].as_str(), cancelled["reason"].as_str()), (Some("CANCELLED"), Some("cancelled")));
        app.start_delivery();
        app.settled().await;
        // Inventory reserved, then released on the cancel; payments authorized, then voided.
        assert_eq!(app.stock(&product).await, (10, 0));
        assert_eq!(app.account(&customer).await["outstanding_cents"], 0);
        assert_eq!(app.payment_of(id).await.unwrap()["status"], "VOIDED");
        let order = app.get(&format!("/orders/{id}")).await;
        assert_eq!(order.ok(200)["status"], "CANCELLED");
        let history = steps(&app.saga(id).await);
        assert_eq!(history[..2], ["placed".to_owned(), "cancelled".to_owned()]);
        assert_eq!(history.len(), 4, "both replies arrive late and are recorded: {history:?}");
    }

    async fn cancelling_a_confirmed_order_restocks_and_refunds(app: crate::support::TestApp) {
        let customer = app.customer("Eve").await;
        let product = app.product("CANC-1", 700, &[("a", 2), ("b", 3)]).await;
        let placed = app.place(&customer, &[(&product, 4)]).await;
        let id = placed["id"].as_str().unwrap();
        assert_eq!(app.terminal(id).await["status"], "CONFIRMED");
        app.settled().await;
        assert_eq!(app.stock(&product).await, (1, 0));
        let cancelled = app.post(&format!("/orders/{id}/cancel"), json!({})).await;
        assert_eq!(cancelled.ok(202)["status"], "CANCELLED");
        app.settled().await;
        // Restocked into the warehouses the units came from.
        let warehouses = app.warehouses(&product).await;
        assert_eq!(warehouses["a"], (2, 0));
        assert_eq!(warehouses["b"], (3, 0));
        assert_eq!(app.account(&customer).await["outstanding_cents"], 0);
        assert_eq!(app.payment_of(id).await.unwrap()["status"], "REFUNDED");
    }

    async fn cancel_twice_returns_the_cancelled_order_and_a_rejected_order_cannot_be_cancelled(app: crate::support::TestApp) {
        let customer = app.customer("Fay").await;
        let product = app.product("TWICE-1", 100, &[("a", 1)]).await;
        let first = app.place(&customer, &[(&product, 1)]).await;
        let id = first["id"].as_str().unwrap();
        app.terminal(id).await;
        let once = app.post(&format!("/orders/{id}/cancel"), json!({})).await.ok(202).clone();
        let twice = app.post(&format!("/orders/{id}/cancel"), json!({})).await.ok(202).clone();
        assert_eq!(once, twice, "a second cancel changes nothing");
        app.settled().await;
        assert_eq!(app.stock(&product).await, (1, 0));

        let rejected = app.place(&customer, &[(&product, 2)]).await;
        let rejected_id = rejected["id"].as_str().unwrap();
        assert_eq!(app.terminal(rejected_id).await["reason"], "out_of_stock");
        let refused = app.post(&format!("/orders/{rejected_id}/cancel"), json!({})).await;
        refused.problem(409);
        let unknown = app.post(&format!("/orders/{}/cancel", uuid::Uuid::now_v7()), json!({})).await;
        unknown.problem(404);
        app.settled().await;
        assert_eq!(app.account(&customer).await["outstanding_cents"], 0);
    }

    async fn duplicate_and_late_participant_events_change_nothing(app: crate::support::TestApp) {
        let customer = app.customer("Gus").await;
        let product = app.product("DUP-1", 300, &[("a", 10)]).await;
        let placed = app.place(&customer, &[(&product, 2)]).await;
        let id = placed["id"].as_str().unwrap();
        let order_id = OrderId(id.parse().unwrap());
        assert_eq!(app.terminal(id).await["status"], "CONFIRMED");
        app.settled().await;
        let before = app.get(&format!("/orders/{id}")).await.ok(200).clone();

        // A participant repeating itself (new event ids, as after a crash of a participant
        // that lost its own inbox) and a late, contradicting payment reply.
        let mut tx = app.db("inventory").begin().await.unwrap();
        let again = StockReserved {
            order_id: order_id.0,
            lines: vec![ReservedLine {
                product_id: inventory_api::ProductId(product.parse().unwrap()),
                warehouse: "a".into(),
                quantity: 2,
            }],
        };
        outbox::append(&mut tx, &again, &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        let payment = app.payment_of(id).await.unwrap();
        let mut tx = app.db("payments").begin().await.unwrap();
        let late = PaymentDeclined {
            payment_id: payments_api::PaymentId(payment["id"].as_str().unwrap().parse().unwrap()),
            order_id: order_id.0,
            customer_id: customer.parse().unwrap(),
            amount_cents: 600,
            reason: "insufficient_credit".into(),
        };
        outbox::append(&mut tx, &late, &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        // Orders repeating a confirmation: inventory must not commit twice, payments must not
        // capture twice.
        let mut tx = app.db("orders").begin().await.unwrap();
        outbox::append(&mut tx, &OrderConfirmed { order_id }, &EventContext::default()).unwrap();
        tx.commit().await.unwrap();
        app.settled().await;

        let after = app.get(&format!("/orders/{id}")).await.ok(200).clone();
        assert_eq!(before, after);
        assert_eq!(app.stock(&product).await, (8, 0));
        assert_eq!(app.account(&customer).await["outstanding_cents"], 600);
        assert_eq!(app.payment_of(id).await.unwrap()["status"], "CAPTURED");
        let saga = app.saga(id).await;
        let ignored: Vec<_> = saga.steps.iter().filter_map(|s| s.detail.clone()).filter(|d| d.contains("ignored")).collect();
        assert_eq!(ignored.len(), 2, "{:?}", saga.steps);
    }

    async fn forty_customers_racing_for_ten_units_confirm_exactly_ten(app: crate::support::TestApp) {
        let product = app.product("RACE-1", 1_000, &[("east", 6), ("west", 4)]).await;
        let customers = join_all((0..40).map(|i| {
            let app = &app;
            async move { app.customer(&format!("Racer {i}")).await }
        }))
        .await;
        let line = [(product.as_str(), 1)];
        let placed = join_all(customers.iter().map(|c| app.place(c, &line))).await;
        let finals = join_all(placed.iter().map(|o| app.terminal(o["id"].as_str().unwrap()))).await;
        let confirmed = finals.iter().filter(|o| o["status"] == "CONFIRMED").count();
        let out_of_stock = finals.iter().filter(|o| o["reason"] == "out_of_stock").count();
        assert_eq!((confirmed, out_of_stock), (10, 30), "{finals:?}");
        app.settled().await;
        assert_eq!(app.stock(&product).await, (0, 0));
        for (customer, order) in customers.iter().zip(&finals) {
            let expected = if order["status"] == "CONFIRMED" { 1_000 } else { 0 };
            assert_eq!(app.account(customer).await["outstanding_cents"], expected);
        }
    }

    async fn twenty_concurrent_orders_against_credit_for_five_confirm_exactly_five(app: crate::support::TestApp) {
        let customer = app.customer("Spender").await;
        let product = app.product("CRED-1", 2_000, &[("a", 1_000)]).await;
        app.credit_limit(&customer, 5 * 2_000).await;
        let line = [(product.as_str(), 1)];
        let placed = join_all((0..20).map(|_| app.place(&customer, &line))).await;
        let finals = join_all(placed.iter().map(|o| app.terminal(o["id"].as_str().unwrap()))).await;
        let confirmed = finals.iter().filter(|o| o["status"] == "CONFIRMED").count();
        let declined = finals.iter().filter(|o| o["reason"] == "payment_declined").count();
        assert_eq!((confirmed, declined), (5, 15), "{finals:?}");
        app.settled().await;
        let account = app.account(&customer).await;
        assert_eq!(account["outstanding_cents"], 10_000);
        assert_eq!(account["available_cents"], 0);
        assert_eq!(app.stock(&product).await, (995, 0));
    }
}

/// An order whose payment never answers (payments is not running) is rejected at its deadline,
/// which survives a restart; when payments comes back its late authorization is voided.
async fn timeout_then_late_participant(kind: Kind) {
    let without_payments = |s: &mut app::config::ServeArgs| {
        s.modules = app::config::ModuleSet(vec!["customers", "inventory", "orders"]);
        s.saga_timeout = Duration::from_millis(1_500);
    };
    let Some(app) = TestApp::spawn_with(kind, "saga_timeout", without_payments).await else {
        return;
    };
    let customer = app.customer("Hal").await;
    let product = app.product("TIME-1", 900, &[("a", 5)]).await;
    let placed = app.place(&customer, &[(&product, 2)]).await;
    let id = placed["id"].as_str().unwrap().to_owned();
    // The process stops before the deadline; the next one finds the deadline in the database.
    let app = app.restart(|_| {}).await;
    let order = app.terminal(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("REJECTED"), Some("timeout"))
    );
    app.settled().await;
    assert_eq!(
        app.stock(&product).await,
        (5, 0),
        "the reservation was released"
    );
    let saga = app.saga(&id).await;
    assert_eq!(saga.payment, Participant::Waiting);
    assert!(
        steps(&saga).contains(&"timed_out".to_owned()),
        "{:?}",
        saga.steps
    );

    // Payments comes back: it authorizes the old order, then voids it on the rejection; the
    // late authorization changes nothing in orders.
    let app = app
        .restart(|s| s.modules = app::config::ModuleSet::all())
        .await;
    app.settled().await;
    let order = app.get(&format!("/orders/{id}")).await.ok(200).clone();
    assert_eq!(order["reason"], "timeout");
    assert_eq!(app.payment_of(&id).await.unwrap()["status"], "VOIDED");
    assert_eq!(app.account(&customer).await["outstanding_cents"], 0);
    let saga = app.saga(&id).await;
    let last = saga.steps.last().unwrap();
    assert_eq!(last.step, "payment_authorized");
    assert!(
        last.detail
            .as_deref()
            .unwrap_or("")
            .contains("late reply ignored"),
        "{last:?}"
    );
}

mod a_withheld_participant_times_the_order_out {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        timeout_then_late_participant(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        timeout_then_late_participant(Kind::Postgres).await;
    }
}
