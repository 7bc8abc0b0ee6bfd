//! `GET /v1/reports/area`: area trends — attendance, persistent absence, exclusions and how many
//! of those children are known to social care, by school, area and term, under disclosure
//! control — as JSON, or CSV with `format=csv`. Policy decides who sees which; every read is
//! audited ([`crate::read::area`]).
//!
//! `GET /v1/reports/quality`: data quality for cleaning at source — each source's records that
//! disagree with another system's record of the child, fail an identifier check, wait for
//! review or are likely duplicates, with counts by day — as JSON, or CSV with `format=csv`
//! (`table=counts` for the counts by day). Policy decides who sees which source, and whether
//! other systems' values are shown; every read is audited ([`crate::read::quality`]).

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
use crate::read::quality::{self, QualityQuery};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/reports/area", get(area_report))
        .route("/v1/reports/quality", get(quality_report))
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

/// The data-quality report's schema: `schemas/quality-report.schema.json`, put in place by
/// [`crate::http::contract::document`].
pub struct QualityReport;

impl utoipa::PartialSchema for QualityReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::ObjectBuilder::new().into()
    }
}

impl utoipa::ToSchema for QualityReport {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("QualityReport")
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct QualityParams {
    /// Only this source (a configured source id); every source the reader may see otherwise.
    #[param(max_length = 128)]
    source: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// With `format=csv`: `records` (default; one row per problem) or `counts` (each source's
    /// counts by day).
    #[param(pattern = "^(records|counts)$")]
    table: Option<String>,
}

/// Data quality for cleaning at source, under purpose `audit`. A data administrator sees every
/// source with the other systems' values beside each disagreement; an agency's data manager
/// only their own agency's sources, each disagreeing field named but never another agency's
/// value; others nothing. Every report taken records the day's counts. Audited.
#[utoipa::path(
    get,
    path = "/v1/reports/quality",
    params(QualityParams),
    responses(
        (status = 200, description = "The report (JSON, or CSV with format=csv)", content(
            (QualityReport = "application/json"),
            (String = "text/csv")
        )),
        (status = 400, description = "An unknown format or table, or a query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Policy shows this role no data-quality report, or not this source's (audited)"),
        (status = 404, description = "No source of that id is configured (audited)"),
        (status = 503, description = "Audit log or the index unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn quality_report(
    State(gw): State<Gateway>,
    who: Principal,
    Params(p): Params<QualityParams>,
) -> Result<Response, ApiError> {
    let query = QualityQuery { source: p.source };
    // A format or table the gateway does not write is refused through the report, so it is
    // audited.
    let (q, csv) = match (p.format.as_deref(), p.table.as_deref()) {
        (_, Some(t)) if t != "records" && t != "counts" => {
            (Err(Error::field("/table", "records or counts")), None)
        }
        (None | Some("json"), _) => (Ok(query), None),
        (Some("csv"), t) => (Ok(query), Some(t == Some("counts"))),
        (Some(_), _) => (Err(Error::field("/format", "json or csv")), None),
    };
    let report = quality::report(&gw, &who, q).await?;
    Ok(match csv {
        Some(counts) => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            if counts {
                quality::history_csv(&report)?
            } else {
                quality::to_csv(&report)?
            },
        )
            .into_response(),
        None => Json(report).into_response(),
    })
}
