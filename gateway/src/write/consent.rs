//! The consent register: per child, who gave (or refused) consent, for which categories, to
//! which agencies, for which purposes, for what period. Shaped like FHIR R4 `Consent` with
//! `provision`s. Policy rules marked `consent` consult it on every read, so a withdrawal takes
//! effect on the very next request. Every change is audited.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use crate::app::AppState;
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::store::Store;
use crate::http::error::ApiError;
use crate::http::{record, refuse};
use crate::pipeline::authenticate::Principal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentStatus {
    Active,
    Withdrawn,
    Refused,
}

/// Who gave or refused consent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grantor {
    /// `parental_responsibility` (a person with parental responsibility) or `competent_child`.
    pub relationship: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub start: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<NaiveDate>,
}

/// What a consent covers: purposes, data categories (`education.*` patterns allowed) and the
/// agencies it lets see them (empty: any agency).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    pub purpose: Vec<Purpose>,
    pub category: Vec<String>,
    #[serde(default)]
    pub actor: Vec<String>,
}

/// A consent as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Consent {
    pub id: String,
    pub child: String,
    pub status: ConsentStatus,
    pub grantor: Grantor,
    pub period: Period,
    pub provision: Vec<Provision>,
    pub recorded_by: String,
    pub recorded_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_reason: Option<String>,
}

/// What the register says for one category, agency and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    Given,
    Withdrawn,
    Refused,
    Missing,
}

/// A child's consents, loaded once per view.
#[derive(Debug, Default)]
pub struct Consents {
    items: Vec<Consent>,
    today: Option<NaiveDate>,
}

impl Consents {
    pub fn new(mut items: Vec<Consent>) -> Self {
        // The most recently changed consent that covers a question decides it.
        items.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
        Self {
            items,
            today: Some(Utc::now().date_naive()),
        }
    }

    pub fn state(&self, category: &str, agency: &str, purpose: Purpose) -> ConsentState {
        let today = self.today.unwrap_or_else(|| Utc::now().date_naive());
        let covering = self.items.iter().find(|c| {
            c.period.start <= today
                && c.period.end.is_none_or(|end| today <= end)
                && c.provision.iter().any(|p| {
                    p.purpose.contains(&purpose)
                        && p.category.iter().any(|pat| matches(category, pat))
                        && (p.actor.is_empty() || p.actor.iter().any(|a| a == agency))
                })
        });
        match covering.map(|c| c.status) {
            Some(ConsentStatus::Active) => ConsentState::Given,
            Some(ConsentStatus::Withdrawn) => ConsentState::Withdrawn,
            Some(ConsentStatus::Refused) => ConsentState::Refused,
            None => ConsentState::Missing,
        }
    }
}

fn matches(category: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => category.starts_with(prefix),
        None => category == pattern,
    }
}

/// Loads a child's consents.
pub async fn load(store: &Store, child: &str) -> Result<Consents, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, child_id, status, body, recorded_by, recorded_at, updated_at, withdrawn_reason \
         FROM consents WHERE child_id = $1",
    )
    .bind(child)
    .fetch_all(&store.pool)
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(r)?);
    }
    Ok(Consents::new(items))
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Consent, sqlx::Error> {
    let body: String = r.try_get("body")?;
    let status: String = r.try_get("status")?;
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    let body: Body = serde_json::from_str(&body).map_err(decode)?;
    Ok(Consent {
        id: r.try_get("id")?,
        child: r.try_get("child_id")?,
        status: serde_json::from_value(Value::String(status)).map_err(decode)?,
        grantor: body.grantor,
        period: body.period,
        provision: body.provision,
        recorded_by: r.try_get("recorded_by")?,
        recorded_at: r.try_get("recorded_at")?,
        updated_at: r.try_get("updated_at")?,
        withdrawn_reason: r.try_get("withdrawn_reason")?,
    })
}

/// The parts of a consent kept as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    grantor: Grantor,
    period: Period,
    provision: Vec<Provision>,
}

/// The request to record a consent or a refusal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    #[serde(rename = "resourceType")]
    _resource_type: String,
    status: ConsentStatus,
    grantor: Grantor,
    period: Period,
    provision: Vec<Provision>,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/children/{id}/consents", get(list).post(create))
        .route(
            "/v1/children/{id}/consents/{consent}/withdraw",
            post(withdraw),
        )
}

/// Practitioners who take consent from families.
fn may_record(role: Role) -> bool {
    matches!(
        role,
        Role::SocialWorker | Role::Dsl | Role::EducationWelfareOfficer | Role::HealthPractitioner
    )
}

async fn child_exists(state: &AppState, child: &str) -> Result<bool, ApiError> {
    Ok(sqlx::query("SELECT id FROM children WHERE id = $1")
        .bind(child)
        .fetch_optional(&state.store.pool)
        .await?
        .is_some())
}

