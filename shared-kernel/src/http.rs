//! HTTP building blocks shared by every module router: RFC 9457 problem details, JSON, query
//! and path extractors whose rejections are problems too, path-id parsing and cursor
//! pagination.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::storage::StorageError;
use crate::storage::idempotency::{IdempotencyKey, IdempotencyKeyReused};

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Dotted path of the field (`items[2].quantity`), or the query parameter's name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem, rendered as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("/problems/{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 422 listing every invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", errors.len()),
        };
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
                "Invalid request",
                detail,
            )
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn unavailable(module: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "module-unavailable",
            "Module unavailable",
            format!("the {module} module cannot reach its database; try again later"),
        )
    }

    /// A 500 whose cause is logged here, once, with its whole chain, and never returned.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(error), "Request failed with an unexpected error.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; the error has been logged",
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<StorageError> for Problem {
    fn from(error: StorageError) -> Self {
        match &error {
            StorageError::Unavailable { module, .. } => {
                tracing::warn!(module, error = %error_chain(&error), "Module database unavailable.");
                Problem::unavailable(module)
            }
            StorageError::Unexpected(_) => Problem::internal(&error),
        }
    }
}

impl From<IdempotencyKeyReused> for Problem {
    fn from(error: IdempotencyKeyReused) -> Self {
        Problem::field("Idempotency-Key", error.to_string())
    }
}

/// `error: cause: cause…`, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// JSON body extractor: the rejections are problems (400 malformed, 413 too large, 415 wrong
/// content type, 422 naming the field whose value has the wrong type or is unknown/missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "expected a request with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    status,
                    "payload-too-large",
                    "Payload too large",
                    "the request body is larger than 1 MiB",
                )
            } else {
                Problem::bad_request(rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Query-string extractor: a query string that cannot be read at all (a parameter given twice)
/// is a 400 problem, never axum's plain-text rejection. Handlers take the values as strings and
/// validate them, so that a bad value is a 422 naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| Query(query))
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))
    }
}

/// Path extractor whose rejections are problems. A segment that is not UTF-8 where the API
/// expects a UUID (a parameter named `id` or `…_id`) names no resource, hence 404 like any
/// other non-UUID id; anywhere else it is a 400.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(path)| Path(path))
            .map_err(path_problem)
    }
}

fn path_problem(rejection: PathRejection) -> Problem {
    if let PathRejection::FailedToDeserializePathParams(error) = &rejection
        && let ErrorKind::InvalidUtf8InPathParam { key } = error.kind()
        && (key == "id" || key.ends_with("_id"))
    {
        return Problem::not_found(format!("no resource with that {key}: it is not a UUID"));
    }
    let status = rejection.status();
    if status.is_client_error() {
        Problem::bad_request(rejection.body_text())
    } else {
        // A route whose handler expects other parameters than its path has: a bug, logged.
        Problem::internal(&rejection)
    }
}

/// Deserializes a JSON document, telling syntax errors (400) from data errors (422 + field).
///
/// Every request body of this API is an object; serde would also build a struct from an array,
/// so anything else is refused up front.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(Problem::field("body", "must be a JSON object")),
            Err(e) => Err(Problem::bad_request(format!("malformed JSON: {e}"))),
        };
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize(&mut de).map_err(json_problem) {
        Ok(value) => {
            // Trailing characters after the document are malformed JSON, not something to
            // ignore.
            de.end()
                .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
            value
        }
        // `5.0` where an integer is expected: read again with integral numbers as integers
        // (rarely taken, so the common path keeps serde's checks, duplicate fields included).
        Err(problem) if is_float_for_integer(&problem) => {
            let mut document: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
            integral_numbers(&mut document);
            serde_path_to_error::deserialize(document).map_err(json_problem)?
        }
        Err(problem) => return Err(problem),
    };
    Ok(value)
}

/// A deserialization error as a problem: a data error (wrong type, unknown or missing field)
/// is a 422 naming the field, anything else malformed JSON (400).
fn json_problem(error: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let message = strip_position(&inner.to_string());
            Problem::field(field_name(&path, &message), message)
        }
        _ => Problem::bad_request(format!("malformed JSON: {inner}")),
    }
}

fn is_float_for_integer(problem: &Problem) -> bool {
    problem
        .errors
        .first()
        .is_some_and(|error| error.message.starts_with("invalid type: floating point"))
}

/// JSON has one number type: `5.0` is the integer 5 to JSON Schema (and so to the OpenAPI
/// document and its clients), so a number without a fraction is read as an integer wherever
/// one is expected. Only values an `f64` holds exactly (below 2^53) are converted; a larger
/// one stays a float and is refused as out of range.
fn integral_numbers(value: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(number) if number.is_f64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() < EXACT
            {
                // Exact: the value is integral and within f64's exact integer range.
                #[allow(clippy::cast_possible_truncation)]
                let integer = float as i64;
                *number = serde_json::Number::from(integer);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// The field a data error is about. serde_path_to_error's path already ends at an unknown
/// field, but stops at the enclosing object for a missing one, naming it only in the message.
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(name)) => name.to_owned(),
        (".", None) => "body".to_owned(),
        (path, Some(name)) => format!("{path}.{name}"),
        (path, None) => path.to_owned(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a path segment that must be a UUID; anything else names no resource, hence 404.
pub fn path_id(segment: &str, what: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(segment)
        .map_err(|_| Problem::not_found(format!("no {what} with id {segment:?}")))
}

/// Reads the optional `Idempotency-Key` header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Problem::field("Idempotency-Key", "must be visible ASCII"))?;
            IdempotencyKey::parse(text)
                .map(Some)
                .map_err(|e| Problem::field("Idempotency-Key", e.to_string()))
        }
    }
}

