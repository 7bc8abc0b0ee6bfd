//! Break-glass in the pages: a practitioner takes an emergency grant from a child's page, with a
//! justification in their own words; an IG officer reviews each grant beside what was seen
//! under it. Both call the functions `POST /v1/children/{id}/break-glass`,
//! `GET /v1/ig/break-glass` and `POST /v1/ig/break-glass/{grant}/review` call
//! ([`crate::write::breakglass`]), with the same body, so the same schema, the same real-text
//! rule, the same scoping (an IG officer reviews their own agency's grants; the partnership's
//! IG lead, anyone's), the same audit, and the same revocation of a grant found not justified.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authorise::grants::Grant;
use crate::read::sar;
use crate::web::forms::FieldError;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::breakglass;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route(
            "/children/{id}/break-glass",
            get(request_form).post(request),
        )
        .route("/ig/break-glass", get(queue))
        .route("/ig/break-glass/{grant}", get(grant_page))
        .route("/ig/break-glass/{grant}/review", post(review))
}

/// What a child's page says about break-glass: the categories an emergency grant released for
/// this view (the page says it is seen under one), and whether anything is withheld that one
/// might release (the page offers it). Only ever from the view itself.
#[derive(Debug, Serialize)]
pub struct OnPage {
    pub under_grant: Vec<String>,
    pub can_ask: bool,
}

pub fn on_page(view: &crate::pipeline::merge::View) -> OnPage {
    OnPage {
        under_grant: view
            .categories
            .iter()
            .filter(|c| c.break_glass.is_some())
            .map(|c| sar::category_words(&c.category))
            .collect(),
        can_ask: !view.withheld.is_empty(),
    }
}

/// The page for a child this practitioner has no relationship with: what the API says, and the
/// way in an emergency. Only for that refusal (the API's 403 says the same), so it tells nothing
/// the API does not.
pub fn no_relationship_page(who: &SignedIn, id: &str, purpose: Option<&str>) -> Response {
    let purpose = purpose
        .filter(|p| PURPOSES.iter().any(|x| x.as_str() == *p))
        .unwrap_or("safeguarding");
    Page::new("no_relationship.html", "You cannot see this child", who)
        .status(StatusCode::FORBIDDEN)
        .with("id", id)
        .with("purpose", purpose)
        .render()
}

/// The purposes a grant may be asked for (`schemas/break-glass.schema.json`).
const PURPOSES: &[Purpose] = &[
    Purpose::Safeguarding,
    Purpose::ChildInNeed,
    Purpose::EarlyHelp,
    Purpose::EducationWelfare,
    Purpose::DirectCare,
];

#[derive(Deserialize)]
struct ForPurpose {
    purpose: Option<String>,
}

fn purpose_options() -> Vec<(String, String)> {
    PURPOSES
        .iter()
        .map(|p| (p.as_str().to_string(), sar::purpose_words(p.as_str())))
        .collect()
}

fn request_page(
    who: &SignedIn,
    id: &str,
    values: &BTreeMap<String, String>,
    errors: Vec<FieldError>,
) -> Page {
    Page::new("break_glass.html", "Emergency access (break-glass)", who)
        .with("id", id)
        .with("values", values)
        .with("errors", errors)
        .with("purposes", purpose_options())
}

async fn request_form(
    who: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<ForPurpose>,
) -> Response {
    let purpose = q
        .purpose
        .filter(|p| PURPOSES.iter().any(|x| x.as_str() == p))
        .unwrap_or_else(|| "safeguarding".into());
    let values: BTreeMap<String, String> = [("purpose".to_string(), purpose)].into();
    request_page(&who, &id, &values, Vec::new()).render()
}

/// What each field is called when it is wrong.
fn request_message(field: &str, from_rule: Option<&str>) -> String {
    match (field, from_rule) {
        ("purpose", _) => "Select why you need to see the child's information".into(),
        // The real-text rule's own words: "must say why, in at least four words", …
        (_, Some(rule)) => format!("Your reason {rule}"),
        _ => "Enter why you need emergency access, in at least twenty characters".into(),
    }
}

