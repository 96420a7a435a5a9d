//! The `/payment-accounts` and `/payments` endpoints, over any [`PaymentsApi`] implementation.

use std::sync::Arc;

use axum::extract::State;
use payments_api::{
    Account, Payment, PaymentEvent, PaymentFilter, PaymentId, PaymentsApi, PaymentsError,
    PointInTime, SetCreditLimit,
};
use serde::Deserialize;
use shared_kernel::http::{FieldError, Json, ListParams, Page, Path, Problem, Query, path_id};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

type Api = Arc<dyn PaymentsApi>;

/// The module's routes and their OpenAPI description.
pub fn router(api: Api) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(put_account, get_account))
        .routes(routes!(list_payments))
        .routes(routes!(get_payment))
        .routes(routes!(payment_events))
        .with_state(api)
}

fn problem(error: PaymentsError) -> Problem {
    match error {
        PaymentsError::Invalid(errors) => Problem::validation(errors),
        e @ (PaymentsError::CustomerNotFound(_)
        | PaymentsError::AccountNotFound(_)
        | PaymentsError::PaymentNotFound(_)
        | PaymentsError::NotYet(_)) => Problem::not_found(e.to_string()),
        PaymentsError::Unavailable(module) => Problem::unavailable(module),
        e @ PaymentsError::Unexpected(_) => Problem::internal(&e),
    }
}

fn uuid_param(name: &str, raw: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let raw = raw?;
    match Uuid::parse_str(raw) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(FieldError::new(name, "must be a UUID"));
            None
        }
    }
}

/// Set a customer's credit limit, opening the account if needed.
#[utoipa::path(
    put, path = "/payment-accounts/{customer_id}", tag = "payments",
    params(("customer_id" = Uuid, Path, description = "Customer id (UUID)")),
    request_body = SetCreditLimit,
    responses(
        (status = 200, body = Account),
        (status = 404, description = "Unknown customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Limit outside 0..=10^15 or invalid body", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_account(
    State(api): State<Api>,
    Path(customer_id): Path<String>,
    Json(body): Json<SetCreditLimit>,
) -> Result<axum::Json<Account>, Problem> {
    let customer_id = path_id(&customer_id, "customer")?;
    Ok(axum::Json(
        api.set_credit_limit(customer_id, body)
            .await
            .map_err(problem)?,
    ))
}

/// Read a customer's payment account.
#[utoipa::path(
    get, path = "/payment-accounts/{customer_id}", tag = "payments",
    params(("customer_id" = Uuid, Path, description = "Customer id (UUID)")),
    responses(
        (status = 200, body = Account),
        (status = 404, description = "No account (yet)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_account(
    State(api): State<Api>,
    Path(customer_id): Path<String>,
) -> Result<axum::Json<Account>, Problem> {
    let customer_id = path_id(&customer_id, "payment account")?;
    Ok(axum::Json(api.account(customer_id).await.map_err(problem)?))
}

/// Query of `GET /payments`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PaymentsQuery {
    /// Only the payment of this order (UUID).
    #[param(value_type = Option<Uuid>)]
    order_id: Option<String>,
    /// Only payments of this customer (UUID).
    #[param(value_type = Option<Uuid>)]
    customer_id: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Opaque cursor from the previous page's `next`.
    #[param(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    after: Option<String>,
}

/// List payments in creation order.
#[utoipa::path(
    get, path = "/payments", tag = "payments",
    params(PaymentsQuery),
    responses(
        (status = 200, body = Page<Payment>),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_payments(
    State(api): State<Api>,
    Query(params): Query<PaymentsQuery>,
) -> Result<axum::Json<Page<Payment>>, Problem> {
    let mut errors = Vec::new();
    let filter = PaymentFilter {
        order_id: uuid_param("order_id", params.order_id.as_deref(), &mut errors),
        customer_id: uuid_param("customer_id", params.customer_id.as_deref(), &mut errors),
    };
    let page = ListParams {
        limit: params.limit,
        after: params.after,
    }
    .page();
    let page = match page {
        Ok(page) if errors.is_empty() => page,
        Ok(_) => return Err(Problem::validation(errors)),
        Err(more) => {
            errors.extend(more);
            return Err(Problem::validation(errors));
        }
    };
    Ok(axum::Json(
        api.list_payments(filter, page).await.map_err(problem)?,
    ))
}

/// Query of `GET /payments/{id}`: at most one of the two.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PointInTimeQuery {
    /// The payment as of this version of its stream (1 = its first event).
    #[param(value_type = Option<i64>, minimum = 1)]
    at_version: Option<String>,
    /// The payment as it stood at this RFC 3339 instant.
    #[param(value_type = Option<String>, format = DateTime)]
    as_of: Option<String>,
}

impl PointInTimeQuery {
    fn point(&self) -> Result<PointInTime, Vec<FieldError>> {
        match (self.at_version.as_deref(), self.as_of.as_deref()) {
            (None, None) => Ok(PointInTime::Latest),
            (Some(_), Some(_)) => Err(vec![FieldError::new(
                "at_version",
                "give either at_version or as_of, not both",
            )]),
            (Some(raw), None) => match raw.parse::<i64>() {
                Ok(version) if version >= 1 => Ok(PointInTime::Version(version)),
                _ => Err(vec![FieldError::new(
                    "at_version",
                    "must be an integer of at least 1",
                )]),
            },
            (None, Some(raw)) => {
                // An unencoded `+` of an offset arrives as a space; RFC 3339 has none.
                let raw = raw.trim().replace(' ', "+");
                OffsetDateTime::parse(&raw, &Rfc3339)
                    .map(PointInTime::AsOf)
                    .map_err(|_| {
                        vec![FieldError::new(
                            "as_of",
                            "must be an RFC 3339 timestamp such as 2024-05-01T12:00:00Z",
                        )]
                    })
            }
        }
    }
}

/// Read a payment, now or as it stood at a version or instant (time travel).
///
/// A version above the stream's current one, or an instant before the payment's first
/// event, is a 404: the payment did not exist in that form.
#[utoipa::path(
    get, path = "/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id (UUID)"), PointInTimeQuery),
    responses(
        (status = 200, body = Payment),
        (status = 404, description = "No such payment, or not at that version or instant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid at_version or as_of, or both given", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_payment(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(params): Query<PointInTimeQuery>,
) -> Result<axum::Json<Payment>, Problem> {
    let id = PaymentId(path_id(&id, "payment")?);
    let at = params.point().map_err(Problem::validation)?;
    match api.payment(id, at).await {
        Ok(payment) => Ok(axum::Json(payment)),
        Err(PaymentsError::NotYet(id)) => Err(Problem::not_found(match at {
            PointInTime::Version(version) => {
                format!("payment {id} has no version {version}: its stream has not reached it")
            }
            PointInTime::AsOf(instant) => format!(
                "payment {id} did not exist at {}",
                instant.format(&Rfc3339).unwrap_or_default()
            ),
            PointInTime::Latest => format!("no payment with id {id}"),
        })),
        Err(error) => Err(problem(error)),
    }
}

/// The full, immutable history of a payment, oldest first (one page: `next` is null).
#[utoipa::path(
    get, path = "/payments/{id}/events", tag = "payments",
    params(("id" = Uuid, Path, description = "Payment id (UUID)")),
    responses(
        (status = 200, body = Page<PaymentEvent>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn payment_events(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<axum::Json<Page<PaymentEvent>>, Problem> {
    let id = PaymentId(path_id(&id, "payment")?);
    let items = api.payment_events(id).await.map_err(problem)?;
    Ok(axum::Json(Page { items, next: None }))
}
