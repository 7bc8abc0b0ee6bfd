//! Concerns: the form to raise one, the reporter's list, a concern's page with its history and,
//! for a recipient, the buttons to move it on. Each posts to the function the JSON API calls
//! ([`crate::write::concerns`]), with the body the API would get; a form with mistakes comes back
//! with every problem beside its field and nothing typed lost.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::web::forms::{form_date, BadDate, FieldError};
use crate::web::render::{self, role_label, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::concerns;

// Where other pages found it before it had a module of its own.
pub use crate::web::forms::pointer_of;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/concerns", get(mine))
        .route("/concerns/new", get(form).post(submit))
        .route("/concerns/{id}", get(show))
        .route("/concerns/{id}/status", post(progress))
}

#[derive(Deserialize)]
struct NewQuery {
    child: Option<String>,
}

async fn form(who: SignedIn, Query(q): Query<NewQuery>) -> Response {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = q.child {
        values.insert("weft_id".into(), c);
    }
    values.insert("reporter_name".into(), who.name.clone());
    values.insert(
        "reporter_role".into(),
        role_label(who.principal.role).into(),
    );
    values.insert("urgency".into(), "routine".into());
    page(&who, &values, Vec::new(), StatusCode::OK)
}

fn page(
    who: &SignedIn,
    values: &BTreeMap<String, String>,
    errors: Vec<FieldError>,
    status: StatusCode,
) -> Response {
    Page::new("concern_new.html", "Raise a concern", who)
        .status(status)
        .with("values", values)
        .with("errors", errors)
        .render()
}

/// Where on the form a JSON pointer of the concern body lands, and what to say.
fn concern_field(pointer: &str) -> (&'static str, &'static str) {
    match pointer {
        p if p.starts_with("/child/nhs_number") => (
            "nhs_number",
            "Enter a real NHS number: 10 digits, like 485 777 3456",
        ),
        p if p.starts_with("/child/birth_date") => ("dob", "Enter a real date of birth"),
        p if p.starts_with("/child") => (
            "nhs_number",
            "Say which child: an NHS number, or their first and last name",
        ),
        p if p.starts_with("/category") => ("category", "Select what the concern is about"),
        p if p.starts_with("/urgency") => ("urgency", "Select how urgent it is"),
        p if p.starts_with("/observed/what") => (
            "what",
            "Describe what you saw or heard, in 20,000 characters or fewer",
        ),
        p if p.starts_with("/observed/when") => (
            "when",
            "Enter when it happened, like 27 3 2026 and a time like 14:30; not in the future",
        ),
        p if p.starts_with("/observed/how") => ("how", "Select how you know"),
        p if p.starts_with("/observed/where") => {
            ("where", "Enter where in 500 characters or fewer")
        }
        p if p.starts_with("/reporter/name") => ("reporter_name", "Enter your name"),
        p if p.starts_with("/reporter/role") => ("reporter_role", "Enter your role"),
        p if p.starts_with("/reporter") => (
            "reporter_phone",
            "Enter a phone number of 40 characters or fewer",
        ),
        _ => ("what", "Check the concern and try again"),
    }
}

