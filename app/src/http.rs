//! The process's HTTP surface: every local module's router merged with the operations
//! endpoints, behind the cross-cutting layers (request id, tracing, body limit, problem
//! details for unknown routes).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, Method, Request, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::join_all;
use serde::Serialize;
use shared_kernel::http::Problem;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::gateway::Gateway;
use crate::modules::Modules;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// How long `/ready` waits for one module's database.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(OpenApi)]
#[openapi(
    info(title = "Bounded", description = "A shop as a modular monolith with enforced data boundaries."),
    tags(
        (name = "customers", description = "Customers module"),
        (name = "inventory", description = "Catalog and stock"),
        (name = "orders", description = "Orders and the order saga"),
        (name = "payments", description = "Event-sourced payment accounts and payments"),
        (name = "operations", description = "Health, readiness and the API description"),
    )
)]
struct ApiDoc;

/// The OpenAPI document as served, set once the router is built.
#[derive(Debug, Clone, Default)]
struct Document(std::sync::Arc<std::sync::OnceLock<String>>);

/// The OpenAPI 3.1 document of every endpoint, this one included.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_document(State(document): State<Document>) -> impl IntoResponse {
    let json = document.0.get().cloned().unwrap_or_default();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
}

/// The full router and its OpenAPI document: the local modules' endpoints, the API
/// composition of `gateway` and the operations endpoints.
pub fn router(modules: &Modules, gateway: Gateway) -> Router {
    shared_kernel::prometheus::handle();
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi());
    if let Some(customers) = &modules.customers {
        api = api.merge(customers::router(customers.clone()));
    }
    if let Some(inventory) = &modules.inventory {
        api = api.merge(inventory::router(inventory.clone()));
    }
    if let Some(orders) = &modules.orders {
        api = api.merge(orders::router(orders.clone()));
    }
    if let Some(read_model) = &modules.read_model {
        api = api.merge(orders::summaries_router(read_model.clone()));
    }
    if let Some(payments) = &modules.payments {
        api = api.merge(payments::router(payments.clone()));
    }
    api = api.merge(crate::gateway::router(gateway));
    let ops = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .with_state(modules.clone());
    let metrics = OpenApiRouter::new()
        .routes(routes!(crate::telemetry::render))
        .with_state(modules.bus.clone());
    // The document describes itself too: it is filled in once the router is complete.
    let document = Document::default();
    let describe = OpenApiRouter::new()
        .routes(routes!(openapi_document))
        .with_state(document.clone());
    let (router, mut openapi) = api
        .merge(ops)
        .merge(metrics)
        .merge(describe)
        .merge(crate::ops::router(
            modules.bus.clone(),
            modules.read_model.clone(),
        ))
        .merge(crate::ops_views::router(modules.clone()))
        .split_for_parts();
    document_shared_answers(&mut openapi);
    let _ = document
        .0
        .set(serde_json::to_string_pretty(&openapi).unwrap_or_default());

    let request_id = HeaderName::from_static("x-request-id");
    router
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not support the method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::from_fn(refuse_cross_site))
        .layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .layer(axum::middleware::from_fn(crate::telemetry::event_context))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        // The request id is the correlation id of every event the request causes: the
                        // spans of their handlers in every module carry it as `correlation_id`.
                        tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request.id = id, correlation_id = id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        )
}

