//! `bounded baseline`: the comparison point of `bounded bench` — the same shop operation as
//! `POST /orders` plus its saga, done the way the patterns warn against: **one transaction on
//! one shared database**. It validates the customer and the products, reserves stock (most
//! available warehouse first), checks and takes credit, and stores the order as CONFIRMED (or
//! REJECTED), all before answering. Same tables' shape as the modules', same durability
//! (the kernel's storage: SQLite WAL + `synchronous = FULL`, or Postgres, one schema).
//!
//! It serves just what the load generator calls: customers, credit limits, products, stock,
//! orders, and `/metrics` with the same counts as the shop's (commits, statements with
//! `--count-statements`, CPU time: `shared_kernel::prometheus`), so that both sides of
//! `bounded bench`'s ratios are counted alike. It is a measuring instrument, not part of the
//! shop.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use shared_kernel::clock;
use shared_kernel::http::{FieldError, Json, Problem, path_id};
use shared_kernel::storage::{Migrations, ModuleDb, StorageConfig, Tx, TxConn};
use shared_kernel::{with_reader, with_tx};
use uuid::Uuid;

/// The baseline's one database: `baseline.sqlite`, or schema + role `baseline`.
const NAME: &str = "baseline";
/// Credit of an account opened on first sight, as the shop's default.
const DEFAULT_CREDIT_LIMIT_CENTS: i64 = 1_000_000;

static MIGRATIONS: Migrations = Migrations {
    sqlite: sqlx::migrate!("migrations/baseline/sqlite"),
    postgres: sqlx::migrate!("migrations/baseline/postgres"),
};

#[derive(Debug, Deserialize)]
struct NewCustomer {
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct CreditLimit {
    credit_limit_cents: i64,
}

#[derive(Debug, Deserialize)]
struct NewProduct {
    sku: String,
    name: String,
    price_cents: i64,
}

#[derive(Debug, Deserialize)]
struct OnHand {
    on_hand: i64,
}

#[derive(Debug, Deserialize)]
struct Line {
    product_id: Uuid,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    customer_id: Uuid,
    items: Vec<Line>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
struct Order {
    id: Uuid,
    customer_id: Uuid,
    status: String,
    reason: Option<String>,
    total_cents: i64,
}

#[derive(Debug, Serialize)]
struct Created {
    id: Uuid,
}

fn storage(db: &ModuleDb) -> impl Fn(sqlx::Error) -> Problem + '_ {
    move |e| Problem::from(db.classify(e))
}

/// Runs the baseline server until `shutdown` completes (the binary passes SIGINT/SIGTERM).
///
/// # Errors
/// When the database cannot be opened or the address bound.
pub async fn serve(
    listen: SocketAddr,
    storage_config: &StorageConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = ModuleDb::open(NAME, &MIGRATIONS, storage_config)
        .await
        .context("opening the baseline database")?;
    let router = Router::new()
        .route("/customers", post(create_customer))
        .route("/payment-accounts/{id}", put(set_credit_limit))
        .route("/products", post(create_product))
        .route("/products/{id}/stock/{warehouse}", put(set_stock))
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/metrics", get(metrics))
        .with_state(db.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    tracing::info!(url = %url, "Baseline (single transaction, one database) is listening.");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    db.close().await;
    Ok(())
}

async fn create_customer(
    State(db): State<ModuleDb>,
    Json(input): Json<NewCustomer>,
) -> Result<(StatusCode, axum::Json<Created>), Problem> {
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query("INSERT INTO customers (id, name, email, created_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(&input.name)
            .bind(&input.email)
            .bind(clock::now())
            .execute(conn)
            .await
            .map(drop)
    })
    .map_err(storage(&db))?;
    tx.commit().await.map_err(storage(&db))?;
    Ok((StatusCode::CREATED, axum::Json(Created { id })))
}

async fn set_credit_limit(
    State(db): State<ModuleDb>,
    Path(id): Path<String>,
    Json(input): Json<CreditLimit>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "customer")?;
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query(
            "INSERT INTO accounts (customer_id, credit_limit_cents, outstanding_cents) \
             VALUES ($1, $2, 0) ON CONFLICT (customer_id) \
             DO UPDATE SET credit_limit_cents = excluded.credit_limit_cents",
        )
        .bind(id)
        .bind(input.credit_limit_cents)
        .execute(conn)
        .await
        .map(drop)
    })
    .map_err(storage(&db))?;
    tx.commit().await.map_err(storage(&db))?;
    Ok(StatusCode::OK)
}

