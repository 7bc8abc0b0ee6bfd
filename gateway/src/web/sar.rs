//! Subject access in the pages: an IG officer asks for a child's access report, reads it, hands
//! the family their copy, and releases accesses deferred for a police investigation or a
//! section 47 enquiry. The pages call what `GET /v1/children/{id}/access-report[?format=html]`,
//! `…/deferred` and `…/deferred/{entry}/release` call ([`crate::read::sar`],
//! [`crate::write::sar`]): IG officers only, scoped to the officer's organisation unless they
//! are the partnership's IG lead, and every report, listing and release audited.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::gateway::Gateway;
use crate::read::sar;
use crate::web::children::FieldError;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/ig/access-report", get(ask))
        .route("/ig/children/{id}/access-report", get(report))
        .route("/ig/children/{id}/access-report/document", get(document))
        .route(
            "/ig/children/{id}/access-report/deferred/{entry}/release",
            post(release),
        )
}

/// `s` as one segment of a path, percent-encoded.
fn segment(s: &str) -> String {
    let mut u = url::Url::parse("http://localhost/").expect("a fixed, valid URL");
    if let Ok(mut path) = u.path_segments_mut() {
        path.clear().push(s);
    }
    u.path().trim_start_matches('/').to_string()
}

async fn ask(who: SignedIn, Query(values): Query<BTreeMap<String, String>>) -> Response {
    let child = values.get("child").map(|c| c.trim()).unwrap_or_default();
    let error = match values.get("child") {
        None => None,
        Some(_) if child.is_empty() => Some("Enter the child's Weft id"),
        Some(_) if child.chars().count() > 200 => {
            Some("Enter a Weft id of 200 characters or fewer")
        }
        Some(_) => {
            return Redirect::to(&format!("/ig/children/{}/access-report", segment(child)))
                .into_response()
        }
    };
    let errors: Vec<FieldError> = error
        .map(|m| FieldError::new("child", m))
        .into_iter()
        .collect();
    Page::new("ig_access_report_ask.html", "Subject access", &who)
        .status(if errors.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        })
        .with("values", &values)
        .with("errors", errors)
        .render()
}

#[derive(Serialize)]
struct DeferredView {
    entry: i64,
    at: String,
    role: String,
    agency: String,
    exemption: &'static str,
    until: String,
}

fn when(text: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.format("%-d %B %Y, %H:%M UTC").to_string())
        .unwrap_or_else(|_| text.to_string())
}

#[derive(Deserialize)]
struct Released {
    released: Option<String>,
}

async fn report(
    State(gw): State<Gateway>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<Released>,
) -> Response {
    let report = match sar::report(&gw, &who.principal, &id).await {
        Ok(r) => r,
        Err(e) => return render::error_page(Some(&who), &e),
    };
    let deferred = match sar::deferred(&gw, &who.principal, &id).await {
        Ok(d) => d,
        Err(e) => return render::error_page(Some(&who), &e),
    };
    let deferred: Vec<DeferredView> = deferred
        .iter()
        .map(|d| DeferredView {
            entry: d.entry,
            at: when(&d.at),
            role: sar::role_words(&d.role),
            agency: sar::agency_name(&gw, &d.agency),
            exemption: match d.exemption.as_str() {
                "police_investigation" => "A police investigation",
                "s47_enquiry" => "A section 47 enquiry",
                _ => "An exemption",
            },
            until: when(&d.until),
        })
        .collect();
    Page::new("ig_access_report.html", "Subject access report", &who)
        .with("report", &report)
        .with("id", &id)
        .with("deferred", deferred)
        .with("released", q.released.is_some())
        .render()
}

/// The family's copy: the same document `?format=html` gives, as a file to download and pass
/// on (it carries its own styles, which this origin's pages may not).
async fn document(State(gw): State<Gateway>, who: SignedIn, Path(id): Path<String>) -> Response {
    let html = match sar::report(&gw, &who.principal, &id)
        .await
        .and_then(|r| sar::html(&r))
    {
        Ok(h) => h,
        Err(e) => return render::error_page(Some(&who), &e),
    };
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"access-report.html\""),
    );
    response
}

async fn release(
    State(gw): State<Gateway>,
    Path((id, entry)): Path<(String, i64)>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    match crate::write::sar::release(&gw, &who.principal, &id, entry).await {
        Ok(()) => Redirect::to(&format!(
            "/ig/children/{}/access-report?released=1",
            segment(&id)
        ))
        .into_response(),
        Err(e) => render::error_page(Some(who), &e),
    }
}
