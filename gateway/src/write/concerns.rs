//! Concerns: the write path from a practitioner to the agencies that must act. A concern is
//! validated against `schemas/concern.schema.json`, matched to a child through the master child
//! index (an unmatched concern goes to triage, never back to the reporter), routed by
//! `policies/routing.toml`, and stored together with its deliveries in one transaction, so it is
//! delivered exactly when it exists.
//!
//! A concern is never changed after submission. What happens next — delivered (`received`),
//! `acknowledged`, `in_progress`, `closed` with an outcome — is kept per recipient and appended to
//! the concern's history with addenda, and each step a recipient takes is delivered to the
//! reporter's inbox.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::app::AppState;
use crate::delivery::outbox::{ts, Address, NewDelivery};
use crate::delivery::routing::{self, Category, ChildFacts, Urgency};
use crate::foundation::domain::{Purpose, Role};
use crate::http::error::ApiError;
use crate::http::{record, refuse, validated};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::Search;
use weft_ids::{NhsNumber, Upn};

/// The header that makes a retried submission return the original concern.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/concerns", post(submit))
        .route("/v1/concerns/{id}", get(show))
        .route("/v1/concerns/{id}/status", post(progress))
        .route("/v1/concerns/{id}/addenda", post(addendum))
}

/// A concern as its reporter and recipients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConcernView {
    pub id: String,
    pub submitted_at: String,
    pub submitted_by: String,
    pub agency: String,
    /// The Weft child id, when the concern matched exactly one child.
    pub child: Option<String>,
    /// `weft_id`, `nhs_number`, `upn`, `local_id`, `demographics`, `unmatched` or `ambiguous`.
    pub matched_on: String,
    /// The child's social care status when the concern was routed.
    pub child_status: String,
    pub category: String,
    pub urgency: String,
    /// The concern exactly as submitted.
    #[schema(value_type = Object)]
    pub concern: Value,
    pub recipients: Vec<RecipientView>,
    /// Every step and addendum, oldest first.
    pub history: Vec<LogEntry>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub recipient: String,
    pub agency: String,
    pub role: Option<String>,
    pub user: Option<String>,
    /// `webhook` or `inbox`.
    pub channel: String,
    /// The routing rule that chose this recipient.
    pub rule: String,
    /// `sent`, `received`, `acknowledged`, `in_progress` or `closed`.
    pub state: String,
    pub outcome: Option<String>,
    pub updated_at: String,
}