/// Raw list parameters, validated by [`ListParams::page`]. They arrive as strings, so that a
/// bad one is a 422 naming it; the document gives their real types.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1..=500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Opaque cursor from the previous page's `next`.
    #[param(value_type = Option<String>, pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    pub after: Option<String>,
}

/// A validated page request: keyset pagination over UUID v7 ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Uuid>,
}

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

impl ListParams {
    pub fn page(&self) -> Result<PageRequest, Vec<FieldError>> {
        let mut errors = Vec::new();
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = match self.after.as_deref() {
            None => None,
            Some(raw) => match decode_cursor(raw) {
                Some(id) => Some(id),
                None => {
                    errors.push(FieldError::new("after", "is not a cursor this API issued"));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(PageRequest { limit, after })
        } else {
            Err(errors)
        }
    }
}

impl ListParams {
    /// The page, or `None` with its field problems added to `errors`: for lists that also
    /// validate filters and answer every problem at once.
    pub fn page_collecting(&self, errors: &mut Vec<FieldError>) -> Option<PageRequest> {
        match self.page() {
            Ok(page) => Some(page),
            Err(problems) => {
                errors.extend(problems);
                None
            }
        }
    }
}

/// An optional query value parsed with `parse`; one that does not parse adds
/// `field: message` to `errors` and gives `None`.
pub fn query_value<T>(
    field: &str,
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
    message: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let raw = raw?;
    let parsed = parse(raw);
    if parsed.is_none() {
        errors.push(FieldError::new(field, message));
    }
    parsed
}

/// One page of a list: `next` is the cursor of the following page, `null` on the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in id order; the extra row, if any,
    /// only proves that another page exists.
    pub fn from_rows(mut rows: Vec<T>, request: PageRequest, id_of: impl Fn(&T) -> Uuid) -> Self {
        let limit = request.limit as usize;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(id_of(last)))
        } else {
            None
        };
        Self { items: rows, next }
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: i64,
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let problem = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(problem.status, 400);
        let problem = parse_json::<Body>(b"{\"name\": \"a\", \"count\": 1} trailing").unwrap_err();
        assert_eq!(problem.status, 400);
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        let problem = parse_json::<Body>(br#"{"name": 5, "count": 1}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "name");
        let problem = parse_json::<Body>(br#"{"name": "a", "count": 1, "x": 1}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        assert_eq!(problem.errors[0].field, "x");
        let problem = parse_json::<Body>(br#"{"name": "a"}"#).unwrap_err();
        assert_eq!(
            (problem.status, problem.errors[0].field.as_str()),
            (422, "count")
        );
        let problem = parse_json::<Body>(br#"{"name": "a", "count": 1e30}"#).unwrap_err();
        assert_eq!(
            (problem.status, problem.errors[0].field.as_str()),
            (422, "count")
        );
    }

    #[test]
    fn integral_numbers_are_integers_and_serde_checks_stay() {
        let body = parse_json::<Body>(br#"{"name": "a", "count": 5.0}"#).unwrap();
        assert_eq!(body.count, 5);
        let body = parse_json::<Body>(br#"{"name": "a", "count": -1e3}"#).unwrap();
        assert_eq!(body.count, -1000);
        let problem = parse_json::<Body>(br#"{"name": "a", "count": 5.5}"#).unwrap_err();
        assert_eq!(
            (problem.status, problem.errors[0].field.as_str()),
            (422, "count")
        );
        let problem = parse_json::<Body>(br#"{"name": 1.0, "count": 1}"#).unwrap_err();
        assert_eq!(
            (problem.status, problem.errors[0].field.as_str()),
            (422, "name")
        );
        let problem = parse_json::<Body>(br#"{"name": "a", "name": "b", "count": 1}"#).unwrap_err();
        assert_eq!(problem.status, 422);
        let problem = parse_json::<Body>(br#"{"name": "a", "count": 5.0} x"#).unwrap_err();
        assert_eq!(problem.status, 400);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor"), None);
        let params = ListParams {
            limit: Some("0".into()),
            after: Some("%%".into()),
        };
        let errors = params.page().unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn a_page_with_an_extra_row_has_a_next_cursor() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let request = PageRequest {
            limit: 2,
            after: None,
        };
        let page = Page::from_rows(ids.clone(), request, |id| *id);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next.as_deref().and_then(decode_cursor), Some(ids[1]));
        let last = Page::from_rows(ids[..2].to_vec(), request, |id| *id);
        assert_eq!(last.next, None);
    }
}
