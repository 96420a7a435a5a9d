//! The CQRS read model `order_summaries`: fed by orders, customers and payments events, in the
//! orders read store; filters, paging, renames, rebuilds (with reads during them) and a
//! property: after any sequence of operations it agrees with the owners' own state, before and
//! after a rebuild.

use std::collections::BTreeMap;

use axum::http::Method;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::{Kind, TestApp};

impl TestApp {
    /// Every summary, by order id.
    async fn summaries(&self) -> BTreeMap<String, Value> {
        self.list_all("/order-summaries")
            .await
            .into_iter()
            .map(|s| (s["order_id"].as_str().unwrap().to_owned(), s))
            .collect()
    }

    async fn summary(&self, order_id: &str) -> Value {
        let summaries = self.summaries().await;
        summaries
            .get(order_id)
            .cloned()
            .unwrap_or_else(|| panic!("no summary of {order_id}: {summaries:?}"))
    }

    async fn rename(&self, customer: &str, name: &str, email: &str) {
        self.json(
            Method::PATCH,
            &format!("/customers/{customer}"),
            json!({"name": name, "email": email}),
        )
        .await
        .ok(200);
    }

    async fn rebuild(&self) -> Value {
        self.post("/ops/projections/order_summaries/rebuild", json!({}))
            .await
            .ok(200)
            .clone()
    }

    /// Checks the summaries against orders, customers and payments as they stand.
    async fn assert_summaries_agree(&self) {
        self.settled().await;
        let orders = self.list_all("/orders").await;
        let summaries = self.summaries().await;
        assert_eq!(
            summaries.len(),
            orders.len(),
            "one summary per order: {summaries:?}"
        );
        let mut customers = BTreeMap::new();
        for order in &orders {
            let id = order["id"].as_str().unwrap();
            let summary = &summaries[id];
            let customer_id = order["customer_id"].as_str().unwrap().to_owned();
            if !customers.contains_key(&customer_id) {
                let customer = self.get(&format!("/customers/{customer_id}")).await;
                customers.insert(customer_id.clone(), customer.ok(200).clone());
            }
            let customer = &customers[&customer_id];
            let units: i64 = order["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["quantity"].as_i64().unwrap())
                .sum();
            let payment = self
                .payment_of(id)
                .await
                .map_or(Value::Null, |p| p["status"].clone());
            let expected = json!({
                "customer_id": customer_id,
                "customer_name": customer["name"],
                "customer_email": customer["email"],
                "status": order["status"],
                "item_count": units,
                "total_cents": order["total_cents"],
                "payment_status": payment,
            });
            let actual = json!({
                "customer_id": summary["customer_id"],
                "customer_name": summary["customer_name"],
                "customer_email": summary["customer_email"],
                "status": summary["status"],
                "item_count": summary["item_count"],
                "total_cents": summary["total_cents"],
                "payment_status": summary["payment_status"],
            });
            assert_eq!(actual, expected, "summary of {id}");
        }
    }
}

shared_kernel::both_backends! {
    async fn summaries_follow_orders_and_payments(app: crate::support::TestApp) {
        let customer = app.customer("Sum Ada").await;
        let product = app.product("SUM-1", 1_250, &[("a", 10)]).await;
        let other = app.product("SUM-2", 100, &[("a", 2)]).await;

        let confirmed = app.place(&customer, &[(&product, 3), (&other, 1)]).await;
        let confirmed = confirmed["id"].as_str().unwrap().to_owned();
        assert_eq!(app.terminal(&confirmed).await["status"], "CONFIRMED");
        let out_of_stock = app.place(&customer, &[(&other, 5)]).await;
        let out_of_stock = out_of_stock["id"].as_str().unwrap().to_owned();
        assert_eq!(app.terminal(&out_of_stock).await["status"], "REJECTED");
        app.settled().await;

        let summary = app.summary(&confirmed).await;
        assert_eq!(summary["status"], "CONFIRMED", "{summary}");
        assert_eq!(summary["item_count"], 4);
        assert_eq!(summary["total_cents"], 3_850);
        assert_eq!(summary["payment_status"], "CAPTURED");
        assert_eq!(summary["customer_id"], customer.as_str());
        assert_eq!(summary["customer_name"], "Sum Ada");
        assert_eq!(summary["customer_email"], "sum.ada@example.com");
        assert!(summary["created_at"].is_string() && summary["updated_at"].is_string());
        assert!(summary["updated_at"].as_str() >= summary["created_at"].as_str());

        let rejected = app.summary(&out_of_stock).await;
        assert_eq!(rejected["status"], "REJECTED", "{rejected}");
        assert_eq!(rejected["item_count"], 5);
        // Payments may have authorized before the rejection; the rejection voided it.
        assert!(matches!(rejected["payment_status"].as_str(), Some("VOIDED") | None), "{rejected}");

        // Declined for credit.
        let poor = app.customer("Sum Poor").await;
        app.credit_limit(&poor, 100).await;
        let declined = app.place(&poor, &[(&product, 1)]).await;
        let declined = declined["id"].as_str().unwrap().to_owned();
        assert_eq!(app.terminal(&declined).await["status"], "REJECTED");
        app.settled().await;
        let summary = app.summary(&declined).await;
        assert_eq!((summary["status"].as_str(), summary["payment_status"].as_str()), (Some("REJECTED"), Some("DECLINED")));

        // Cancelling a confirmed order refunds it.
        app.post(&format!("/orders/{confirmed}/cancel"), json!({})).await.ok(202);
        app.settled().await;
        let summary = app.summary(&confirmed).await;
        assert_eq!((summary["status"].as_str(), summary["payment_status"].as_str()), (Some("CANCELLED"), Some("REFUNDED")));
        app.assert_summaries_agree().await;

        // The projector's subscriptions show their lag with the others.
        let subscriptions = app.get("/ops/subscriptions").await;
        let names: Vec<&str> = subscriptions.ok(200).as_array().unwrap().iter()
            .filter(|s| s["consumer"] == "orders_read")
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["order_summaries<-customers", "order_summaries<-orders", "order_summaries<-payments"]);
        let ready = app.get("/ready").await;
        assert_eq!(ready.ok(200)["modules"]["orders"], "up");
        assert!(ready.body["modules"].get("orders_read").is_none(), "{}", ready.body);
    }

