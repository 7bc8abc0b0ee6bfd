//! Signing in and out. In production people sign in through their agency's OpenID Connect
//! provider ([`super::oidc`]); with `web.dev_sign_in` (refused off loopback) the sign-in page
//! also lists `web.dev_people`, one button each, for the demo and the tests. Either way the
//! session is made by [`crate::write::sessions::sign_in`] from a [`Principal`] built where every
//! token's is ([`crate::pipeline::authenticate::Verifier::principal_of`]).
//!
//! The sign-in form has no session to bind a CSRF token to, so it carries the value of a
//! short-lived cookie of its own instead (double submit): another site cannot read the cookie to
//! forge the form, and so cannot sign a browser in as someone else.

use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::request::Parts;
use http::{header, StatusCode};
use serde::{Deserialize, Serialize};

use crate::gateway::Gateway;
use crate::web::render::{self, role_label, Page};
use crate::web::session::{self, Posted, SignedIn, COOKIE};
pub use crate::web::start::start;
use crate::write::sessions;

// Where the OpenID Connect callback and the tests found it before it had a module of its own.
pub use crate::web::start::PRE_COOKIE;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/sign-in", get(page))
        .route("/sign-in/dev", post(dev))
        .route("/sign-out", post(sign_out))
        .route("/signed-out", get(signed_out))
        .merge(super::oidc::routes())
}

#[derive(Serialize)]
struct Person<'a> {
    name: &'a str,
    role_label: &'static str,
    agency_name: &'a str,
    description: Option<&'a str>,
}

/// A request's parts, for the pre-session cookie.
struct Cookies(Parts);

impl<S: Send + Sync> FromRequestParts<S> for Cookies {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Cookies(parts.clone()))
    }
}

async fn page(State(gw): State<Gateway>, who: Option<SignedIn>) -> Response {
    if who.is_some() {
        return Redirect::to("/").into_response();
    }
    let web = &gw.config.web;
    let people: Vec<Person> = if web.dev_sign_in {
        web.dev_people
            .iter()
            .map(|p| Person {
                name: &p.name,
                role_label: p.role.parse().map(role_label).unwrap_or("Unknown role"),
                agency_name: gw
                    .config
                    .agency(&p.agency)
                    .map(|a| a.name.as_str())
                    .unwrap_or(&p.agency),
                description: p.description.as_deref(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let pre = sessions::random_token();
    let mut response = Page::anonymous("sign_in.html", "Sign in")
        .with("people", people)
        .with("oidc", web.oidc.is_some())
        .with("pre_csrf", &pre)
        .render();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(PRE_COOKIE, &pre, 600),
    );
    response
}

#[derive(Deserialize)]
struct DevForm {
    csrf: String,
    person: usize,
}

async fn dev(State(gw): State<Gateway>, cookies: Cookies, Form(form): Form<DevForm>) -> Response {
    let web = &gw.config.web;
    let pre = session::cookie(&cookies.0, PRE_COOKIE).unwrap_or_default();
    let same = !pre.is_empty()
        && pre.len() == form.csrf.len()
        && pre
            .bytes()
            .zip(form.csrf.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return render::message_page(
            None,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Go back to the sign-in page, reload it and try again.",
        );
    }
    let person = web
        .dev_sign_in
        .then(|| web.dev_people.get(form.person))
        .flatten();
    let Some(person) = person else {
        return render::message_page(
            None,
            StatusCode::NOT_FOUND,
            "Page not found",
            "Development sign-in is not offered here.",
        );
    };
    let principal =
        match gw
            .verifier
            .principal_of(person.user.clone(), person.agency.clone(), &person.role)
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(reason = e.reason(), "development person refused");
                return render::message_page(
                    None,
                    StatusCode::FORBIDDEN,
                    "You cannot sign in",
                    "This person's agency or role is not one this gateway knows.",
                );
            }
        };
    start(&gw, &principal, &person.name, "dev").await
}

#[derive(Deserialize)]
struct Empty {}

async fn sign_out(State(gw): State<Gateway>, posted: Posted<Empty>) -> Response {
    if let Err(e) = sessions::sign_out(&gw, &posted.who.session).await {
        return render::error_page(Some(&posted.who), &e);
    }
    let mut response = Redirect::to("/signed-out").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, session::set_cookie(COOKIE, "", 0));
    response
}

async fn signed_out() -> Response {
    Page::anonymous("signed_out.html", "You have signed out").render()
}
