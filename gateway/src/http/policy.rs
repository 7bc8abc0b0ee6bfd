//! `POST /v1/policy/explain`.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::read::policy::Answer;

pub fn routes() -> Router<Gateway> {
    Router::new().route("/v1/policy/explain", post(explain))
}

/// Explains the decision the gateway would make now for a role, agency, category and purpose.
#[utoipa::path(post, path = "/v1/policy/explain",
    request_body(content = payload::Explain, description = "schemas/explain.schema.json"),
    responses((status = 200, body = Answer), (status = 400)),
    security(("bearer" = [])))]
pub(crate) async fn explain(
    State(gw): State<Gateway>,
    who: Principal,
    body: Bytes,
) -> Result<Json<Answer>, ApiError> {
    Ok(Json(crate::read::policy::explain(&gw, &who, &body).await?))
}
