//! Property: for random command sequences on an account, the state read from the latest
//! snapshot plus the later events equals the full replay from the database, and both equal
//! an independent model of the rules — for several `snapshot_every` values.

use std::collections::HashMap;

use payments::PaymentsConfig;
use payments_api::{PaymentStatus, PaymentsApi, SetCreditLimit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use uuid::Uuid;

use crate::support::{DEFAULT_LIMIT, Env, Kind};

#[derive(Debug, Clone)]
enum Command {
    SetLimit(i64),
    Place(i64),
    Confirm(usize),
    Reject(usize),
    Cancel(usize),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        1 => (0_i64..=1_500).prop_map(Command::SetLimit),
        4 => (0_i64..=400).prop_map(Command::Place),
        2 => any::<usize>().prop_map(Command::Confirm),
        1 => any::<usize>().prop_map(Command::Reject),
        1 => any::<usize>().prop_map(Command::Cancel),
    ]
}

/// What the rules say the account should be.
#[derive(Debug, Default)]
struct Model {
    limit: Option<i64>,
    statuses: HashMap<Uuid, (PaymentStatus, i64)>,
}

impl Model {
    fn outstanding(&self) -> i64 {
        self.statuses
            .values()
            .filter(|(s, _)| matches!(s, PaymentStatus::Authorized | PaymentStatus::Captured))
            .map(|(_, amount)| amount)
            .sum()
    }
}

async fn run(env: &Env, commands: &[Command]) -> Result<(), TestCaseError> {
    let customer = env.customer();
    let mut model = Model::default();
    let mut orders: Vec<Uuid> = Vec::new();
    for command in commands {
        let pick = |i: usize| (!orders.is_empty()).then(|| orders[i % orders.len()]);
        match *command {
            Command::SetLimit(limit) => {
                env.payments
                    .set_credit_limit(
                        customer,
                        SetCreditLimit {
                            credit_limit_cents: limit,
                        },
                    )
                    .await
                    .unwrap();
                model.limit = Some(limit);
            }
            Command::Place(amount) => {
                let order = Uuid::now_v7();
                env.place(order, customer, amount).await;
                let limit = *model.limit.get_or_insert(DEFAULT_LIMIT);
                let fits = amount <= (limit - model.outstanding()).max(0);
                let status = if fits {
                    PaymentStatus::Authorized
                } else {
                    PaymentStatus::Declined
                };
                model.statuses.insert(order, (status, amount));
                orders.push(order);
            }
            Command::Confirm(i) => {
                if let Some(order) = pick(i) {
                    env.confirm(order).await;
                    if let Some((s @ PaymentStatus::Authorized, _)) = model.statuses.get_mut(&order)
                    {
                        *s = PaymentStatus::Captured;
                    }
                }
            }
            Command::Reject(i) => {
                if let Some(order) = pick(i) {
                    env.reject(order).await;
                    if let Some((s @ PaymentStatus::Authorized, _)) = model.statuses.get_mut(&order)
                    {
                        *s = PaymentStatus::Voided;
                    }
                }
            }
            Command::Cancel(i) => {
                if let Some(order) = pick(i) {
                    env.cancel(order).await;
                    if let Some((s, _)) = model.statuses.get_mut(&order) {
                        *s = match *s {
                            PaymentStatus::Authorized => PaymentStatus::Voided,
                            PaymentStatus::Captured => PaymentStatus::Refunded,
                            other => other,
                        };
                    }
                }
            }
        }
    }
    let Some(limit) = model.limit else {
        // Only settlements of orders that never existed: no account.
        prop_assert!(env.payments.account(customer).await.is_err());
        return Ok(());
    };
    let from_snapshot = env.payments.account(customer).await.unwrap();
    let replayed = env.payments.account_replayed(customer).await.unwrap();
    prop_assert_eq!(&from_snapshot, &replayed);
    prop_assert_eq!(from_snapshot.credit_limit_cents, limit);
    prop_assert_eq!(from_snapshot.outstanding_cents, model.outstanding());
    prop_assert_eq!(
        from_snapshot.available_cents,
        (limit - model.outstanding()).max(0)
    );

    let every = i64::from(env.payments.config().snapshot_every);
    let snapshot = env
        .payments
        .account_snapshot_version(customer)
        .await
        .unwrap();
    let version = from_snapshot.version;
    if version >= every {
        // Taken at the append that crossed the last multiple of `every` (an append may add two
        // events: opening and reserving).
        let snapshot = snapshot.unwrap_or(0);
        prop_assert!(
            snapshot <= version && snapshot >= version / every * every,
            "snapshot {snapshot} of version {version}, every {every}"
        );
    } else {
        prop_assert_eq!(snapshot, None);
    }
    for (order, (status, amount)) in &model.statuses {
        let payment = env.payment_of(*order).await;
        prop_assert_eq!((payment.status, payment.amount_cents), (*status, *amount));
    }
    Ok(())
}

async fn property(kind: Kind, every: u32) {
    let env = Env::with_config(
        kind,
        "snapshot_plus_tail_equals_full_replay",
        PaymentsConfig {
            default_credit_limit_cents: DEFAULT_LIMIT,
            snapshot_every: every,
        },
    )
    .await;
    let cases = if kind == Kind::Postgres { 12 } else { 16 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&proptest::collection::vec(command(), 1..40), |commands| {
            handle.block_on(run(&env, &commands))
        })
    });
    if let Err(failure) = result {
        panic!("snapshot_every = {every}: {failure}");
    }
}

shared_kernel::both_backends! {
    async fn snapshot_plus_tail_equals_full_replay(kind: crate::support::Kind) {
        for every in [1, 2, 3, 7, 20] {
            property(kind, every).await;
        }
    }
}
