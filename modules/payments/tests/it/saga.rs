//! The payment side of the order saga, through the `payments<-orders` and
//! `payments<-customers` handlers.

use customers_api::CustomerId;
use customers_api::events::CustomerRegistered;
use payments_api::events::{PaymentAuthorized, PaymentDeclined};
use payments_api::{PaymentStatus, PaymentsApi, PaymentsError, SetCreditLimit};
use shared_kernel::messaging::IntegrationEvent;
use uuid::Uuid;

use crate::support::{DEFAULT_LIMIT, Env, types};

shared_kernel::both_backends! {
    async fn authorize_capture_then_refund(kind: crate::support::Kind) {
        let env = Env::new(kind, "authorize_capture_then_refund").await;
        let (customer, order) = (env.customer(), Uuid::now_v7());
        env.place(order, customer, 300).await;

        let payment = env.payment_of(order).await;
        assert_eq!((payment.status, payment.amount_cents, payment.version), (PaymentStatus::Authorized, 300, 1));
        assert_eq!(payment.customer_id, customer);
        let account = env.account(customer).await;
        assert_eq!((account.credit_limit_cents, account.outstanding_cents, account.available_cents), (DEFAULT_LIMIT, 300, 700));
        let published = env.published().await;
        assert_eq!(types(&published), ["payments.PaymentAuthorized"]);
        let authorized: PaymentAuthorized = published[0].decode().unwrap().unwrap();
        assert_eq!(authorized, PaymentAuthorized { payment_id: payment.id, order_id: order, customer_id: customer, amount_cents: 300 });
        assert_eq!(published[0].aggregate_id, payment.id.to_string());

        env.confirm(order).await;
        let captured = env.payment_of(order).await;
        assert_eq!((captured.status, captured.version), (PaymentStatus::Captured, 2));
        assert_eq!(captured.created_at, payment.created_at);
        assert_eq!(env.account(customer).await.outstanding_cents, 300, "a capture still counts");

        env.cancel(order).await;
        let refunded = env.payment_of(order).await;
        assert_eq!((refunded.status, refunded.version), (PaymentStatus::Refunded, 3));
        let account = env.account(customer).await;
        assert_eq!((account.outstanding_cents, account.available_cents), (0, DEFAULT_LIMIT));
        assert_eq!(
            types(&env.published().await),
            ["payments.PaymentAuthorized", "payments.PaymentCaptured", "payments.PaymentRefunded"]
        );
        // opened, reserved, released
        assert_eq!(env.account_versions(customer).await, [1, 2, 3]);
    }

    async fn declines_what_the_credit_does_not_cover(kind: crate::support::Kind) {
        let env = Env::new(kind, "declines_what_the_credit_does_not_cover").await;
        let customer = env.customer();
        let (fits, too_much) = (Uuid::now_v7(), Uuid::now_v7());
        env.place(fits, customer, 600).await;
        env.place(too_much, customer, 401).await;

        let declined = env.payment_of(too_much).await;
        assert_eq!((declined.status, declined.amount_cents), (PaymentStatus::Declined, 401));
        let account = env.account(customer).await;
        assert_eq!((account.outstanding_cents, account.available_cents), (600, 400));
        let published = env.published().await;
        assert_eq!(types(&published), ["payments.PaymentAuthorized", "payments.PaymentDeclined"]);
        let event: PaymentDeclined = published[1].decode().unwrap().unwrap();
        assert_eq!(
            event,
            PaymentDeclined { payment_id: declined.id, order_id: too_much, customer_id: customer, amount_cents: 401, reason: "insufficient_credit".into() }
        );

        // A declined payment is never captured, voided or refunded.
        env.confirm(too_much).await;
        env.reject(too_much).await;
        env.cancel(too_much).await;
        assert_eq!(env.payment_of(too_much).await, declined);
        assert_eq!(env.published().await.len(), 2);
        assert_eq!(env.account(customer).await, account);

        // Exactly the available amount fits.
        let exact = Uuid::now_v7();
        env.place(exact, customer, 400).await;
        assert_eq!(env.payment_of(exact).await.status, PaymentStatus::Authorized);
        assert_eq!(env.account(customer).await.available_cents, 0);
    }

    async fn rejected_and_cancelled_orders_void_and_release(kind: crate::support::Kind) {
        let env = Env::new(kind, "rejected_and_cancelled_orders_void_and_release").await;
        let customer = env.customer();
        let (rejected, cancelled, kept) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        env.place(rejected, customer, 100).await;
        env.place(cancelled, customer, 200).await;
        env.place(kept, customer, 300).await;
        assert_eq!(env.account(customer).await.outstanding_cents, 600);

        env.reject(rejected).await;
        env.cancel(cancelled).await;
        assert_eq!(env.payment_of(rejected).await.status, PaymentStatus::Voided);
        assert_eq!(env.payment_of(cancelled).await.status, PaymentStatus::Voided);
        let account = env.account(customer).await;
        assert_eq!((account.outstanding_cents, account.available_cents), (300, 700));

        // Late and duplicate events change nothing: no capture of a voided payment, no second
        // release, no refund of a voided payment.
        let before = env.published().await.len();
        env.confirm(rejected).await;
        env.reject(rejected).await;
        env.cancel(rejected).await;
        env.cancel(cancelled).await;
        env.place(cancelled, customer, 200).await;
        assert_eq!(env.payment_of(rejected).await.version, 2);
        assert_eq!(env.payment_of(cancelled).await.version, 2);
        assert_eq!(env.account(customer).await, account);
        assert_eq!(env.published().await.len(), before);
        assert_eq!(
            types(&env.published().await),
            [
                "payments.PaymentAuthorized",
                "payments.PaymentAuthorized",
                "payments.PaymentAuthorized",
                "payments.PaymentVoided",
                "payments.PaymentVoided",
            ]
        );
        // A duplicate OrderPlaced does not authorize twice.
        env.place(kept, customer, 300).await;
        assert_eq!(env.payments_of(customer).await.len(), 3);
        env.account_versions(customer).await;
    }

    async fn tolerates_events_about_payments_that_never_happened(kind: crate::support::Kind) {
        let env = Env::new(kind, "tolerates_events_about_payments_that_never_happened").await;
        let order = Uuid::now_v7();
        env.confirm(order).await;
        env.reject(order).await;
        env.cancel(order).await;
        assert!(env.published().await.is_empty());
        let all = env.payments.list_payments(Default::default(), crate::support::page(10)).await.unwrap();
        assert!(all.items.is_empty());
    }

    async fn accounts_open_on_first_sight_of_a_customer(kind: crate::support::Kind) {
        let env = Env::new(kind, "accounts_open_on_first_sight_of_a_customer").await;
        let registered = env.customer();
        let event = CustomerRegistered {
            customer_id: CustomerId(registered),
            name: "Ada".into(),
            email: "ada@example.com".into(),
        };
        assert!(matches!(env.payments.account(registered).await, Err(PaymentsError::AccountNotFound(_))));
        let handler = env.payments.customer_events();
        env.deliver(&handler, &event).await;
        env.deliver(&handler, &event).await;
        let account = env.account(registered).await;
        assert_eq!((account.credit_limit_cents, account.outstanding_cents, account.version), (DEFAULT_LIMIT, 0, 1));
        assert_eq!(shared_kernel::messaging::Handler::event_types(&handler), Some(&[CustomerRegistered::TYPE][..]));

        // A limit set before registration is kept when the registration arrives late.
        let early = env.customer();
        env.payments.set_credit_limit(early, SetCreditLimit { credit_limit_cents: 5 }).await.unwrap();
        let late = CustomerRegistered { customer_id: CustomerId(early), name: "B".into(), email: "b@example.com".into() };
        env.deliver(&handler, &late).await;
        assert_eq!(env.account(early).await.credit_limit_cents, 5);

        // An order from a customer payments has not seen opens the account too.
        let unseen = Uuid::now_v7();
        env.place(Uuid::now_v7(), unseen, 10).await;
        let account = env.account(unseen).await;
        assert_eq!((account.credit_limit_cents, account.outstanding_cents), (DEFAULT_LIMIT, 10));
        assert!(env.published().await.iter().all(|e| e.event_type != "customers.CustomerRegistered"));
    }

    async fn credit_limits(kind: crate::support::Kind) {
        let env = Env::new(kind, "credit_limits").await;
        let customer = env.customer();
        let set = |limit| SetCreditLimit { credit_limit_cents: limit };

        let unknown = Uuid::now_v7();
        assert!(matches!(env.payments.set_credit_limit(unknown, set(10)).await, Err(PaymentsError::CustomerNotFound(id)) if id == unknown));
        for bad in [-1, payments_api::MAX_CREDIT_LIMIT_CENTS + 1, i64::MIN] {
            match env.payments.set_credit_limit(customer, set(bad)).await {
                Err(PaymentsError::Invalid(errors)) => assert_eq!(errors[0].field, "credit_limit_cents"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(env.payments.account(customer).await, Err(PaymentsError::AccountNotFound(_))));

        let opened = env.payments.set_credit_limit(customer, set(payments_api::MAX_CREDIT_LIMIT_CENTS)).await.unwrap();
        assert_eq!((opened.credit_limit_cents, opened.available_cents, opened.version), (payments_api::MAX_CREDIT_LIMIT_CENTS, payments_api::MAX_CREDIT_LIMIT_CENTS, 1));
        env.place(Uuid::now_v7(), customer, 500).await;
        // Below what is outstanding: allowed; nothing is available.
        let lowered = env.payments.set_credit_limit(customer, set(200)).await.unwrap();
        assert_eq!((lowered.credit_limit_cents, lowered.outstanding_cents, lowered.available_cents, lowered.version), (200, 500, 0, 3));
        assert_eq!(env.account(customer).await, lowered);
        // The same limit again appends nothing.
        assert_eq!(env.payments.set_credit_limit(customer, set(200)).await.unwrap().version, 3);
        let declined = Uuid::now_v7();
        env.place(declined, customer, 1).await;
        assert_eq!(env.payment_of(declined).await.status, PaymentStatus::Declined);

        env.customers.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(env.payments.set_credit_limit(customer, set(7)).await, Err(PaymentsError::Unavailable("customers"))));
        assert_eq!(env.account(customer).await.credit_limit_cents, 200);
    }

    async fn lists_filter_and_page_in_creation_order(kind: crate::support::Kind) {
        let env = Env::new(kind, "lists_filter_and_page_in_creation_order").await;
        let (a, b) = (env.customer(), env.customer());
        let orders: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for order in &orders {
            env.place(*order, a, 10).await;
        }
        env.place(Uuid::now_v7(), b, 10).await;

        let first = env.payments.list_payments(
            payments_api::PaymentFilter { customer_id: Some(a), order_id: None },
            crate::support::page(2),
        ).await.unwrap();
        assert_eq!(first.items.iter().map(|p| p.order_id).collect::<Vec<_>>(), orders[..2]);
        let after = first.next.as_deref().and_then(shared_kernel::http::decode_cursor);
        assert!(after.is_some());
        let second = env.payments.list_payments(
            payments_api::PaymentFilter { customer_id: Some(a), order_id: None },
            shared_kernel::http::PageRequest { limit: 2, after },
        ).await.unwrap();
        assert_eq!(second.items.iter().map(|p| p.order_id).collect::<Vec<_>>(), orders[2..]);
        assert_eq!(second.next, None);
        let all = env.payments.list_payments(Default::default(), crate::support::page(50)).await.unwrap();
        assert_eq!(all.items.len(), 4);
        let both = env.payments.list_payments(
            payments_api::PaymentFilter { customer_id: Some(b), order_id: Some(orders[0]) },
            crate::support::page(50),
        ).await.unwrap();
        assert!(both.items.is_empty());
    }
}
