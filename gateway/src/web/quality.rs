//! The data-quality page, for the data administrator and an agency's data manager: the report
//! of [`crate::read::quality`] (policy, the day's counts and the audit entry included) — each
//! source's counts, the counts by day, and a table of the records to correct. The data
//! administrator sees the other systems' values beside each disagreement; a data manager only
//! which fields of their own records disagree. `/admin/quality.csv` downloads the same report.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header;
use serde::{Deserialize, Serialize};

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::read::quality::{self, QualityQuery, QualityReport};
use crate::web::render::{self, Page};
use crate::web::session::SignedIn;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/admin/quality", get(page))
        .route("/admin/quality.csv", get(csv))
}

#[derive(Debug, Deserialize)]
struct Params {
    source: Option<String>,
}

/// The report's query; a query that could not be read is refused by the report, so the
/// refusal is audited. An empty source (the form's "every source") is none.
fn query(p: Result<Query<Params>, QueryRejection>) -> Result<QualityQuery, Error> {
    let Query(p) = p.map_err(|e| Error::invalid(format!("query: {}", e.status())))?;
    Ok(QualityQuery {
        source: p.source.filter(|s| !s.trim().is_empty()),
    })
}

async fn csv(
    State(gw): State<Gateway>,
    who: SignedIn,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    match quality::report(&gw, &who.principal, query(params)).await {
        Ok(report) => match quality::to_csv(&report) {
            Ok(bytes) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"data-quality.csv\"",
                    ),
                ],
                bytes,
            )
                .into_response(),
            Err(e) => render::error_page(Some(&who), &e),
        },
        Err(e) => render::error_page(Some(&who), &e),
    }
}

/// One record's problems, in words, for the table.
#[derive(Debug, Serialize)]
struct Line {
    source: String,
    local_id: String,
    problems: Vec<String>,
}

fn field_words(field: &str) -> &'static str {
    match field {
        "given_name" => "Given name",
        "family_name" => "Family name",
        "birth_date" => "Date of birth",
        "sex" => "Sex",
        "postcode" => "Postcode",
        "address" => "Address",
        "school" => "School",
        _ => "Another field",
    }
}

fn lines(report: &QualityReport) -> Vec<Line> {
    report
        .records
        .iter()
        .map(|r| {
            let mut problems = Vec::new();
            for d in &r.disagreements {
                problems.push(match (&d.other_source, &d.value, &d.other_value) {
                    (Some(other), Some(v), Some(ov)) => format!(
                        "{} differs from {} ({}): “{v}” here, “{ov}” there",
                        field_words(d.field),
                        other,
                        d.other_local_id.as_deref().unwrap_or(""),
                    ),
                    _ => format!(
                        "{} differs from another system's record of the child",
                        field_words(d.field)
                    ),
                });
            }
            for i in &r.invalid_identifiers {
                problems.push(format!(
                    "{} “{}” fails its check: {}",
                    match i.kind.as_str() {
                        "nhs_number" => "NHS number",
                        "upn" => "UPN",
                        other => other,
                    },
                    i.value,
                    i.problem
                ));
            }
            if r.in_review {
                problems.push("Waiting in the match review queue".into());
            }
            for d in &r.likely_duplicates {
                problems.push(if d.same_child {
                    format!(
                        "Likely the same child as {} (linked to one child)",
                        d.local_id
                    )
                } else {
                    format!(
                        "Likely the same child as {} (probability {})",
                        d.local_id, d.probability
                    )
                });
            }
            Line {
                source: r.source.clone(),
                local_id: r.local_id.clone(),
                problems,
            }
        })
        .collect()
}

async fn page(
    State(gw): State<Gateway>,
    who: SignedIn,
    params: Result<Query<Params>, QueryRejection>,
) -> Response {
    let q = query(params);
    let chosen = q.as_ref().ok().and_then(|q| q.source.clone());
    match quality::report(&gw, &who.principal, q).await {
        Ok(report) => {
            let lines = lines(&report);
            Page::new("quality.html", "Data quality", &who)
                .with("report", &report)
                .with("lines", lines)
                .with("chosen", chosen)
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}