async fn submit(State(gw): State<Gateway>, posted: Posted<BTreeMap<String, String>>) -> Response {
    let who = &posted.who;
    let values: BTreeMap<String, String> = posted
        .form
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let text = |k: &str| {
        values
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let mut errors = Vec::new();
    let mut child = Map::new();
    for (field, key) in [
        ("weft_id", "weft_id"),
        ("nhs_number", "nhs_number"),
        ("given_name", "given_name"),
        ("family_name", "family_name"),
    ] {
        if let Some(v) = text(field) {
            child.insert(key.into(), json!(v));
        }
    }
    match form_date(&values, "dob") {
        Ok(Some(d)) => {
            child.insert("birth_date".into(), json!(d));
        }
        Ok(None) => {}
        Err(BadDate) => errors.push(FieldError::new("dob", "Enter a real date of birth")),
    }
    let when = match form_date(&values, "when") {
        Ok(Some(d)) => {
            let time = text("when-time").unwrap_or_else(|| "00:00".into());
            match chrono::NaiveTime::parse_from_str(&time, "%H:%M") {
                Ok(t) => Some(format!("{d}T{}:00Z", t.format("%H:%M"))),
                Err(_) => {
                    errors.push(FieldError::new("when", concern_field("/observed/when").1));
                    None
                }
            }
        }
        Ok(None) | Err(BadDate) => {
            errors.push(FieldError::new("when", concern_field("/observed/when").1));
            None
        }
    };
    let mut observed = Map::new();
    if let Some(v) = text("what") {
        observed.insert("what".into(), json!(v));
    }
    if let Some(w) = when {
        observed.insert("when".into(), json!(w));
    }
    if let Some(v) = text("how") {
        observed.insert("how".into(), json!(v));
    }
    if let Some(v) = text("where") {
        observed.insert("where".into(), json!(v));
    }
    let mut reporter = Map::new();
    for (field, key) in [
        ("reporter_name", "name"),
        ("reporter_role", "role"),
        ("reporter_phone", "phone"),
    ] {
        if let Some(v) = text(field) {
            reporter.insert(key.into(), json!(v));
        }
    }
    let mut body = Map::new();
    body.insert("child".into(), Value::Object(child));
    for k in ["category", "urgency"] {
        if let Some(v) = text(k) {
            body.insert(k.into(), json!(v));
        }
    }
    body.insert("observed".into(), Value::Object(observed));
    body.insert("reporter".into(), Value::Object(reporter));
    let body = Value::Object(body);
    let add = |errors: &mut Vec<FieldError>, pointers: Vec<String>| {
        for pointer in pointers {
            let (field, message) = concern_field(&pointer);
            if !errors.iter().any(|x| x.field == field) {
                errors.push(FieldError::new(field, message));
            }
        }
    };
    if !errors.is_empty() {
        // Nothing is submitted; the schema's problems are shown with the form's own, so the
        // form comes back once with all of them.
        let found = gw.schemas.concern_errors(&body);
        add(&mut errors, found.iter().map(pointer_of).collect());
        return page(who, &values, errors, StatusCode::BAD_REQUEST);
    }
    let raw = body.to_string();
    match concerns::submit(&gw, &who.principal, None, raw.as_bytes()).await {
        Ok(submitted) => {
            Redirect::to(&format!("/concerns/{}?raised=1", submitted.concern.id)).into_response()
        }
        Err(Error::Invalid { errors: list, .. } | Error::Unprocessable { errors: list, .. }) => {
            add(&mut errors, list.iter().map(pointer_of).collect());
            if errors.is_empty() {
                errors.push(FieldError::new("what", concern_field("").1));
            }
            page(who, &values, errors, StatusCode::BAD_REQUEST)
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

async fn mine(State(gw): State<Gateway>, who: SignedIn) -> Response {
    match concerns::mine(&gw, &who.principal, None).await {
        Ok(list) => Page::new("concerns_mine.html", "My concerns", &who)
            .with("concerns", list)
            .render(),
        Err(e) => render::error_page(Some(&who), &e),
    }
}

#[derive(Deserialize)]
struct ShowQuery {
    raised: Option<String>,
}

#[derive(Serialize)]
struct Step {
    value: &'static str,
    label: &'static str,
}

async fn show(
    State(gw): State<Gateway>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Response {
    match concerns::show(&gw, &who.principal, &id).await {
        Ok(view) => {
            let p = &who.principal;
            let mine: Vec<&concerns::RecipientView> = view
                .recipients
                .iter()
                .filter(|r| {
                    r.agency == p.agency
                        && (r.user.as_deref() == Some(p.user.as_str())
                            || r.role.as_deref() == Some(p.role.as_str()))
                })
                .collect();
            let state = mine.iter().map(|r| r.state.as_str()).max_by_key(|s| {
                ["sent", "received", "acknowledged", "in_progress", "closed"]
                    .iter()
                    .position(|x| x == s)
            });
            let next: Vec<Step> = match state {
                Some("sent" | "received") => vec![
                    Step {
                        value: "acknowledged",
                        label: "Acknowledge",
                    },
                    Step {
                        value: "in_progress",
                        label: "Mark as in progress",
                    },
                ],
                Some("acknowledged") => vec![Step {
                    value: "in_progress",
                    label: "Mark as in progress",
                }],
                _ => Vec::new(),
            };
            Page::new("concern.html", "Concern", &who)
                .with("concern", &view)
                .with("raised", q.raised.is_some())
                .with("next", next)
                .with("can_close", matches!(state, Some(s) if s != "closed"))
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

async fn progress(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    let mut body = Map::new();
    for k in ["state", "outcome", "note"] {
        if let Some(v) = posted
            .form
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        {
            body.insert(k.into(), json!(v));
        }
    }
    let raw = Value::Object(body).to_string();
    match concerns::progress(&gw, &who.principal, &id, raw.as_bytes()).await {
        Ok(_) => Redirect::to(&format!("/concerns/{id}")).into_response(),
        Err(Error::Invalid { .. } | Error::Unprocessable { .. }) => render::message_page(
            Some(who),
            StatusCode::BAD_REQUEST,
            "There is a problem",
            "To close a concern, select its outcome. Go back and try again.",
        ),
        Err(e) => render::error_page(Some(who), &e),
    }
}
