//! `GET /v1/reports/area`: area trends — attendance, persistent absence, exclusions and how many
//! of those children are known to social care, by school, area and term, under disclosure
//! control — as JSON, or CSV with `format=csv`. Policy decides who sees which; every read is
//! audited ([`crate::read::area`]).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::header;
use serde::Deserialize;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::pipeline::authenticate::Principal;
use crate::read::area::{self, AreaQuery};

pub fn routes() -> Router<Gateway> {
    Router::new().route("/v1/reports/area", get(area_report))
}

/// The response's schema: `schemas/area-report.schema.json`, put in place by
/// [`crate::http::contract::document`].
pub struct AreaReport;

impl utoipa::PartialSchema for AreaReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new().into()
    }
}

impl utoipa::ToSchema for AreaReport {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("AreaReport")
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AreaParams {
    /// Purpose of use (`education_welfare` in the default policy); required.
    #[param(value_type = crate::foundation::domain::Purpose, required = true)]
    purpose: Option<String>,
    /// Only rows of this level.
    #[param(pattern = "^(authority|school|area)$")]
    level: Option<String>,
    /// Only the rows of this school (URN) or area (postcode district or ward code).
    #[param(max_length = 64)]
    key: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// Area trends under disclosure control: counts from 1 to 5 withheld, and every figure that
/// would give one away. Local-authority analysts and education welfare officers see every
/// school and area; a school's DSL only their own school's rows; others nothing. Audited.
#[utoipa::path(
    get,
    path = "/v1/reports/area",
    params(AreaParams),
    responses(
        (status = 200, description = "The report (JSON, or CSV with format=csv)", content(
            (AreaReport = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "No purpose, an unknown level or format, or a query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Policy shows this role no area data for this purpose (audited)"),
        (status = 503, description = "Audit log or ward lookup unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn area_report(
    State(gw): State<Gateway>,
    who: Principal,
    Params(p): Params<AreaParams>,
) -> Result<Response, ApiError> {
    let query = AreaQuery {
        purpose: p.purpose,
        level: p.level,
        key: p.key,
    };
    // A format the gateway does not write is refused through the report, so it is audited.
    let (q, csv) = match p.format.as_deref() {
        None | Some("json") => (Ok(query), false),
        Some("csv") => (Ok(query), true),
        Some(_) => (Err(Error::field("/format", "json or csv")), false),
    };
    let report = area::report(&gw, &who, q).await?;
    Ok(if csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            area::to_csv(&report)?,
        )
            .into_response()
    } else {
        Json(report).into_response()
    })
}
