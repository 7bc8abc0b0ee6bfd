//! The end of every sign-in, by the development page or OpenID Connect: the session made and the
//! browser sent home with its cookie (and without the sign-in form's). A module of its own so
//! that both ways of signing in use it without using each other.

use axum::response::{IntoResponse, Redirect, Response};
use http::header;

use crate::gateway::Gateway;
use crate::web::render;
use crate::web::session::{self, COOKIE};
use crate::write::sessions;

/// The sign-in form's own CSRF cookie.
pub const PRE_COOKIE: &str = "__Host-weft-sign-in";

/// Makes the session and sends the browser home with its cookie (and without the sign-in
/// form's).
pub async fn start(
    gw: &Gateway,
    principal: &crate::pipeline::authenticate::Principal,
    name: &str,
    how: &str,
) -> Response {
    match sessions::sign_in(gw, principal, name, how).await {
        Ok(new) => {
            let mut response = Redirect::to("/").into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                session::set_cookie(COOKIE, &new.cookie, gw.config.web.session_absolute_secs),
            );
            h.append(header::SET_COOKIE, session::set_cookie(PRE_COOKIE, "", 0));
            response
        }
        Err(e) => render::error_page(None, &e),
    }
}