async fn create_product(
    State(db): State<ModuleDb>,
    Json(input): Json<NewProduct>,
) -> Result<(StatusCode, axum::Json<Created>), Problem> {
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query(
            "INSERT INTO products (id, sku, name, price_cents, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&input.sku)
        .bind(&input.name)
        .bind(input.price_cents)
        .bind(clock::now())
        .execute(conn)
        .await
        .map(drop)
    })
    .map_err(storage(&db))?;
    tx.commit().await.map_err(storage(&db))?;
    Ok((StatusCode::CREATED, axum::Json(Created { id })))
}

async fn set_stock(
    State(db): State<ModuleDb>,
    Path((id, warehouse)): Path<(String, String)>,
    Json(input): Json<OnHand>,
) -> Result<StatusCode, Problem> {
    let id = path_id(&id, "product")?;
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query(
            "INSERT INTO stock_levels (product_id, warehouse, on_hand) VALUES ($1, $2, $3) \
             ON CONFLICT (product_id, warehouse) DO UPDATE SET on_hand = excluded.on_hand",
        )
        .bind(id)
        .bind(&warehouse)
        .bind(input.on_hand)
        .execute(conn)
        .await
        .map(drop)
    })
    .map_err(storage(&db))?;
    tx.commit().await.map_err(storage(&db))?;
    Ok(StatusCode::OK)
}

/// The whole shop operation, in one transaction.
async fn place_order(
    State(db): State<ModuleDb>,
    Json(input): Json<NewOrder>,
) -> Result<(StatusCode, axum::Json<Order>), Problem> {
    if input.items.is_empty()
        || input
            .items
            .iter()
            .any(|l| !(1..=10_000).contains(&l.quantity))
    {
        return Err(Problem::validation(vec![FieldError::new(
            "items",
            "1 to 100 lines of quantity 1 to 10000",
        )]));
    }
    let mut tx = db.begin().await?;
    let order = place(&mut tx, &input).await.map_err(storage(&db))?;
    let Some(order) = order else {
        return Err(Problem::validation(vec![FieldError::new(
            "items",
            "unknown customer or product",
        )]));
    };
    tx.commit().await.map_err(storage(&db))?;
    Ok((StatusCode::ACCEPTED, axum::Json(order)))
}

