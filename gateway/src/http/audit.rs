//! `GET /v1/audit`: the audit log, for information-governance officers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};

use crate::foundation::audit::{self, Recorded};
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;

pub fn routes() -> Router<Gateway> {
    Router::new().route("/v1/audit", get(entries))
}

/// Audit entries, newest first. Information-governance officers only.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(audit::Query),
    responses(
        (status = 200, description = "Audit entries", body = Vec<audit::Recorded>),
        (status = 403, description = "Not an IG officer"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn entries(
    State(gw): State<Gateway>,
    who: Principal,
    query: Result<Query<audit::Query>, QueryRejection>,
) -> Result<Json<Vec<Recorded>>, ApiError> {
    let query = query
        .map(|Query(q)| q)
        .map_err(|e| Error::invalid(e.body_text()));
    Ok(Json(crate::read::audit::entries(&gw, &who, query).await?))
}