/// A child's consents and refusals.
#[utoipa::path(get, path = "/v1/children/{id}/consents",
    params(("id" = String, Path, description = "Weft child id")),
    responses((status = 200, body = Vec<Consent>), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(child): Path<String>,
) -> Result<Json<Vec<Consent>>, ApiError> {
    if !(may_record(principal.role) || principal.role == Role::IgOfficer) {
        let e = ApiError::Forbidden(
            "consent records are open to practitioners who take consent and IG officers",
        );
        return Err(refuse(&state, &principal, "consent_list", Some(&child), None, e).await);
    }
    if !child_exists(&state, &child).await? {
        let e = ApiError::NotFound("no child with that id");
        return Err(refuse(&state, &principal, "consent_list", Some(&child), None, e).await);
    }
    let consents = load(&state.store, &child).await?;
    record(
        &state,
        &principal,
        "consent_list",
        Some(&child),
        None,
        "shown",
        json!({"returned": consents.items.len()}),
    )
    .await?;
    Ok(Json(consents.items))
}

/// Records a consent (or a refusal) given for a child.
#[utoipa::path(post, path = "/v1/children/{id}/consents",
    params(("id" = String, Path, description = "Weft child id")),
    request_body(content = Object, description = "See schemas/consent.schema.json"),
    responses((status = 201, body = Consent), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(child): Path<String>,
    body: Bytes,
) -> Result<(http::StatusCode, Json<Consent>), ApiError> {
    let action = "consent_record";
    if !may_record(principal.role) {
        let e = ApiError::Forbidden("only practitioners who take consent may record it");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    }
    let new = match parse(&state, &body) {
        Ok(n) => n,
        Err(e) => return Err(refuse(&state, &principal, action, Some(&child), None, e).await),
    };
    if !child_exists(&state, &child).await? {
        let e = ApiError::NotFound("no child with that id");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    }
    let now = Utc::now().to_rfc3339();
    let consent = Consent {
        id: uuid::Uuid::new_v4().to_string(),
        child: child.clone(),
        status: new.status,
        grantor: new.grantor,
        period: new.period,
        provision: new.provision,
        recorded_by: principal.user.clone(),
        recorded_at: now.clone(),
        updated_at: now,
        withdrawn_reason: None,
    };
    let body = serde_json::to_string(&Body {
        grantor: consent.grantor.clone(),
        period: consent.period.clone(),
        provision: consent.provision.clone(),
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let status = status_text(consent.status);
    // The change and its audit entry: the row is written first, and if the audit fails the
    // row is removed again, so nothing is left half-applied.
    sqlx::query(
        "INSERT INTO consents (id, child_id, status, body, recorded_by, recorded_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&consent.id)
    .bind(&child)
    .bind(status)
    .bind(&body)
    .bind(&consent.recorded_by)
    .bind(&consent.recorded_at)
    .bind(&consent.updated_at)
    .execute(&state.store.pool)
    .await?;
    let detail = json!({"consent": consent.id, "status": status,
        "purposes": consent.provision.iter().flat_map(|p| p.purpose.iter().map(|x| x.as_str())).collect::<Vec<_>>(),
        "categories": consent.provision.iter().flat_map(|p| p.category.clone()).collect::<Vec<_>>()});
    if let Err(e) = record(
        &state,
        &principal,
        action,
        Some(&child),
        None,
        "recorded",
        detail,
    )
    .await
    {
        let _ = sqlx::query("DELETE FROM consents WHERE id = $1")
            .bind(&consent.id)
            .execute(&state.store.pool)
            .await;
        return Err(e);
    }
    Ok((http::StatusCode::CREATED, Json(consent)))
}

fn status_text(s: ConsentStatus) -> &'static str {
    match s {
        ConsentStatus::Active => "active",
        ConsentStatus::Withdrawn => "withdrawn",
        ConsentStatus::Refused => "refused",
    }
}

fn parse(state: &AppState, body: &[u8]) -> Result<NewConsent, ApiError> {
    let value = crate::http::validated(body, |v| state.schemas.consent_errors(v), "consent")?;
    let new: NewConsent =
        serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if new.status == ConsentStatus::Withdrawn {
        return Err(ApiError::field(
            "/status",
            "record a consent as active or refused; withdraw it with …/withdraw",
        ));
    }
    if let Some(end) = new.period.end {
        if end < new.period.start {
            return Err(ApiError::field("/period/end", "ends before it starts"));
        }
    }
    Ok(new)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Withdrawal {
    reason: String,
}

/// Withdraws a consent. Takes effect on the next request.
#[utoipa::path(post, path = "/v1/children/{id}/consents/{consent}/withdraw",
    params(("id" = String, Path), ("consent" = String, Path)),
    request_body(content = Object, description = "{\"reason\": \"…\"}"),
    responses((status = 200, body = Consent), (status = 400), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn withdraw(
    State(state): State<AppState>,
    principal: Principal,
    Path((child, consent_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Consent>, ApiError> {
    let action = "consent_withdraw";
    if !may_record(principal.role) {
        let e =
            ApiError::Forbidden("only practitioners who take consent may record its withdrawal");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    }
    let reason = match serde_json::from_slice::<Withdrawal>(&body) {
        Ok(w) if !w.reason.trim().is_empty() => w.reason,
        _ => {
            let e = ApiError::field("/reason", "a reason for the withdrawal is required");
            return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
        }
    };
    let before = sqlx::query(
        "SELECT id, child_id, status, body, recorded_by, recorded_at, updated_at, withdrawn_reason \
         FROM consents WHERE id = $1 AND child_id = $2",
    )
    .bind(&consent_id)
    .bind(&child)
    .fetch_optional(&state.store.pool)
    .await?;
    let Some(before) = before else {
        let e = ApiError::NotFound("no such consent for this child");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    };
    let mut consent = from_row(&before)?;
    if consent.status != ConsentStatus::Active {
        let e = ApiError::field("/status", "only an active consent can be withdrawn");
        return Err(refuse(&state, &principal, action, Some(&child), None, e).await);
    }
    let now = Utc::now().to_rfc3339();
    sqlx::query("UPDATE consents SET status = 'withdrawn', withdrawn_reason = $1, updated_at = $2 WHERE id = $3")
        .bind(&reason)
        .bind(&now)
        .bind(&consent_id)
        .execute(&state.store.pool)
        .await?;
    let detail = json!({"consent": consent_id, "status": "withdrawn"});
    if let Err(e) = record(
        &state,
        &principal,
        action,
        Some(&child),
        None,
        "recorded",
        detail,
    )
    .await
    {
        let _ = sqlx::query("UPDATE consents SET status = 'active', withdrawn_reason = NULL, updated_at = $1 WHERE id = $2")
            .bind(&consent.updated_at)
            .bind(&consent_id)
            .execute(&state.store.pool)
            .await;
        return Err(e);
    }
    consent.status = ConsentStatus::Withdrawn;
    consent.withdrawn_reason = Some(reason);
    consent.updated_at = now;
    Ok(Json(consent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consent(status: ConsentStatus, updated: &str, cats: &[&str], actor: &[&str]) -> Consent {
        Consent {
            id: updated.into(),
            child: "c".into(),
            status,
            grantor: Grantor {
                relationship: "parental_responsibility".into(),
                name: "parent".into(),
            },
            period: Period {
                start: NaiveDate::from_ymd_opt(2020, 1, 1).expect("date"),
                end: None,
            },
            provision: vec![Provision {
                purpose: vec![Purpose::EarlyHelp],
                category: cats.iter().map(|c| c.to_string()).collect(),
                actor: actor.iter().map(|a| a.to_string()).collect(),
            }],
            recorded_by: "sw".into(),
            recorded_at: updated.into(),
            updated_at: updated.into(),
            withdrawn_reason: None,
        }
    }

    #[test]
    fn most_recent_covering_consent_decides() {
        let c = Consents::new(vec![
            consent(ConsentStatus::Refused, "2026-01-01", &["education.*"], &[]),
            consent(
                ConsentStatus::Active,
                "2026-02-01",
                &["education.attendance"],
                &["school"],
            ),
        ]);
        assert_eq!(
            c.state("education.attendance", "school", Purpose::EarlyHelp),
            ConsentState::Given
        );
        assert_eq!(
            c.state("education.attendance", "other", Purpose::EarlyHelp),
            ConsentState::Refused
        );
        assert_eq!(
            c.state("education.send", "school", Purpose::EarlyHelp),
            ConsentState::Refused
        );
        assert_eq!(
            c.state("health.registration", "school", Purpose::EarlyHelp),
            ConsentState::Missing
        );
        assert_eq!(
            c.state("education.attendance", "school", Purpose::ChildInNeed),
            ConsentState::Missing
        );
        let w = Consents::new(vec![consent(
            ConsentStatus::Withdrawn,
            "2026-03-01",
            &["*"],
            &[],
        )]);
        assert_eq!(
            w.state("social_care.status", "x", Purpose::EarlyHelp),
            ConsentState::Withdrawn
        );
    }

    #[test]
    fn expired_consent_does_not_cover() {
        let mut c = consent(ConsentStatus::Active, "2026-01-01", &["*"], &[]);
        c.period.end = NaiveDate::from_ymd_opt(2021, 1, 1);
        assert_eq!(
            Consents::new(vec![c]).state("identity.core", "x", Purpose::EarlyHelp),
            ConsentState::Missing
        );
    }
}
