//! Operations endpoints of the messaging runtime (subscription positions, rewinds, dead
//! letters) and of the read models (rebuilds).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use orders::{ReadModel, RebuildReport};
use serde::{Deserialize, Serialize};
use shared_kernel::http::{Json, Path, Problem, Query, path_id};
use shared_kernel::messaging::dead_letters::{DeadLetter, DeadLetterError};
use shared_kernel::messaging::{Bus, BusError, SubscriptionStatus};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router(bus: Bus, read_model: Option<ReadModel>) -> OpenApiRouter {
    let projections = OpenApiRouter::new()
        .routes(routes!(rebuild_projection))
        .with_state(Projections {
            bus: bus.clone(),
            read_model,
        });
    OpenApiRouter::new()
        .routes(routes!(list_modules))
        .routes(routes!(list_subscriptions))
        .routes(routes!(rewind_subscription))
        .routes(routes!(list_dead_letters))
        .routes(routes!(retry_dead_letter))
        .routes(routes!(discard_dead_letter))
        .with_state(bus)
        .merge(projections)
}

/// Who sent a request, for the log of operations that change state: the peer address when the
/// server provides it (`bounded serve` does), `unknown` for a router called without a socket.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        Ok(Peer(info.map(|ConnectInfo(addr)| *addr)))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The read models of this process and the bus that feeds them.
#[derive(Debug, Clone)]
struct Projections {
    bus: Bus,
    read_model: Option<ReadModel>,
}

