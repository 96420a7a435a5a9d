//! Concurrent writers of one account stream are serialized by version conflicts and retries:
//! never an over-reservation, never a lost event, versions without gaps.

use std::sync::Arc;

use payments_api::{PaymentStatus, PaymentsApi, SetCreditLimit};
use uuid::Uuid;

use crate::support::{Env, deliver, placed, types};

/// Runs `n` authorizations of `amount` for `customer` at once, each in its own transaction.
fn authorizations(
    env: &Arc<Env>,
    customer: Uuid,
    n: usize,
    amount: i64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let env = Arc::clone(env);
            tokio::spawn(async move {
                let handler = env.payments.order_events();
                deliver(&env.db, &handler, &placed(Uuid::now_v7(), customer, amount))
                    .await
                    .unwrap();
            })
        })
        .collect()
}

shared_kernel::both_backends! {
    async fn twenty_concurrent_authorizations_fit_five(kind: crate::support::Kind) {
        let env = Arc::new(Env::new(kind, "twenty_concurrent_authorizations_fit_five").await);
        let customer = env.customer();
        env.payments.set_credit_limit(customer, SetCreditLimit { credit_limit_cents: 500 }).await.unwrap();

        for task in authorizations(&env, customer, 20, 100) {
            task.await.unwrap();
        }

        let payments = env.payments_of(customer).await;
        assert_eq!(payments.len(), 20);
        let authorized = payments.iter().filter(|p| p.status == PaymentStatus::Authorized).count();
        let declined = payments.iter().filter(|p| p.status == PaymentStatus::Declined).count();
        assert_eq!((authorized, declined), (5, 15));
        let account = env.account(customer).await;
        assert_eq!((account.outstanding_cents, account.available_cents), (500, 0));
        assert_eq!(account.outstanding_cents, account.credit_limit_cents);
        // opened + five reservations, numbered 1..=6 without a gap
        assert_eq!(env.account_versions(customer).await, [1, 2, 3, 4, 5, 6]);
        assert_eq!(account.version, 6);
        assert_eq!(env.payments.account_replayed(customer).await.unwrap(), account);
        let published = env.published().await;
        assert_eq!(types(&published).iter().filter(|t| **t == "payments.PaymentAuthorized").count(), 5);
        assert_eq!(types(&published).iter().filter(|t| **t == "payments.PaymentDeclined").count(), 15);
        eprintln!("{kind:?}: {} version conflicts retried", env.payments.conflicts_retried());
    }

    async fn limit_changes_race_with_authorizations(kind: crate::support::Kind) {
        let env = Arc::new(Env::new(kind, "limit_changes_race_with_authorizations").await);
        let customer = env.customer();
        env.payments.set_credit_limit(customer, SetCreditLimit { credit_limit_cents: 500 }).await.unwrap();

        let mut tasks = authorizations(&env, customer, 20, 100);
        // One writer changes the limit, in this order, while the authorizations run.
        let changer = Arc::clone(&env);
        tasks.push(tokio::spawn(async move {
            for limit in [300, 900, 200, 1_000, 700] {
                changer.payments.set_credit_limit(customer, SetCreditLimit { credit_limit_cents: limit }).await.unwrap();
            }
        }));
        for task in tasks {
            task.await.unwrap();
        }

        // Replay the stream: every reservation fitted the limit in force when it was made.
        let events = env.payments.account_events(customer).await.unwrap();
        env.account_versions(customer).await;
        let (mut limit, mut outstanding, mut reservations, mut limit_changes) = (0_i64, 0_i64, 0, 0);
        for event in &events {
            match event.event_type.as_str() {
                "AccountOpened" => limit = event.data["credit_limit_cents"].as_i64().unwrap(),
                "CreditLimitChanged" => {
                    limit = event.data["credit_limit_cents"].as_i64().unwrap();
                    limit_changes += 1;
                }
                "CreditReserved" => {
                    outstanding += event.data["amount_cents"].as_i64().unwrap();
                    reservations += 1;
                    assert!(outstanding <= limit, "over-reserved at version {}: {outstanding} > {limit}", event.version);
                }
                other => panic!("unexpected account event {other}"),
            }
        }
        assert_eq!(limit_changes, 5, "every limit change is in the stream");
        assert_eq!(limit, 700);
        let payments = env.payments_of(customer).await;
        let authorized = payments.iter().filter(|p| p.status == PaymentStatus::Authorized).count();
        assert_eq!(authorized, reservations);
        assert!((2..=10).contains(&authorized), "{authorized} authorized");
        let account = env.account(customer).await;
        assert_eq!((account.credit_limit_cents, account.outstanding_cents), (700, 100 * authorized as i64));
        assert_eq!(account.version, events.len() as i64);
        assert_eq!(env.payments.account_replayed(customer).await.unwrap(), account);
    }
}
