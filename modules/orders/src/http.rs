//! The `/orders` endpoints, over any [`OrdersApi`] implementation.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use orders_api::{NewOrder, Order, OrderFilter, OrderId, OrderStatus, OrdersApi, OrdersError};
use serde::Deserialize;
use shared_kernel::http::{
    FieldError, Json, ListParams, Page, PageRequest, Path, Problem, Query, idempotency_key,
    path_id, query_value,
};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::read_model::{OrderSummary, ReadModel, ReadModelError, SummaryFilter};

type Api = Arc<dyn OrdersApi>;

/// Longest accepted `timeout_ms` of a long poll.
const MAX_WAIT_MS: u64 = 30_000;
const DEFAULT_WAIT_MS: u64 = 10_000;

/// The module's routes and their OpenAPI description.
pub fn router(api: Api) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .with_state(api)
}

pub(crate) fn problem(error: OrdersError) -> Problem {
    match error {
        OrdersError::Invalid(errors) => Problem::validation(errors),
        OrdersError::NotFound(id) => Problem::not_found(format!("no order with id {id}")),
        e @ OrdersError::Conflict { .. } => Problem::conflict(e.to_string()),
        OrdersError::IdempotencyKeyReused(e) => e.into(),
        OrdersError::Unavailable(module) => Problem::unavailable(module),
        e @ OrdersError::Unexpected(_) => Problem::internal(&e),
    }
}

/// Place an order. It is stored `PENDING` and answered at once (202); stock and payment follow
/// asynchronously, and the order becomes `CONFIRMED` or `REJECTED` (see the long poll of
/// `GET /orders/{id}`).
#[utoipa::path(
    post, path = "/orders", tag = "orders",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried placement return the original response (1..=255 characters).", pattern = r"^[!-~]{1,255}$")),
    request_body = NewOrder,
    responses(
        (status = 202, description = "Placed, pending", body = Order),
        (status = 422, description = "Invalid field, unknown customer or product", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Orders, customers or inventory unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn place_order(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(input): Json<NewOrder>,
) -> Result<(StatusCode, axum::Json<Order>), Problem> {
    let key = idempotency_key(&headers)?;
    let order = api.place(input, key).await.map_err(problem)?;
    Ok((StatusCode::ACCEPTED, axum::Json(order)))
}

/// Query of `GET /orders/{id}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitParams {
    /// `terminal`: answer once the order is no longer `PENDING` (or at the timeout).
    #[param(value_type = Option<WaitFor>, inline)]
    wait: Option<String>,
    /// Longest wait in milliseconds, 0..=30000 (default 10000).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 30000)]
    timeout_ms: Option<String>,
}

/// What to wait for: `terminal`: until the order is no longer `PENDING`.
// For the document only: the handler reads the raw string, so that a wrong value is a 422
// naming the parameter.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum WaitFor {
    Terminal,
}

impl WaitParams {
    fn timeout(&self) -> Result<Option<Duration>, Problem> {
        let mut errors = Vec::new();
        let waiting = match self.wait.as_deref() {
            None => false,
            Some("terminal") => true,
            Some(_) => {
                errors.push(FieldError::new("wait", "must be `terminal`"));
                false
            }
        };
        let timeout_ms = match self.timeout_ms.as_deref() {
            None => DEFAULT_WAIT_MS,
            Some(raw) => match raw.parse::<u64>() {
                Ok(ms) if ms <= MAX_WAIT_MS => ms,
                _ => {
                    errors.push(FieldError::new(
                        "timeout_ms",
                        format!("must be an integer from 0 to {MAX_WAIT_MS}"),
                    ));
                    DEFAULT_WAIT_MS
                }
            },
        };
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        Ok(waiting.then(|| Duration::from_millis(timeout_ms)))
    }
}

