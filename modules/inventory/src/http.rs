//! The `/products` and `/reservations` endpoints, over any [`InventoryApi`] implementation.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use inventory_api::{
    Availability, InventoryApi, InventoryError, NewProduct, Product, ProductId, ProductPatch,
    Reservation, SetStock, StockLevel,
};
use shared_kernel::http::{Json, ListParams, Page, Path, Problem, Query, idempotency_key, path_id};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Api = Arc<dyn InventoryApi>;

/// The module's routes and their OpenAPI description.
pub fn router(api: Api) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_product, list_products))
        .routes(routes!(get_product, update_product))
        .routes(routes!(set_stock))
        .routes(routes!(get_availability))
        .routes(routes!(get_reservation))
        .with_state(api)
}

fn problem(error: InventoryError) -> Problem {
    match error {
        InventoryError::Invalid(errors) => Problem::validation(errors),
        InventoryError::ProductNotFound(id) => {
            Problem::not_found(format!("no product with id {id}"))
        }
        e @ (InventoryError::SkuTaken(_) | InventoryError::BelowReserved { .. }) => {
            Problem::conflict(e.to_string())
        }
        InventoryError::IdempotencyKeyReused(e) => e.into(),
        InventoryError::Unavailable => Problem::unavailable(crate::NAME),
        e @ InventoryError::Unexpected(_) => Problem::internal(&e),
    }
}

fn product_id(segment: &str) -> Result<ProductId, Problem> {
    path_id(segment, "product").map(ProductId)
}

/// Add a product to the catalog.
#[utoipa::path(
    post, path = "/products", tag = "inventory",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried create return the original response (1..=255 characters).", pattern = r"^[!-~]{1,255}$")),
    request_body = NewProduct,
    responses(
        (status = 201, description = "Created", body = Product),
        (status = 409, description = "SKU exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_product(
    State(api): State<Api>,
    headers: HeaderMap,
    Json(input): Json<NewProduct>,
) -> Result<(StatusCode, axum::Json<Product>), Problem> {
    let key = idempotency_key(&headers)?;
    let product = api.create_product(input, key).await.map_err(problem)?;
    Ok((StatusCode::CREATED, axum::Json(product)))
}

/// Read a product.
#[utoipa::path(
    get, path = "/products/{id}", tag = "inventory",
    params(("id" = Uuid, Path, description = "Product id (UUID)")),
    responses(
        (status = 200, body = Product),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_product(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<axum::Json<Product>, Problem> {
    let id = product_id(&id)?;
    Ok(axum::Json(api.get_product(id).await.map_err(problem)?))
}

/// Change a product's name and/or price (the SKU never changes).
#[utoipa::path(
    patch, path = "/products/{id}", tag = "inventory",
    params(("id" = Uuid, Path, description = "Product id (UUID)")),
    request_body = ProductPatch,
    responses(
        (status = 200, body = Product),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn update_product(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(patch): Json<ProductPatch>,
) -> Result<axum::Json<Product>, Problem> {
    let id = product_id(&id)?;
    Ok(axum::Json(
        api.update_product(id, patch).await.map_err(problem)?,
    ))
}

/// List products in creation order.
#[utoipa::path(
    get, path = "/products", tag = "inventory",
    params(ListParams),
    responses(
        (status = 200, body = Page<Product>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_products(
    State(api): State<Api>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Page<Product>>, Problem> {
    let page = params.page().map_err(Problem::validation)?;
    Ok(axum::Json(api.list_products(page).await.map_err(problem)?))
}

/// Set the units on hand of a product in one warehouse.
#[utoipa::path(
    put, path = "/products/{id}/stock/{warehouse}", tag = "inventory",
    params(
        ("id" = Uuid, Path, description = "Product id (UUID)"),
        ("warehouse" = String, Path, description = "1..=64 characters of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$"),
    ),
    request_body = SetStock,
    responses(
        (status = 200, body = StockLevel),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Below the reserved units", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_stock(
    State(api): State<Api>,
    Path((id, warehouse)): Path<(String, String)>,
    Json(stock): Json<SetStock>,
) -> Result<axum::Json<StockLevel>, Problem> {
    let id = product_id(&id)?;
    Ok(axum::Json(
        api.set_stock(id, warehouse, stock).await.map_err(problem)?,
    ))
}

/// Stock of a product over all warehouses.
#[utoipa::path(
    get, path = "/products/{id}/availability", tag = "inventory",
    params(("id" = Uuid, Path, description = "Product id (UUID)")),
    responses(
        (status = 200, body = Availability),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_availability(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<axum::Json<Availability>, Problem> {
    let id = product_id(&id)?;
    Ok(axum::Json(api.availability(id).await.map_err(problem)?))
}

/// The stock reservation of an order: where its units came from and where it stands.
#[utoipa::path(
    get, path = "/reservations/{order_id}", tag = "inventory",
    params(("order_id" = Uuid, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = Reservation),
        (status = 404, description = "Inventory has no reservation for the order", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_reservation(
    State(api): State<Api>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<Reservation>, Problem> {
    let order_id = path_id(&order_id, "reservation for order")?;
    match api.reservation(order_id).await.map_err(problem)? {
        Some(reservation) => Ok(axum::Json(reservation)),
        None => Err(Problem::not_found(format!(
            "no reservation for order {order_id}"
        ))),
    }
}
