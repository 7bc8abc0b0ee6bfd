//! HTTP routes for identity matching: the review queue and decisions (data administrators),
//! and a child's link history. Every request is authenticated and audited; nothing is
//! returned if the audit entry cannot be written.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::foundation::domain::{Purpose, Role};
use crate::http::error::ApiError;
use crate::http::{entry, record, refuse};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::linkage::{self, Decided, Decision, DecisionError, LinkRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/matches/review", get(review))
        .route("/v1/matches/{id}/decision", post(decide))
        .route("/v1/children/{id}/links", get(links))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewQueue {
    /// Proposed links between the thresholds, oldest first: each names the record, the child
    /// it may belong to, the probability and the per-comparison explanation.
    pub matches: Vec<LinkRow>,
    pub upper: f64,
    pub lower: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkHistory {
    pub child: String,
    /// Every link the child has or had and every proposal naming it, oldest first.
    pub links: Vec<LinkRow>,
}

async fn admin_only(
    state: &AppState,
    p: &Principal,
    action: &str,
    child: Option<&str>,
) -> Result<(), ApiError> {
    if p.role == Role::DataAdmin {
        return Ok(());
    }
    let e = ApiError::Forbidden("identity matches are reviewed by data administrators only");
    Err(refuse(state, p, action, child, None, e).await)
}

/// The review queue of uncertain matches. Data administrators only.
#[utoipa::path(
    get,
    path = "/v1/matches/review",
    responses(
        (status = 200, description = "Open proposals", body = ReviewQueue),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Not a data administrator"),
        (status = 503, description = "Audit log unavailable: no data is returned"),
    ),
    security(("bearer" = []))
)]
pub async fn review(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<ReviewQueue>, ApiError> {
    admin_only(&state, &principal, "match_review", None).await?;
    let matches = linkage::review_queue(&state.index).await?;
    let detail = json!({"returned": matches.len()});
    record(
        &state,
        &principal,
        "match_review",
        None,
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    let m = state.index.matcher();
    Ok(Json(ReviewQueue {
        matches,
        upper: m.upper,
        lower: m.lower,
    }))
}

/// A decision on a proposed match (confirm, reject) or a link (confirm, split). Data
/// administrators only; the matcher never overrides it.
#[utoipa::path(
    post,
    path = "/v1/matches/{id}/decision",
    params(("id" = String, Path, description = "Match id, from the review queue or a link history")),
    request_body(content = Object, description = "See schemas/match-decision.schema.json"),
    responses(
        (status = 200, description = "What the decision did", body = Decided),
        (status = 400, description = "Invalid body; every error with its JSON pointer"),
        (status = 403, description = "Not a data administrator"),
        (status = 404, description = "No match with that id"),
        (status = 409, description = "The decision does not apply to the match as it stands"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn decide(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Decided>, ApiError> {
    const ACTION: &str = "match_decision";
    admin_only(&state, &principal, ACTION, None).await?;
    let (decision, reason) = match parse_decision(&state, &body) {
        Ok(d) => d,
        Err(e) => return Err(refuse(&state, &principal, ACTION, None, None, e).await),
    };
    // The change and its audit entry commit in one transaction: if the entry cannot be
    // written, nothing changes and the caller gets 503.
    let decided = match linkage::decide(
        &state.index,
        &id,
        decision,
        &principal.user,
        reason.as_deref(),
        |d| {
            let detail = json!({
                "match": d.id,
                "decision": d.decision,
                "source": d.source,
                "local_id": d.local_id,
                "previous_child": d.previous_child_id,
                "reason": reason,
            });
            entry(
                &principal,
                ACTION,
                Some(&d.child_id),
                None,
                "changed",
                detail,
            )
        },
    )
    .await
    {
        Ok(d) => d,
        Err(DecisionError::NotFound) => {
            return Err(refuse(
                &state,
                &principal,
                ACTION,
                None,
                None,
                ApiError::NotFound("no match with that id"),
            )
            .await)
        }
        Err(DecisionError::NotApplicable(status)) => {
            let e = ApiError::Conflict(format!("a {status} match cannot take that decision"));
            return Err(refuse(&state, &principal, ACTION, None, None, e).await);
        }
        Err(DecisionError::Audit(e)) => {
            tracing::error!(error = %e, "match decision not applied: audit append failed");
            return Err(ApiError::AuditUnavailable);
        }
        Err(DecisionError::Db(e)) => return Err(e.into()),
    };
    Ok(Json(decided))
}

fn parse_decision(state: &AppState, body: &[u8]) -> Result<(Decision, Option<String>), ApiError> {
    let value =
        crate::http::validated(body, |v| state.schemas.match_decision_errors(v), "decision")?;
    let decision: Decision =
        serde_json::from_value(value.get("decision").cloned().unwrap_or(Value::Null))
            .map_err(|e| ApiError::field("/decision", e.to_string()))?;
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .map(String::from);
    Ok((decision, reason))
}

/// A child's link history: every source record linked to it now or before, how, with what
/// score and why, and every decision a person took. Data administrators and information-
/// governance officers.
#[utoipa::path(
    get,
    path = "/v1/children/{id}/links",
    params(("id" = String, Path, description = "Weft child id")),
    responses(
        (status = 200, description = "Link history", body = LinkHistory),
        (status = 403, description = "Not a data administrator or IG officer"),
        (status = 404, description = "No such child"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn links(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<LinkHistory>, ApiError> {
    const ACTION: &str = "link_history";
    if !matches!(principal.role, Role::DataAdmin | Role::IgOfficer) {
        let e =
            ApiError::Forbidden("link history is open to data administrators and IG officers only");
        return Err(refuse(&state, &principal, ACTION, Some(&id), None, e).await);
    }
    let Some(links) = linkage::link_history(&state.index, &id).await? else {
        let e = ApiError::NotFound("no child with that id");
        return Err(refuse(&state, &principal, ACTION, Some(&id), None, e).await);
    };
    let detail = json!({"returned": links.len()});
    record(
        &state,
        &principal,
        ACTION,
        Some(&id),
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    Ok(Json(LinkHistory { child: id, links }))
}
