//! The practitioner behind a request: the bearer token, verified (stage 1 of the pipeline,
//! [`crate::pipeline::authenticate`]), and the calling system the TLS handshake named.
//! Anything missing, unknown or expired is 401 and nothing else.
//!
//! On the browsers' listener (`web.listen`, no client certificates) the practitioner is the
//! signed-in person of the session cookie instead, and a bearer token is refused: an agency
//! system must still pass mutual TLS on the main listener. A request there that changes
//! anything must carry the session's CSRF token in `X-CSRF-Token`.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::foundation::error::Error;
use crate::foundation::server::{BrowserListener, ClientIdentity};
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::{AuthError, Principal};

impl FromRequestParts<Gateway> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        if parts.extensions.get::<BrowserListener>().is_some() {
            return signed_in(parts, gw).await;
        }
        let token = bearer(parts);
        let mut result = token
            .ok_or(AuthError::Missing)
            .and_then(|t| gw.verifier.verify(t));
        // A key not yet seen may be the identity provider's new one: fetch its JWKS again
        // (at most every few seconds) and try once more.
        if let (Err(AuthError::UnknownKey), Some(jwks), Some(t)) =
            (&result, &gw.verifier.jwks, token)
        {
            if let Err(e) = jwks.refresh().await {
                tracing::warn!(error = %e, "JWKS refresh failed");
            }
            result = gw.verifier.verify(t);
        }
        match result {
            Ok(mut p) => {
                p.client = parts
                    .extensions
                    .get::<ClientIdentity>()
                    .and_then(|c| c.0.clone());
                Ok(p)
            }
            Err(e) => {
                crate::foundation::metrics::AUTH_FAILURES
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::info!(reason = e.reason(), "credentials rejected");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The person of the session cookie, on the browsers' listener.
async fn signed_in(parts: &Parts, gw: &Gateway) -> Result<Principal, ApiError> {
    let refused = |reason: &'static str| {
        crate::foundation::metrics::AUTH_FAILURES
            .with_label_values(&[reason])
            .inc();
        tracing::info!(reason, "credentials rejected on the browsers' listener");
        ApiError::Unauthorized
    };
    if parts.headers.contains_key(http::header::AUTHORIZATION) {
        return Err(refused("bearer_on_browser_listener"));
    }
    let Some(cookie) = crate::web::session::cookie(parts, crate::web::session::COOKIE) else {
        return Err(refused("no_session"));
    };
    let Some(session) = crate::write::sessions::session(gw, cookie).await? else {
        return Err(refused("no_session"));
    };
    if !parts.method.is_safe() {
        let given = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !crate::write::sessions::csrf_matches(&session, given) {
            tracing::info!("API request refused: CSRF token missing or wrong");
            return Err(ApiError::from(Error::Forbidden(
                "a signed-in browser's request that changes anything must carry X-CSRF-Token",
            )));
        }
    }
    Ok(session.principal)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
