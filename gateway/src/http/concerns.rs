//! `/v1/concerns`: submitting a concern, reading it, moving it on, adding to it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};

use crate::gateway::Gateway;
use crate::http::children::ExemptionParams;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::pipeline::authenticate::Principal;
use crate::write::concerns::{self, ConcernView, MyConcern};

/// The header that makes a retried submission return the original concern.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/concerns", post(submit).get(mine))
        .route("/v1/concerns/{id}", get(show))
        .route("/v1/concerns/{id}/status", post(progress))
        .route("/v1/concerns/{id}/addenda", post(addendum))
}

/// Submit a concern. Routed by the rules in `policies/routing.toml`, delivered through the outbox.
#[utoipa::path(
    post,
    path = "/v1/concerns",
    request_body(content = payload::Concern, description = "schemas/concern.schema.json"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A retried submission with the same key and body returns the original concern",
        min_length = 1, max_length = 200, pattern = "^[!-~]([ -~]*[!-~])?$"),
        ("exemption" = Option<String>, Query,
        description = "`police_investigation` (police, MASH) or `s47_enquiry` (social workers, MASH): the submission is kept out of the child's subject access reports until released",
        pattern = "^(police_investigation|s47_enquiry)$")),
    responses(
        (status = 201, description = "Stored and routed", body = ConcernView),
        (status = 200, description = "A retry: the original concern", body = ConcernView),
        (status = 400, description = "Invalid body; every error with its JSON pointer; nothing stored"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "An exemption this role may not claim"),
        (status = 409, description = "The Idempotency-Key was used for a different concern"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit(
    State(gw): State<Gateway>,
    who: Principal,
    headers: HeaderMap,
    Params(params): Params<ExemptionParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = headers.get(IDEMPOTENCY_KEY).map(|v| v.as_bytes());
    let exemption = params.exemption.as_deref();
    let submitted = concerns::submit_marked(&gw, &who, key, &body, exemption).await?;
    Ok(if submitted.replayed {
        let mut response = (StatusCode::OK, Json(submitted.concern)).into_response();
        response.headers_mut().insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
        response
    } else {
        (StatusCode::CREATED, Json(submitted.concern)).into_response()
    })
}

/// The concerns the caller raised, newest first, each with the furthest state a recipient has
/// reached.
#[utoipa::path(
    get,
    path = "/v1/concerns",
    responses(
        (status = 200, description = "The caller's concerns, newest first", body = Vec<MyConcern>),
        (status = 401, description = "Missing or invalid token"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mine(
    State(gw): State<Gateway>,
    who: Principal,
) -> Result<Json<Vec<MyConcern>>, ApiError> {
    Ok(Json(concerns::mine(&gw, &who, None).await?))
}

/// A concern, its recipients' progress and its history. For its reporter and recipients.
#[utoipa::path(
    get,
    path = "/v1/concerns/{id}",
    params(("id" = String, Path, description = "Concern id")),
    responses(
        (status = 200, description = "The concern", body = ConcernView),
        (status = 403, description = "Neither reporter nor recipient"),
        (status = 404, description = "No such concern"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConcernView>, ApiError> {
    Ok(Json(concerns::show(&gw, &who, &id).await?))
}

/// A recipient moves a concern on: `acknowledged`, `in_progress`, `closed` (with an outcome).
/// The reporter is told through their inbox.
#[utoipa::path(
    post,
    path = "/v1/concerns/{id}/status",
    params(("id" = String, Path, description = "Concern id")),
    request_body(content = payload::ConcernUpdate, description = "schemas/concern-update.schema.json"),
    responses(
        (status = 200, description = "The concern after the step", body = ConcernView),
        (status = 400, description = "Invalid body"),
        (status = 403, description = "Not a recipient"),
        (status = 404, description = "No such concern"),
        (status = 409, description = "A step backwards"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn progress(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ConcernView>, ApiError> {
    Ok(Json(concerns::progress(&gw, &who, &id, &body).await?))
}

/// Appends text to a concern (the concern itself never changes). Delivered to every other party.
#[utoipa::path(
    post,
    path = "/v1/concerns/{id}/addenda",
    params(("id" = String, Path, description = "Concern id")),
    request_body(content = payload::ConcernAddendum, description = "schemas/concern-addendum.schema.json"),
    responses(
        (status = 201, description = "Appended", body = ConcernView),
        (status = 400, description = "Invalid body"),
        (status = 403, description = "Neither reporter nor recipient"),
        (status = 404, description = "No such concern"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn addendum(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ConcernView>), ApiError> {
    let view = concerns::addendum(&gw, &who, &id, &body).await?;
    Ok((StatusCode::CREATED, Json(view)))
}
