//! The signed-in browser behind a page: the session cookie, found through
//! [`crate::write::sessions`], and the CSRF check every form passes ([`Posted`]).
//!
//! The cookie is `__Host-` prefixed (so only this origin, over HTTPS, on every path, can set it),
//! `HttpOnly` (no script reads it), `Secure`, and `SameSite=Lax` (sent on the top-level
//! navigation back from the identity provider, never on another site's form post). Every form
//! also carries the session's synchroniser token; a post without it is refused with 403.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::gateway::Gateway;
use crate::web::render;
use crate::write::sessions;

pub use crate::web::signed_in::SignedIn;

/// The session cookie's name.
pub const COOKIE: &str = "__Host-weft-session";

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a cookie of this origin: `__Host-`, HttpOnly, Secure, SameSite=Lax.
/// `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> HeaderValue {
    let text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn find(parts: &Parts, gw: &Gateway) -> Result<Option<SignedIn>, Response> {
    let Some(value) = cookie(parts, COOKIE) else {
        return Ok(None);
    };
    match sessions::session(gw, value).await {
        Ok(Some(mut s)) => {
            s.principal.client = parts
                .extensions
                .get::<crate::foundation::server::ClientIdentity>()
                .and_then(|c| c.0.clone());
            Ok(Some(SignedIn {
                principal: s.principal.clone(),
                name: s.name.clone(),
                csrf: s.csrf.clone(),
                session: s,
            }))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(render::error_page(None, &e)),
    }
}

impl FromRequestParts<Gateway> for SignedIn {
    type Rejection = Response;

    /// Not signed in (or the session has ended): to the sign-in page.
    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, Response> {
        match find(parts, gw).await? {
            Some(s) => Ok(s),
            None => Err(Redirect::to("/sign-in").into_response()),
        }
    }
}

impl OptionalFromRequestParts<Gateway> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Option<Self>, Response> {
        find(parts, gw).await
    }
}

/// A form posted by a signed-in practitioner, with the session's CSRF token in its `csrf`
/// field. Without a session: to the sign-in page; without the right token: 403, nothing done.
pub struct Posted<T> {
    pub who: SignedIn,
    pub form: T,
    /// The fields as posted, in order, for pages that show a form again with what was typed.
    pub fields: Vec<(String, String)>,
}

impl<T: DeserializeOwned + Send> FromRequest<Gateway> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, gw: &Gateway) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let who =
            <SignedIn as FromRequestParts<Gateway>>::from_request_parts(&mut parts, gw).await?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, gw)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&bytes).map_err(|_| bad_form(&who))?;
        let token = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if !sessions::csrf_matches(&who.session, token) {
            tracing::info!("form refused: CSRF token missing or wrong");
            return Err(render::message_page(
                Some(&who),
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this session. Nothing was changed. Go back, reload \
                 the page and try again.",
            ));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|_| bad_form(&who))?;
        Ok(Posted { who, form, fields })
    }
}

fn bad_form(who: &SignedIn) -> Response {
    render::message_page(
        Some(who),
        StatusCode::BAD_REQUEST,
        "The form could not be read",
        "Nothing was changed. Go back and try again.",
    )
}
