//! The composition against test doubles of the four module APIs whose answers the tests
//! control: answer, fail, or never answer. Tokio's clock is paused, so a timeout passes as soon
//! as every task waits; nothing sleeps to synchronize.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::Request;
use customers_api::{CustomerPatch, NewCustomer};
use http_body_util::BodyExt as _;
use inventory_api::{
    Availability, NewProduct, Product, ProductPatch, Reservation, SetStock, StockLevel,
};
use orders_api::{NewOrder, OrderFilter, OrderLine, OrderStatus, Saga};
use payments_api::{
    Account, PaymentEvent, PaymentId, PaymentStatus, PaymentsError, PointInTime, SetCreditLimit,
};
use serde_json::{Value, json};
use shared_kernel::http::{Page, PageRequest};
use shared_kernel::storage::idempotency::IdempotencyKey;
use time::OffsetDateTime;

use super::*;

const TIMEOUT: Duration = Duration::from_millis(500);
const OPEN_WAIT: Duration = Duration::from_millis(200);
const FAILURES_TO_OPEN: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    Fail,
    Hang,
}

/// What a double does when called, and how often it was called.
#[derive(Debug)]
struct Control {
    mode: Mutex<Mode>,
    calls: AtomicUsize,
}

impl Control {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(Mode::Answer),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `Ok` to answer, `Err` to fail; never returns when hanging.
    async fn enter(&self) -> Result<(), ()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Answer => Ok(()),
            Mode::Fail => Err(()),
            Mode::Hang => std::future::pending().await,
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

struct FakeOrders {
    control: Arc<Control>,
    order: Order,
}

#[async_trait]
impl OrdersApi for FakeOrders {
    async fn place(&self, _: NewOrder, _: Option<IdempotencyKey>) -> Result<Order, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }

    async fn get(&self, id: OrderId) -> Result<Order, OrdersError> {
        self.control
            .enter()
            .await
            .map_err(|()| OrdersError::Unavailable("orders"))?;
        if id == self.order.id {
            Ok(self.order.clone())
        } else {
            Err(OrdersError::NotFound(id))
        }
    }

    async fn get_many(&self, _: &[OrderId]) -> Result<Vec<Order>, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }

    async fn wait_terminal(&self, id: OrderId, _: Duration) -> Result<Order, OrdersError> {
        self.get(id).await
    }

    async fn list(&self, _: OrderFilter, _: PageRequest) -> Result<Page<Order>, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }

    async fn cancel(&self, _: OrderId) -> Result<Order, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }

    async fn saga(&self, _: OrderId) -> Result<Saga, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }

    async fn list_sagas(
        &self,
        _: Option<OrderStatus>,
        _: PageRequest,
    ) -> Result<Page<Saga>, OrdersError> {
        Err(OrdersError::Unavailable("orders"))
    }
}

struct FakeCustomers {
    control: Arc<Control>,
    customer: Customer,
}

#[async_trait]
impl CustomersApi for FakeCustomers {
    async fn register(
        &self,
        _: NewCustomer,
        _: Option<IdempotencyKey>,
    ) -> Result<Customer, CustomersError> {
        Err(CustomersError::Unavailable)
    }

    async fn get(&self, id: CustomerId) -> Result<Customer, CustomersError> {
        self.control
            .enter()
            .await
            .map_err(|()| CustomersError::Unavailable)?;
        if id == self.customer.id {
            Ok(self.customer.clone())
        } else {
            Err(CustomersError::NotFound(id))
        }
    }

    async fn update(&self, _: CustomerId, _: CustomerPatch) -> Result<Customer, CustomersError> {
        Err(CustomersError::Unavailable)
    }

    async fn list(&self, _: PageRequest) -> Result<Page<Customer>, CustomersError> {
        Err(CustomersError::Unavailable)
    }
}

/// Every product has `available` = 7.
struct FakeInventory {
    control: Arc<Control>,
}

#[async_trait]
impl InventoryApi for FakeInventory {
    async fn create_product(
        &self,
        _: NewProduct,
        _: Option<IdempotencyKey>,
    ) -> Result<Product, InventoryError> {
        Err(InventoryError::Unavailable)
    }

    async fn get_product(&self, id: ProductId) -> Result<Product, InventoryError> {
        Err(InventoryError::ProductNotFound(id))
    }

    async fn get_products(&self, _: &[ProductId]) -> Result<Vec<Product>, InventoryError> {
        Ok(Vec::new())
    }

    async fn update_product(
        &self,
        _: ProductId,
        _: ProductPatch,
    ) -> Result<Product, InventoryError> {
        Err(InventoryError::Unavailable)
    }

    async fn list_products(&self, _: PageRequest) -> Result<Page<Product>, InventoryError> {
        Err(InventoryError::Unavailable)
    }

