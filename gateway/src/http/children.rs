//! `/v1/children`: finding a child, and a child's merged view.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::foundation::domain::Purpose;
use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::http::params::Params;
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
    /// `police_investigation` (police, MASH) or `s47_enquiry` (social workers, MASH): this
    /// access is kept out of subject access reports until it is released.
    exemption: Option<String>,
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
        (status = 400, description = "Purpose missing, unknown or given more than once (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "No legitimate relationship with the child (the message says how access is gained; nothing of the child is returned), or an exemption this role may not claim"),
        (status = 404, description = "No such child"),
        (status = 503, description = "Audit log unavailable: no data is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn view(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    Params(params): Params<ViewParams>,
) -> Result<Json<View>, ApiError> {
    Ok(Json(
        crate::read::view::view_marked(
            &gw,
            &who,
            &id,
            params.purpose.as_deref(),
            params.exemption.as_deref(),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExemptionParams {
    /// `police_investigation` (police, MASH) or `s47_enquiry` (social workers, MASH): this
    /// access is kept out of subject access reports until it is released.
    pub(crate) exemption: Option<String>,
}

/// Find a child by NHS number, UPN, a source's local id (of the caller's own agency's sources
/// only), and/or demographics. Demographics are scored by the probabilistic matcher: a child the
/// caller has a relationship with comes with a grade (`certain`, `probable`, `possible`), the
/// probability and the per-comparison explanation; any other child only with that it matches
/// and how access is gained. `certain_only` keeps only
/// certain matches.
#[utoipa::path(
    post,
    path = "/v1/children/search",
    request_body(content = payload::Search, description = "schemas/search.schema.json"),
    params(("exemption" = Option<String>, Query,
        description = "`police_investigation` (police, MASH) or `s47_enquiry` (social workers, MASH): the search is kept out of the found child's subject access reports until released",
        pattern = "^(police_investigation|s47_enquiry)$")),
    responses(
        (status = 200, description = "Matching children: with a relationship, graded and explained; without, only that the child matches and how access is gained", body = SearchResult),
        (status = 400, description = "Invalid body, or a local id of another agency's source; every error with its JSON pointer"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "An exemption this role may not claim"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn search(
    State(gw): State<Gateway>,
    who: Principal,
    Params(params): Params<ExemptionParams>,
    body: Bytes,
) -> Result<Json<SearchResult>, ApiError> {
    Ok(Json(
        crate::read::search::search_marked(&gw, &who, &body, params.exemption.as_deref()).await?,
    ))
}
