//! Upgrading a database of the stub (migration 0001, table `accounts`) keeps its accounts:
//! migration 0002 turns each row into an account stream.

use payments::{Payments, PaymentsConfig};
use payments_api::{PaymentsApi, SetCreditLimit};
use shared_kernel::storage::{ModuleDb, StorageConfig};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use uuid::Uuid;

use crate::support::FakeCustomers;

#[tokio::test]
async fn stub_accounts_survive_the_upgrade_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let migrations = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/payments/sqlite"
    );
    std::fs::copy(
        format!("{migrations}/0001_accounts.sql"),
        first.path().join("0001_accounts.sql"),
    )
    .unwrap();
    let customer = Uuid::now_v7();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("payments.sqlite"))
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::migrate::Migrator::new(first.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO accounts (customer_id, credit_limit_cents, opened_at) VALUES ($1, $2, $3)",
    )
    .bind(customer)
    .bind(4_321_i64)
    .bind(shared_kernel::clock::now())
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let db = ModuleDb::open(
        payments::NAME,
        &payments::MIGRATIONS,
        &StorageConfig::sqlite(dir.path()),
    )
    .await
    .unwrap();
    let customers = std::sync::Arc::new(FakeCustomers::default());
    customers.add(customer);
    let payments = Payments::new(db, customers, PaymentsConfig::default());
    let account = payments.account(customer).await.unwrap();
    assert_eq!(
        (
            account.credit_limit_cents,
            account.outstanding_cents,
            account.version
        ),
        (4_321, 0, 1)
    );
    let changed = payments
        .set_credit_limit(
            customer,
            SetCreditLimit {
                credit_limit_cents: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((changed.credit_limit_cents, changed.version), (10, 2));
}