    async fn set_stock(
        &self,
        _: ProductId,
        _: String,
        _: SetStock,
    ) -> Result<StockLevel, InventoryError> {
        Err(InventoryError::Unavailable)
    }

    async fn availability(&self, product: ProductId) -> Result<Availability, InventoryError> {
        self.control
            .enter()
            .await
            .map_err(|()| InventoryError::Unavailable)?;
        Ok(Availability {
            product_id: product,
            on_hand: 9,
            reserved: 2,
            available: 7,
            warehouses: Vec::new(),
        })
    }

    async fn reservation(&self, _: Uuid) -> Result<Option<Reservation>, InventoryError> {
        Err(InventoryError::Unavailable)
    }

    async fn reservations(&self, _: &[Uuid]) -> Result<Vec<Reservation>, InventoryError> {
        Err(InventoryError::Unavailable)
    }
}

struct FakePayments {
    control: Arc<Control>,
    payment: Payment,
}

#[async_trait]
impl PaymentsApi for FakePayments {
    async fn set_credit_limit(&self, _: Uuid, _: SetCreditLimit) -> Result<Account, PaymentsError> {
        Err(PaymentsError::Unavailable("payments"))
    }

    async fn account(&self, _: Uuid) -> Result<Account, PaymentsError> {
        Err(PaymentsError::Unavailable("payments"))
    }

    async fn list_payments(
        &self,
        filter: PaymentFilter,
        _: PageRequest,
    ) -> Result<Page<Payment>, PaymentsError> {
        self.control
            .enter()
            .await
            .map_err(|()| PaymentsError::Unavailable("payments"))?;
        let items = [self.payment.clone()]
            .into_iter()
            .filter(|p| filter.order_id.is_none_or(|id| id == p.order_id))
            .collect();
        Ok(Page { items, next: None })
    }

    async fn payments_of_orders(&self, _: &[Uuid]) -> Result<Vec<Payment>, PaymentsError> {
        Err(PaymentsError::Unavailable("payments"))
    }

    async fn payment(&self, id: PaymentId, _: PointInTime) -> Result<Payment, PaymentsError> {
        Err(PaymentsError::PaymentNotFound(id))
    }

    async fn payment_events(&self, id: PaymentId) -> Result<Vec<PaymentEvent>, PaymentsError> {
        Err(PaymentsError::PaymentNotFound(id))
    }
}

/// One order of two lines, its customer and payment, served by doubles.
struct Shop {
    order: Order,
    orders: Arc<Control>,
    customers: Arc<Control>,
    inventory: Arc<Control>,
    payments: Arc<Control>,
    gateway: Gateway,
}

fn config() -> GatewayConfig {
    GatewayConfig {
        timeout: TIMEOUT,
        breaker: BreakerConfig {
            consecutive_failures: FAILURES_TO_OPEN,
            open_wait: OPEN_WAIT,
            half_open_calls: 1,
        },
    }
}

