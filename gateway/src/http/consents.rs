//! `/v1/children/{id}/consents`: the consent register.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;

use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::consent::Consent;
use crate::write::consent;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/children/{id}/consents", get(list).post(record))
        .route(
            "/v1/children/{id}/consents/{consent}/withdraw",
            post(withdraw),
        )
}

/// A child's consents and refusals.
#[utoipa::path(get, path = "/v1/children/{id}/consents",
    params(("id" = String, Path, description = "Weft child id")),
    responses((status = 200, body = Vec<Consent>), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(gw): State<Gateway>,
    who: Principal,
    Path(child): Path<String>,
) -> Result<Json<Vec<Consent>>, ApiError> {
    Ok(Json(consent::list(&gw, &who, &child).await?))
}

/// Records a consent (or a refusal) given for a child.
#[utoipa::path(post, path = "/v1/children/{id}/consents",
    params(("id" = String, Path, description = "Weft child id")),
    request_body(content = payload::Consent, description = "schemas/consent.schema.json"),
    responses((status = 201, body = Consent), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn record(
    State(gw): State<Gateway>,
    who: Principal,
    Path(child): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Consent>), ApiError> {
    let c = consent::record(&gw, &who, &child, &body).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// Withdraws a consent. Takes effect on the next request.
#[utoipa::path(post, path = "/v1/children/{id}/consents/{consent}/withdraw",
    params(("id" = String, Path), ("consent" = String, Path)),
    request_body(content = payload::ConsentWithdrawal, description = "schemas/consent-withdrawal.schema.json"),
    responses((status = 200, body = Consent), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn withdraw(
    State(gw): State<Gateway>,
    who: Principal,
    Path((child, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Consent>, ApiError> {
    Ok(Json(
        consent::withdraw(&gw, &who, &child, &id, &body).await?,
    ))
}