impl RecipientView {
    fn address(&self) -> Option<Address> {
        match (&self.user, &self.role) {
            (Some(user), _) => Some(Address::User {
                agency: self.agency.clone(),
                user: user.clone(),
            }),
            (None, Some(role)) => role.parse::<Role>().ok().map(|role| Address::Role {
                agency: self.agency.clone(),
                role,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub at: String,
    /// `submitted`, `status` or `addendum`.
    pub kind: String,
    pub recipient: Option<String>,
    pub by_user: String,
    pub by_agency: String,
    pub by_role: String,
    pub state: Option<String>,
    pub outcome: Option<String>,
    pub text: Option<String>,
}

/// How far a recipient has taken a concern; steps only go forward.
const STATES: &[&str] = &["sent", "received", "acknowledged", "in_progress", "closed"];

fn rank(state: &str) -> usize {
    STATES.iter().position(|s| *s == state).unwrap_or(0)
}

/// A child as a payload names it, parsed.
pub(crate) struct ChildRef {
    weft_id: Option<String>,
    search: Search,
}

/// Turns a schema-valid `child` object into a search; identifiers that fail their check are a
/// 400 naming the field, so the reporter can correct them.
pub(crate) fn parse_child(v: &Value, at: &str) -> Result<ChildRef, ApiError> {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let mut search = Search::default();
    if let Some(n) = text("nhs_number") {
        search.nhs_number = Some(
            NhsNumber::parse(n)
                .map_err(|e| ApiError::field(&format!("{at}/nhs_number"), e.to_string()))?,
        );
    }
    if let Some(u) = text("upn") {
        search.upn =
            Some(Upn::parse(u).map_err(|e| ApiError::field(&format!("{at}/upn"), e.to_string()))?);
    }
    if let Some(l) = v.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        search.local_id = Some((part("source"), part("id")));
    }
    if let (Some(f), Some(g), Some(d)) =
        (text("family_name"), text("given_name"), text("birth_date"))
    {
        search.demographics = Some(weft_adapters::Demographics {
            family_name: Some(f.into()),
            given_name: Some(g.into()),
            birth_date: Some(d.into()),
            ..Default::default()
        });
    }
    Ok(ChildRef {
        weft_id: text("weft_id").map(String::from),
        search,
    })
}

/// The child a payload names: exactly one match, or none (`unmatched`, `ambiguous`).
pub(crate) async fn match_child(
    state: &AppState,
    child: &ChildRef,
) -> Result<(Option<String>, String), sqlx::Error> {
    if let Some(id) = &child.weft_id {
        if state.index.links(id).await?.is_some() {
            return Ok((Some(id.clone()), "weft_id".into()));
        }
    }
    let found = state.index.find(&child.search).await?;
    Ok(match found.as_slice() {
        [] => (None, "unmatched".into()),
        [one] => (Some(one.id.clone()), one.matched_on.into()),
        _ => (None, "ambiguous".into()),
    })
}

pub(crate) fn parse_time(v: &Value, pointer: &str) -> Result<DateTime<Utc>, ApiError> {
    let raw = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default();
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| ApiError::field(pointer, format!("not an RFC 3339 time: {e}")))
}

struct Input {
    body: Value,
    hash: String,
    category: Category,
    urgency: Urgency,
    child: ChildRef,
}

fn parse_concern(state: &AppState, body: &[u8]) -> Result<Input, ApiError> {
    let value = validated(body, |v| state.schemas.concern_errors(v), "concern")?;
    let word = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
    let category = word("category")
        .parse::<Category>()
        .map_err(|e| ApiError::field("/category", e))?;
    let urgency = word("urgency")
        .parse::<Urgency>()
        .map_err(|e| ApiError::field("/urgency", e))?;
    let observed = parse_time(&value, "/observed/when")?;
    if observed > Utc::now() + chrono::Duration::minutes(5) {
        return Err(ApiError::field("/observed/when", "is in the future"));
    }
    let child = parse_child(value.get("child").unwrap_or(&Value::Null), "/child")?;
    // The stored text is what is hashed, so a retry with the same JSON (in any key order or
    // spacing) is recognised as the same submission.
    let hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
    Ok(Input {
        body: value,
        hash,
        category,
        urgency,
        child,
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 200 visible ASCII characters")
        })?;
    Ok(Some(key.to_string()))
}

/// Submit a concern. Routed by the rules in `policies/routing.toml`, delivered through the outbox.
#[utoipa::path(
    post,
    path = "/v1/concerns",
    request_body(content = Object, description = "See schemas/concern.schema.json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retried submission with the same key and body returns the original concern")),
    responses(
        (status = 201, description = "Stored and routed", body = ConcernView),
        (status = 200, description = "A retry: the original concern", body = ConcernView),
        (status = 400, description = "Invalid body; every error with its JSON pointer; nothing stored"),
        (status = 401, description = "Missing or invalid token"),
        (status = 409, description = "The Idempotency-Key was used for a different concern"),
        (status = 503, description = "Audit log unavailable"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed = idempotency_key(&headers).and_then(|k| Ok((k, parse_concern(&state, &body)?)));
    let (key, input) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(refuse(&state, &principal, "concern_submit", None, None, e).await),
    };
    if let Some(k) = &key {
        if let Some(existing) = replay(&state, &principal, k, &input.hash).await? {
            return Ok(existing);
        }
    }
    let (child, matched_on) = match_child(&state, &input.child).await?;
    let facts = match &child {
        Some(c) => routing::facts(&state, c).await?,
        None => ChildFacts::unmatched(),
    };
    let routed = state.routing.concern(input.category, input.urgency, &facts);

    let id = uuid::Uuid::new_v4().to_string();
    let now = ts(Utc::now());
    let stored = store(
        &state,
        &principal,
        &id,
        &now,
        key.as_deref(),
        &input,
        child.as_deref(),
        &matched_on,
        facts.status.as_str(),
        &routed,
    )
    .await;
    if let Err(e) = stored {
        // A concurrent retry with the same key won the race: answer as a replay.
        if let Some(k) = &key {
            if let Some(existing) = replay(&state, &principal, k, &input.hash).await? {
                return Ok(existing);
            }
        }
        return Err(e.into());
    }
    state.outbox.wake();
    let detail = json!({
        "concern": id,
        "category": input.category.as_str(),
        "urgency": input.urgency.as_str(),
        "matched_on": matched_on,
        "child_status": facts.status.as_str(),
        "recipients": routed.iter().map(|r| json!({"to": r.to.key(), "rule": r.rule})).collect::<Vec<_>>(),
    });
    record(
        &state,
        &principal,
        "concern_submit",
        child.as_deref(),
        Some(Purpose::Safeguarding),
        "submitted",
        detail,
    )
    .await?;
    let view = load(&state, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("stored concern not found".into()))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The original concern for a reused idempotency key, or 409 when the body differs.
async fn replay(
    state: &AppState,
    p: &Principal,
    key: &str,
    hash: &str,
) -> Result<Option<Response>, ApiError> {
    let row = sqlx::query(
        "SELECT id, request_hash, child_id FROM concerns WHERE agency = $1 AND submitted_by = $2 \
         AND idempotency_key = $3",
    )
    .bind(&p.agency)
    .bind(&p.user)
    .bind(key)
    .fetch_optional(&state.store.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: String = row.try_get("id")?;
    let child: Option<String> = row.try_get("child_id")?;
    let original: String = row.try_get("request_hash")?;
    if original != hash {
        let e = ApiError::Conflict("this Idempotency-Key was used for a different concern".into());
        return Err(refuse(state, p, "concern_submit", child.as_deref(), None, e).await);
    }
    record(
        state,
        p,
        "concern_submit",
        child.as_deref(),
        Some(Purpose::Safeguarding),
        "replayed",
        json!({"concern": id}),
    )
    .await?;
    let view = load(state, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("stored concern not found".into()))?;
    let mut response = (StatusCode::OK, Json(view)).into_response();
    response.headers_mut().insert(
        "idempotent-replayed",
        http::HeaderValue::from_static("true"),
    );
    Ok(Some(response))
}

#[allow(clippy::too_many_arguments)]
async fn store(
    state: &AppState,
    p: &Principal,
    id: &str,
    now: &str,
    key: Option<&str>,
    input: &Input,
    child: Option<&str>,
    matched_on: &str,
    status: &str,
    routed: &[routing::Routed],
) -> Result<(), sqlx::Error> {
    let mut tx = state.store.begin_write().await?;
    sqlx::query(
        "INSERT INTO concerns (id, submitted_at, submitted_by, agency, role, idempotency_key, \
         request_hash, child_id, matched_on, child_status, category, urgency, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(now)
    .bind(&p.user)
    .bind(&p.agency)
    .bind(p.role.as_str())
    .bind(key)
    .bind(&input.hash)
    .bind(child)
    .bind(matched_on)
    .bind(status)
    .bind(input.category.as_str())
    .bind(input.urgency.as_str())
    .bind(input.body.to_string())
    .execute(&mut *tx)
    .await?;
    log(&mut tx, id, now, "submitted", None, p, None, None, None).await?;
    let mut deliveries = Vec::new();
    for r in routed {
        let (role, user) = match &r.to {
            Address::Role { role, .. } => (Some(role.as_str()), None),
            Address::User { user, .. } => (None, Some(user.as_str())),
        };
        sqlx::query(
            "INSERT INTO concern_recipients (concern_id, recipient, agency, role, user_id, \
             channel, rule, state, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'sent', $8)",
        )
        .bind(id)
        .bind(r.to.key())
        .bind(r.to.agency())
        .bind(role)
        .bind(user)
        .bind(state.outbox.channel_for(&r.to))
        .bind(&r.rule)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        deliveries.push(NewDelivery {
            topic: "concern",
            subject: id.to_string(),
            child: child.map(String::from),
            to: r.to.clone(),
            webhook: None,
            data: json!({
                "concern": id,
                "submitted_at": now,
                "from": {"user": p.user, "agency": p.agency, "role": p.role},
                "child": child,
                "matched_on": matched_on,
                "child_status": status,
                "category": input.category,
                "urgency": input.urgency,
                "rule": r.rule,
                "body": input.body,
                "acknowledge": format!("/v1/concerns/{id}/status"),
            }),
        });
    }
    state
        .outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| match e {
            crate::delivery::outbox::OutboxError::Store(e) => e,
            other => sqlx::Error::Protocol(other.to_string()),
        })?;
    tx.commit().await
}

#[allow(clippy::too_many_arguments)]
async fn log(
    conn: &mut AnyConnection,
    concern: &str,
    at: &str,
    kind: &str,
    recipient: Option<&str>,
    by: &Principal,
    state: Option<&str>,
    outcome: Option<&str>,
    text: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO concern_log (id, concern_id, at, kind, recipient, by_user, by_agency, \
         by_role, state, outcome, text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(concern)
    .bind(at)
    .bind(kind)
    .bind(recipient)
    .bind(&by.user)
    .bind(&by.agency)
    .bind(by.role.as_str())
    .bind(state)
    .bind(outcome)
    .bind(text)
    .execute(conn)
    .await?;
    Ok(())
}

/// Called by the outbox in its delivery transaction: the recipient has the concern.
pub(crate) async fn mark_received(
    conn: &mut AnyConnection,
    concern: &str,
    recipient: &str,
    at: &str,
) -> Result<(), sqlx::Error> {
    let moved = sqlx::query(
        "UPDATE concern_recipients SET state = 'received', updated_at = $1 \
         WHERE concern_id = $2 AND recipient = $3 AND state = 'sent'",
    )
    .bind(at)
    .bind(concern)
    .bind(recipient)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() > 0 {
        sqlx::query(
            "INSERT INTO concern_log (id, concern_id, at, kind, recipient, by_user, by_agency, \
             by_role, state) VALUES ($1, $2, $3, 'status', $4, 'weft', 'weft', 'delivery', \
             'received')",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(concern)
        .bind(at)
        .bind(recipient)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// A stored concern with its recipients and history.
pub async fn load(state: &AppState, id: &str) -> Result<Option<ConcernView>, sqlx::Error> {
    let Some(row) = sqlx::query(
        "SELECT id, submitted_at, submitted_by, agency, child_id, matched_on, child_status, \
         category, urgency, body FROM concerns WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&state.store.pool)
    .await?
    else {
        return Ok(None);
    };
    let body: String = row.try_get("body")?;
    let recipients = sqlx::query(
        "SELECT recipient, agency, role, user_id, channel, rule, state, outcome, updated_at \
         FROM concern_recipients WHERE concern_id = $1 ORDER BY recipient",
    )
    .bind(id)
    .fetch_all(&state.store.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(RecipientView {
            recipient: r.try_get("recipient")?,
            agency: r.try_get("agency")?,
            role: r.try_get("role")?,
            user: r.try_get("user_id")?,
            channel: r.try_get("channel")?,
            rule: r.try_get("rule")?,
            state: r.try_get("state")?,
            outcome: r.try_get("outcome")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let history = sqlx::query(
        "SELECT at, kind, recipient, by_user, by_agency, by_role, state, outcome, text \
         FROM concern_log WHERE concern_id = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&state.store.pool)
    .await?
    .iter()
    .map(|r| {
        Ok(LogEntry {
            at: r.try_get("at")?,
            kind: r.try_get("kind")?,
            recipient: r.try_get("recipient")?,
            by_user: r.try_get("by_user")?,
            by_agency: r.try_get("by_agency")?,
            by_role: r.try_get("by_role")?,
            state: r.try_get("state")?,
            outcome: r.try_get("outcome")?,
            text: r.try_get("text")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Some(ConcernView {
        id: row.try_get("id")?,
        submitted_at: row.try_get("submitted_at")?,
        submitted_by: row.try_get("submitted_by")?,
        agency: row.try_get("agency")?,
        child: row.try_get("child_id")?,
        matched_on: row.try_get("matched_on")?,
        child_status: row.try_get("child_status")?,
        category: row.try_get("category")?,
        urgency: row.try_get("urgency")?,
        concern: serde_json::from_str(&body).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        recipients,
        history,
    }))
}

fn is_reporter(view: &ConcernView, p: &Principal) -> bool {
    view.agency == p.agency && view.submitted_by == p.user
}

/// The recipients this practitioner answers for.
fn own_recipients<'a>(view: &'a ConcernView, p: &Principal) -> Vec<&'a RecipientView> {
    view.recipients
        .iter()
        .filter(|r| {
            r.address()
                .is_some_and(|a| a.includes(&p.agency, &p.user, p.role))
        })
        .collect()
}

/// A concern the caller may see (as its reporter or a recipient), or the audited refusal.
async fn visible(
    state: &AppState,
    p: &Principal,
    id: &str,
    action: &str,
) -> Result<ConcernView, ApiError> {
    let Some(view) = load(state, id).await? else {
        let e = ApiError::NotFound("no concern with that id");
        return Err(refuse(state, p, action, None, None, e).await);
    };
    if !is_reporter(&view, p) && own_recipients(&view, p).is_empty() {
        let e = ApiError::Forbidden("only the reporter and the recipients of a concern see it");
        return Err(refuse(state, p, action, view.child.as_deref(), None, e).await);
    }
    Ok(view)
}

/// A concern, its recipients' progress and its history. For its reporter and recipients.
#[utoipa::path(
    get,
    path = "/v1/concerns/{id}",
    params(("id" = String, Path, description = "Concern id")),
    responses(
        (status = 200, description = "The concern", body = ConcernView),
        (status = 403, description = "Neither reporter nor recipient"),
        (status = 404, description = "No such concern"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConcernView>, ApiError> {
    let view = visible(&state, &principal, &id, "concern_view").await?;
    record(
        &state,
        &principal,
        "concern_view",
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "shown",
        json!({"concern": id}),
    )
    .await?;
    Ok(Json(view))
}

/// A recipient moves a concern on: `acknowledged`, `in_progress`, `closed` (with an outcome).
/// The reporter is told through their inbox.
#[utoipa::path(
    post,
    path = "/v1/concerns/{id}/status",
    params(("id" = String, Path, description = "Concern id")),
    request_body(content = Object, description = "See schemas/concern-update.schema.json"),
    responses(
        (status = 200, description = "The concern after the step", body = ConcernView),
        (status = 400, description = "Invalid body"),
        (status = 403, description = "Not a recipient"),
        (status = 409, description = "A step backwards"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn progress(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ConcernView>, ApiError> {
    const ACTION: &str = "concern_status";
    let parsed =
        validated(&body, |v| state.schemas.concern_update_errors(v), "update").and_then(|v| {
            let new = v
                .get("state")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| ApiError::field("/state", "a state is required"))?;
            Ok((v, new))
        });
    let (value, new) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(refuse(&state, &principal, ACTION, None, None, e).await),
    };
    let view = visible(&state, &principal, &id, ACTION).await?;
    let mine = own_recipients(&view, &principal);
    if mine.is_empty() {
        let e = ApiError::Forbidden("only a recipient of a concern can move it on");
        return Err(refuse(&state, &principal, ACTION, view.child.as_deref(), None, e).await);
    }
    if mine.iter().any(|r| rank(&r.state) >= rank(&new)) {
        let e = ApiError::Conflict(
            "a concern only moves forward: received, acknowledged, in_progress, closed".into(),
        );
        return Err(refuse(&state, &principal, ACTION, view.child.as_deref(), None, e).await);
    }
    let outcome = value.get("outcome").and_then(Value::as_str);
    let note = value.get("note").and_then(Value::as_str);
    let now = ts(Utc::now());
    let mut tx = state.store.begin_write().await?;
    let mut deliveries = Vec::new();
    for r in &mine {
        let moved = sqlx::query(
            "UPDATE concern_recipients SET state = $1, outcome = $2, updated_at = $3 \
             WHERE concern_id = $4 AND recipient = $5 AND state = $6",
        )
        .bind(&new)
        .bind(outcome)
        .bind(&now)
        .bind(&id)
        .bind(&r.recipient)
        .bind(&r.state)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(ApiError::Conflict(
                "the concern changed meanwhile; reload and retry".into(),
            ));
        }
        log(
            &mut tx,
            &id,
            &now,
            "status",
            Some(&r.recipient),
            &principal,
            Some(&new),
            outcome,
            note,
        )
        .await?;
        deliveries.push(NewDelivery {
            topic: "concern_update",
            subject: id.clone(),
            child: view.child.clone(),
            to: Address::User {
                agency: view.agency.clone(),
                user: view.submitted_by.clone(),
            },
            webhook: None,
            data: json!({
                "concern": id,
                "recipient": r.recipient,
                "state": new,
                "outcome": outcome,
                "note": note,
                "by": {"user": principal.user, "agency": principal.agency, "role": principal.role},
                "at": now,
            }),
        });
    }
    state
        .outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tx.commit().await?;
    state.outbox.wake();
    record(
        &state,
        &principal,
        ACTION,
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "updated",
        json!({"concern": id, "state": new, "outcome": outcome}),
    )
    .await?;
    let view = load(&state, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("concern vanished".into()))?;
    Ok(Json(view))
}

/// Appends text to a concern (the concern itself never changes). Delivered to every other party.
#[utoipa::path(
    post,
    path = "/v1/concerns/{id}/addenda",
    params(("id" = String, Path, description = "Concern id")),
    request_body(content = Object, description = "{\"text\": …}; see schemas/concern-update.schema.json"),
    responses(
        (status = 201, description = "Appended", body = ConcernView),
        (status = 400, description = "Invalid body"),
        (status = 403, description = "Neither reporter nor recipient"),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn addendum(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ConcernView>), ApiError> {
    const ACTION: &str = "concern_addendum";
    let parsed = validated(
        &body,
        |v| state.schemas.concern_update_errors(v),
        "addendum",
    )
    .and_then(|v| {
        v.get("text")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| ApiError::field("/text", "an addendum needs text"))
    });
    let text = match parsed {
        Ok(t) => t,
        Err(e) => return Err(refuse(&state, &principal, ACTION, None, None, e).await),
    };
    let view = visible(&state, &principal, &id, ACTION).await?;
    let now = ts(Utc::now());
    let mut others: Vec<Address> = view
        .recipients
        .iter()
        .filter_map(RecipientView::address)
        .filter(|a| !a.includes(&principal.agency, &principal.user, principal.role))
        .collect();
    if !is_reporter(&view, &principal) {
        others.push(Address::User {
            agency: view.agency.clone(),
            user: view.submitted_by.clone(),
        });
    }
    let deliveries: Vec<NewDelivery> = others
        .into_iter()
        .map(|to| NewDelivery {
            topic: "concern_addendum",
            subject: id.clone(),
            child: view.child.clone(),
            to,
            webhook: None,
            data: json!({
                "concern": id,
                "text": text,
                "by": {"user": principal.user, "agency": principal.agency, "role": principal.role},
                "at": now,
            }),
        })
        .collect();
    let mut tx = state.store.begin_write().await?;
    log(
        &mut tx,
        &id,
        &now,
        "addendum",
        None,
        &principal,
        None,
        None,
        Some(&text),
    )
    .await?;
    state
        .outbox
        .enqueue(&mut tx, &deliveries)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tx.commit().await?;
    state.outbox.wake();
    record(
        &state,
        &principal,
        ACTION,
        view.child.as_deref(),
        Some(Purpose::Safeguarding),
        "appended",
        json!({"concern": id}),
    )
    .await?;
    let view = load(&state, &id)
        .await?
        .ok_or_else(|| ApiError::Internal("concern vanished".into()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The write paths' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        submit,
        show,
        progress,
        addendum,
        crate::http::inbox::inbox,
        crate::http::inbox::outbox,
        crate::http::inbox::retry,
        crate::write::events::ingest,
        crate::write::events::subscribe,
    ),
    components(schemas(
        ConcernView,
        RecipientView,
        LogEntry,
        crate::delivery::outbox::InboxItem,
        crate::delivery::outbox::DeliveryStatus,
        crate::write::events::EventAccepted,
        crate::write::events::Subscription,
    ))
)]
pub struct ConcernsDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_paths_are_in_the_openapi_document() {
        let doc = serde_json::to_value(crate::http::openapi()).expect("serialises");
        for path in [
            "/v1/concerns",
            "/v1/concerns/{id}",
            "/v1/concerns/{id}/status",
            "/v1/concerns/{id}/addenda",
            "/v1/events",
            "/v1/subscriptions",
            "/v1/inbox",
            "/v1/outbox",
            "/v1/outbox/{id}/retry",
            "/v1/children/{id}",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }

    #[test]
    fn steps_only_go_forward() {
        assert!(rank("received") < rank("acknowledged"));
        assert!(rank("acknowledged") < rank("in_progress"));
        assert!(rank("in_progress") < rank("closed"));
    }
}