impl Shop {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// `absent` may remove modules, as a process that does not run them.
    fn with(absent: impl FnOnce(&mut [Option<&'static str>; 4])) -> Self {
        let customer = Customer {
            id: CustomerId::generate(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            created_at: now(),
            updated_at: now(),
        };
        let line = |name: &str, quantity| OrderLine {
            product_id: Uuid::now_v7(),
            sku: name.to_uppercase(),
            name: name.into(),
            unit_price_cents: 100,
            quantity,
            line_total_cents: 100 * quantity,
        };
        let order = Order {
            id: OrderId::generate(),
            customer_id: customer.id.0,
            status: OrderStatus::Confirmed,
            reason: None,
            items: vec![line("apple", 2), line("pear", 3)],
            total_cents: 500,
            created_at: now(),
            updated_at: now(),
        };
        let payment = Payment {
            id: PaymentId::generate(),
            order_id: order.id.0,
            customer_id: customer.id.0,
            amount_cents: 500,
            status: PaymentStatus::Captured,
            version: 2,
            created_at: now(),
            updated_at: now(),
        };
        let (orders, customers, inventory, payments) = (
            Control::new(),
            Control::new(),
            Control::new(),
            Control::new(),
        );
        let mut present = [
            Some(ORDERS),
            Some(CUSTOMERS),
            Some(INVENTORY),
            Some(PAYMENTS),
        ];
        absent(&mut present);
        let here = |module: &str| present.contains(&Some(module));
        let gateway = Gateway::new(
            here(ORDERS).then(|| {
                Arc::new(FakeOrders {
                    control: orders.clone(),
                    order: order.clone(),
                }) as Arc<dyn OrdersApi>
            }),
            here(CUSTOMERS).then(|| {
                Arc::new(FakeCustomers {
                    control: customers.clone(),
                    customer,
                }) as Arc<dyn CustomersApi>
            }),
            here(INVENTORY).then(|| {
                Arc::new(FakeInventory {
                    control: inventory.clone(),
                }) as Arc<dyn InventoryApi>
            }),
            here(PAYMENTS).then(|| {
                Arc::new(FakePayments {
                    control: payments.clone(),
                    payment,
                }) as Arc<dyn PaymentsApi>
            }),
            config(),
        )
        .unwrap();
        Self {
            order,
            orders,
            customers,
            inventory,
            payments,
            gateway,
        }
    }

    async fn details(&self) -> OrderDetails {
        self.gateway.details(self.order.id).await.unwrap()
    }

    /// `GET path` through the composition's router: status, content type and JSON body.
    async fn get(&self, path: &str) -> (u16, String, Value) {
        let (router, _) = router(self.gateway.clone()).split_for_parts();
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }
}

/// The breaker measures its open wait with the wall clock (`std::time::Instant`), which
/// tokio's paused clock does not move: let that much real time pass.
fn wait_out_open_state() {
    std::thread::sleep(OPEN_WAIT + Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn every_part_answers_so_nothing_is_degraded() {
    let shop = Shop::new();
    let (status, _, body) = shop
        .get(&format!("/orders/{}/details", shop.order.id))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order"]["id"], json!(shop.order.id));
    assert_eq!(body["customer"]["name"], "Ada");
    assert_eq!(
        body["items"],
        json!([
            {"product_id": shop.order.items[0].product_id, "name": "apple", "quantity": 2, "available": 7},
            {"product_id": shop.order.items[1].product_id, "name": "pear", "quantity": 3, "available": 7},
        ])
    );
    assert_eq!(body["payment"]["status"], "CAPTURED");
    assert_eq!(body["degraded"], json!([]));
    // One availability call per product.
    assert_eq!(shop.inventory.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_slow_part_times_out_as_null_and_degraded() {
    let shop = Shop::new();
    shop.inventory.set(Mode::Hang);
    let started = tokio::time::Instant::now();
    let details = shop.details().await;
    let waited = started.elapsed();
    assert!(waited >= TIMEOUT && waited < TIMEOUT * 2, "{waited:?}");
    assert_eq!(details.degraded, [INVENTORY]);
    assert!(details.items.iter().all(|item| item.available.is_none()));
    assert_eq!(details.items[1].name, "pear");
    assert!(details.customer.is_some() && details.payment.is_some());
}

#[tokio::test(start_paused = true)]
async fn failing_parts_are_null_and_each_module_is_named_once() {
    let shop = Shop::new();
    shop.customers.set(Mode::Fail);
    shop.payments.set(Mode::Hang);
    shop.inventory.set(Mode::Fail);
    let details = shop.details().await;
    // Both availability calls failed; inventory is still named once.
    assert_eq!(details.degraded, [CUSTOMERS, INVENTORY, PAYMENTS]);
    assert_eq!(details.customer, None);
    assert_eq!(details.payment, None);
    assert!(details.items.iter().all(|item| item.available.is_none()));
    assert_eq!(details.order, shop.order);
}

#[tokio::test(start_paused = true)]
async fn a_module_not_running_here_is_degraded() {
    let shop = Shop::with(|present| present[3] = None);
    let details = shop.details().await;
    assert_eq!(details.degraded, [PAYMENTS]);
    assert!(details.customer.is_some());
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_failures_rejects_without_calling_then_half_opens_and_closes() {
    let shop = Shop::new();
    shop.customers.set(Mode::Fail);
    for _ in 0..FAILURES_TO_OPEN {
        assert_eq!(shop.details().await.degraded, [CUSTOMERS]);
    }
    assert_eq!(shop.customers.calls(), FAILURES_TO_OPEN);
    assert_eq!(
        shop.gateway.breaker_state(CUSTOMERS),
        Some(CircuitState::Open)
    );

    // Open: refused at once, the module is not called, even once it would answer.
    shop.customers.set(Mode::Answer);
    for _ in 0..3 {
        assert_eq!(shop.details().await.degraded, [CUSTOMERS]);
    }
    assert_eq!(shop.customers.calls(), FAILURES_TO_OPEN);
    // The other modules' breakers are unaffected.
    assert_eq!(
        shop.gateway.breaker_state(PAYMENTS),
        Some(CircuitState::Closed)
    );

    // After the wait one trial call goes through; it succeeds and closes the breaker.
    wait_out_open_state();
    let details = shop.details().await;
    assert_eq!(details.degraded, Vec::<&str>::new());
    assert!(details.customer.is_some());
    assert_eq!(shop.customers.calls(), FAILURES_TO_OPEN + 1);
    assert_eq!(
        shop.gateway.breaker_state(CUSTOMERS),
        Some(CircuitState::Closed)
    );
    shop.details().await;
    assert_eq!(shop.customers.calls(), FAILURES_TO_OPEN + 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_open_the_breaker_and_a_failed_trial_opens_it_again() {
    let shop = Shop::new();
    shop.payments.set(Mode::Hang);
    for _ in 0..FAILURES_TO_OPEN {
        assert_eq!(shop.details().await.degraded, [PAYMENTS]);
    }
    assert_eq!(
        shop.gateway.breaker_state(PAYMENTS),
        Some(CircuitState::Open)
    );
    // Refused without waiting for the timeout.
    let started = tokio::time::Instant::now();
    assert_eq!(shop.details().await.degraded, [PAYMENTS]);
    assert!(started.elapsed() < TIMEOUT);
    assert_eq!(shop.payments.calls(), FAILURES_TO_OPEN);

    // The trial call fails: open again, and refused again without a call.
    wait_out_open_state();
    shop.payments.set(Mode::Fail);
    assert_eq!(shop.details().await.degraded, [PAYMENTS]);
    assert_eq!(shop.payments.calls(), FAILURES_TO_OPEN + 1);
    assert_eq!(
        shop.gateway.breaker_state(PAYMENTS),
        Some(CircuitState::Open)
    );
    shop.payments.set(Mode::Answer);
    assert_eq!(shop.details().await.degraded, [PAYMENTS]);
    assert_eq!(shop.payments.calls(), FAILURES_TO_OPEN + 1);

    wait_out_open_state();
    assert_eq!(shop.details().await.degraded, Vec::<&str>::new());
    assert_eq!(
        shop.gateway.breaker_state(PAYMENTS),
        Some(CircuitState::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_between_failures_keeps_the_breaker_closed() {
    let shop = Shop::new();
    for round in 0..3 {
        shop.inventory.set(Mode::Fail);
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(shop.details().await.degraded, [INVENTORY], "round {round}");
        }
        shop.inventory.set(Mode::Answer);
        assert_eq!(shop.details().await.degraded, Vec::<&str>::new());
    }
    assert_eq!(
        shop.gateway.breaker_state(INVENTORY),
        Some(CircuitState::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_order_is_404_and_a_non_uuid_too() {
    let shop = Shop::new();
    let (status, content_type, body) = shop
        .get(&format!("/orders/{}/details", OrderId::generate()))
        .await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json")
    );
    assert_eq!(body["status"], 404);
    let (status, content_type, _) = shop.get("/orders/not-a-uuid/details").await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json")
    );
    // A missing order is an answer, not a failure of the orders module.
    assert_eq!(
        shop.gateway.breaker_state(ORDERS),
        Some(CircuitState::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_slow_or_absent_orders_module_is_503_without_details() {
    let shop = Shop::new();
    let path = format!("/orders/{}/details", shop.order.id);
    for mode in [Mode::Fail, Mode::Hang] {
        shop.orders.set(mode);
        let (status, content_type, body) = shop.get(&path).await;
        assert_eq!(
            (status, content_type.as_str()),
            (503, "application/problem+json")
        );
        assert_eq!(body["status"], 503);
        assert_eq!(body["type"], "/problems/module-unavailable");
        // Nothing of the cause leaks.
        assert!(!body.to_string().contains("database"), "{body}");
    }
    // The other modules were not asked.
    assert_eq!(
        shop.customers.calls() + shop.inventory.calls() + shop.payments.calls(),
        0
    );

    let absent = Shop::with(|present| present[0] = None);
    let (status, _, _) = absent
        .get(&format!("/orders/{}/details", absent.order.id))
        .await;
    assert_eq!(status, 503);
}

#[tokio::test(start_paused = true)]
async fn an_open_orders_breaker_answers_503_without_calling() {
    let shop = Shop::new();
    shop.orders.set(Mode::Fail);
    for _ in 0..FAILURES_TO_OPEN {
        assert_eq!(
            shop.gateway
                .details(shop.order.id)
                .await
                .unwrap_err()
                .status,
            503
        );
    }
    shop.orders.set(Mode::Answer);
    assert_eq!(
        shop.gateway
            .details(shop.order.id)
            .await
            .unwrap_err()
            .status,
        503
    );
    assert_eq!(shop.orders.calls(), FAILURES_TO_OPEN);
    wait_out_open_state();
    assert_eq!(shop.details().await.order, shop.order);
}

#[test]
fn an_invalid_breaker_configuration_is_refused() {
    let mut config = config();
    config.breaker.consecutive_failures = 0;
    assert!(Gateway::new(None, None, None, None, config).is_err());
}
