//! Break-glass grants as the authorise stage reads them: a practitioner's emergency access to
//! one child, for one purpose, until it expires. Grants are asked for and reviewed through
//! [`crate::write::breakglass`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::foundation::domain::Purpose;
use crate::foundation::store::Store;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::Link;

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

/// The grant with id `$6`, if it is in force for child `$1`, user `$2`, agency `$3` and role
/// `$4` at time `$5`, as [`COLUMNS`].
fn in_force_with_id() -> String {
    format!(
        "SELECT {COLUMNS} FROM break_glass WHERE id = $6 AND child_id = $1 AND user_id = $2 \
         AND agency = $3 AND role = $4 AND expires_at > $5 \
         AND (review_outcome IS NULL OR review_outcome <> 'not_justified')"
    )
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The child's records in the index ([`crate::pipeline::resolve::Index::links`]) and the
/// practitioner's grant for the child that is still in force, if any — taken by this user, in
/// this agency and this role (the same `sub` in another role or agency holds no grant), not
/// expired and not found unjustified on review. The links and the grant's id are read in one
/// statement: every view needs both, and on a busy gateway a round trip to the store costs more
/// than either query. Only the id, because sqlx's `Any` driver converts every column of every
/// row, and the grant's thirteen columns would ride empty on each link row of every view; the
/// grant itself, rare, is read in a second statement that asks again whether it is in force.
/// `Ok(None)` when the child is not in the index.
pub async fn links_and_active(
    store: &Store,
    who: &Principal,
    child: &str,
) -> Result<Option<(Vec<Link>, Option<Grant>)>, sqlx::Error> {
    // One row per link (`part` 'link'; a child with no records gives one row with no source),
    // then at most one row naming the grant in force (`part` 'grant', its id as `local_id`).
    const LINKS_AND_GRANT_ID: &str = "SELECT 'link' AS part, sr.source AS source, \
         sr.local_id AS local_id \
         FROM children c LEFT JOIN source_records sr ON sr.child_id = c.id WHERE c.id = $1 \
         UNION ALL SELECT 'grant' AS part, NULL AS source, g.id AS local_id \
         FROM (SELECT id FROM break_glass WHERE child_id = $1 AND user_id = $2 AND agency = $3 \
         AND role = $4 AND expires_at > $5 \
         AND (review_outcome IS NULL OR review_outcome <> 'not_justified') \
         ORDER BY granted_at DESC LIMIT 1) g \
         ORDER BY part, source, local_id";
    let at = now();
    // Every view runs this first: a warm connection spares the pool's ping on return.
    let mut conn = store.lend().await?;
    let rows = sqlx::query(LINKS_AND_GRANT_ID)
        .bind(child)
        .bind(&who.user)
        .bind(&who.agency)
        .bind(who.role.as_str())
        .bind(&at)
        .fetch_all(&mut *conn)
        .await?;
    let mut links = Vec::with_capacity(rows.len());
    let (mut indexed, mut grant_id) = (false, None);
    for r in &rows {
        let part: &str = r.try_get(0)?;
        let source: Option<String> = r.try_get(1)?;
        let local_id: Option<String> = r.try_get(2)?;
        if part == "grant" {
            grant_id = local_id;
            continue;
        }
        indexed = true;
        if let (Some(source), Some(local_id)) = (source, local_id) {
            links.push(Link { source, local_id });
        }
    }
    if !indexed {
        conn.done();
        return Ok(None);
    }
    let grant = match grant_id {
        None => None,
        Some(id) => sqlx::query(&in_force_with_id())
            .bind(child)
            .bind(&who.user)
            .bind(&who.agency)
            .bind(who.role.as_str())
            .bind(&at)
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| from_row(&r))
            .transpose()?,
    };
    conn.done();
    Ok(Some((links, grant)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::config::AgencyKind;
    use crate::foundation::domain::Role;
    use crate::pipeline::resolve::linkage::Matcher;
    use crate::pipeline::resolve::Index;
    use weft_adapters::{Demographics, Identifier, SourceRecord};

    fn record(id: &str, nhs: &str) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: vec![Identifier::new("nhs_number", nhs)],
            demographics: Demographics::default(),
            score: None,
            restricted: false,
        }
    }

    async fn grant(store: &Store, id: &str, who: &Principal, child: &str, expires_in: i64) {
        let at = |d: i64| (Utc::now() + chrono::Duration::minutes(d)).to_rfc3339();
        sqlx::query(
            "INSERT INTO break_glass (id, user_id, agency, role, child_id, purpose, \
             justification, granted_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(&who.user)
        .bind(&who.agency)
        .bind(who.role.as_str())
        .bind(child)
        .bind("safeguarding")
        .bind("a child at risk of serious harm tonight")
        .bind(at(-1))
        .bind(at(expires_in))
        .execute(&store.pool)
        .await
        .unwrap();
    }

    /// The one statement reads what the index's links and a grant lookup of their own would:
    /// every link in order, a child with none, no child at all, and only a grant in force for
    /// this user in this agency and role.
    #[tokio::test]
    async fn links_and_the_grant_in_force_in_one_statement() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::with_matcher(store.clone(), Matcher::builtin());
        let (child, _) = index
            .upsert("school", &record("s1", "9434765919"))
            .await
            .unwrap();
        index
            .upsert("health", &record("h1", "9434765919"))
            .await
            .unwrap();
        index
            .upsert("police", &record("p1", "9434765919"))
            .await
            .unwrap();
        let who = Principal {
            user: "sw-1".into(),
            agency: "la".into(),
            agency_kind: AgencyKind::SocialCare,
            role: Role::SocialWorker,
            client: None,
        };

        let (links, none) = links_and_active(&store, &who, &child)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Some(links), index.links(&child).await.unwrap());
        assert!(none.is_none());
        assert!(links_and_active(&store, &who, "no-such-child")
            .await
            .unwrap()
            .is_none());

        grant(&store, "g-expired", &who, &child, -1).await;
        let other_role = Principal {
            role: Role::PoliceOfficer,
            ..who.clone()
        };
        grant(&store, "g-other-role", &other_role, &child, 30).await;
        let (_, none) = links_and_active(&store, &who, &child)
            .await
            .unwrap()
            .unwrap();
        assert!(none.is_none(), "expired, or taken in another role");

        grant(&store, "g-1", &who, &child, 30).await;
        let (links, g) = links_and_active(&store, &who, &child)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(links.len(), 3);
        assert_eq!(g.map(|g| g.id), Some("g-1".to_string()));
        sqlx::query("UPDATE break_glass SET review_outcome = 'not_justified' WHERE id = 'g-1'")
            .execute(&store.pool)
            .await
            .unwrap();
        let (_, revoked) = links_and_active(&store, &who, &child)
            .await
            .unwrap()
            .unwrap();
        assert!(revoked.is_none(), "a grant found not justified is revoked");
    }
}
