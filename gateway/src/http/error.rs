//! The one error type handlers return: a status code and a JSON body that says what to fix,
//! without repeating anything personal the request carried. Every refusal of a read or a write
//! arrives as a [`crate::foundation::error::Error`] and is mapped here.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::foundation::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, invalid or expired credentials. The body says nothing more, by design.
    #[error("unauthorized")]
    Unauthorized,
    /// A body sent as anything but JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
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
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Refused(e) => match e {
                Error::Invalid { .. } => StatusCode::BAD_REQUEST,
                Error::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
            ApiError::UnsupportedMediaType => json!({
                "error": "unsupported_media_type",
                "message": "send the body as application/json"
            }),
            ApiError::Refused(e) => match e {
                Error::Forbidden(why) => json!({"error": "forbidden", "message": why}),
                Error::Invalid { message, errors } => {
                    json!({"error": "bad_request", "message": message, "errors": errors})
                }
                Error::Unprocessable { message, errors } => {
                    json!({"error": "unprocessable", "message": message, "errors": errors})
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

/// Refuses a request whose body is not declared JSON (415) before any handler reads it: every
/// body the API takes is a JSON document checked against its schema.
pub async fn require_json(req: Request, next: Next) -> Response {
    if carries_body(req.headers()) && !declared_json(req.headers()) {
        return ApiError::UnsupportedMediaType.into_response();
    }
    next.run(req).await
}

fn carries_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(TRANSFER_ENCODING)
}

fn declared_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// Gives error responses the gateway's handlers did not write — a path that matches no route
/// (404), a method a path does not take (405, its `Allow` header kept), a body over the limit
/// (413), a query string or path that does not parse (400) — the one JSON error body
/// ([`crate::http::contract::ErrorBody`]). Their original text is dropped: it can quote what the
/// request carried. JSON errors and the web pages' own HTML error pages pass unchanged.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // A web page's own error page (HTML) is written by the gateway and says what went wrong
        // beside the form's fields; keep it.
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json {
        return response;
    }
    let (error, message) = match status {
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "the path or query string does not match the API description (/openapi.json)",
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such path"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "the path does not take this method; see the Allow header",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the body is larger than this gateway takes (limits.body_bytes)",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "the request was refused"),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(CONTENT_LENGTH);
    let body = Json(json!({"error": error, "message": message}));
    let mut rebuilt = body.into_response();
    let content_type = rebuilt.headers().get(CONTENT_TYPE).cloned();
    *rebuilt.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Some(ct) = content_type {
        rebuilt.headers_mut().insert(CONTENT_TYPE, ct);
    }
    rebuilt
}

/// Most of an oversized body read (and thrown away) before answering 413.
const LINGER_BYTES: usize = 1024 * 1024;
/// Longest spent reading it.
const LINGER_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a body whose declared length is over `limit` (413) — after reading and dropping up
/// to [`LINGER_BYTES`] of it for at most [`LINGER_FOR`]. A server that answers without reading
/// closes a connection the client is still writing to, and most clients then report a reset
/// connection instead of the 413. Past those bounds the connection is closed. A body without a
/// declared length is cut at `limit` by the body limit layer within.
pub async fn oversized_bodies(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > limit as u64) else {
        return next.run(req).await;
    };
    let drained = tokio::time::timeout(
        LINGER_FOR,
        axum::body::to_bytes(req.into_body(), LINGER_BYTES),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let mut response = (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({
            "error": "payload_too_large",
            "message": format!("the body is {declared} bytes; this gateway takes at most {limit} (limits.body_bytes)")
        })),
    )
        .into_response();
    if !drained {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}
