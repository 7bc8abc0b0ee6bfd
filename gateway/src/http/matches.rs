//! Identity matching: the review queue and decisions (data administrators), and a child's link
//! history.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::linkage::Decided;
use crate::write::matches::{self, LinkHistory, ReviewQueue};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/matches/review", get(review))
        .route("/v1/matches/{id}/decision", post(decide))
        .route("/v1/children/{id}/links", get(links))
}

/// The review queue of uncertain matches. Data administrators only.
#[utoipa::path(
    get,
    path = "/v1/matches/review",
    responses(
        (status = 200, description = "Open proposals", body = ReviewQueue),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not a data administrator"),
        (status = 503, description = "Audit log unavailable: no data is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn review(
    State(gw): State<Gateway>,
    who: Principal,
) -> Result<Json<ReviewQueue>, ApiError> {
    Ok(Json(matches::queue(&gw, &who).await?))
}

/// A decision on a proposed match (confirm, reject) or a link (confirm, split). Data
/// administrators only; the matcher never overrides it.
#[utoipa::path(
    post,
    path = "/v1/matches/{id}/decision",
    params(("id" = String, Path, description = "Match id, from the review queue or a link history")),
    request_body(content = payload::MatchDecision, description = "schemas/match-decision.schema.json"),
    responses(
        (status = 200, description = "What the decision did", body = Decided),
        (status = 400, description = "Invalid body; every error with its JSON pointer"),
        (status = 403, description = "Not a data administrator"),
        (status = 404, description = "No match with that id"),
        (status = 409, description = "The decision does not apply to the match as it stands"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn decide(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Decided>, ApiError> {
    Ok(Json(matches::decide(&gw, &who, &id, &body).await?))
}

/// A child's link history: every source record linked to it now or before, how, with what
/// score and why, and every decision a person took. Data administrators and information-
/// governance officers.
#[utoipa::path(
    get,
    path = "/v1/children/{id}/links",
    params(("id" = String, Path, description = "Weft child id")),
    responses(
        (status = 200, description = "Link history", body = LinkHistory),
        (status = 403, description = "Not a data administrator or IG officer"),
        (status = 404, description = "No such child"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn links(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<LinkHistory>, ApiError> {
    Ok(Json(matches::history(&gw, &who, &id).await?))
}
