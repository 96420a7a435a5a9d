//! [`Customers`]: the module's implementation of [`CustomersApi`] over its own database.

use async_trait::async_trait;
use customers_api::events::{CustomerRegistered, CustomerUpdated};
use customers_api::{
    Customer, CustomerId, CustomerPatch, CustomersApi, CustomersError, NewCustomer,
};
use shared_kernel::clock;
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::messaging::{EventContext, outbox};
use shared_kernel::storage::idempotency::{self, IdempotencyError, IdempotencyKey};
use shared_kernel::storage::{ModuleDb, Tx, is_unique_violation};
use shared_kernel::{with_reader, with_tx};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{CustomerName, Email};

/// Scope of `Idempotency-Key`s of registrations.
const SCOPE_REGISTER: &str = "customers.register";
const EMAIL_UNIQUE: (&str, &str) = (
    "customers_email_normalized_key",
    "customers.email_normalized",
);

/// The customers module over its database handle.
#[derive(Debug, Clone)]
pub struct Customers {
    db: ModuleDb,
}

#[derive(Debug, sqlx::FromRow)]
struct CustomerRow {
    id: Uuid,
    name: String,
    email: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Customer {
            id: CustomerId(row.id),
            name: row.name,
            email: row.email,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl Customers {
    pub fn new(db: ModuleDb) -> Self {
        Self { db }
    }

    fn idempotency_error(&self, error: IdempotencyError) -> CustomersError {
        match error {
            IdempotencyError::Reused(e) => e.into(),
            IdempotencyError::Storage(e) => self.db.classify(e).into(),
        }
    }

    /// Maps a failed write: a duplicate email is the caller's problem, the rest is ours.
    fn write_error(&self, error: sqlx::Error, email: Option<&Email>) -> CustomersError {
        match email {
            Some(email) if is_unique_violation(&error, EMAIL_UNIQUE.0, EMAIL_UNIQUE.1) => {
                CustomersError::EmailTaken(email.as_str().to_owned())
            }
            _ => self.db.classify(error).into(),
        }
    }
}

fn validate_new(input: &NewCustomer) -> Result<(CustomerName, Email), CustomersError> {
    match (CustomerName::parse(&input.name), Email::parse(&input.email)) {
        (Ok(name), Ok(email)) => Ok((name, email)),
        (name, email) => Err(CustomersError::Invalid(
            [name.err(), email.err()].into_iter().flatten().collect(),
        )),
    }
}

fn validate_patch(
    patch: &CustomerPatch,
) -> Result<(Option<CustomerName>, Option<Email>), CustomersError> {
    let name = patch.name.as_deref().map(CustomerName::parse).transpose();
    let email = patch.email.as_deref().map(Email::parse).transpose();
    match (name, email) {
        (Ok(name), Ok(email)) => Ok((name, email)),
        (name, email) => Err(CustomersError::Invalid(
            [name.err(), email.err()].into_iter().flatten().collect(),
        )),
    }
}

async fn insert(tx: &mut Tx, customer: &Customer, email: &Email) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO customers (id, name, email, email_normalized, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(customer.id.0)
        .bind(&customer.name)
        .bind(&customer.email)
        .bind(email.normalized())
        .bind(customer.created_at)
        .bind(customer.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

#[async_trait]
impl CustomersApi for Customers {
    async fn register(
        &self,
        input: NewCustomer,
        key: Option<IdempotencyKey>,
    ) -> Result<Customer, CustomersError> {
        let (name, email) = validate_new(&input)?;
        let fingerprint = idempotency::fingerprint(&input);
        let mut tx = self.db.begin().await?;
        if let Some(key) = &key {
            let stored = idempotency::replay(&mut tx, SCOPE_REGISTER, key, &fingerprint).await;
            if let Some(customer) = stored.map_err(|e| self.idempotency_error(e))? {
                return Ok(customer);
            }
        }
        let now = clock::now();
        let customer = Customer {
            id: CustomerId::generate(),
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            created_at: now,
            updated_at: now,
        };
        insert(&mut tx, &customer, &email)
            .await
            .map_err(|e| self.write_error(e, Some(&email)))?;
        let registered = CustomerRegistered {
            customer_id: customer.id,
            name: customer.name.clone(),
            email: customer.email.clone(),
        };
        outbox::append(&mut tx, &registered, &EventContext::current())
            .map_err(|e| self.write_error(e, None))?;
        if let Some(key) = &key {
            idempotency::remember(&mut tx, SCOPE_REGISTER, key, &fingerprint, &customer)
                .await
                .map_err(|e| self.write_error(e, None))?;
        }
        tx.commit().await.map_err(|e| self.write_error(e, None))?;
        Ok(customer)
    }

    async fn get(&self, id: CustomerId) -> Result<Customer, CustomersError> {
        let row: Option<CustomerRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(
                "SELECT id, name, email, created_at, updated_at FROM customers WHERE id = $1",
            )
            .bind(id.0)
            .fetch_optional(pool)
            .await
        })
        .map_err(|e| self.db.classify(e))?;
        row.map(Customer::from).ok_or(CustomersError::NotFound(id))
    }

    async fn update(
        &self,
        id: CustomerId,
        patch: CustomerPatch,
    ) -> Result<Customer, CustomersError> {
        let (name, email) = validate_patch(&patch)?;
        if name.is_none() && email.is_none() {
            return self.get(id).await;
        }
        let mut tx = self.db.begin().await?;
        let row: Option<CustomerRow> = with_tx!(&mut tx, |conn| {
            sqlx::query_as(
                "UPDATE customers SET \
                   name = COALESCE($2, name), \
                   email = COALESCE($3, email), \
                   email_normalized = COALESCE($4, email_normalized), \
                   updated_at = $5 \
                 WHERE id = $1 \
                 RETURNING id, name, email, created_at, updated_at",
            )
            .bind(id.0)
            .bind(name.as_ref().map(CustomerName::as_str))
            .bind(email.as_ref().map(Email::as_str))
            .bind(email.as_ref().map(Email::normalized))
            .bind(clock::now())
            .fetch_optional(conn)
            .await
        })
        .map_err(|e| self.write_error(e, email.as_ref()))?;
        let Some(row) = row else {
            return Err(CustomersError::NotFound(id));
        };
        let customer = Customer::from(row);
        let updated = CustomerUpdated {
            customer_id: customer.id,
            name: customer.name.clone(),
            email: customer.email.clone(),
        };
        outbox::append(&mut tx, &updated, &EventContext::current())
            .map_err(|e| self.write_error(e, None))?;
        tx.commit()
            .await
            .map_err(|e| self.write_error(e, email.as_ref()))?;
        Ok(customer)
    }

    async fn list(&self, page: PageRequest) -> Result<Page<Customer>, CustomersError> {
        let rows: Vec<CustomerRow> = with_reader!(self.db.reader()?, |pool| {
            sqlx::query_as(
                "SELECT id, name, email, created_at, updated_at FROM customers \
                 WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(page.after.unwrap_or(Uuid::nil()))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(pool)
            .await
        })
        .map_err(|e| self.db.classify(e))?;
        Ok(Page::from_rows(
            rows.into_iter().map(Customer::from).collect(),
            page,
            |c| c.id.0,
        ))
    }
}
