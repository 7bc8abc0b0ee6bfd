//! The consent register as policy reads it: per child, who gave (or refused) consent, for which
//! categories, to which agencies, for which purposes, for what period. Shaped like FHIR R4
//! `Consent` with `provision`s. Rules marked `consent` consult it on every read, so a
//! withdrawal takes effect on the very next request. Changes are made by
//! [`crate::write::consent`].

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::foundation::domain::Purpose;
use crate::foundation::store::Store;

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
    pub items: Vec<Consent>,
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
    let mut conn = store.lend().await?;
    let rows = sqlx::query(
        "SELECT id, child_id, status, body, recorded_by, recorded_at, updated_at, withdrawn_reason \
         FROM consents WHERE child_id = $1",
    )
    .bind(child)
    .fetch_all(&mut *conn)
    .await?;
    conn.done();
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(r)?);
    }
    Ok(Consents::new(items))
}

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<Consent, sqlx::Error> {
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
pub(crate) struct Body {
    pub grantor: Grantor,
    pub period: Period,
    pub provision: Vec<Provision>,
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
