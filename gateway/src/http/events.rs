//! `POST /v1/events` (what partner systems push) and `POST /v1/subscriptions`.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;

use crate::gateway::Gateway;
use crate::http::contract::payload;
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::write::events::{self, EventAccepted, Subscription};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/subscriptions", post(subscribe))
}

/// Accept an event from a partner system; run the alert rules; deliver to subscribers.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body(content = payload::Event, description = "schemas/event.schema.json"),
    responses(
        (status = 202, description = "Stored; alerts raised and deliveries queued", body = EventAccepted),
        (status = 200, description = "A resend of an event already received", body = EventAccepted),
        (status = 400, description = "Invalid body; every error with its JSON pointer; nothing stored"),
        (status = 403, description = "This agency kind does not report this kind of event"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ingest(
    State(gw): State<Gateway>,
    who: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<EventAccepted>), ApiError> {
    let accepted = events::ingest(&gw, &who, &body).await?;
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(accepted)))
}

/// Subscribe to events and alerts on a child or a cohort, by inbox or a webhook of your agency.
/// Each kind must be something policy lets your role see for safeguarding, child in need or
/// education welfare.
#[utoipa::path(
    post,
    path = "/v1/subscriptions",
    request_body(content = payload::Subscription, description = "schemas/subscription.schema.json"),
    responses(
        (status = 201, description = "Subscribed", body = Subscription),
        (status = 400, description = "Invalid body, unknown child or webhook; with JSON pointers"),
        (status = 403, description = "Policy does not let this role see a kind asked for, or no relationship with a child named"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn subscribe(
    State(gw): State<Gateway>,
    who: Principal,
    body: Bytes,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    let s = events::subscribe(&gw, &who, &body).await?;
    Ok((StatusCode::CREATED, Json(s)))
}
