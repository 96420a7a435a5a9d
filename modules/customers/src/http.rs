//! The `/customers` endpoints, over any [`CustomersApi`] implementation.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use customers_api::{
    Customer, CustomerId, CustomerPatch, CustomersApi, CustomersError, NewCustomer,
};
use shared_kernel::http::{Json, ListParams, Page, Path, Problem, Query, idempotency_key, path_id};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Api = Arc<dyn CustomersApi>;

/// The module's routes and their OpenAPI description.
pub fn router(api: Api) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer))
        .with_state(api)
}

fn problem(error: CustomersError) -> Problem {
    match error {
        CustomersError::Invalid(errors) => Problem::validation(errors),
        CustomersError::NotFound(id) => Problem::not_found(format!("no customer with id {id}")),
        e @ CustomersError::EmailTaken(_) => Problem::conflict(e.to_string()),
        CustomersError::IdempotencyKeyReused(e) => e.into(),
        CustomersError::Unavailable => Problem::unavailable(crate::NAME),
        e @ CustomersError::Unexpected(_) => Problem::internal(&e),
    }
}

/// Register a customer.
#[utoipa::path(
    post, path = "/customers", tag = "customers",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried create return the original response (1..=255 characters).", pattern = r"^[!-~]{1,255}$")),
    request_body = NewCustomer,
    responses(
        (status = 201, description = "Registered", body = Customer),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_customer(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(input): Json<NewCustomer>,
) -> Result<(StatusCode, axum::Json<Customer>), Problem> {
    let key = idempotency_key(&headers)?;
    let customer = api.register(input, key).await.map_err(problem)?;
    Ok((StatusCode::CREATED, axum::Json(customer)))
}

/// Read a customer.
#[utoipa::path(
    get, path = "/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id (UUID)")),
    responses(
        (status = 200, body = Customer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_customer(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<axum::Json<Customer>, Problem> {
    let id = CustomerId(path_id(&id, "customer")?);
    Ok(axum::Json(api.get(id).await.map_err(problem)?))
}

/// Change a customer's name and/or email.
#[utoipa::path(
    patch, path = "/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id (UUID)")),
    request_body = CustomerPatch,
    responses(
        (status = 200, body = Customer),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_customer(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(patch): Json<CustomerPatch>,
) -> Result<axum::Json<Customer>, Problem> {
    let id = CustomerId(path_id(&id, "customer")?);
    Ok(axum::Json(api.update(id, patch).await.map_err(problem)?))
}

/// List customers in registration order.
#[utoipa::path(
    get, path = "/customers", tag = "customers",
    params(ListParams),
    responses(
        (status = 200, body = Page<Customer>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_customers(
    State(api): State<Api>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Page<Customer>>, Problem> {
    let page = params.page().map_err(Problem::validation)?;
    Ok(axum::Json(api.list(page).await.map_err(problem)?))
}
