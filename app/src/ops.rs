//! Operations endpoints of the messaging runtime: subscription positions and rewinds.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use shared_kernel::http::{Json, Problem};
use shared_kernel::messaging::{Bus, BusError, SubscriptionStatus};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(bus: Bus) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_modules))
        .routes(routes!(list_subscriptions))
        .routes(routes!(rewind_subscription))
        .with_state(bus)
}

/// The module graph as this process runs it.
#[derive(Debug, Serialize, ToSchema)]
struct ModuleMap {
    /// Every module of the shop, and whether it runs in this process.
    modules: Vec<ModuleInfo>,
    /// `caller → callee` through a module API. (None yet: the first arrive with the saga.)
    call_edges: Vec<Edge>,
    /// `publisher → subscriber` through integration events, one per subscription.
    event_edges: Vec<Edge>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ModuleInfo {
    name: &'static str,
    local: bool,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
struct Edge {
    from: String,
    to: String,
    /// The subscription that carries an event edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<String>,
}

/// Modules, call edges and event edges; the same graph `bounded arch graph` draws.
#[utoipa::path(get, path = "/ops/modules", tag = "operations", responses((status = 200, body = ModuleMap)))]
async fn list_modules(State(bus): State<Bus>) -> axum::Json<ModuleMap> {
    let local = bus.local_modules();
    let modules = crate::config::MODULES
        .iter()
        .map(|name| ModuleInfo {
            name,
            local: local.contains(name),
        })
        .collect();
    let mut event_edges: Vec<Edge> = bus
        .subscriptions()
        .iter()
        .map(|s| Edge {
            from: s.source.to_owned(),
            to: s.consumer.to_owned(),
            subscription: Some(s.name.clone()),
        })
        .collect();
    event_edges.sort();
    axum::Json(ModuleMap {
        modules,
        call_edges: Vec::new(),
        event_edges,
    })
}

fn problem(error: BusError) -> Problem {
    match error {
        BusError::UnknownSubscription(name) => {
            Problem::not_found(format!("no subscription named {name:?}"))
        }
        BusError::Storage(error) => error.into(),
    }
}

/// Every subscription of this process: source, checkpoint, the source's head and the lag.
#[utoipa::path(
    get, path = "/ops/subscriptions", tag = "operations",
    responses((status = 200, body = Vec<SubscriptionStatus>))
)]
async fn list_subscriptions(
    State(bus): State<Bus>,
) -> Result<axum::Json<Vec<SubscriptionStatus>>, Problem> {
    Ok(axum::Json(bus.status().await?))
}

/// Body of a rewind.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Rewind {
    /// The seq to continue after; 0 replays the whole retained log.
    to_seq: i64,
}

/// Moves a subscription back to `to_seq`; effects stay exactly-once thanks to the inbox.
#[utoipa::path(
    post, path = "/ops/subscriptions/{name}/rewind", tag = "operations",
    params(("name" = String, Path, description = "Subscription name, e.g. `orders<-customers`")),
    request_body = Rewind,
    responses(
        (status = 200, body = SubscriptionStatus),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rewind_subscription(
    State(bus): State<Bus>,
    Path(name): Path<String>,
    Json(rewind): Json<Rewind>,
) -> Result<axum::Json<SubscriptionStatus>, Problem> {
    if rewind.to_seq < 0 {
        return Err(Problem::field("to_seq", "must be 0 or more"));
    }
    bus.rewind(&name, rewind.to_seq).await.map_err(problem)?;
    let status = bus.status().await?;
    status
        .into_iter()
        .find(|s| s.name == name)
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("no subscription named {name:?}")))
}
