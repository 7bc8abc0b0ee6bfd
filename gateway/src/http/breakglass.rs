//! Break-glass: `POST /v1/children/{id}/break-glass`, and the IG officer's review queue.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::grants::Grant;
use crate::write::breakglass;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/children/{id}/break-glass", post(request))
        .route("/v1/ig/break-glass", get(queue))
        .route("/v1/ig/break-glass/{grant}/review", post(review))
}

/// Asks for an emergency grant for a child.
#[utoipa::path(post, path = "/v1/children/{id}/break-glass",
    params(("id" = String, Path, description = "Weft child id")),
    request_body(content = payload::BreakGlass, description = "schemas/break-glass.schema.json"),
    responses((status = 201, body = Grant), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn request(
    State(gw): State<Gateway>,
    who: Principal,
    Path(child): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Grant>), ApiError> {
    let grant = breakglass::request(&gw, &who, &child, &body).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct QueueQuery {
    /// `pending` (default) or `all`.
    #[param(value_type = Option<QueueStatus>)]
    status: Option<String>,
}

/// Which grants the review queue lists.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Describes the query parameter; the value is checked where it is used.
pub(crate) enum QueueStatus {
    Pending,
    All,
}

/// The IG officer's review queue of break-glass grants, newest first.
#[utoipa::path(get, path = "/v1/ig/break-glass", params(QueueQuery),
    responses(
        (status = 200, description = "Grants at the officer's agency (every agency's for the IG lead)", body = Vec<Grant>),
        (status = 400, description = "Unknown status, or a query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an IG officer"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = [])))]
pub(crate) async fn queue(
    State(gw): State<Gateway>,
    who: Principal,
    Params(q): Params<QueueQuery>,
) -> Result<Json<Vec<Grant>>, ApiError> {
    Ok(Json(
        breakglass::queue(&gw, &who, q.status.as_deref()).await?,
    ))
}

/// Records the IG officer's review of a grant.
#[utoipa::path(post, path = "/v1/ig/break-glass/{grant}/review",
    params(("grant" = String, Path)),
    request_body(content = payload::BreakGlassReview, description = "schemas/break-glass-review.schema.json"),
    responses((status = 200, body = Grant), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn review(
    State(gw): State<Gateway>,
    who: Principal,
    Path(grant): Path<String>,
    body: Bytes,
) -> Result<Json<Grant>, ApiError> {
    Ok(Json(breakglass::review(&gw, &who, &grant, &body).await?))
}
