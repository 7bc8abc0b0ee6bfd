//! `/v1/children/{id}/access-report`: subject access, for information-governance officers — the
//! report (JSON, or `?format=html` for the family), what is deferred, and releasing it.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::pipeline::authenticate::Principal;
use crate::read::sar::{self, Deferred, Report};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/children/{id}/access-report", get(report))
        .route("/v1/children/{id}/access-report/deferred", get(deferred))
        .route(
            "/v1/children/{id}/access-report/deferred/{entry}/release",
            post(release),
        )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReportParams {
    /// `json` (default) or `html`: a page a family can read.
    #[param(pattern = "^(json|html)$")]
    format: Option<String>,
}

/// Every access to the child, in plain words: who (role, agency), when, why, which kinds of
/// information, on what lawful basis. Accesses deferred for a police investigation or a
/// section 47 enquiry are left out until released. IG officers only; audited.
#[utoipa::path(
    get,
    path = "/v1/children/{id}/access-report",
    params(("id" = String, Path, description = "Weft child id"), ReportParams),
    responses(
        (status = 200, description = "The report (JSON, or HTML with format=html)", content(
            (Report = "application/json"),
            (String = "text/html")
        )),
        (status = 400, description = "Unknown format, or a query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an IG officer"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn report(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
    Params(p): Params<ReportParams>,
) -> Result<Response, ApiError> {
    let html = match p.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(_) => {
            let e = Error::field("/format", "json or html");
            return Err(crate::read::refused(&gw, &who, "subject_access_report", e)
                .await
                .into());
        }
    };
    let report = sar::report(&gw, &who, &id).await?;
    Ok(if html {
        Html(sar::html(&report)?).into_response()
    } else {
        Json(report).into_response()
    })
}

/// Accesses to the child held out of reports now, with their release dates. IG officers only.
#[utoipa::path(
    get,
    path = "/v1/children/{id}/access-report/deferred",
    params(("id" = String, Path, description = "Weft child id")),
    responses(
        (status = 200, description = "Deferred accesses", body = Vec<Deferred>),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an IG officer"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deferred(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Vec<Deferred>>, ApiError> {
    Ok(Json(sar::deferred(&gw, &who, &id).await?))
}

/// Releases a deferred access into reports now. IG officers only; audited.
#[utoipa::path(
    post,
    path = "/v1/children/{id}/access-report/deferred/{entry}/release",
    params(
        ("id" = String, Path, description = "Weft child id"),
        ("entry" = i64, Path, description = "The deferred access's audit entry"),
    ),
    responses(
        (status = 200, description = "Released"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not an IG officer"),
        (status = 404, description = "No deferred access to this child with that entry"),
        (status = 503, description = "Audit log unavailable: nothing is released"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn release(
    State(gw): State<Gateway>,
    who: Principal,
    Path((id, entry)): Path<(String, i64)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    crate::write::sar::release(&gw, &who, &id, entry).await?;
    Ok(Json(json!({"released": entry})))
}
