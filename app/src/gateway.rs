//! API composition: `GET /orders/{id}/details` joins an order with its customer, the stock of
//! its products and its payment, calling the four modules' APIs.
//!
//! The order comes first (it names the customer and the products); customers, inventory and
//! payments are then called concurrently. Every call to a module goes through that module's
//! circuit breaker (from `tower-resilience-circuitbreaker`) and a per-call timeout; a timeout
//! counts as a failure. An optional part that fails, times out, is refused by an open breaker
//! or whose module does not run in this process becomes `null`, and its module is named in
//! `degraded` — the answer is still 200. Only the order itself is required: a missing order
//! is 404, a failing orders module 503.
//!
//! Metrics: `bounded_composition_call_seconds{module, outcome}` (latency of each guarded call;
//! outcome `ok`, `error`, `timeout` or `rejected`), `bounded_circuit_breaker_state{module}`
//! (0 closed, 1 open, 2 half-open; a breaker notices that its open wait is over at its next
//! call) and `bounded_composition_degraded_total{module}`.
//!
//! **Architecture Invariant:** the gateway reaches modules only through their `*-api` traits.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use customers_api::{Customer, CustomerId, CustomersApi, CustomersError};
use futures::future::{BoxFuture, join_all};
use inventory_api::{InventoryApi, InventoryError, ProductId};
use orders_api::{Order, OrderId, OrdersApi, OrdersError};
use payments_api::{Payment, PaymentFilter, PaymentsApi};
use serde::Serialize;
use shared_kernel::http::{PageRequest, Path, Problem, error_chain, path_id};
use tower::Service;
use tower::ServiceExt as _;
use tower_resilience_circuitbreaker::{
    CircuitBreaker, CircuitBreakerConfigError, CircuitBreakerError, CircuitBreakerHandle,
    CircuitBreakerLayer, CircuitState, DefaultClassifier,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::modules::Modules;

pub const ORDERS: &str = orders_api::MODULE;
pub const CUSTOMERS: &str = customers_api::MODULE;
pub const INVENTORY: &str = inventory_api::MODULE;
pub const PAYMENTS: &str = payments_api::MODULE;

/// Default time one module call may take before its part is given up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How the gateway guards its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Longest wait for one module's answer (for inventory: the availability of every product
    /// of the order, fetched concurrently).
    pub timeout: Duration,
    pub breaker: BreakerConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            breaker: BreakerConfig::default(),
        }
    }
}

/// The circuit breaker of each module: it opens after `consecutive_failures` failed or timed
/// out calls in a row, refuses calls for `open_wait`, then lets `half_open_calls` trial calls
/// through: it closes when they all succeed and opens again on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub consecutive_failures: usize,
    pub open_wait: Duration,
    pub half_open_calls: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            open_wait: Duration::from_secs(10),
            half_open_calls: 1,
        }
    }
}

/// `GET /orders/{id}/details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderDetails {
    pub order: Order,
    /// `null` when the customers module is degraded.
    #[schema(required = true)]
    pub customer: Option<Customer>,
    pub items: Vec<DetailsItem>,
    /// The order's payment; `null` when payments is degraded or has not seen the order yet.
    #[schema(required = true)]
    pub payment: Option<Payment>,
    /// Modules whose part is missing (failed, too slow, circuit open, or not running here).
    pub degraded: Vec<&'static str>,
}

/// One line of an order with the product's current availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DetailsItem {
    pub product_id: Uuid,
    /// As copied from the catalog when the order was placed.
    pub name: String,
    pub quantity: i64,
    /// Units available over all warehouses; `null` when inventory is degraded.
    #[schema(required = true)]
    pub available: Option<i64>,
}

/// Why a guarded call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the circuit breaker is open")]
    CircuitOpen,
    #[error("the call failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CallError {
    fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        CallError::Failed(Box::new(error))
    }

    fn outcome(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::CircuitOpen => "rejected",
            CallError::Failed(_) => "error",
        }
    }
}

/// The work of one guarded call, already bounded by the timeout.
type Call<T> = BoxFuture<'static, Result<T, CallError>>;
/// A [`Call`] as the breaker's request: a type without lifetimes, so that the handler's
/// future is provably `Send`.
struct Work<T>(Call<T>);
type Breaker = CircuitBreaker<Run, DefaultClassifier>;

/// The service behind a breaker: it runs the call it is given.
#[derive(Debug, Clone, Copy)]
struct Run;

impl<T> Service<Work<T>> for Run {
    type Response = T;
    type Error = CallError;
    type Future = Call<T>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, Work(call): Work<T>) -> Call<T> {
        call
    }
}

/// One module's circuit breaker and timeout, for calls answering `T`.
struct Guard<T> {
    module: &'static str,
    timeout: Duration,
    breaker: Breaker,
    answers: PhantomData<fn() -> T>,
    handle: CircuitBreakerHandle,
}

fn state_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::Open => 1.0,
        CircuitState::HalfOpen => 2.0,
    }
}

