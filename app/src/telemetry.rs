//! Prometheus metrics: the HTTP latency middleware, the statement counter and `/metrics`
//! (the recorder, commit counts and process CPU and memory are the kernel's,
//! `shared_kernel::prometheus`).
//!
//! Counters are recorded where things happen (outbox appends at commit, handled, failed and
//! parked events in the subscription workers); subscription lag is a gauge refreshed from the
//! subscriptions' positions at every scrape, so the hot path pays nothing for it.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared_kernel::http::Problem;
use shared_kernel::messaging::{Bus, BusError, EventContext};

/// Counts the statements sqlx executes into `bounded_db_statements_total`: sqlx fires one
/// `sqlx::query` event per statement, once the subscriber says the target is enabled. Added by
/// `--count-statements` with a filter of its own on that target, so the log stays as
/// `BOUNDED_LOG` says; enabling it makes sqlx build each statement's log summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementCounter;

impl StatementCounter {
    /// The layer with its filter: every level of `sqlx::query` (slow statements come at
    /// `warn`, the others at `debug`), nothing else.
    pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        let only_statements = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::query", tracing::Level::TRACE);
        Self.with_filter(only_statements)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        metrics::counter!(shared_kernel::prometheus::STATEMENTS).increment(1);
    }
}

/// Records `bounded_http_request_duration_seconds{method, route, status}`.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "bounded_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics: HTTP latency, outbox appends, subscription lag and failures, saga
/// outcomes and durations, event-store conflicts.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn render(State(bus): State<Bus>) -> Result<Response, Problem> {
    // One subscription at a time: a module whose database is down must not take the metrics of
    // the others (or the scrape itself) with it — that is when they matter most.
    for subscription in bus.subscriptions() {
        let status = match bus.status_of(&subscription.name).await {
            Ok(status) => status,
            Err(BusError::UnknownSubscription(_)) => continue,
            Err(error) => {
                tracing::debug!(subscription = %subscription.name, error = %error, "No position for the metrics.");
                metrics::gauge!("bounded_subscription_up", "subscription" => subscription.name)
                    .set(0.0);
                continue;
            }
        };
        let name = status.name.clone();
        metrics::gauge!("bounded_subscription_up", "subscription" => name.clone()).set(1.0);
        metrics::gauge!("bounded_subscription_lag_events", "subscription" => name.clone())
            .set(status.lag as f64);
        metrics::gauge!("bounded_subscription_lag_seconds", "subscription" => name.clone())
            .set(status.lag_seconds);
        metrics::gauge!("bounded_subscription_parked_events", "subscription" => name.clone())
            .set(status.parked as f64);
        metrics::gauge!("bounded_subscription_checkpoint", "subscription" => name)
            .set(status.checkpoint as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared_kernel::prometheus::render(),
    )
        .into_response())
}

/// W3C trace-context headers carried from a request into the events it causes.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Runs the request inside an [`EventContext`] correlated by its request id and carrying its
/// `traceparent`/`tracestate`, so that events appended while handling it say where they came
/// from.
pub async fn event_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok());
    let headers = TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = request.headers().get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    EventContext::for_request(request_id, headers)
        .scope(next.run(request))
        .await
}
