//! The audit log as an information-governance officer reads it: entries filtered by child,
//! user and time, newest first — their own agency's staff and data, or the whole partnership's
//! for its IG lead (`audit.ig_lead_agencies`). Reading the log is itself audited.

use serde_json::json;

use crate::foundation::audit::{self, Query, Recorded};
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::error::{page_limit, Error};
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;

const ACTION: &str = "audit_query";

/// Audit entries matching `q`. IG officers only. `q` is `Err` when the interface could not read
/// the filters; that refusal is audited too.
pub async fn entries(
    gw: &Gateway,
    who: &Principal,
    q: Result<Query, Error>,
) -> Result<Vec<Recorded>, Error> {
    if who.role != Role::IgOfficer {
        let e = Error::Forbidden("the audit log is open to information-governance officers only");
        return Err(gw.refuse(who, ACTION, None, None, e).await);
    }
    let q = match q
        .and_then(|q| page_limit(q.limit).map(|_| q))
        .and_then(|q| match q.before {
            Some(b) if b < 1 => Err(Error::field("/before", "a sequence number, at least 1")),
            _ => Ok(q),
        }) {
        Ok(q) => q,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    // The partnership's IG lead reads the whole log; any other IG officer what concerns their
    // own agency: its staff's entries and the reads of its data.
    let scope = (!gw.is_ig_lead(who)).then(|| audit::Scope {
        agency: who.agency.clone(),
        sources: gw.sources_of(&who.agency),
    });
    let entries = audit::search(&gw.store, &q, scope.as_ref())
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let detail = json!({"returned": entries.len(), "scope": if scope.is_some() { "agency" } else { "partnership" }, "filters": {
        "child": q.child, "user": q.user, "from": q.from, "to": q.to,
        "agency": q.agency, "purpose": q.purpose, "outcome": q.outcome, "before": q.before
    }});
    gw.record(
        who,
        ACTION,
        q.child.as_deref(),
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    Ok(entries)
}

/// The chain's verification state, as `weft audit verify` finds it: the whole chain walked and
/// checked against the configured signed checkpoints, if any. IG officers only (they read it
/// beside the entries it vouches for); it names entries by number and problems by kind, never
/// anything an entry holds.
pub async fn verify(gw: &Gateway, who: &Principal) -> Result<Verified, Error> {
    if who.role != Role::IgOfficer {
        let e = Error::Forbidden("the audit log is open to information-governance officers only");
        return Err(gw.refuse(who, "audit_verify", None, None, e).await);
    }
    let key = gw.checkpointer.as_ref().map(|c| (c.dir(), c.public_key()));
    let verification = audit::verify_store(&gw.store, key.as_ref().map(|(d, k)| (*d, k)))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Verified {
        checkpointed: key.is_some(),
        verification,
    })
}

/// A verification, and whether there were checkpoints to verify against.
#[derive(Debug, Clone)]
pub struct Verified {
    pub checkpointed: bool,
    pub verification: audit::Verification,
}
