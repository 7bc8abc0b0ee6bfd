//! The two ends of delivery a person sees: their inbox (`GET /v1/inbox`), and, for a data
//! administrator, the outbox's state — what is pending, what is dead-lettered — with a retry.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::delivery::outbox::{DeliveryStatus, InboxItem};
use crate::foundation::domain::Role;
use crate::http::error::ApiError;
use crate::http::{record, refuse};
use crate::pipeline::authenticate::Principal;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/inbox", get(inbox))
        .route("/v1/outbox", get(outbox))
        .route("/v1/outbox/{id}/retry", post(retry))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct InboxParams {
    /// Only items delivered after this `delivered_at` (from the last item of a previous page).
    after: Option<String>,
    /// Most items returned (default 100, at most 1000), oldest first.
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
        (status = 401, description = "Missing or invalid token"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn inbox(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<InboxParams>,
) -> Result<Json<Vec<InboxItem>>, ApiError> {
    let items = crate::delivery::outbox::inbox(
        &state.store,
        &principal.agency,
        &principal.user,
        principal.role,
        q.after.as_deref(),
        q.limit.unwrap_or(100),
    )
    .await?;
    let mut children: Vec<&str> = items.iter().filter_map(|i| i.child.as_deref()).collect();
    children.sort_unstable();
    children.dedup();
    let child = match children.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    record(
        &state,
        &principal,
        "inbox",
        child,
        None,
        "shown",
        json!({"returned": items.len(), "children": children,
               "deliveries": items.iter().map(|i| &i.delivery_id).collect::<Vec<_>>()}),
    )
    .await?;
    Ok(Json(items))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct OutboxParams {
    /// `pending`, `delivered` or `dead`; all when omitted.
    state: Option<String>,
    limit: Option<u32>,
}

async fn admin_only(state: &AppState, p: &Principal, action: &str) -> Result<(), ApiError> {
    if p.role == Role::DataAdmin {
        Ok(())
    } else {
        let e = ApiError::Forbidden("the outbox is open to data administrators only");
        Err(refuse(state, p, action, None, None, e).await)
    }
}

/// Deliveries and where they stand — never what they carry. Data administrators only.
#[utoipa::path(
    get,
    path = "/v1/outbox",
    params(OutboxParams),
    responses(
        (status = 200, description = "Deliveries, oldest first", body = Vec<DeliveryStatus>),
        (status = 400, description = "Unknown state"),
        (status = 403, description = "Not a data administrator"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn outbox(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<OutboxParams>,
) -> Result<Json<Vec<DeliveryStatus>>, ApiError> {
    admin_only(&state, &principal, "outbox_list").await?;
    if let Some(s) = q.state.as_deref() {
        if !matches!(s, "pending" | "delivered" | "dead") {
            let e = ApiError::field("/state", "one of pending, delivered, dead");
            return Err(refuse(&state, &principal, "outbox_list", None, None, e).await);
        }
    }
    let rows = state
        .outbox
        .list(q.state.as_deref(), q.limit.unwrap_or(100))
        .await?;
    record(
        &state,
        &principal,
        "outbox_list",
        None,
        None,
        "shown",
        json!({"state": q.state, "returned": rows.len()}),
    )
    .await?;
    Ok(Json(rows))
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
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin_only(&state, &principal, "outbox_retry").await?;
    if !state.outbox.retry(&id).await? {
        let e = ApiError::NotFound("no dead delivery with that id");
        return Err(refuse(&state, &principal, "outbox_retry", None, None, e).await);
    }
    record(
        &state,
        &principal,
        "outbox_retry",
        None,
        None,
        "queued",
        json!({"delivery": id}),
    )
    .await?;
    Ok(Json(json!({"delivery": id, "state": "pending"})))
}