/// Read an order; with `wait=terminal`, once it is settled or `timeout_ms` has passed.
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id (UUID)"), WaitParams),
    responses(
        (status = 200, body = Order),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_order(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<axum::Json<Order>, Problem> {
    let id = OrderId(path_id(&id, "order")?);
    let order = match params.timeout()? {
        Some(timeout) => api.wait_terminal(id, timeout).await,
        None => api.get(id).await,
    };
    Ok(axum::Json(order.map_err(problem)?))
}

/// Query of `GET /orders`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListOrdersParams {
    /// Only this customer's orders.
    #[param(value_type = Option<Uuid>)]
    customer_id: Option<String>,
    /// Only orders in this status (`PENDING`, `CONFIRMED`, `REJECTED`, `CANCELLED`).
    #[param(value_type = Option<OrderStatus>, inline)]
    status: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Opaque cursor from the previous page's `next`.
    #[param(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    after: Option<String>,
}

/// List orders in placement order.
#[utoipa::path(
    get, path = "/orders", tag = "orders",
    params(ListOrdersParams),
    responses(
        (status = 200, body = Page<Order>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_orders(
    State(api): State<Api>,
    Query(params): Query<ListOrdersParams>,
) -> Result<axum::Json<Page<Order>>, Problem> {
    let (filter, page) = params.validate()?;
    Ok(axum::Json(api.list(filter, page).await.map_err(problem)?))
}

impl ListOrdersParams {
    /// The filter and page, or a 422 naming every invalid field.
    fn validate(self) -> Result<(OrderFilter, PageRequest), Problem> {
        let list = ListParams {
            limit: self.limit,
            after: self.after,
        };
        let mut errors = Vec::new();
        let page = list.page_collecting(&mut errors);
        let filter = OrderFilter {
            customer_id: query_value(
                "customer_id",
                self.customer_id.as_deref(),
                |raw| Uuid::parse_str(raw).ok(),
                "must be a UUID",
                &mut errors,
            ),
            status: query_value(
                "status",
                self.status.as_deref(),
                OrderStatus::parse,
                OrderStatus::EXPECTED,
                &mut errors,
            ),
        };
        match page {
            Some(page) if errors.is_empty() => Ok((filter, page)),
            _ => Err(Problem::validation(errors)),
        }
    }
}

/// Cancel a `PENDING` or `CONFIRMED` order; stock is released or restocked and the payment
/// voided or refunded asynchronously. A cancelled order is returned unchanged.
#[utoipa::path(
    post, path = "/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id (UUID)")),
    responses(
        (status = 202, description = "Cancelled (or already cancelled)", body = Order),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is rejected", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn cancel_order(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<Order>), Problem> {
    let id = OrderId(path_id(&id, "order")?);
    let order = api.cancel(id).await.map_err(problem)?;
    Ok((StatusCode::ACCEPTED, axum::Json(order)))
}

/// The read model's routes: `GET /order-summaries`.
pub fn summaries_router(model: ReadModel) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_summaries))
        .with_state(model)
}

/// The problem a read-model failure answers with.
pub fn read_problem(error: ReadModelError) -> Problem {
    match error {
        e @ (ReadModelError::RebuildRunning | ReadModelError::LogPruned { .. }) => {
            Problem::conflict(e.to_string())
        }
        ReadModelError::SourceUnavailable(module) => Problem::unavailable(module),
        ReadModelError::Storage(error) => error.into(),
        e @ ReadModelError::Projection(_) => Problem::internal(&e),
    }
}

/// Order summaries of the CQRS read model, in order-id order: eventually consistent with
/// orders, customers (current name and email) and payments.
#[utoipa::path(
    get, path = "/order-summaries", tag = "orders",
    params(ListOrdersParams),
    responses(
        (status = 200, body = Page<OrderSummary>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The read store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_summaries(
    State(model): State<ReadModel>,
    Query(params): Query<ListOrdersParams>,
) -> Result<axum::Json<Page<OrderSummary>>, Problem> {
    let (filter, page) = params.validate()?;
    let filter = SummaryFilter {
        customer_id: filter.customer_id,
        status: filter.status,
    };
    Ok(axum::Json(
        model.list(filter, page).await.map_err(read_problem)?,
    ))
}
