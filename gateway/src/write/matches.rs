//! The data administrator's part in identity matching: the review queue of uncertain matches,
//! decisions on them (confirm, reject, split), and a child's link history (for data
//! administrators and IG officers). A decision commits with its audit entry, or not at all, and
//! the matcher never overrides it.

use serde::Serialize;
use serde_json::{json, Value};

use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::{entry, Gateway};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::restriction_applies;
use crate::pipeline::resolve::linkage::{self, Decided, Decision, DecisionError, LinkRow};
use crate::pipeline::resolve::records::{self, RecordIdentity};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewQueue {
    /// Proposed links between the thresholds, and `recheck` rows asking whether a link made
    /// under an older model should stand, oldest first and a record's together: each names the
    /// record, the child it may belong to, the probability and the per-comparison explanation,
    /// with both sides' records.
    pub matches: Vec<ReviewItem>,
    pub upper: f64,
    pub lower: f64,
}

/// A match in the review queue with what a reviewer compares: the record the question is about
/// and the records the proposed child already has.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewItem {
    #[serde(flatten)]
    pub link: LinkRow,
    /// The record under review; `None` if the index no longer holds it.
    pub record: Option<RecordIdentity>,
    /// The proposed child's other records, as linked now.
    pub child_records: Vec<RecordIdentity>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkHistory {
    pub child: String,
    /// Every link the child has or had and every proposal naming it, oldest first.
    pub links: Vec<LinkRow>,
}

async fn admin_only(
    gw: &Gateway,
    p: &Principal,
    action: &str,
    child: Option<&str>,
) -> Result<(), Error> {
    if p.role == Role::DataAdmin {
        return Ok(());
    }
    let e = Error::Forbidden("identity matches are reviewed by data administrators only");
    Err(gw.refuse(p, action, child, None, e).await)
}

/// The review queue of uncertain matches. Data administrators only.
///
/// A match that involves a restricted child — the proposed child, or the one the record is
/// linked to now, has a record its source marks restricted — shows neither side's postcode nor
/// address lines unless policy names the reviewer for `restricted.contact` (for the audit
/// purpose): were the two one child, either record's address would say where a restricted
/// child lives. The records say that their address was held back, never what it was.
pub async fn queue(gw: &Gateway, who: &Principal) -> Result<ReviewQueue, Error> {
    admin_only(gw, who, "match_review", None).await?;
    let rows = linkage::review_queue(&gw.index).await?;
    let mut matches = Vec::with_capacity(rows.len());
    for link in rows {
        let record = records::record(&gw.index, &link.source, &link.local_id).await?;
        let child_records =
            records::child_records(&gw.index, &link.child_id, &link.source, &link.local_id).await?;
        matches.push(ReviewItem {
            link,
            record,
            child_records,
        });
    }
    let policy = gw.policy();
    let mut held_back = Vec::new();
    if restriction_applies(
        &policy,
        who.role,
        &who.agency,
        who.agency_kind,
        Purpose::Audit,
    ) {
        let mut involved: Vec<&str> = matches
            .iter()
            .flat_map(|m| {
                std::iter::once(m.link.child_id.as_str())
                    .chain(m.record.iter().filter_map(|r| r.child_id.as_deref()))
            })
            .collect();
        involved.sort_unstable();
        involved.dedup();
        let restricted = gw.index.restricted(&involved).await?;
        for m in &mut matches {
            let record_child = m.record.as_ref().and_then(|r| r.child_id.as_deref());
            let restricted = restricted.contains(&m.link.child_id)
                || record_child.is_some_and(|c| restricted.contains(c));
            if !restricted {
                continue;
            }
            for r in m.record.iter_mut().chain(m.child_records.iter_mut()) {
                r.hold_back_address();
                held_back.push(format!("{}/{}", r.source, r.local_id));
            }
        }
    }
    // The queue shows the records' identities: the entry names every child and record shown.
    let mut children: Vec<&str> = matches.iter().map(|m| m.link.child_id.as_str()).collect();
    children.sort_unstable();
    children.dedup();
    let shown: Vec<String> = matches
        .iter()
        .flat_map(|m| m.record.iter().chain(m.child_records.iter()))
        .map(|r| format!("{}/{}", r.source, r.local_id))
        .collect();
    let detail = json!({
        "returned": matches.len(),
        "children": children,
        "records": shown,
        "address_held_back": held_back,
    });
    gw.record(
        who,
        "match_review",
        None,
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    let m = gw.index.matcher();
    Ok(ReviewQueue {
        matches,
        upper: m.upper,
        lower: m.lower,
    })
}

/// A decision on a proposed match (confirm, reject) or a link (confirm, split), from `body`
/// (`schemas/match-decision.schema.json`). Data administrators only.
pub async fn decide(
    gw: &Gateway,
    who: &Principal,
    id: &str,
    body: &[u8],
) -> Result<Decided, Error> {
    const ACTION: &str = "match_decision";
    admin_only(gw, who, ACTION, None).await?;
    let (decision, reason) = match parse(gw, body) {
        Ok(d) => d,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    // The change and its audit entry commit in one transaction: if the entry cannot be
    // written, nothing changes.
    let decided = linkage::decide(&gw.index, id, decision, &who.user, reason.as_deref(), |d| {
        let detail = json!({
            "match": d.id,
            "decision": d.decision,
            "source": d.source,
            "local_id": d.local_id,
            "previous_child": d.previous_child_id,
            "reason": reason,
        });
        entry(who, ACTION, Some(&d.child_id), None, "changed", detail)
    })
    .await;
    match decided {
        Ok(d) => Ok(d),
        Err(DecisionError::NotFound) => {
            let e = Error::NotFound("no match with that id");
            Err(gw.refuse(who, ACTION, None, None, e).await)
        }
        Err(DecisionError::NotApplicable(status)) => {
            let e = Error::Conflict(format!("a {status} match cannot take that decision"));
            Err(gw.refuse(who, ACTION, None, None, e).await)
        }
        Err(DecisionError::Audit(e)) => {
            tracing::error!(error = %e, "match decision not applied: audit append failed");
            Err(Error::AuditUnavailable)
        }
        Err(DecisionError::Db(e)) => Err(e.into()),
    }
}

fn parse(gw: &Gateway, body: &[u8]) -> Result<(Decision, Option<String>), Error> {
    let value = validated(body, |v| gw.schemas.match_decision_errors(v), "decision")?;
    let decision: Decision =
        serde_json::from_value(value.get("decision").cloned().unwrap_or(Value::Null))
            .map_err(|e| Error::field("/decision", e.to_string()))?;
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .map(String::from);
    Ok((decision, reason))
}

/// A child's link history: every source record linked to it now or before, how, with what
/// score and why, and every decision a person took. Data administrators and IG officers.
pub async fn history(gw: &Gateway, who: &Principal, child: &str) -> Result<LinkHistory, Error> {
    const ACTION: &str = "link_history";
    if !matches!(who.role, Role::DataAdmin | Role::IgOfficer) {
        let e =
            Error::Forbidden("link history is open to data administrators and IG officers only");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    }
    let Some(links) = linkage::link_history(&gw.index, child).await? else {
        let e = Error::NotFound("no child with that id");
        return Err(gw.refuse(who, ACTION, Some(child), None, e).await);
    };
    let detail = json!({"returned": links.len()});
    gw.record(
        who,
        ACTION,
        Some(child),
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    Ok(LinkHistory {
        child: child.to_string(),
        links,
    })
}
