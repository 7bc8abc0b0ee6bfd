//! Adding to a concern: the reporter or a recipient writes an addendum (the concern itself never
//! changes), delivered to every other party. A page of its own, posting to the function
//! `POST /v1/concerns/{id}/addenda` calls ([`crate::write::concerns::addendum`]); a form with a
//! mistake comes back with the error beside the field and what was typed kept.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use serde_json::json;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::web::forms::FieldError;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::concerns::{self, ConcernView};

/// The longest addendum (`schemas/concern-addendum.schema.json`).
const TEXT_MAX: usize = 20_000;

pub fn routes() -> Router<Gateway> {
    Router::new().route("/concerns/{id}/addenda", get(form).post(submit))
}

fn page(
    who: &SignedIn,
    concern: &ConcernView,
    values: &BTreeMap<String, String>,
    errors: Vec<FieldError>,
    status: StatusCode,
) -> Response {
    Page::new("addendum.html", "Add to the concern", who)
        .status(status)
        .with("concern", concern)
        .with("values", values)
        .with("errors", errors)
        .render()
}

/// The form. The concern is read (and the read audited) so that a person who may not see it is
/// told so before they type anything.
async fn form(State(gw): State<Gateway>, who: SignedIn, Path(id): Path<String>) -> Response {
    match concerns::show(&gw, &who.principal, &id).await {
        Ok(view) => page(&who, &view, &BTreeMap::new(), Vec::new(), StatusCode::OK),
        Err(e) => render::error_page(Some(&who), &e),
    }
}

/// What is wrong with the text typed, in words for the field.
fn problem(text: &str) -> Option<&'static str> {
    if text.trim().is_empty() {
        Some("Enter what you want to add to the concern")
    } else if text.chars().count() > TEXT_MAX {
        Some("Enter 20,000 characters or fewer")
    } else {
        None
    }
}

async fn submit(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    let text = posted.form.get("text").cloned().unwrap_or_default();
    let values: BTreeMap<String, String> = [("text".to_string(), text.clone())].into();
    if let Some(message) = problem(&text) {
        return again(&gw, who, &id, &values, message).await;
    }
    let raw = json!({"text": text.trim()}).to_string();
    match concerns::addendum(&gw, &who.principal, &id, raw.as_bytes()).await {
        Ok(_) => Redirect::to(&format!("/concerns/{id}")).into_response(),
        Err(Error::Invalid { .. } | Error::Unprocessable { .. }) => {
            let message = "Enter what you want to add, in 20,000 characters or fewer";
            again(&gw, who, &id, &values, message).await
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

/// The form again, with its problem beside the field and the text as typed.
async fn again(
    gw: &Gateway,
    who: &SignedIn,
    id: &str,
    values: &BTreeMap<String, String>,
    message: &str,
) -> Response {
    match concerns::show(gw, &who.principal, id).await {
        Ok(view) => page(
            who,
            &view,
            values,
            vec![FieldError::new("text", message)],
            StatusCode::BAD_REQUEST,
        ),
        Err(e) => render::error_page(Some(who), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_overlong_text_are_problems() {
        assert!(problem("  \n ").is_some());
        assert!(problem(&"a".repeat(TEXT_MAX + 1)).is_some());
        assert!(problem(&"a".repeat(TEXT_MAX)).is_none());
        assert!(problem("Seen again today, same bruise").is_none());
    }
}
