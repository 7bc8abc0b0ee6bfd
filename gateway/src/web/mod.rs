//! The web pages practitioners use: server-rendered HTML on the GOV.UK Design System, served by
//! the gateway on the same origin as the API. A page is as thin as a JSON handler in
//! [`crate::http`]: it parses a form, calls the same function of [`crate::read`] or
//! [`crate::write`] (policy, audit and failing closed included), and renders the answer or the
//! [`crate::foundation::error::Error`] — so a page never shows more than the API would show the
//! same person for the same purpose.
//!
//! - [`assets`]: the vendored `govuk-frontend` and `@ministryofjustice/frontend` files, and ours.
//! - [`session`]: signed-in browsers (cookie, idle and absolute timeouts, CSRF tokens).
//! - [`signin`]: the development sign-in page, OpenID Connect ([`oidc`]), signing out.
//! - [`audit`], [`breakglass`], [`sar`]: the IG officer's audit explorer, break-glass (taken
//!   from a child's page, reviewed by the IG officer) and subject access.
//! - [`review`], [`health`], [`deliveries`]: the data administrator's match review queue,
//!   sources' health, and the outbox's dead letters; [`addenda`]: adding to a concern.
//! - [`forms`], [`signed_in`], [`start`]: what several pages share (form errors and dates, the
//!   signed-in person, the end of a sign-in), each in a module of its own so pages never
//!   import each other.
//! - [`children`], [`concerns`], [`inbox`], [`area`], [`quality`] (data quality, for data
//!   administrators and data managers): the pages.
//! - [`render`]: the templates (minijinja, autoescaped) and the error pages.
//!
//! Every page works without JavaScript; the design system's scripts only enhance.

pub mod addenda;
pub mod area;
pub mod assets;
pub mod audit;
pub mod breakglass;
pub mod children;
pub mod concerns;
pub mod deliveries;
pub mod forms;
pub mod health;
pub mod inbox;
pub mod oidc;
pub mod quality;
pub mod render;
pub mod review;
pub mod sar;
pub mod session;
pub mod signed_in;
pub mod signin;
pub mod start;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::header::{self, HeaderValue};

use crate::gateway::Gateway;
use render::Page;
use session::SignedIn;

/// The Content-Security-Policy of every page: nothing inline, nothing from another origin, no
/// framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self'; font-src 'self'; connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                       object-src 'none'";

/// The pages and the files they load.
pub fn routes() -> Router<Gateway> {
    let pages = Router::new()
        .route("/", get(home))
        .merge(signin::routes())
        .merge(children::routes())
        .merge(concerns::routes())
        .merge(inbox::routes())
        .merge(audit::routes())
        .merge(breakglass::routes())
        .merge(sar::routes())
        .merge(review::routes())
        .merge(health::routes())
        .merge(deliveries::routes())
        .merge(addenda::routes())
        .merge(area::routes())
        .merge(quality::routes())
        .layer(middleware::from_fn(page_headers));
    pages.merge(assets::routes())
}

/// Pages carry children's data: never cached, never framed, never sniffed, never sent as a
/// referrer.
async fn page_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The start page: what this person can do.
async fn home(who: Option<SignedIn>, gw: axum::extract::State<Gateway>) -> Response {
    let Some(who) = who else {
        return Redirect::to("/sign-in").into_response();
    };
    let unread = crate::write::inbox::unread(&gw, &who.principal)
        .await
        .unwrap_or(0);
    Page::new("home.html", "Weft", &who)
        .with("unread", unread)
        .render()
}