impl<T: Send + 'static> Guard<T> {
    fn new(
        module: &'static str,
        config: &GatewayConfig,
    ) -> Result<Self, CircuitBreakerConfigError> {
        let (layer, handle) = CircuitBreakerLayer::builder()
            .name(module)
            .consecutive_failures(config.breaker.consecutive_failures)
            .wait_duration_in_open(config.breaker.open_wait)
            .permitted_calls_in_half_open(config.breaker.half_open_calls)
            .on_state_transition(move |from, to| {
                metrics::gauge!("bounded_circuit_breaker_state", "module" => module)
                    .set(state_value(to));
                tracing::warn!(module, ?from, ?to, "Circuit breaker changed state.");
            })
            .build_with_handle()?;
        metrics::gauge!("bounded_circuit_breaker_state", "module" => module)
            .set(state_value(CircuitState::Closed));
        Ok(Self {
            module,
            timeout: config.timeout,
            breaker: layer.layer_fn(Run),
            answers: PhantomData,
            handle,
        })
    }

    /// Runs `work` through the breaker within the timeout; an open breaker refuses it unrun.
    async fn call<F>(&self, work: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, CallError>> + Send + 'static,
    {
        let timeout = self.timeout;
        let call: Call<T> = Box::pin(async move {
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| CallError::Timeout(timeout))?
        });
        let started = Instant::now();
        let result = self
            .breaker
            .clone()
            .oneshot(Work(call))
            .await
            .map_err(|error| match error {
                CircuitBreakerError::OpenCircuit => CallError::CircuitOpen,
                CircuitBreakerError::Inner(error) => error,
            });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => error.outcome(),
        };
        metrics::histogram!(
            "bounded_composition_call_seconds",
            "module" => self.module,
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    fn state(&self) -> CircuitState {
        self.handle.state()
    }
}

/// The API composition over the four modules' APIs.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    orders: Option<Arc<dyn OrdersApi>>,
    customers: Option<Arc<dyn CustomersApi>>,
    inventory: Option<Arc<dyn InventoryApi>>,
    payments: Option<Arc<dyn PaymentsApi>>,
    orders_guard: Guard<Option<Order>>,
    customers_guard: Guard<Option<Customer>>,
    /// `available` per line of the order (`None`: the product is unknown to inventory).
    inventory_guard: Guard<Vec<Option<i64>>>,
    payments_guard: Guard<Option<Payment>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("timeout", &self.inner.orders_guard.timeout)
            .field("breakers", &self.breaker_states())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over these module APIs; `None` marks a module that does not run here.
    ///
    /// # Errors
    /// When `config.breaker` is invalid (no failure threshold).
    pub fn new(
        orders: Option<Arc<dyn OrdersApi>>,
        customers: Option<Arc<dyn CustomersApi>>,
        inventory: Option<Arc<dyn InventoryApi>>,
        payments: Option<Arc<dyn PaymentsApi>>,
        config: GatewayConfig,
    ) -> Result<Self, CircuitBreakerConfigError> {
        Ok(Self {
            inner: Arc::new(Inner {
                orders,
                customers,
                inventory,
                payments,
                orders_guard: Guard::new(ORDERS, &config)?,
                customers_guard: Guard::new(CUSTOMERS, &config)?,
                inventory_guard: Guard::new(INVENTORY, &config)?,
                payments_guard: Guard::new(PAYMENTS, &config)?,
            }),
        })
    }

    /// A gateway over the modules of this process.
    ///
    /// # Errors
    /// As [`Gateway::new`].
    pub fn for_modules(
        modules: &Modules,
        config: GatewayConfig,
    ) -> Result<Self, CircuitBreakerConfigError> {
        Self::new(
            modules.orders.clone(),
            modules.customers.clone(),
            modules.inventory.clone(),
            modules.payments.clone(),
            config,
        )
    }

    /// The state of each module's circuit breaker.
    pub fn breaker_states(&self) -> [(&'static str, CircuitState); 4] {
        let inner = &self.inner;
        [
            (ORDERS, inner.orders_guard.state()),
            (CUSTOMERS, inner.customers_guard.state()),
            (INVENTORY, inner.inventory_guard.state()),
            (PAYMENTS, inner.payments_guard.state()),
        ]
    }

    /// The state of one module's circuit breaker.
    pub fn breaker_state(&self, module: &str) -> Option<CircuitState> {
        self.breaker_states()
            .into_iter()
            .find(|(name, _)| *name == module)
            .map(|(_, state)| state)
    }

    /// Composes the details of an order.
    ///
    /// # Errors
    /// 404 when the order does not exist; 503 when the orders module cannot answer.
    pub async fn details(&self, id: OrderId) -> Result<OrderDetails, Problem> {
        let inner = &self.inner;
        let Some(orders) = inner.orders.clone() else {
            tracing::warn!(
                module = ORDERS,
                "Order details need the orders module, which does not run in this process."
            );
            return Err(orders_unavailable());
        };
        let fetched = inner
            .orders_guard
            .call(async move {
                match orders.get(id).await {
                    Ok(order) => Ok(Some(order)),
                    Err(OrdersError::NotFound(_)) => Ok(None),
                    Err(error) => Err(CallError::failed(error)),
                }
            })
            .await;
        let order = match fetched {
            Ok(Some(order)) => order,
            Ok(None) => return Err(Problem::not_found(format!("no order with id {id}"))),
            Err(error) => {
                tracing::warn!(module = ORDERS, order_id = %id, error = %error_chain(&error), "Order details: the orders module failed.");
                return Err(orders_unavailable());
            }
        };

        let customer_id = CustomerId(order.customer_id);
        let products: Vec<ProductId> = order
            .items
            .iter()
            .map(|l| ProductId(l.product_id))
            .collect();
        let order_id = order.id;
        let (customer, available, payment) = tokio::join!(
            part(
                &inner.customers_guard,
                inner.customers.clone(),
                order_id,
                move |api| async move {
                    match api.get(customer_id).await {
                        Ok(customer) => Ok(Some(customer)),
                        Err(CustomersError::NotFound(_)) => Ok(None),
                        Err(error) => Err(CallError::failed(error)),
                    }
                }
            ),
            part(
                &inner.inventory_guard,
                inner.inventory.clone(),
                order_id,
                move |api| async move {
                    let lookups = products.into_iter().map(|product| {
                        let api = Arc::clone(&api);
                        async move {
                            match api.availability(product).await {
                                Ok(availability) => Ok(Some(availability.available)),
                                Err(InventoryError::ProductNotFound(_)) => Ok(None),
                                Err(error) => Err(CallError::failed(error)),
                            }
                        }
                    });
                    join_all(lookups).await.into_iter().collect()
                }
            ),
            part(
                &inner.payments_guard,
                inner.payments.clone(),
                order_id,
                move |api| async move {
                    let filter = PaymentFilter {
                        order_id: Some(order_id.0),
                        customer_id: None,
                    };
                    let page = PageRequest {
                        limit: 1,
                        after: None,
                    };
                    match api.list_payments(filter, page).await {
                        Ok(page) => Ok(page.items.into_iter().next()),
                        Err(error) => Err(CallError::failed(error)),
                    }
                }
            ),
        );

        let mut degraded = Vec::new();
        let customer = customer.unwrap_or_else(|| {
            degraded.push(CUSTOMERS);
            None
        });
        let available = available.unwrap_or_else(|| {
            degraded.push(INVENTORY);
            Vec::new()
        });
        let payment = payment.unwrap_or_else(|| {
            degraded.push(PAYMENTS);
            None
        });
        let items = order
            .items
            .iter()
            .enumerate()
            .map(|(i, line)| DetailsItem {
                product_id: line.product_id,
                name: line.name.clone(),
                quantity: line.quantity,
                available: available.get(i).copied().flatten(),
            })
            .collect();
        Ok(OrderDetails {
            order,
            customer,
            items,
            payment,
            degraded,
        })
    }
}

