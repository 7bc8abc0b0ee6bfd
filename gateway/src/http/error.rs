//! The one error type handlers return: each variant is a status code and a JSON body that says
//! what to fix, without repeating anything personal the request carried.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::json;

use crate::foundation::schema::SchemaError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, invalid or expired credentials. The body says nothing more, by design.
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("bad request: {message}")]
    BadRequest {
        message: String,
        errors: Vec<SchemaError>,
    },
    #[error("not found")]
    NotFound(&'static str),
    /// The request contradicts what is stored (an idempotency key reused for another body, a
    /// step backwards on a concern, a decision on a closed match).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The audit entry could not be written, so nothing may be returned.
    #[error("audit unavailable")]
    AuditUnavailable,
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            errors: Vec::new(),
        }
    }

    /// A 400 naming the field (as a JSON pointer) that is wrong.
    pub fn field(pointer: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest {
            message: format!("{pointer}: {message}"),
            errors: vec![SchemaError {
                pointer: pointer.into(),
                message,
            }],
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::AuditUnavailable | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Unauthorized => json!({"error": "unauthorized"}),
            ApiError::Forbidden(why) => json!({"error": "forbidden", "message": why}),
            ApiError::BadRequest { message, errors } => {
                json!({"error": "bad_request", "message": message, "errors": errors})
            }
            ApiError::NotFound(what) => json!({"error": "not_found", "message": what}),
            ApiError::Conflict(why) => json!({"error": "conflict", "message": why}),
            ApiError::AuditUnavailable => json!({
                "error": "audit_unavailable",
                "message": "the audit log cannot be written, so no data can be returned"
            }),
            ApiError::Unavailable(why) => json!({"error": "unavailable", "message": why}),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                json!({"error": "internal"})
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
