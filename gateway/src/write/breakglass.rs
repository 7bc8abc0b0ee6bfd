//! Break-glass: an emergency read past a denial or a consent not yet sought, with a written
//! justification and a short expiry. Every grant and every read under it is audited loudly and
//! waits in the IG officer's review queue. Rules marked `unbreakable`, and a family's refusal or
//! withdrawal of consent, are never passed. The grants, as the authorise stage reads them, are
//! [`crate::pipeline::authorise::grants`].

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::grants::{from_row, Grant, COLUMNS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    purpose: String,
    justification: String,
}

/// Asks for an emergency grant for a child, with the purpose and justification in `body`
/// (`schemas/break-glass.schema.json`).
pub async fn request(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    body: &[u8],
) -> Result<Grant, Error> {
    const ACTION: &str = "break_glass";
    if matches!(who.role, Role::IgOfficer | Role::DataAdmin) {
        let e = Error::Forbidden("break-glass is for practitioners working with the child");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let parsed = validated(body, |v| gw.schemas.break_glass_errors(v), "request")
        .and_then(|v| {
            serde_json::from_value::<Request>(v).map_err(|e| Error::invalid(e.to_string()))
        })
        .and_then(|r| {
            let purpose = r
                .purpose
                .parse::<Purpose>()
                .map_err(|e| Error::field("/purpose", e.to_string()))?;
            Ok((purpose, r.justification))
        });
    let (purpose, justification) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(gw.refuse(who, ACTION, Some(child), None, e).await),
    };
    let exists = sqlx::query("SELECT id FROM children WHERE id = $1")
        .bind(child)
        .fetch_optional(&gw.store.pool)
        .await?;
    if exists.is_none() {
        let e = Error::NotFound("no child with that id");
        return Err(gw.refuse(who, ACTION, Some(child), Some(purpose), e).await);
    }
    let now = Utc::now();
    let ttl = Duration::seconds(i64::try_from(gw.config.break_glass.ttl_secs).unwrap_or(3600));
    let grant = Grant {
        id: uuid::Uuid::new_v4().to_string(),
        user: who.user.clone(),
        agency: who.agency.clone(),
        role: who.role.as_str().into(),
        child: child.to_string(),
        purpose,
        justification,
        granted_at: now,
        expires_at: now + ttl,
        review: None,
    };
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut tx = gw.store.begin_write().await?;
    sqlx::query(
        "INSERT INTO break_glass (id, user_id, agency, role, child_id, purpose, justification, granted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&grant.id)
    .bind(&grant.user)
    .bind(&grant.agency)
    .bind(&grant.role)
    .bind(child)
    .bind(purpose.as_str())
    .bind(&grant.justification)
    .bind(ts(grant.granted_at))
    .bind(ts(grant.expires_at))
    .execute(&mut *tx)
    .await?;
    let detail = json!({"grant": grant.id, "expires_at": grant.expires_at, "justification": grant.justification});
    gw.commit(
        tx,
        &[entry(
            who,
            ACTION,
            Some(child),
            Some(purpose),
            "granted",
            detail,
        )],
    )
    .await?;
    tracing::warn!(grant = %grant.id, role = %grant.role, "break-glass grant issued");
    Ok(grant)
}

/// The IG officer's review queue of break-glass grants, newest first: `pending` (the default)
/// or `all`.
pub async fn queue(
    gw: &Gateway,
    who: &Principal,
    status: Option<&str>,
) -> Result<Vec<Grant>, Error> {
    const ACTION: &str = "break_glass_queue";
    if who.role != Role::IgOfficer {
        let e = Error::Forbidden("the break-glass queue is for IG officers");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let filter = match status {
        None | Some("pending") => "WHERE review_outcome IS NULL",
        Some("all") => "",
        Some(_) => {
            let e = Error::field("/status", "pending or all");
            return Err(gw.refuse(who, ACTION, None, None, e).await);
        }
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM break_glass {filter} ORDER BY granted_at DESC LIMIT 500"
    ))
    .fetch_all(&gw.store.pool)
    .await?;
    let grants = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    gw.record(
        who,
        ACTION,
        None,
        Some(Purpose::Audit),
        "shown",
        json!({"returned": grants.len()}),
    )
    .await?;
    Ok(grants)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    outcome: String,
    #[serde(default)]
    notes: String,
}

/// Records the IG officer's review of a grant (`{"outcome": "justified" | "not_justified" |
/// "referred", "notes": …}` in `body`).
pub async fn review(
    gw: &Gateway,
    who: &Principal,
    grant_id: &str,
    body: &[u8],
) -> Result<Grant, Error> {
    const ACTION: &str = "break_glass_review";
    if who.role != Role::IgOfficer {
        let e = Error::Forbidden("break-glass grants are reviewed by IG officers");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let checked =
        validated(body, |v| gw.schemas.break_glass_review_errors(v), "review").and_then(|v| {
            serde_json::from_value::<ReviewRequest>(v)
                .map_err(|e| Error::invalid(format!("review: {e}")))
        });
    let req = match checked {
        Ok(r) => r,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let now = Utc::now().to_rfc3339();
    let mut tx = gw.store.begin_write().await?;
    let updated = sqlx::query(
        "UPDATE break_glass SET review_outcome = $1, review_notes = $2, reviewed_by = $3, reviewed_at = $4 \
         WHERE id = $5 AND review_outcome IS NULL",
    )
    .bind(&req.outcome)
    .bind(&req.notes)
    .bind(&who.user)
    .bind(&now)
    .bind(grant_id)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        drop(tx);
        let e = Error::NotFound("no grant awaiting review with that id");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = $1"))
        .bind(grant_id)
        .fetch_one(&mut *tx)
        .await?;
    let grant = from_row(&row)?;
    let detail = json!({"grant": grant_id, "outcome": req.outcome});
    gw.commit(
        tx,
        &[entry(
            who,
            ACTION,
            Some(&grant.child),
            Some(Purpose::Audit),
            "recorded",
            detail,
        )],
    )
    .await?;
    Ok(grant)
}
