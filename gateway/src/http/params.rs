//! Query parameters that could not be read (a repeated `purpose`, `limit=-5`): the refusal is
//! answered in JSON like every other, and — once the caller is authenticated — recorded in the
//! audit log under the route it was sent to, so no authenticated request goes unrecorded.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, MatchedPath, Query};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;

/// `Query<T>`, refusing through the read path instead of with axum's plain-text rejection.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Gateway> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, gw).await {
            Ok(Query(t)) => Ok(Params(t)),
            Err(rejection) => {
                // Unauthenticated callers get 401 and no entry, as for any other request.
                let who = Principal::from_request_parts(parts, gw).await?;
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_else(|| "unmatched".into());
                let action = format!("{} {route}", parts.method);
                let e = Error::invalid(reason(&rejection));
                Err(crate::read::refused(gw, &who, &action, e).await.into())
            }
        }
    }
}

/// What was wrong, naming the parameter but not repeating a value.
fn reason(r: &QueryRejection) -> String {
    let text = r.body_text();
    if text.contains("duplicate field") {
        // serde names the field: "duplicate field `purpose`".
        let field = text
            .split('`')
            .nth(1)
            .map(|f| format!(" `{f}`"))
            .unwrap_or_default();
        format!("query parameter{field} given more than once")
    } else {
        "query parameters could not be read: a value is not of the expected type".to_string()
    }
}