/// Validates, reserves, charges and stores; `None` for an unknown customer or product.
async fn place(tx: &mut Tx, input: &NewOrder) -> Result<Option<Order>, sqlx::Error> {
    let postgres = matches!(tx.conn, TxConn::Postgres(_));
    let customer: Option<(Uuid,)> = with_tx!(tx, |conn| {
        sqlx::query_as("SELECT id FROM customers WHERE id = $1")
            .bind(input.customer_id)
            .fetch_optional(conn)
            .await
    })?;
    if customer.is_none() {
        return Ok(None);
    }
    // Lock stock in one order (by product), so concurrent placements never deadlock.
    let mut lines: Vec<&Line> = input.items.iter().collect();
    lines.sort_by_key(|l| l.product_id);
    let stock_sql = if postgres {
        "SELECT warehouse, on_hand FROM stock_levels WHERE product_id = $1 ORDER BY warehouse FOR UPDATE"
    } else {
        "SELECT warehouse, on_hand FROM stock_levels WHERE product_id = $1 ORDER BY warehouse"
    };
    let mut total: i64 = 0;
    let mut prices = Vec::new();
    let mut draws: Vec<(Uuid, String, i64)> = Vec::new();
    let mut short = false;
    for line in &lines {
        let price: Option<(i64,)> = with_tx!(tx, |conn| {
            sqlx::query_as("SELECT price_cents FROM products WHERE id = $1")
                .bind(line.product_id)
                .fetch_optional(conn)
                .await
        })?;
        let Some((price,)) = price else {
            return Ok(None);
        };
        total = total.saturating_add(price.saturating_mul(line.quantity));
        prices.push(price);
        let mut levels: Vec<(String, i64)> = with_tx!(tx, |conn| {
            sqlx::query_as(stock_sql)
                .bind(line.product_id)
                .fetch_all(conn)
                .await
        })?;
        levels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut left = line.quantity;
        for (warehouse, on_hand) in levels {
            if left == 0 {
                break;
            }
            let take = on_hand.min(left);
            if take > 0 {
                draws.push((line.product_id, warehouse, take));
                left -= take;
            }
        }
        short |= left > 0;
    }
    let (status, reason) = if short {
        ("REJECTED", Some("out_of_stock"))
    } else {
        with_tx!(tx, |conn| {
            sqlx::query(
                "INSERT INTO accounts (customer_id, credit_limit_cents, outstanding_cents) \
                 VALUES ($1, $2, 0) ON CONFLICT (customer_id) DO NOTHING",
            )
            .bind(input.customer_id)
            .bind(DEFAULT_CREDIT_LIMIT_CENTS)
            .execute(conn)
            .await
            .map(drop)
        })?;
        let charged = with_tx!(tx, |conn| {
            sqlx::query(
                "UPDATE accounts SET outstanding_cents = outstanding_cents + $2 \
                 WHERE customer_id = $1 AND credit_limit_cents - outstanding_cents >= $2",
            )
            .bind(input.customer_id)
            .bind(total)
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        if charged == 1 {
            for (product, warehouse, take) in &draws {
                with_tx!(tx, |conn| {
                    sqlx::query(
                        "UPDATE stock_levels SET on_hand = on_hand - $3 \
                         WHERE product_id = $1 AND warehouse = $2 AND on_hand >= $3",
                    )
                    .bind(product)
                    .bind(warehouse)
                    .bind(take)
                    .execute(conn)
                    .await
                    .map(drop)
                })?;
            }
            ("CONFIRMED", None)
        } else {
            ("REJECTED", Some("payment_declined"))
        }
    };
    let order = Order {
        id: Uuid::now_v7(),
        customer_id: input.customer_id,
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        total_cents: total,
    };
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, status, reason, total_cents, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order.id)
        .bind(order.customer_id)
        .bind(&order.status)
        .bind(&order.reason)
        .bind(order.total_cents)
        .bind(clock::now())
        .execute(&mut *conn)
        .await?;
        for (n, (line, price)) in lines.iter().zip(&prices).enumerate() {
            sqlx::query(
                "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(order.id)
            .bind(i32::try_from(n).unwrap_or(i32::MAX))
            .bind(line.product_id)
            .bind(line.quantity)
            .bind(price)
            .execute(&mut *conn)
            .await?;
        }
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(Some(order))
}

/// The kernel's metrics: commits, statements (when counted), the process's CPU and memory.
async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        shared_kernel::prometheus::render(),
    )
}

/// Orders are settled when answered, so the long poll has nothing to wait for.
async fn get_order(
    State(db): State<ModuleDb>,
    Path(id): Path<String>,
) -> Result<axum::Json<Order>, Problem> {
    let id = path_id(&id, "order")?;
    let order: Option<Order> = with_reader!(db.reader()?, |pool| {
        sqlx::query_as(
            "SELECT id, customer_id, status, reason, total_cents FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
    })
    .map_err(storage(&db))?;
    order
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("no order with id {id}")))
}
