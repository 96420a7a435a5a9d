//! Operational views across modules, gathered through the module APIs and the event logs —
//! never through another module's tables: `/ops/sagas`, `/ops/timeline/{order_id}`,
//! `/ops/reconciliation`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use orders_api::{OrderId, OrderStatus, OrdersApi, OrdersError, Saga};
use payments_api::{PaymentFilter, PaymentsApi};
use serde::{Deserialize, Serialize};
use shared_kernel::http::{
    ListParams, Page, PageRequest, Path, Problem, Query, path_id, query_value,
};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::modules::Modules;
use crate::reconcile::{self, Reconciler, Report};

/// The views' routes.
pub fn router(modules: Modules) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_sagas))
        .routes(routes!(get_saga))
        .routes(routes!(timeline))
        .routes(routes!(reconciliation))
        .with_state(modules)
}

fn orders(modules: &Modules) -> Result<&Arc<dyn OrdersApi>, Problem> {
    modules
        .orders
        .as_ref()
        .ok_or_else(|| Problem::unavailable(orders_api::MODULE))
}

fn payments(modules: &Modules) -> Result<&Arc<dyn PaymentsApi>, Problem> {
    modules
        .payments
        .as_ref()
        .ok_or_else(|| Problem::unavailable(payments_api::MODULE))
}

fn orders_problem(error: OrdersError) -> Problem {
    match error {
        OrdersError::NotFound(id) => Problem::not_found(format!("no order with id {id}")),
        OrdersError::Unavailable(module) => Problem::unavailable(module),
        OrdersError::Invalid(errors) => Problem::validation(errors),
        e => Problem::internal(&e),
    }
}

/// Query of `GET /ops/sagas`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SagaParams {
    /// Only sagas whose order is in this status; `PENDING` lists the open ones.
    #[param(value_type = Option<OrderStatus>, inline)]
    status: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Opaque cursor from the previous page's `next`.
    #[param(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    after: Option<String>,
}

/// Sagas with their state, participants' replies, deadline and step history.
#[utoipa::path(
    get, path = "/ops/sagas", tag = "operations",
    params(SagaParams),
    responses(
        (status = 200, body = Page<Saga>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_sagas(
    State(modules): State<Modules>,
    Query(params): Query<SagaParams>,
) -> Result<axum::Json<Page<Saga>>, Problem> {
    let list = ListParams {
        limit: params.limit,
        after: params.after,
    };
    let mut errors = Vec::new();
    let page = list.page_collecting(&mut errors);
    let status = query_value(
        "status",
        params.status.as_deref(),
        OrderStatus::parse,
        OrderStatus::EXPECTED,
        &mut errors,
    );
    let Some(page) = page.filter(|_| errors.is_empty()) else {
        return Err(Problem::validation(errors));
    };
    let sagas = orders(&modules)?.list_sagas(status, page).await;
    Ok(axum::Json(sagas.map_err(orders_problem)?))
}

/// One order's saga.
#[utoipa::path(
    get, path = "/ops/sagas/{order_id}", tag = "operations",
    params(("order_id" = Uuid, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = Saga),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_saga(
    State(modules): State<Modules>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Saga>, Problem> {
    let id = OrderId(path_id(&order_id, "order")?);
    let saga = orders(&modules)?.saga(id).await;
    Ok(axum::Json(saga.map_err(orders_problem)?))
}

/// One event of a timeline, as its source published it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEvent {
    /// The publishing module and the event's position in its log.
    pub source: String,
    pub seq: i64,
    pub id: Uuid,
    /// `module.EventName@version`.
    pub event: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The request or flow the event belongs to.
    pub correlation_id: Option<Uuid>,
    /// The event (or request) that caused it.
    pub causation_id: Option<Uuid>,
    pub headers: BTreeMap<String, String>,
    pub payload: serde_json::Value,
}

/// Every retained event about an order across all modules — the order's own, the stock
/// reservation's and its payment's — in causal order, with correlation and causation ids.
#[utoipa::path(
    get, path = "/ops/timeline/{order_id}", tag = "operations",
    params(("order_id" = Uuid, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = Vec<TimelineEvent>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn timeline(
    State(modules): State<Modules>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Vec<TimelineEvent>>, Problem> {
    let id = OrderId(path_id(&order_id, "order")?);
    orders(&modules)?.get(id).await.map_err(orders_problem)?;
    // Orders' and inventory's events about the order carry its id; payments' carry the
    // payment's, which payments tells.
    let mut aggregates = vec![id.to_string()];
    if let Ok(payments) = payments(&modules) {
        let filter = PaymentFilter {
            order_id: Some(id.0),
            customer_id: None,
        };
        let page = PageRequest {
            limit: 10,
            after: None,
        };
        let found = payments.list_payments(filter, page).await.map_err(|e| {
            tracing::warn!(error = %e, "Timeline cannot read payments.");
            Problem::unavailable(payments_api::MODULE)
        })?;
        aggregates.extend(found.items.iter().map(|p| p.id.to_string()));
    }
    let events = modules.bus.events_about(&aggregates).await.map_err(|e| {
        tracing::error!(
            error = format!("{e:#}"),
            "Timeline cannot read the event logs."
        );
        Problem::unavailable("messaging")
    })?;
    Ok(axum::Json(
        events
            .into_iter()
            .map(|e| TimelineEvent {
                event: e.name(),
                source: e.source,
                seq: e.seq,
                id: e.id,
                aggregate_type: e.aggregate_type,
                aggregate_id: e.aggregate_id,
                occurred_at: e.occurred_at,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                headers: e.headers,
                payload: e.payload,
            })
            .collect(),
    ))
}

/// Compares every settled order with its payment and its stock reservation (through the
/// module APIs) and lists each disagreement with its order id. Orders whose events are still
/// on their way (after a wait of at most 5 s for the subscriptions) are counted as in flight,
/// not reported.
#[utoipa::path(
    get, path = "/ops/reconciliation", tag = "operations",
    responses(
        (status = 200, body = Report),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn reconciliation(State(modules): State<Modules>) -> Result<axum::Json<Report>, Problem> {
    let inventory = modules
        .inventory
        .clone()
        .ok_or_else(|| Problem::unavailable(inventory_api::MODULE))?;
    let reconciler = Reconciler {
        orders: orders(&modules)?.clone(),
        inventory,
        payments: payments(&modules)?.clone(),
        bus: modules.bus.clone(),
        settle_timeout: reconcile::SETTLE_TIMEOUT,
    };
    let report = reconciler.run().await.map_err(|e| {
        tracing::warn!(error = %e, "Reconciliation failed.");
        Problem::unavailable(e.module)
    })?;
    Ok(axum::Json(report))
}