/// Rebuilds a read model from the retained event log: the new version is built aside and
/// swapped in at the end; reads keep answering from the current one meanwhile.
#[utoipa::path(
    post, path = "/ops/projections/{name}/rebuild", tag = "operations",
    params(("name" = String, Path, description = "Projection name: `order_summaries`", min_length = 1)),
    responses(
        (status = 200, description = "Rebuilt and swapped in", body = RebuildReport),
        (status = 404, description = "No such projection here", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rebuild is already running, or the log was pruned", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rebuild_projection(
    State(projections): State<Projections>,
    peer: Peer,
    Path(name): Path<String>,
) -> Result<axum::Json<RebuildReport>, Problem> {
    let model = match &projections.read_model {
        Some(model) if name == orders::PROJECTION => model,
        _ => return Err(Problem::not_found(format!("no projection named {name:?}"))),
    };
    let report = model
        .rebuild(&projections.bus)
        .await
        .map_err(orders::read_problem)?;
    tracing::info!(
        %peer,
        projection = %report.name,
        generation = report.generation,
        events_replayed = report.events_replayed,
        "Projection rebuilt and swapped in."
    );
    Ok(axum::Json(report))
}

/// The module graph as this process runs it.
#[derive(Debug, Serialize, ToSchema)]
struct ModuleMap {
    /// Every module of the shop, and whether it runs in this process.
    modules: Vec<ModuleInfo>,
    /// `caller → callee` through a module API.
    call_edges: Vec<Edge>,
    /// `publisher → subscriber` through integration events, one per subscription.
    event_edges: Vec<Edge>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ModuleInfo {
    name: &'static str,
    local: bool,
    /// Integration event types the module publishes.
    publishes: Vec<&'static str>,
    /// Event types its subscriptions apply, its read stores' included (a subscription that
    /// takes every event of its source lists `<source>.*`).
    consumes: Vec<String>,
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
    let subscriptions = bus.subscriptions();
    let modules = crate::modules::REGISTRY
        .iter()
        .map(|module| {
            let (name, publishes) = (module.name, module.publishes);
            let mut consumes: Vec<String> = subscriptions
                .iter()
                .filter(|s| crate::modules::owner_of(s.consumer) == name)
                .flat_map(|s| match s.handler.event_types() {
                    Some(types) => types.iter().map(|t| (*t).to_owned()).collect(),
                    None => vec![format!("{}.*", s.source)],
                })
                .collect();
            consumes.sort();
            consumes.dedup();
            ModuleInfo {
                name,
                local: local.contains(&name),
                publishes: publishes.to_vec(),
                consumes,
            }
        })
        .collect();
    // A module's own stores (the orders read store) count as the module; a subscription of
    // one to the module's own events is inside the module, not an edge of the graph.
    let mut event_edges: Vec<Edge> = bus
        .subscriptions()
        .iter()
        .map(|s| Edge {
            from: s.source.to_owned(),
            to: crate::modules::owner_of(s.consumer).to_owned(),
            subscription: Some(s.name.clone()),
        })
        .filter(|e| e.from != e.to)
        .collect();
    event_edges.sort();
    let mut call_edges: Vec<Edge> = crate::modules::REGISTRY
        .iter()
        .flat_map(|module| {
            module.calls.iter().map(|callee| Edge {
                from: module.name.to_owned(),
                to: (*callee).to_owned(),
                subscription: None,
            })
        })
        .collect();
    call_edges.sort();
    axum::Json(ModuleMap {
        modules,
        call_edges,
        event_edges,
    })
}

fn problem(error: BusError) -> Problem {
    match error {
        BusError::UnknownSubscription(name) => {
            Problem::not_found(format!("no subscription named {name:?}"))
        }
        BusError::RewindAhead { .. } | BusError::NegativeSeq(_) => {
            Problem::field("to_seq", error.to_string())
        }
        BusError::Storage(error) => error.into(),
        BusError::DeadLetter(DeadLetterError::NotFound(id)) => {
            Problem::not_found(format!("no dead letter with id {id}"))
        }
        BusError::DeadLetter(e @ DeadLetterError::NotParked { .. }) => {
            Problem::conflict(e.to_string())
        }
        BusError::DeadLetter(e @ DeadLetterError::StillFailing(_)) => {
            Problem::conflict(e.to_string())
        }
        BusError::DeadLetter(DeadLetterError::Storage(error)) => error.into(),
    }
}

/// Query of `GET /ops/subscriptions`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SubscriptionsQuery {
    /// `settled`: answer once every subscription has applied everything committed (or at the
    /// timeout), instead of polling.
    #[param(value_type = Option<WaitFor>, inline)]
    wait: Option<String>,
    /// Longest wait in milliseconds, 0..=60000 (default 10000).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 60000)]
    timeout_ms: Option<String>,
}

/// What to wait for: `settled`: until every subscription has caught up.
// For the document only: the handler reads the raw string, so that a wrong value is a 422
// naming the parameter.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum WaitFor {
    Settled,
}

/// Every subscription of this process: source, checkpoint, the source's head and the lag.
/// With `wait=settled`, once all are caught up or `timeout_ms` has passed (200 either way;
/// the lags tell which).
#[utoipa::path(
    get, path = "/ops/subscriptions", tag = "operations",
    params(SubscriptionsQuery),
    responses(
        (status = 200, body = Vec<SubscriptionStatus>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_subscriptions(
    State(bus): State<Bus>,
    Query(query): Query<SubscriptionsQuery>,
) -> Result<axum::Json<Vec<SubscriptionStatus>>, Problem> {
    let wait = match query.wait.as_deref() {
        None => false,
        Some("settled") => true,
        Some(_) => return Err(Problem::field("wait", "must be `settled`")),
    };
    let timeout_ms = match query.timeout_ms.as_deref() {
        None => 10_000,
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if ms <= 60_000 => ms,
            _ => {
                return Err(Problem::field(
                    "timeout_ms",
                    "must be an integer from 0 to 60000",
                ));
            }
        },
    };
    if wait {
        bus.settled(std::time::Duration::from_millis(timeout_ms))
            .await;
    }
    Ok(axum::Json(bus.status().await?))
}

/// Body of a rewind.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Rewind {
    /// The seq to continue after; 0 replays the whole retained log.
    #[schema(minimum = 0)]
    to_seq: i64,
}

