//! Break-glass grants as the authorise stage reads them: a practitioner's emergency access to
//! one child, for one purpose, until it expires. Grants are asked for and reviewed through
//! [`crate::write::breakglass`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::foundation::domain::Purpose;
use crate::foundation::store::Store;
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
    /// In the review queue: every view made under the grant, from the audit log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub viewed: Vec<Viewed>,
}

/// One view made under a grant, as the IG officer's review shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Viewed {
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Every category shown in that view.
    pub shown: Vec<String>,
    /// The categories the grant itself released (past a denial or a consent not yet sought).
    pub released: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    /// `justified`, `not_justified` or `referred`.
    pub outcome: String,
    pub notes: String,
    pub reviewed_by: String,
    pub reviewed_at: String,
}

pub(crate) const COLUMNS: &str =
    "id, user_id, agency, role, child_id, purpose, justification, granted_at, expires_at, \
                       review_outcome, review_notes, reviewed_by, reviewed_at";

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<Grant, sqlx::Error> {
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
        viewed: Vec::new(),
    })
}

/// The practitioner's grant for this child that is still in force, if any: taken by this user,
/// in this agency and this role (the same `sub` in another role or agency holds no grant), not
/// expired and not found unjustified on review.
pub async fn active(
    store: &Store,
    who: &Principal,
    child: &str,
) -> Result<Option<Grant>, sqlx::Error> {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM break_glass WHERE user_id = $1 AND agency = $2 AND role = $3 \
         AND child_id = $4 AND expires_at > $5 \
         AND (review_outcome IS NULL OR review_outcome <> 'not_justified') \
         ORDER BY granted_at DESC LIMIT 1"
    ))
    .bind(&who.user)
    .bind(&who.agency)
    .bind(who.role.as_str())
    .bind(child)
    .bind(&now)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}