async fn request(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    let values: BTreeMap<String, String> = posted
        .form
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let purpose = values.get("purpose").cloned().unwrap_or_default();
    let justification = values.get("justification").cloned().unwrap_or_default();
    let body = json!({"purpose": purpose, "justification": justification}).to_string();
    match breakglass::request(&gw, &who.principal, &id, body.as_bytes()).await {
        Ok(grant) => Redirect::to(&format!(
            "/children/{}?purpose={}",
            segment(&id),
            grant.purpose.as_str()
        ))
        .into_response(),
        Err(e @ (Error::Invalid { .. } | Error::Unprocessable { .. })) => {
            // The schema's errors (missing, too short) are answered in the form's words; the
            // real-text rule's ("must say why, in at least four words") in its own.
            let (list, rule_words) = match &e {
                Error::Invalid { errors, .. } => (errors.as_slice(), false),
                Error::Unprocessable { errors, .. } => (errors.as_slice(), true),
                _ => (&[][..], false),
            };
            let mut errors: Vec<FieldError> = Vec::new();
            for e in list {
                let pointer = crate::web::concerns::pointer_of(e);
                let field = if pointer.ends_with("/purpose") {
                    "purpose"
                } else {
                    "justification"
                };
                let rule = (rule_words && field == "justification").then_some(e.message.as_str());
                if !errors.iter().any(|x| x.field == field) {
                    errors.push(FieldError::new(field, &request_message(field, rule)));
                }
            }
            if errors.is_empty() {
                errors.push(FieldError::new(
                    "justification",
                    &request_message("justification", None),
                ));
            }
            request_page(who, &id, &values, errors)
                .status(StatusCode::BAD_REQUEST)
                .render()
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

/// `s` as one segment of a path, percent-encoded.
fn segment(s: &str) -> String {
    let mut u = url::Url::parse("http://localhost/").expect("a fixed, valid URL");
    if let Ok(mut path) = u.path_segments_mut() {
        path.clear().push(s);
    }
    u.path().trim_start_matches('/').to_string()
}

/// A grant as the review pages show it.
#[derive(Debug, Serialize)]
struct GrantView {
    id: String,
    user: String,
    role: String,
    agency: String,
    child: String,
    purpose: String,
    justification: String,
    granted_at: String,
    expires_at: String,
    /// `active`, `expired` or `revoked`.
    state: &'static str,
    review: Option<ReviewView>,
    viewed: Vec<ViewedView>,
}

#[derive(Debug, Serialize)]
struct ReviewView {
    outcome: String,
    notes: String,
    by: String,
    at: String,
}

#[derive(Debug, Serialize)]
struct ViewedView {
    at: String,
    purpose: Option<String>,
    shown: Vec<String>,
    released: Vec<String>,
}

fn when(t: &chrono::DateTime<Utc>) -> String {
    t.format("%-d %B %Y, %H:%M UTC").to_string()
}

fn view_of(gw: &Gateway, g: &Grant) -> GrantView {
    let outcome = g.review.as_ref().map(|r| r.outcome.as_str());
    GrantView {
        id: g.id.clone(),
        user: g.user.clone(),
        role: sar::role_words(&g.role),
        agency: sar::agency_name(gw, &g.agency),
        child: g.child.clone(),
        purpose: sar::purpose_words(g.purpose.as_str()),
        justification: g.justification.clone(),
        granted_at: when(&g.granted_at),
        expires_at: when(&g.expires_at),
        state: if outcome == Some("not_justified") {
            "revoked"
        } else if g.expires_at <= Utc::now() {
            "expired"
        } else {
            "active"
        },
        review: g.review.as_ref().map(|r| ReviewView {
            outcome: r.outcome.replace('_', " "),
            notes: r.notes.clone(),
            by: r.reviewed_by.clone(),
            at: chrono::DateTime::parse_from_rfc3339(&r.reviewed_at)
                .map(|t| when(&t.with_timezone(&Utc)))
                .unwrap_or_else(|_| r.reviewed_at.clone()),
        }),
        viewed: g
            .viewed
            .iter()
            .map(|v| ViewedView {
                at: chrono::DateTime::parse_from_rfc3339(&v.at)
                    .map(|t| when(&t.with_timezone(&Utc)))
                    .unwrap_or_else(|_| v.at.clone()),
                purpose: v.purpose.as_deref().map(sar::purpose_words),
                shown: v.shown.iter().map(|c| sar::category_words(c)).collect(),
                released: v.released.iter().map(|c| sar::category_words(c)).collect(),
            })
            .collect(),
    }
}

#[derive(Deserialize)]
struct QueueQuery {
    status: Option<String>,
    reviewed: Option<String>,
}

async fn queue(State(gw): State<Gateway>, who: SignedIn, Query(q): Query<QueueQuery>) -> Response {
    let all = q.status.as_deref() == Some("all");
    match breakglass::queue(&gw, &who.principal, q.status.as_deref()).await {
        Ok(grants) => {
            let grants: Vec<GrantView> = grants.iter().map(|g| view_of(&gw, g)).collect();
            Page::new("ig_break_glass.html", "Break-glass review", &who)
                .with("grants", grants)
                .with("all", all)
                .with("reviewed", q.reviewed)
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

/// One grant: the queue (every grant this officer may review) narrowed to it, so the page shows
/// exactly what the API's queue shows.
async fn find_grant(gw: &Gateway, who: &SignedIn, grant: &str) -> Result<Grant, Error> {
    breakglass::queue(gw, &who.principal, Some("all"))
        .await?
        .into_iter()
        .find(|g| g.id == grant)
        .ok_or(Error::NotFound("no grant of yours to review with that id"))
}

fn grant_page_for(
    gw: &Gateway,
    who: &SignedIn,
    g: &Grant,
    values: &BTreeMap<String, String>,
    errors: Vec<FieldError>,
) -> Page {
    let view = view_of(gw, g);
    Page::new(
        "ig_break_glass_grant.html",
        "Review an emergency access",
        who,
    )
    .with("grant", view)
    .with("values", values)
    .with("errors", errors)
}

async fn grant_page(
    State(gw): State<Gateway>,
    who: SignedIn,
    Path(grant): Path<String>,
) -> Response {
    match find_grant(&gw, &who, &grant).await {
        Ok(g) => grant_page_for(&gw, &who, &g, &BTreeMap::new(), Vec::new()).render(),
        Err(e) => render::error_page(Some(&who), &e),
    }
}

async fn review(
    State(gw): State<Gateway>,
    Path(grant): Path<String>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    let values: BTreeMap<String, String> = posted
        .form
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut body = serde_json::Map::new();
    if let Some(o) = values.get("outcome").filter(|o| !o.is_empty()) {
        body.insert("outcome".into(), json!(o));
    }
    body.insert(
        "notes".into(),
        json!(values.get("notes").map(|n| n.trim()).unwrap_or_default()),
    );
    let body = serde_json::Value::Object(body).to_string();
    match breakglass::review(&gw, &who.principal, &grant, body.as_bytes()).await {
        Ok(g) => {
            Redirect::to(&format!("/ig/break-glass?reviewed={}", segment(&g.id))).into_response()
        }
        Err(Error::Invalid { errors: list, .. }) if !list.is_empty() => {
            let mut errors = Vec::new();
            for e in &list {
                let field = if crate::web::concerns::pointer_of(e).ends_with("/notes") {
                    FieldError::new("notes", "Enter notes of 4,000 characters or fewer")
                } else {
                    FieldError::new("outcome", "Select whether the access was justified")
                };
                if !errors.iter().any(|x: &FieldError| x.field == field.field) {
                    errors.push(field);
                }
            }
            match find_grant(&gw, who, &grant).await {
                Ok(g) => grant_page_for(&gw, who, &g, &values, errors)
                    .status(StatusCode::BAD_REQUEST)
                    .render(),
                Err(e) => render::error_page(Some(who), &e),
            }
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_words_follow_your_reason() {
        assert_eq!(
            request_message(
                "justification",
                Some("must say why, in at least four words")
            ),
            "Your reason must say why, in at least four words"
        );
        assert!(request_message("justification", None).starts_with("Enter why"));
        assert!(request_message("purpose", Some("x")).starts_with("Select"));
    }

    #[test]
    fn ids_are_encoded_in_links() {
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("3f2a-9"), "3f2a-9");
    }
}
