//! The two ends of delivery a person sees: `GET /v1/inbox`, and for a data administrator the
//! outbox's state with a retry.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::delivery::outbox::{DeliveryStatus, InboxItem};
use crate::gateway::Gateway;
use crate::http::error::ApiError;
use crate::http::params::Params;
use crate::pipeline::authenticate::Principal;
use crate::write::inbox;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/inbox", get(items))
        .route("/v1/inbox/{id}/read", post(read))
        .route("/v1/outbox", get(outbox))
        .route("/v1/outbox/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InboxParams {
    /// Only items delivered after this `delivered_at` (from the last item of a previous page).
    after: Option<String>,
    /// Most items returned (default 100, at most 1000), oldest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Deliveries to the caller and to their role in their agency: concerns, progress on concerns
/// they sent, alerts, subscribed events.
#[utoipa::path(
    get,
    path = "/v1/inbox",
    params(InboxParams),
    responses(
        (status = 200, description = "Inbox items, oldest first", body = Vec<InboxItem>),
        (status = 400, description = "A query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn items(
    State(gw): State<Gateway>,
    who: Principal,
    Params(q): Params<InboxParams>,
) -> Result<Json<Vec<InboxItem>>, ApiError> {
    Ok(Json(
        inbox::inbox(&gw, &who, q.after.as_deref(), q.limit).await?,
    ))
}

/// Marks an inbox item read, for the caller alone (an item to a role stays unread for the
/// role's other people).
#[utoipa::path(
    post,
    path = "/v1/inbox/{id}/read",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "Marked read"),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "No item with that id in the caller's inbox"),
        (status = 503, description = "Audit log unavailable: nothing changed"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn read(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    inbox::mark_read(&gw, &who, &id).await?;
    Ok(Json(json!({"delivery": id, "read": true})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OutboxParams {
    /// `pending`, `delivered` or `dead`; all when omitted.
    #[param(value_type = Option<OutboxState>)]
    state: Option<String>,
    /// Most deliveries returned (default 100, at most 1000), oldest first.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Where a delivery stands, as `GET /v1/outbox` filters on it.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Describes the query parameter; the value is checked where it is used.
pub(crate) enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

/// Deliveries and where they stand — never what they carry. Data administrators only.
#[utoipa::path(
    get,
    path = "/v1/outbox",
    params(OutboxParams),
    responses(
        (status = 200, description = "Deliveries, oldest first", body = Vec<DeliveryStatus>),
        (status = 400, description = "Unknown state, or a query parameter repeated or not of its type (audited)"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not a data administrator"),
        (status = 503, description = "Audit log unavailable: nothing is returned"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn outbox(
    State(gw): State<Gateway>,
    who: Principal,
    Params(q): Params<OutboxParams>,
) -> Result<Json<Vec<DeliveryStatus>>, ApiError> {
    Ok(Json(
        inbox::outbox(&gw, &who, q.state.as_deref(), q.limit).await?,
    ))
}

/// Puts a dead-lettered delivery back in the queue with fresh attempts.
#[utoipa::path(
    post,
    path = "/v1/outbox/{id}/retry",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "Queued again"),
        (status = 403, description = "Not a data administrator"),
        (status = 404, description = "No dead delivery with that id"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry(
    State(gw): State<Gateway>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    inbox::retry(&gw, &who, &id).await?;
    Ok(Json(json!({"delivery": id, "state": "pending"})))
}