/// Moves a subscription back to `to_seq`; effects stay exactly-once thanks to the inbox.
///
/// A `to_seq` ahead of the checkpoint would skip events: 422, naming the checkpoint and the
/// source's head, and nothing changes. `to_seq` equal to the checkpoint changes nothing (200).
#[utoipa::path(
    post, path = "/ops/subscriptions/{name}/rewind", tag = "operations",
    params(("name" = String, Path, description = "Subscription name, e.g. `orders<-customers`", min_length = 1)),
    request_body = Rewind,
    responses(
        (status = 200, body = SubscriptionStatus),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`to_seq` below 0 or ahead of the checkpoint; nothing changed", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rewind_subscription(
    State(bus): State<Bus>,
    peer: Peer,
    Path(name): Path<String>,
    Json(rewind): Json<Rewind>,
) -> Result<axum::Json<SubscriptionStatus>, Problem> {
    let from = bus.rewind(&name, rewind.to_seq).await.map_err(problem)?;
    if from != rewind.to_seq {
        tracing::info!(%peer, subscription = %name, from_seq = from, to_seq = rewind.to_seq, "Subscription rewound.");
    }
    Ok(axum::Json(bus.status_of(&name).await.map_err(problem)?))
}

/// Parked events (and the events blocked behind them) with error chain and attempts.
#[utoipa::path(
    get, path = "/ops/dead-letters", tag = "operations",
    responses((status = 200, body = Vec<DeadLetter>))
)]
async fn list_dead_letters(State(bus): State<Bus>) -> Result<axum::Json<Vec<DeadLetter>>, Problem> {
    Ok(axum::Json(bus.dead_letters().await?))
}

async fn dead_letter_after(bus: &Bus, id: Uuid) -> Result<axum::Json<DeadLetter>, Problem> {
    Ok(axum::Json(bus.dead_letter(id).await.map_err(problem)?))
}

/// Applies a parked event now; on success the events blocked behind it follow, in order.
#[utoipa::path(
    post, path = "/ops/dead-letters/{id}/retry", tag = "operations",
    params(("id" = Uuid, Path, description = "Dead letter id (UUID)")),
    responses(
        (status = 200, description = "Applied; the dead letter is `retried`", body = DeadLetter),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not parked, or the retry failed again", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn retry_dead_letter(
    State(bus): State<Bus>,
    peer: Peer,
    Path(id): Path<String>,
) -> Result<axum::Json<DeadLetter>, Problem> {
    let id = path_id(&id, "dead letter")?;
    bus.retry_dead_letter(id).await.map_err(problem)?;
    let letter = dead_letter_after(&bus, id).await?;
    tracing::info!(%peer, dead_letter = %id, event = %letter.event.id, event_type = %letter.event.event_type, subscription = %letter.subscription, "Dead letter retried and applied.");
    Ok(letter)
}

/// Gives up on a parked event; the events blocked behind it follow, in order.
#[utoipa::path(
    post, path = "/ops/dead-letters/{id}/discard", tag = "operations",
    params(("id" = Uuid, Path, description = "Dead letter id (UUID)")),
    responses(
        (status = 200, description = "The dead letter is `discarded`", body = DeadLetter),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not parked", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn discard_dead_letter(
    State(bus): State<Bus>,
    peer: Peer,
    Path(id): Path<String>,
) -> Result<axum::Json<DeadLetter>, Problem> {
    let id = path_id(&id, "dead letter")?;
    bus.discard_dead_letter(id).await.map_err(problem)?;
    let letter = dead_letter_after(&bus, id).await?;
    tracing::warn!(%peer, dead_letter = %id, event = %letter.event.id, event_type = %letter.event.event_type, subscription = %letter.subscription, "Dead letter discarded: its event will never be applied.");
    Ok(letter)
}
