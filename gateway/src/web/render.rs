//! The templates, and the pages for errors. One template per page, one layout, one file of
//! macros for the design system's components; minijinja escapes every value in HTML, so nothing
//! a partner system or a practitioner typed can become markup. The templates are compiled into
//! the binary.

use std::sync::OnceLock;

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;

use crate::foundation::domain::Role;
use crate::foundation::error::Error;
use crate::web::signed_in::SignedIn;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates!(
    "layout.html",
    "macros.html",
    "home.html",
    "message.html",
    "sign_in.html",
    "signed_out.html",
    "find.html",
    "child.html",
    "concern_new.html",
    "concern.html",
    "concerns_mine.html",
    "inbox.html",
    "ig_audit.html",
    "ig_break_glass.html",
    "ig_break_glass_grant.html",
    "ig_access_report_ask.html",
    "ig_access_report.html",
    "break_glass.html",
    "child_break_glass.html",
    "no_relationship.html",
    "review.html",
    "sources.html",
    "deliveries.html",
    "addendum.html",
    "links.html",
    "area.html",
    "quality.html",
);

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // A template that does not parse is a build fault, caught by the unit test.
                tracing::error!(template = name, error = %e, "template does not parse");
            }
        }
        env
    })
}

/// How pages name a role.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::SocialWorker => "Social worker",
        Role::Dsl => "Designated safeguarding lead",
        Role::Teacher => "Teacher",
        Role::EducationWelfareOfficer => "Education welfare officer",
        Role::HealthPractitioner => "Health practitioner",
        Role::PoliceOfficer => "Police officer",
        Role::MashOfficer => "MASH officer",
        Role::IgOfficer => "Information governance officer",
        Role::DataAdmin => "Data administrator",
        Role::LaAnalyst => "Local authority analyst",
        Role::DataManager => "Data manager",
    }
}

#[derive(Serialize)]
struct Who<'a> {
    name: &'a str,
    role: &'static str,
    agency: &'a str,
    csrf: &'a str,
}

/// A page to render: a template, its title, who is signed in, and what the template shows.
pub struct Page {
    template: &'static str,
    status: StatusCode,
    title: String,
    who: Option<Value>,
    values: Vec<(&'static str, Value)>,
}

impl Page {
    pub fn new(template: &'static str, title: impl Into<String>, who: &SignedIn) -> Page {
        Self::anonymous(template, title).signed_in(Some(who))
    }

    /// A page for someone not signed in (the sign-in page, errors before sign-in).
    pub fn anonymous(template: &'static str, title: impl Into<String>) -> Page {
        Page {
            template,
            status: StatusCode::OK,
            title: title.into(),
            who: None,
            values: Vec::new(),
        }
    }

    fn signed_in(mut self, who: Option<&SignedIn>) -> Page {
        self.who = who.map(|w| {
            Value::from_serialize(Who {
                name: &w.name,
                role: role_label(w.principal.role),
                agency: &w.principal.agency,
                csrf: &w.csrf,
            })
        });
        self
    }

    pub fn with(mut self, key: &'static str, value: impl Serialize) -> Page {
        self.values.push((key, Value::from_serialize(value)));
        self
    }

    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    pub fn render(self) -> Response {
        let mut ctx: Vec<(&str, Value)> = self.values;
        ctx.push(("title", Value::from(self.title)));
        ctx.push(("who", self.who.unwrap_or(Value::UNDEFINED)));
        let ctx: Value = ctx.into_iter().collect();
        let html = env()
            .get_template(self.template)
            .and_then(|t| t.render(context! { ..ctx }));
        match html {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template = self.template, error = %e, "page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Html("<!DOCTYPE html><title>Sorry, there is a problem with the service</title><h1>Sorry, there is a problem with the service</h1>"),
                )
                    .into_response()
            }
        }
    }
}

/// A page with a heading and one paragraph.
pub fn message_page(
    who: Option<&SignedIn>,
    status: StatusCode,
    heading: &str,
    text: &str,
) -> Response {
    Page::anonymous("message.html", heading)
        .signed_in(who)
        .status(status)
        .with("heading", heading)
        .with("text", text)
        .render()
}

/// The page for an [`Error`] that is not about a form's fields: in words, never with anything
/// the request held.
pub fn error_page(who: Option<&SignedIn>, e: &Error) -> Response {
    let (status, heading, text) = match e {
        Error::Invalid { .. } => (
            StatusCode::BAD_REQUEST,
            "There is a problem",
            "The request could not be understood. Go back and try again.",
        ),
        Error::Unprocessable { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is a problem",
            "Something you entered could not be used. Go back, check it and try again.",
        ),
        Error::Forbidden(why) => (StatusCode::FORBIDDEN, "You cannot do this", *why),
        Error::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is nothing here, or nothing you may see. Check the address, or start again from the home page.",
        ),
        Error::Conflict(_) => (
            StatusCode::CONFLICT,
            "This has already changed",
            "Someone else changed this first. Reload the page to see where it stands now.",
        ),
        Error::AuditUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sorry, the service cannot record what you do",
            "Every look and every change is recorded before anything is shown or changed. The record cannot be written at the moment, so nothing was shown and nothing was changed. Try again later.",
        ),
        Error::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sorry, the service is unavailable",
            "Try again in a few minutes.",
        ),
        Error::Internal(cause) => {
            tracing::error!(error = %cause, "page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sorry, there is a problem with the service",
                "Try again later. Nothing you sent has been lost if you were told it was saved.",
            )
        }
    };
    message_page(who, status, heading, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        for (name, _) in TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn values_are_escaped() {
        let page = Page::anonymous("message.html", "<b>x</b>")
            .with("heading", "<script>alert(1)</script>")
            .with("text", "a & b")
            .render();
        assert_eq!(page.status(), StatusCode::OK);
        let body =
            futures::executor::block_on(axum::body::to_bytes(page.into_body(), 1 << 20)).unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("a &amp; b"));
    }
}
