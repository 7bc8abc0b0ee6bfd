//! The practitioner behind a request: the bearer token, verified (stage 1 of the pipeline,
//! [`crate::pipeline::authenticate`]), and the calling system the TLS handshake named.
//! Anything missing, unknown or expired is 401 and nothing else.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::foundation::server::ClientIdentity;
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::{AuthError, Principal};

impl FromRequestParts<Gateway> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
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

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
