//! Break-glass: an emergency read past a denial or a consent not yet sought, with a written
//! justification and a short expiry. Every grant and every read under it is audited loudly and
//! waits in the IG officer's review queue. Rules marked `unbreakable`, and a family's refusal or
//! withdrawal of consent, are never passed.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::app::AppState;
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::store::Store;
use crate::http::error::ApiError;
use crate::http::{record, refuse};
use crate::pipeline::authenticate::Principal;

/// A grant, with its review once an IG officer has looked at it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub id: String,
    pub user: String,
    pub agency: String,
    pub role: String,
    pub child: String,
    pub purpose: Purpose,
    pub justification: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    /// `justified`, `not_justified` or `referred`.
    pub outcome: String,
    pub notes: String,
    pub reviewed_by: String,
    pub reviewed_at: String,
}

const COLUMNS: &str =
    "id, user_id, agency, role, child_id, purpose, justification, granted_at, expires_at, \
                       review_outcome, review_notes, reviewed_by, reviewed_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Grant, sqlx::Error> {
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let time = |col: &str| -> Result<DateTime<Utc>, sqlx::Error> {
        let t: String = r.try_get(col)?;
        DateTime::parse_from_rfc3339(&t)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| decode(e.to_string()))
    };
    let purpose: String = r.try_get("purpose")?;
    let outcome: Option<String> = r.try_get("review_outcome")?;
    Ok(Grant {
        id: r.try_get("id")?,
        user: r.try_get("user_id")?,
        agency: r.try_get("agency")?,
        role: r.try_get("role")?,
        child: r.try_get("child_id")?,
        purpose: purpose
            .parse()
            .map_err(|e: crate::foundation::domain::UnknownWord| decode(e.to_string()))?,
        justification: r.try_get("justification")?,
        granted_at: time("granted_at")?,
        expires_at: time("expires_at")?,
        review: match outcome {
            None => None,
            Some(outcome) => Some(Review {
                outcome,
                notes: r
                    .try_get::<Option<String>, _>("review_notes")?
                    .unwrap_or_default(),
                reviewed_by: r
                    .try_get::<Option<String>, _>("reviewed_by")?
                    .unwrap_or_default(),
                reviewed_at: r
                    .try_get::<Option<String>, _>("reviewed_at")?
                    .unwrap_or_default(),
            }),
        },
    })
}

/// The practitioner's grant for this child that is still in force, if any.
pub async fn active(store: &Store, user: &str, child: &str) -> Result<Option<Grant>, sqlx::Error> {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM break_glass WHERE user_id = $1 AND child_id = $2 AND expires_at > $3 \
         ORDER BY granted_at DESC LIMIT 1"
    ))
    .bind(user)
    .bind(child)
    .bind(&now)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/children/{id}/break-glass", post(create))
        .route("/v1/ig/break-glass", get(queue))
        .route("/v1/ig/break-glass/{grant}/review", post(review))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    purpose: String,
    justification: String,
}

/// Asks for an emergency grant for a child.
#[utoipa::path(post, path = "/v1/children/{id}/break-glass",
    params(("id" = String, Path, description = "Weft child id")),
    request_body(content = Object, description = "See schemas/break-glass.schema.json"),
    responses((status = 201, body = Grant), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(child): Path<String>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<Grant>), ApiError> {
    let action = "break_glass";
    if matches!(principal.role, Role::IgOfficer | Role::DataAdmin) {
        let e = ApiError::Forbidden("break-glass is for practitioners working with the child");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    }
    let req = match parse(&state, &body) {
        Ok(r) => r,
        Err(e) => return Err(refuse(&state, &principal, action, Some(&child), None, e).await),
    };
    let purpose: Purpose = match req.purpose.parse() {
        Ok(p) => p,
        Err(e) => {
            let e = ApiError::field("/purpose", format!("{e}"));
            return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
        }
    };
    let exists = sqlx::query("SELECT id FROM children WHERE id = $1")
        .bind(&child)
        .fetch_optional(&state.store.pool)
        .await?;
    if exists.is_none() {
        let e = ApiError::NotFound("no child with that id");
        return Err(refuse(&state, &principal, action, Some(&child), Some(purpose), e).await);
    }
    let now = Utc::now();
    let ttl = Duration::seconds(i64::try_from(state.config.break_glass.ttl_secs).unwrap_or(3600));
    let grant = Grant {
        id: uuid::Uuid::new_v4().to_string(),
        user: principal.user.clone(),
        agency: principal.agency.clone(),
        role: principal.role.as_str().into(),
        child: child.clone(),
        purpose,
        justification: req.justification,
        granted_at: now,
        expires_at: now + ttl,
        review: None,
    };
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    sqlx::query(
        "INSERT INTO break_glass (id, user_id, agency, role, child_id, purpose, justification, granted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&grant.id)
    .bind(&grant.user)
    .bind(&grant.agency)
    .bind(&grant.role)
    .bind(&child)
    .bind(purpose.as_str())
    .bind(&grant.justification)
    .bind(ts(grant.granted_at))
    .bind(ts(grant.expires_at))
    .execute(&state.store.pool)
    .await?;
    tracing::warn!(grant = %grant.id, role = %grant.role, "break-glass grant issued");
    let detail = json!({"grant": grant.id, "expires_at": grant.expires_at, "justification": grant.justification});
    if let Err(e) = record(
        &state,
        &principal,
        action,
        Some(&child),
        Some(purpose),
        "granted",
        detail,
    )
    .await
    {
        let _ = sqlx::query("DELETE FROM break_glass WHERE id = $1")
            .bind(&grant.id)
            .execute(&state.store.pool)
            .await;
        return Err(e);
    }
    Ok((http::StatusCode::CREATED, Json(grant)))
}

fn parse(state: &AppState, body: &[u8]) -> Result<Request, ApiError> {
    let value = crate::http::validated(body, |v| state.schemas.break_glass_errors(v), "request")?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct QueueQuery {
    /// `pending` (default) or `all`.
    status: Option<String>,
}

/// The IG officer's review queue of break-glass grants, newest first.
#[utoipa::path(get, path = "/v1/ig/break-glass", params(QueueQuery),
    responses((status = 200, body = Vec<Grant>), (status = 403)),
    security(("bearer" = [])))]