/// Adds to every operation the answers that the shared layers and extractors give, where the
/// operation's own annotation does not already name them, so that the document lists every
/// status an operation can return: 400 for a malformed query string, body or non-id path
/// segment, 413 and 415 for a body too large or not JSON, 422 for an invalid field or
/// parameter, 404 for a path id that names nothing, 403 for a cross-site mutation and 503 when
/// a module's database cannot answer.
fn document_shared_answers(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};

    // Endpoints that answer without any module database.
    const WITHOUT_STORAGE: [&str; 5] = [
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/ops/modules",
    ];
    for (path, item) in &mut openapi.paths.paths {
        let operations = [
            (false, &mut item.get),
            (true, &mut item.post),
            (true, &mut item.put),
            (true, &mut item.patch),
            (true, &mut item.delete),
        ];
        for (mutation, operation) in operations {
            let Some(operation) = operation else { continue };
            let parameters: Vec<(ParameterIn, String)> = operation
                .parameters
                .iter()
                .flatten()
                .filter_map(|parameter| match parameter {
                    RefOr::T(parameter) => {
                        Some((parameter.parameter_in.clone(), parameter.name.clone()))
                    }
                    RefOr::Ref(_) => None,
                })
                .collect();
            let in_path = |id: bool| {
                parameters.iter().any(|(place, name)| {
                    matches!(place, ParameterIn::Path)
                        && (name == "id" || name.ends_with("_id")) == id
                })
            };
            let query = parameters
                .iter()
                .any(|(place, _)| matches!(place, ParameterIn::Query));
            let body = operation.request_body.is_some();
            let answers = [
                (
                    query || body || in_path(false),
                    "400",
                    "Malformed request: a query parameter given twice, malformed JSON or a path segment that is not UTF-8",
                ),
                (mutation, "403", "A cross-site request from a browser"),
                (
                    in_path(true),
                    "404",
                    "No such resource (a path id that is not a UUID included)",
                ),
                (body, "413", "The body is larger than 1 MiB"),
                (body, "415", "The body is not application/json"),
                (
                    query || body,
                    "422",
                    "Invalid field or query parameter, named in `errors`",
                ),
                (
                    !WITHOUT_STORAGE.contains(&path.as_str()),
                    "503",
                    "A module's database cannot answer; try again later",
                ),
            ];
            for (applies, status, description) in answers {
                if applies {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(
                                        "application/problem+json",
                                        Content::new(Some(Ref::from_schema_name("Problem"))),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// Refuses a mutation (POST, PUT, PATCH, DELETE) that a browser sends on behalf of another
/// site: several of them have no body (cancel an order, rebuild a projection, retry or discard
/// a dead letter), so no CORS preflight protects them, and a page open in an operator's
/// browser could fire them. Browsers say where a request comes from (`Sec-Fetch-Site`,
/// `Origin`); requests without those headers (curl, service clients) are not from a browser
/// page and pass. The refusal happens before any handler runs, so it changes nothing.
async fn refuse_cross_site(request: axum::extract::Request, next: Next) -> Response {
    let mutation = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutation && let Some(reason) = cross_site(request.headers(), request.uri()) {
        tracing::warn!(
            method = %request.method(),
            path = %request.uri().path(),
            reason,
            "Refused a cross-site request."
        );
        return Problem::new(
            StatusCode::FORBIDDEN,
            "cross-site-request",
            "Cross-site request refused",
            format!(
                "{reason}; changes are accepted only from this origin or from non-browser clients"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Why the request comes from another site, or `None` when it does not (or cannot tell).
fn cross_site(headers: &HeaderMap, uri: &Uri) -> Option<&'static str> {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Some("Sec-Fetch-Site is cross-site");
    }
    let origin = headers.get(header::ORIGIN)?;
    let same = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.parse::<Uri>().ok())
        .is_some_and(|origin| same_origin(&origin, headers, uri));
    (!same).then_some("the Origin header names another host or port")
}

/// Whether the origin's host and port are the ones the request was sent to (`Host`, or the
/// authority of an HTTP/2 request). An opaque origin (`null`) is never the same.
fn same_origin(origin: &Uri, headers: &HeaderMap, uri: &Uri) -> bool {
    let (Some(scheme), Some(origin_authority)) = (origin.scheme_str(), origin.authority()) else {
        return false;
    };
    let target = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| host.parse::<Authority>().ok())
        .or_else(|| uri.authority().cloned());
    let Some(target) = target else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        _ => 80,
    };
    origin_authority.host().eq_ignore_ascii_case(target.host())
        && origin_authority.port_u16().unwrap_or(default_port)
            == target.port_u16().unwrap_or(default_port)
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `up` or `down` per module running in this process; a module with several databases
    /// (orders and its read store) is `up` when all of them are.
    modules: BTreeMap<&'static str, &'static str>,
}

/// Every local module can reach its database (503 naming the ones that cannot).
#[utoipa::path(
    get, path = "/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness))
)]
async fn ready(State(modules): State<Modules>) -> impl IntoResponse {
    let pings = modules.databases.iter().map(|db| async move {
        let state = match db.ping(READY_PING_TIMEOUT).await {
            Ok(()) => "up",
            Err(_) => "down",
        };
        (crate::modules::owner_of(db.module()), state)
    });
    let mut modules = BTreeMap::new();
    for (module, state) in join_all(pings).await {
        let entry = modules.entry(module).or_insert(state);
        if state == "down" {
            *entry = state;
        }
    }
    let status = if modules.values().all(|s| *s == "up") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Readiness { modules }))
}
