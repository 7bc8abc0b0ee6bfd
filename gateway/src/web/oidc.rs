//! Signing in through the agency's OpenID Connect provider: `/auth/login` sends the browser to
//! the provider with a fresh `state`, `nonce` and PKCE challenge; `/auth/callback` takes it back,
//! checks `state` against the browser's cookie and the stored sign-in (each usable once),
//! exchanges the code with the PKCE verifier, verifies the ID token through the provider's JWKS
//! and its nonce ([`crate::pipeline::oidc`]), maps its claims to user, agency and role exactly as
//! a bearer token's are mapped, and starts a session.

use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::request::Parts;
use http::{header, StatusCode};
use serde::Deserialize;

use crate::gateway::Gateway;
use crate::web::render;
use crate::web::session::{self, set_cookie};
use crate::write::sessions;

/// The browser's half of a sign-in under way: the `state` it must come back with.
pub const STATE_COOKIE: &str = "__Host-weft-oidc";

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
}

fn failed(text: &str) -> Response {
    render::message_page(None, StatusCode::UNAUTHORIZED, "Sign-in failed", text)
}

async fn login(State(gw): State<Gateway>) -> Response {
    let Some(provider) = &gw.oidc else {
        return render::message_page(
            None,
            StatusCode::NOT_FOUND,
            "Page not found",
            "Signing in with an organisation account is not set up here.",
        );
    };
    let begun = match provider.begin().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "sign-in could not start");
            return failed(
                "Your organisation's sign-in service could not be reached. Try again later.",
            );
        }
    };
    if let Err(e) = sessions::begin_login(&gw, &begun.state, &begun.nonce, &begun.verifier).await {
        return render::error_page(None, &e);
    }
    let mut response = Redirect::to(&begun.redirect).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            STATE_COOKIE,
            &begun.state,
            u64::try_from(sessions::LOGIN_TTL_SECS).unwrap_or(600),
        ),
    );
    response
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

struct Parts_(Parts);

impl<S: Send + Sync> FromRequestParts<S> for Parts_ {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Parts_(parts.clone()))
    }
}

async fn callback(State(gw): State<Gateway>, parts: Parts_, Query(q): Query<Callback>) -> Response {
    let Some(provider) = &gw.oidc else {
        return failed("Signing in with an organisation account is not set up here.");
    };
    if let Some(error) = &q.error {
        tracing::info!(error = %error, "the identity provider refused the sign-in");
        return failed("Your organisation's sign-in service did not sign you in.");
    }
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return failed("The sign-in did not come back complete. Start again.");
    };
    // The state must be this browser's (its cookie) and a sign-in this gateway began (the row).
    let cookie = session::cookie(&parts.0, STATE_COOKIE).unwrap_or_default();
    let same = cookie.len() == state.len()
        && cookie
            .bytes()
            .zip(state.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        tracing::info!("sign-in refused: state does not match the browser's");
        return failed("The sign-in was started in another browser or has expired. Start again.");
    }
    let (nonce, verifier) = match sessions::take_login(&gw, state).await {
        Ok(Some(found)) => found,
        Ok(None) => return failed("The sign-in has expired or was already used. Start again."),
        Err(e) => return render::error_page(None, &e),
    };
    let identity = match provider.finish(code, &verifier, &nonce).await {
        Ok(i) => i,
        Err(e) => {
            tracing::info!(error = %e, "sign-in refused");
            return failed("Your identity could not be confirmed. Start again.");
        }
    };
    let principal = match gw.verifier.principal_of(
        identity.sub.clone(),
        identity.agency.unwrap_or_default(),
        identity.role.as_deref().unwrap_or_default(),
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(reason = e.reason(), "sign-in refused");
            return failed("Your account does not name an agency and role this service knows. Ask your administrator.");
        }
    };
    let name = identity.name.unwrap_or_else(|| principal.user.clone());
    let mut response = crate::web::start::start(&gw, &principal, &name, "oidc").await;
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(STATE_COOKIE, "", 0));
    response
}
