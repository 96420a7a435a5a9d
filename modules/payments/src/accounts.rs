//! Accounts opened on `customers.CustomerRegistered`.

use async_trait::async_trait;
use customers_api::events::CustomerRegistered;
use shared_kernel::clock;
use shared_kernel::messaging::{Envelope, Handler, IntegrationEvent};
use shared_kernel::storage::Tx;
use shared_kernel::with_tx;

/// Opens an account with the default credit limit for every newly registered customer; an
/// account that exists already is left as it is.
#[derive(Debug)]
pub struct AccountOpener {
    pub default_credit_limit_cents: i64,
}

#[async_trait]
impl Handler for AccountOpener {
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> anyhow::Result<()> {
        let Some(registered) = event.decode::<CustomerRegistered>() else {
            return Ok(());
        };
        let registered = registered?;
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO accounts (customer_id, credit_limit_cents, opened_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(registered.customer_id.0)
            .bind(self.default_credit_limit_cents)
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    fn event_types(&self) -> Option<&'static [&'static str]> {
        Some(&[CustomerRegistered::TYPE])
    }
}