    async fn summaries_filter_and_page(app: crate::support::TestApp) {
        let ann = app.customer("Page Ann").await;
        let ben = app.customer("Page Ben").await;
        let product = app.product("PAGE-1", 100, &[("a", 1_000)]).await;
        let mut ann_orders = Vec::new();
        for quantity in 1..=5 {
            let order = app.place(&ann, &[(&product, quantity)]).await;
            ann_orders.push(order["id"].as_str().unwrap().to_owned());
        }
        let ben_order = app.place(&ben, &[(&product, 1)]).await;
        let ben_order = ben_order["id"].as_str().unwrap().to_owned();
        app.post(&format!("/orders/{ben_order}/cancel"), json!({})).await.ok(202);
        app.settled().await;

        let mut seen = Vec::new();
        let mut url = format!("/order-summaries?customer_id={ann}&limit=2");
        loop {
            let answer = app.get(&url).await;
            let page = answer.ok(200);
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 2);
            seen.extend(items.iter().map(|s| s["order_id"].as_str().unwrap().to_owned()));
            match page["next"].as_str() {
                Some(next) => url = format!("/order-summaries?customer_id={ann}&limit=2&after={next}"),
                None => break,
            }
        }
        ann_orders.sort();
        assert_eq!(seen, ann_orders, "every order of Ann once, in id order");

        let cancelled = app.get("/order-summaries?status=CANCELLED").await;
        let items = cancelled.ok(200)["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0]["order_id"], ben_order.as_str());
        let none = app.get(&format!("/order-summaries?customer_id={ann}&status=CANCELLED")).await;
        assert_eq!(none.ok(200)["items"], json!([]));
    }

