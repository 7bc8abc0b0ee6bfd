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
use crate::pipeline::authorise::grants::{from_row, Grant, Viewed, COLUMNS};
use sqlx::Row;

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
    let parsed = parsed.and_then(|(purpose, justification)| {
        real_text(&justification).map_err(|m| Error::unprocessable("/justification", m))?;
        Ok((purpose, justification))
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
        viewed: Vec::new(),
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
        None | Some("pending") => "review_outcome IS NULL",
        Some("all") => "1 = 1",
        Some(_) => {
            let e = Error::field("/status", "pending or all");
            return Err(gw.refuse(who, ACTION, None, None, e).await);
        }
    };
    // Grants taken at the officer's own agency; every agency's for the partnership's IG lead.
    let lead = gw.is_ig_lead(who);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM break_glass WHERE {filter} AND ($1 OR agency = $2) \
         ORDER BY granted_at DESC LIMIT 500"
    ))
    .bind(lead)
    .bind(&who.agency)
    .fetch_all(&gw.store.pool)
    .await?;
    let mut grants = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    for g in &mut grants {
        g.viewed = viewed_under(gw, g).await?;
    }
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
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut tx = gw.store.begin_write().await?;
    // An IG officer reviews their own agency's grants (the partnership's IG lead, anyone's);
    // another agency's grant is answered as if it did not exist. A grant found not justified is
    // revoked at once: it ends now, not when it would have expired (and the authorise stage
    // ignores a grant reviewed `not_justified` regardless).
    let updated = sqlx::query(
        "UPDATE break_glass SET review_outcome = $1, review_notes = $2, reviewed_by = $3, reviewed_at = $4, \
         expires_at = CASE WHEN $1 = 'not_justified' AND expires_at > $4 THEN $4 ELSE expires_at END \
         WHERE id = $5 AND review_outcome IS NULL AND ($6 OR agency = $7)",
    )
    .bind(&req.outcome)
    .bind(&req.notes)
    .bind(&who.user)
    .bind(&now)
    .bind(grant_id)
    .bind(gw.is_ig_lead(who))
    .bind(&who.agency)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        drop(tx);
        let e = Error::NotFound("no grant awaiting your review with that id");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM break_glass WHERE id = $1"))
        .bind(grant_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut grant = from_row(&row)?;
    let detail = json!({"grant": grant_id, "outcome": req.outcome, "revoked": req.outcome == "not_justified"});
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
    grant.viewed = viewed_under(gw, &grant).await?;
    Ok(grant)
}

/// What was looked at under a grant, from the audit log: each view by its holder of its child
/// that the grant released anything in or gave the relationship for.
async fn viewed_under(gw: &Gateway, g: &Grant) -> Result<Vec<Viewed>, Error> {
    let rows = sqlx::query(
        "SELECT at, purpose, detail FROM audit_log WHERE action = 'view' AND child_id = $1 \
         AND user_id = $2 AND agency = $3 AND role = $4 AND at >= $5 ORDER BY seq",
    )
    .bind(&g.child)
    .bind(&g.user)
    .bind(&g.agency)
    .bind(&g.role)
    .bind(
        g.granted_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
    .fetch_all(&gw.store.pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let detail: String = r.try_get("detail")?;
        let Ok(detail) = serde_json::from_str::<serde_json::Value>(&detail) else {
            continue;
        };
        let names_grant = |v: &serde_json::Value| v.as_str() == Some(g.id.as_str());
        let released: Vec<String> = detail["break_glass"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| names_grant(v))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let related = detail["relationship"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| names_grant(&r["via"])));
        if released.is_empty() && !related {
            continue;
        }
        let shown = detail["shown"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Viewed {
            at: r.try_get("at")?,
            purpose: r.try_get("purpose")?,
            shown,
            released,
        });
    }
    Ok(out)
}

/// Whether a justification is real text: no control characters (a NUL, an escape), at least
/// four words and twenty letters, and not one character or word said over and over.
pub fn real_text(s: &str) -> Result<(), &'static str> {
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters");
    }
    let letters: Vec<char> = s
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    if letters.len() < 20 {
        return Err("must say why, in at least twenty letters");
    }
    let words: Vec<String> = s
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphabetic())
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| w.chars().count() >= 2)
        .collect();
    if words.len() < 4 {
        return Err("must say why, in at least four words");
    }
    let distinct: std::collections::BTreeSet<&String> = words.iter().collect();
    if distinct.len() * 2 < words.len() || distinct.len() < 3 {
        return Err("must not repeat the same words");
    }
    let mut counts = std::collections::HashMap::new();
    for c in &letters {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    let distinct_letters = counts.len();
    if counts.values().any(|n| n * 3 > letters.len()) || distinct_letters < 6 {
        return Err("must not repeat the same characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::real_text;

    #[test]
    fn justifications_must_be_real_text() {
        assert!(real_text(
            "Child disclosed abuse at A&E tonight; parents unreachable, need CP status now"
        )
        .is_ok());
        for bad in [
            " ".repeat(25),
            "\0".repeat(20),
            "a".repeat(40),
            "ab ab ab ab ab ab ab ab ab ab ab".to_string(),
            "urgent urgent urgent urgent urgent".to_string(),
            "12345678901234567890 1234".to_string(),
            "need\u{1b}[2J to see the record now please".to_string(),
            "aaaa aaaa aaab aaac aaad aaae".to_string(),
        ] {
            assert!(real_text(&bad).is_err(), "{bad:?}");
        }
    }
}