pub async fn queue(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<QueueQuery>,
) -> Result<Json<Vec<Grant>>, ApiError> {
    let action = "break_glass_queue";
    if principal.role != Role::IgOfficer {
        let e = ApiError::Forbidden("the break-glass queue is for IG officers");
        return Err(refuse(&state, &principal, action, None, None, e).await);
    }
    let filter = match q.status.as_deref() {
        None | Some("pending") => "WHERE review_outcome IS NULL",
        Some("all") => "",
        Some(_) => {
            let e = ApiError::field("/status", "pending or all");
            return Err(refuse(&state, &principal, action, None, None, e).await);
        }
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM break_glass {filter} ORDER BY granted_at DESC LIMIT 500"
    ))
    .fetch_all(&state.store.pool)
    .await?;
    let grants = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    record(
        &state,
        &principal,
        action,
        None,
        Some(Purpose::Audit),
        "shown",
        json!({"returned": grants.len()}),
    )
    .await?;
    Ok(Json(grants))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    outcome: String,
    #[serde(default)]
    notes: String,
}

/// Records the IG officer's review of a grant.
#[utoipa::path(post, path = "/v1/ig/break-glass/{grant}/review",
    params(("grant" = String, Path)),
    request_body(content = Object, description = "{\"outcome\": \"justified|not_justified|referred\", \"notes\": \"…\"}"),
    responses((status = 200, body = Grant), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn review(
    State(state): State<AppState>,
    principal: Principal,
    Path(grant_id): Path<String>,
    body: Bytes,
) -> Result<Json<Grant>, ApiError> {
    let action = "break_glass_review";
    if principal.role != Role::IgOfficer {
        let e = ApiError::Forbidden("break-glass grants are reviewed by IG officers");
        return Err(refuse(&state, &principal, action, None, None, e).await);
    }
    let req = match serde_json::from_slice::<ReviewRequest>(&body) {
        Ok(r)
            if matches!(
                r.outcome.as_str(),
                "justified" | "not_justified" | "referred"
            ) =>
        {
            r
        }
        _ => {
            let e = ApiError::field("/outcome", "justified, not_justified or referred");
            return Err(refuse(&state, &principal, action, None, None, e).await);
        }
    };
    let now = Utc::now().to_rfc3339();
    let updated = sqlx::query(
        "UPDATE break_glass SET review_outcome = $1, review_notes = $2, reviewed_by = $3, reviewed_at = $4 \
         WHERE id = $5 AND review_outcome IS NULL",
    )
    .bind(&req.outcome)
    .bind(&req.notes)
    .bind(&principal.user)
    .bind(&now)
    .bind(&grant_id)
    .execute(&state.store.pool)
    .await?;
    if updated.rows_affected() == 0 {
        let e = ApiError::NotFound("no grant awaiting review with that id");
        return Err(refuse(&state, &principal, action, None, None, e).await);
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = $1"))
        .bind(&grant_id)
        .fetch_one(&state.store.pool)
        .await?;
    let grant = from_row(&row)?;
    let detail = json!({"grant": grant_id, "outcome": req.outcome});
    if let Err(e) = record(
        &state,
        &principal,
        action,
        Some(&grant.child),
        Some(Purpose::Audit),
        "recorded",
        detail,
    )
    .await
    {
        let _ = sqlx::query(
            "UPDATE break_glass SET review_outcome = NULL, review_notes = NULL, reviewed_by = NULL, reviewed_at = NULL WHERE id = $1",
        )
        .bind(&grant_id)
        .execute(&state.store.pool)
        .await;
        return Err(e);
    }
    Ok(Json(grant))
}
