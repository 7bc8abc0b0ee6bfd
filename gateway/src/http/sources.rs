//! `GET /v1/sources`: each source's health; `GET /v1/status`: readiness with its detail. For
//! data administrators.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::read::sources::{SourcesReport, Status};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/sources", get(list))
        .route("/v1/status", get(status))
}

/// Every source's health: kind, state, circuit breaker, last error and call counts. Data
/// administrators only.
#[utoipa::path(
    get,
    path = "/v1/sources",
    responses(
        (status = 200, description = "Each source's health", body = SourcesReport),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not a data administrator"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(gw): State<Gateway>,
    who: Principal,
) -> Result<Json<SourcesReport>, ApiError> {
    Ok(Json(crate::read::sources::health(&gw, &who).await?))
}

/// The gateway's state: the readiness checks `/readyz` answers from, the index's last pass over
/// the sources, the policy in force and its last refused reload (`policy.refused`), and each
/// source's health. Data administrators only.
#[utoipa::path(
    get,
    path = "/v1/status",
    responses(
        (status = 200, description = "The gateway's state, ready or not", body = Status),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not a data administrator"),
        (status = 503, description = "Audit log unavailable (as when the database cannot be written): nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn status(
    State(gw): State<Gateway>,
    who: Principal,
) -> Result<Json<Status>, ApiError> {
    Ok(Json(crate::read::sources::status(&gw, &who).await?))
}
