//! The API's one error type: a status, a stable snake_case code, a human
//! message and optional details, rendered as
//! `{"error": {"code", "message", "details"}}`. Internal failures become a
//! `500`/`503` with a generic message; their cause goes to the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (refusals for load).
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None, retry_after: None }
    }

    /// Adds `Retry-After: secs` to the answer.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", msg)
    }
    pub fn purpose_required() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "purpose_required",
            "this request reads subject data: state its purpose in the X-Purpose header",
        )
    }
    pub fn invalid_key(e: basedata_store::keys::KeyError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string()).with_details(json!({"reason": e.reason()}))
    }
    pub fn unknown_dataset(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_dataset", format!("no dataset {id:?} in the catalog"))
    }
    pub fn invalid_body(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", msg)
    }
    pub fn invalid_value(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_value", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", msg)
    }
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body exceeds {limit} bytes"))
    }
    pub fn overloaded() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is at capacity; retry shortly")
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
    }

    /// An internal failure: logged in full, answered without internals.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the incident has been logged")
    }
}

impl From<basedata_store::Error> for ApiError {
    fn from(e: basedata_store::Error) -> Self {
        match e.unavailable_reason() {
            Some(why) => {
                tracing::error!(error = %e, "refused: {why}");
                ApiError::unavailable(why)
            }
            None => ApiError::internal(e),
        }
    }
}

/// The consumer use cases' errors, each to its status.
impl From<basedata_query::Error> for ApiError {
    fn from(e: basedata_query::Error) -> Self {
        use basedata_query::Error as E;
        let code = e.code();
        match e {
            E::InvalidKey(k) => ApiError::invalid_key(k),
            E::UnknownDataset(id) => ApiError::unknown_dataset(&id),
            e @ E::OtherSubject { .. } => Self::new(StatusCode::NOT_FOUND, code, e.to_string()),
            E::UnknownField(m) | E::InvalidValue(m) | E::InvalidBody(m) => Self::new(StatusCode::BAD_REQUEST, code, m),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::ClaimLimit { message, dataset, field, distinct, period_days } => Self::new(StatusCode::FORBIDDEN, code, message)
                .with_details(json!({"dataset": dataset, "field": field, "distinct_claims": distinct, "period_days": period_days})),
            E::PurposeNotAllowed { message, code: purpose_code, reason, allowed } => {
                Self::new(StatusCode::FORBIDDEN, code, message)
                    .with_details(json!({"purpose_code": purpose_code, "reason": reason, "allowed": allowed}))
            }
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => Self::new(StatusCode::CONFLICT, code, m),
            E::ChangesRemoved { after, kept_after } => Self::new(StatusCode::CONFLICT, code, e.to_string())
                .with_details(json!({"reason": "changes_removed", "after": after, "kept_after": kept_after})),
            E::Overloaded => ApiError::overloaded(),
            E::TooManyJobs { limit, retry_after_secs } => {
                let msg = e.to_string();
                Self::new(StatusCode::TOO_MANY_REQUESTS, code, msg)
                    .with_details(json!({"max_jobs": limit}))
                    .with_retry_after(retry_after_secs)
            }
            E::PayloadTooLarge(m) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, m),
            E::Unavailable(m) => ApiError::unavailable(m),
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

/// The provider use case's errors, each to its status.
impl From<basedata_ingest::provide::Error> for ApiError {
    fn from(e: basedata_ingest::provide::Error) -> Self {
        use basedata_ingest::provide::Error as E;
        match e {
            E::UnknownDataset(id) => ApiError::unknown_dataset(&id),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::InvalidBody(m) => ApiError::invalid_body(m),
            E::PayloadTooLarge(limit) => ApiError::payload_too_large(limit),
            E::Overloaded => ApiError::overloaded(),
            E::Unavailable(m) => ApiError::unavailable(m),
            E::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(d) = self.details {
            err["details"] = d;
        }
        let mut resp = (self.status, axum::Json(json!({ "error": err }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}
