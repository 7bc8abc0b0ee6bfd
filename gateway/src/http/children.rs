//! `/v1/children`: finding a child, and a child's merged view.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::foundation::domain::Purpose;
use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::merge::View;
use crate::read::search::SearchResult;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/children/search", post(search))
        .route("/v1/children/{id}", get(view))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ViewParams {
    /// Purpose of use: safeguarding, child_in_need, early_help, education_welfare, direct_care
    /// or audit.
    purpose: Option<String>,
}

/// The merged view of a child, for a purpose.
#[utoipa::path(
    get,
    path = "/v1/children/{id}",
    params(
        ("id" = String, Path, description = "Weft child id"),
        ("purpose" = Purpose, Query, description = "Purpose of use; every view names one"),
    ),
    responses(
        (status = 200, description = "Merged view", body = View),
        (status = 400, description = "Purpose missing or unknown"),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "No such child"),
        (status = 503, description = "Audit log unavailable: no data is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn view(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    Query(params): Query<ViewParams>,
) -> Result<Json<View>, ApiError> {
    Ok(Json(
        crate::read::view::view(&gw, &who, &id, params.purpose.as_deref()).await?,
    ))
}

/// Find a child by NHS number, UPN, a source's local id, and/or demographics. Demographics are
/// scored by the probabilistic matcher: each child comes with a grade (`certain`, `probable`,
/// `possible`), the probability and the per-comparison explanation; `certain_only` keeps only
/// certain matches.
#[utoipa::path(
    post,
    path = "/v1/children/search",
    request_body(content = payload::Search, description = "schemas/search.schema.json"),
    responses(
        (status = 200, description = "Matching Weft child ids", body = SearchResult),
        (status = 400, description = "Invalid body; every error with its JSON pointer"),
        (status = 401, description = "Missing or invalid token"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(gw): State<Gateway>,
    who: Principal,
    body: Bytes,
) -> Result<Json<SearchResult>, ApiError> {
    Ok(Json(crate::read::search::search(&gw, &who, &body).await?))
}