/// One optional part: `None` when its module is degraded (not running here, failed, too slow
/// or refused by its open breaker), which is logged and counted.
async fn part<A, T, F, W>(
    guard: &Guard<T>,
    api: Option<Arc<A>>,
    order_id: OrderId,
    work: W,
) -> Option<T>
where
    A: ?Sized,
    T: Send + 'static,
    F: Future<Output = Result<T, CallError>> + Send + 'static,
    W: FnOnce(Arc<A>) -> F,
{
    let module = guard.module;
    let result = match api {
        Some(api) => guard.call(work(api)).await,
        None => {
            tracing::debug!(
                module,
                "Module not running in this process; its part is degraded."
            );
            metrics::counter!("bounded_composition_degraded_total", "module" => module, "reason" => "absent")
                .increment(1);
            return None;
        }
    };
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(module, order_id = %order_id, error = %error_chain(&error), "Order details degraded.");
            metrics::counter!("bounded_composition_degraded_total", "module" => module, "reason" => error.outcome())
                .increment(1);
            None
        }
    }
}

fn orders_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "module-unavailable",
        "Module unavailable",
        "the orders module cannot answer right now; try again later",
    )
}

/// The composition's route and its OpenAPI description.
pub fn router(gateway: Gateway) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(order_details))
        .with_state(gateway)
}

/// An order with its customer, the current availability of its products and its payment
/// (API composition). Parts whose module fails or is too slow are `null` and named in
/// `degraded`.
#[utoipa::path(
    get, path = "/orders/{id}/details", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id (UUID)")),
    responses(
        (status = 200, body = OrderDetails),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The orders module cannot answer", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn order_details(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
) -> Result<axum::Json<OrderDetails>, Problem> {
    let id = OrderId(path_id(&id, "order")?);
    Ok(axum::Json(gateway.details(id).await?))
}

#[cfg(test)]
mod tests;
