//! The one error type handlers return: a status code and a JSON body that says what to fix,
//! without repeating anything personal the request carried. Every refusal of a read or a write
//! arrives as a [`crate::foundation::error::Error`] and is mapped here.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::json;

use crate::foundation::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, invalid or expired credentials. The body says nothing more, by design.
    #[error("unauthorized")]
    Unauthorized,
    #[error(transparent)]
    Refused(#[from] Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Refused(e.into())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Refused(e) => match e {
                Error::Invalid { .. } => StatusCode::BAD_REQUEST,
                Error::Forbidden(_) => StatusCode::FORBIDDEN,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::Conflict(_) => StatusCode::CONFLICT,
                Error::AuditUnavailable | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Unauthorized => json!({"error": "unauthorized"}),
            ApiError::Refused(e) => match e {
                Error::Forbidden(why) => json!({"error": "forbidden", "message": why}),
                Error::Invalid { message, errors } => {
                    json!({"error": "bad_request", "message": message, "errors": errors})
                }
                Error::NotFound(what) => json!({"error": "not_found", "message": what}),
                Error::Conflict(why) => json!({"error": "conflict", "message": why}),
                Error::AuditUnavailable => json!({
                    "error": "audit_unavailable",
                    "message": "the audit log cannot be written, so no data can be returned"
                }),
                Error::Unavailable(why) => json!({"error": "unavailable", "message": why}),
                Error::Internal(cause) => {
                    tracing::error!(error = %cause, "internal error");
                    json!({"error": "internal"})
                }
            },
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
