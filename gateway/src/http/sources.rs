//! `GET /v1/sources`: each source's health for the people who run the gateway — whether it
//! answers, whether its circuit breaker is open, its last error and its call counts. It shows
//! no children's data, but it tells a reader which partner systems are down, so it is open to
//! data administrators only and every read of it is audited like any other `/v1` read.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::app::AppState;
use crate::foundation::domain::Role;
use crate::http::error::ApiError;
use crate::http::{record, refuse};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::fanout::SourceHealth;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourcesReport {
    /// In configuration order.
    pub sources: Vec<SourceHealth>,
}

pub fn routes() -> axum::Router<AppState> {
    Router::new().route("/v1/sources", get(list))
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
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SourcesReport>, ApiError> {
    if principal.role != Role::DataAdmin {
        let e = ApiError::Forbidden("source health is open to data administrators only");
        return Err(refuse(&state, &principal, "sources", None, None, e).await);
    }
    let sources: Vec<SourceHealth> = state.sources.all.iter().map(|s| s.health()).collect();
    let unavailable: Vec<&str> = sources
        .iter()
        .filter(|s| s.state == "unavailable")
        .map(|s| s.source.as_str())
        .collect();
    let detail = json!({"returned": sources.len(), "unavailable": unavailable});
    record(&state, &principal, "sources", None, None, "shown", detail).await?;
    Ok(Json(SourcesReport { sources }))
}
