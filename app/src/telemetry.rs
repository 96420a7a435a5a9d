//! Prometheus metrics: the process-wide recorder, the HTTP latency middleware and `/metrics`.
//!
//! Counters are recorded where things happen (outbox appends at commit, handled, failed and
//! parked events in the subscription workers); subscription lag is a gauge refreshed from the
//! subscriptions' positions at every scrape, so the hot path pays nothing for it.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shared_kernel::http::Problem;
use shared_kernel::messaging::{Bus, BusError, EventContext};

/// Latency buckets, in seconds, for every histogram.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide recorder. Installed once; every `Application` (several in tests) shares it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let recorder = match builder.set_buckets(BUCKETS) {
                Ok(builder) => builder.build_recorder(),
                Err(error) => {
                    tracing::error!(%error, "Invalid histogram buckets; using summaries.");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("A metrics recorder was already installed; /metrics may be empty.");
            }
            handle
        })
        .clone()
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
        prometheus().render(),
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