    async fn bad_summary_queries_are_422_naming_the_field(app: crate::support::TestApp) {
        for (query, field) in [
            ("customer_id=nope", "customer_id"),
            ("status=SHIPPED", "status"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=x", "limit"),
            ("after=%25%25", "after"),
        ] {
            let answer = app.get(&format!("/order-summaries?{query}")).await;
            answer.problem(422);
            assert_eq!(answer.fields(), [field], "{query}");
        }
        let answer = app.get("/order-summaries?status=x&customer_id=y").await;
        answer.problem(422);
        assert_eq!(answer.fields().len(), 2);
    }

    async fn a_rename_reaches_every_summary_of_the_customer(app: crate::support::TestApp) {
        let customer = app.customer("Old Name").await;
        let bystander = app.customer("Bystander").await;
        let product = app.product("REN-1", 100, &[("a", 100)]).await;
        for _ in 0..3 {
            app.place(&customer, &[(&product, 1)]).await;
        }
        let theirs = app.place(&bystander, &[(&product, 1)]).await;
        app.settled().await;
        app.rename(&customer, "New Name", "new.name@example.com").await;
        app.settled().await;
        let summaries = app.summaries().await;
        let mine: Vec<&Value> = summaries.values().filter(|s| s["customer_id"] == customer.as_str()).collect();
        assert_eq!(mine.len(), 3);
        for summary in mine {
            assert_eq!(summary["customer_name"], "New Name", "{summary}");
            assert_eq!(summary["customer_email"], "new.name@example.com");
        }
        let theirs = &summaries[theirs["id"].as_str().unwrap()];
        assert_eq!(theirs["customer_name"], "Bystander");

        // A rename while the projector is behind on orders: the order arrives after it.
        let mut app = app;
        app.stop_delivery().await;
        let late = app.place(&customer, &[(&product, 2)]).await;
        app.rename(&customer, "Newer Name", "newer@example.com").await;
        app.start_delivery();
        app.settled().await;
        let summary = app.summary(late["id"].as_str().unwrap()).await;
        assert_eq!(summary["customer_name"], "Newer Name", "{summary}");
        app.assert_summaries_agree().await;
    }

    async fn a_rebuild_reproduces_the_summaries_and_reads_keep_working(app: crate::support::TestApp) {
        let customer = app.customer("Rebuild Ann").await;
        let product = app.product("REB-1", 700, &[("a", 5)]).await;
        let first = app.place(&customer, &[(&product, 2)]).await;
        app.terminal(first["id"].as_str().unwrap()).await;
        let second = app.place(&customer, &[(&product, 9)]).await;
        app.terminal(second["id"].as_str().unwrap()).await;
        app.rename(&customer, "Rebuild Anne", "anne@example.com").await;
        app.settled().await;
        let before = app.summaries().await;
        assert_eq!(before.len(), 2);

        let report = app.rebuild().await;
        assert_eq!(report["name"], "order_summaries");
        assert_eq!(report["generation"], 2);
        assert!(report["events_replayed"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(app.summaries().await, before, "a rebuild changes nothing");

        // Hold the next rebuild before its swap: reads answer from the current generation,
        // and what happens meanwhile reaches both.
        let model = app.modules.read_model.clone().unwrap();
        let hold = model.hold_swaps();
        let rebuild = app.rebuild();
        let reads = async {
            hold.reached().await;
            assert_eq!(app.summaries().await, before, "reads during the rebuild");
            let third = app.place(&customer, &[(&product, 1)]).await;
            app.settled().await;
            let during = app.summaries().await;
            assert_eq!(during.len(), 3, "the live projector keeps going: {during:?}");
            let concurrent = app.post("/ops/projections/order_summaries/rebuild", json!({})).await;
            concurrent.problem(409);
            drop(hold);
            third
        };
        let (report, third) = tokio::join!(rebuild, reads);
        assert_eq!(report["generation"], 3);
        let after = app.summaries().await;
        assert_eq!(after.len(), 3);
        assert_eq!(after[third["id"].as_str().unwrap()]["status"], "CONFIRMED");
        app.assert_summaries_agree().await;

        app.post("/ops/projections/nope/rebuild", json!({})).await.problem(404);
    }
}

/// One step of the property.
#[derive(Debug, Clone)]
enum Op {
    Place {
        customer: usize,
        product: usize,
        quantity: i64,
    },
    Cancel {
        order: usize,
    },
    Rename {
        customer: usize,
    },
    CreditLimit {
        customer: usize,
        cents: i64,
    },
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..2usize, 1..4i64)
            .prop_map(|(customer, product, quantity)| Op::Place { customer, product, quantity }),
        2 => (0..8usize).prop_map(|order| Op::Cancel { order }),
        2 => (0..3usize).prop_map(|customer| Op::Rename { customer }),
        1 => (0..3usize, prop_oneof![Just(0i64), Just(500), Just(1_000_000)])
            .prop_map(|(customer, cents)| Op::CreditLimit { customer, cents }),
        1 => Just(Op::Rebuild),
    ]
}

async fn run_case(kind: Kind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let Some(app) = TestApp::spawn(kind, "read_model_property").await else {
        return Ok(());
    };
    let mut customers = Vec::new();
    for n in 0..3 {
        customers.push(app.customer(&format!("Prop {n}")).await);
    }
    let products = [
        app.product("PROP-A", 150, &[("a", 6)]).await,
        app.product("PROP-B", 400, &[("a", 20)]).await,
    ];
    let mut orders: Vec<String> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Place {
                customer,
                product,
                quantity,
            } => {
                let order = app
                    .place(&customers[customer], &[(&products[product], quantity)])
                    .await;
                orders.push(order["id"].as_str().unwrap().to_owned());
            }
            Op::Cancel { order } => {
                if let Some(id) = orders.get(order) {
                    let answer = app.post(&format!("/orders/{id}/cancel"), json!({})).await;
                    prop_assert!(matches!(answer.status.as_u16(), 202 | 409), "{:?}", answer);
                }
            }
            Op::Rename { customer } => {
                let id = &customers[customer];
                app.rename(
                    id,
                    &format!("Renamed {step}"),
                    &format!("r{step}.{customer}@example.com"),
                )
                .await;
            }
            Op::CreditLimit { customer, cents } => {
                app.credit_limit(&customers[customer], cents).await;
            }
            Op::Rebuild => {
                app.rebuild().await;
            }
        }
    }
    app.assert_summaries_agree().await;
    let before = app.summaries().await;
    app.rebuild().await;
    prop_assert_eq!(app.summaries().await, before);
    app.assert_summaries_agree().await;
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_summaries_agree_with_the_owners_before_and_after_a_rebuild(ops in proptest::collection::vec(op(), 1..16)) {
        runtime().block_on(run_case(Kind::Sqlite, ops))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn postgres_summaries_agree_with_the_owners_before_and_after_a_rebuild(ops in proptest::collection::vec(op(), 1..16)) {
        runtime().block_on(run_case(Kind::Postgres, ops))?;
    }
}
