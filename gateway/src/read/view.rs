//! The read path: one child's merged view, for one purpose. It runs the pipeline's stages in
//! order — resolve, relate (refusing before any source is asked when no relationship is
//! possible), fan out, relate's confirmation and authorise, merge — writes the audit entry
//! (with the relationship that allowed it) before anything is
//! returned, and raises the access notification a protected child's allocated worker is owed.
//! Every interface calls [`view`]; none can skip a stage.

use chrono::Utc;
use serde_json::json;

use crate::delivery::outbox::{ts, NewDelivery};
use crate::delivery::routing::{read_facts, ChildFacts};
use crate::foundation::config::AgencyKind;
use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::consent::{self, Consents};
use crate::pipeline::authorise::{
    grants, judge, listed_categories, may_know, relate, restriction_applies, Context,
};
use crate::pipeline::fanout::fan_out_to;
use crate::pipeline::merge::{merge, Disclosure, View};

const ACTION: &str = "view";

/// The alert name of the notification to a protected child's allocated worker.
pub const ACCESS: &str = "access_notification";

/// Parses the purpose a request names: required, and one of the vocabulary's.
pub fn purpose(raw: Option<&str>) -> Result<Purpose, Error> {
    let raw = raw.ok_or_else(|| Error::field("/purpose", "a purpose of use is required"))?;
    raw.parse::<Purpose>()
        .map_err(|e| Error::field("/purpose", e.to_string()))
}

/// The merged view of `child` for the purpose named, as `who` may see it. A refusal (no
/// purpose, no such child) is audited like a view.
pub async fn view(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    purpose_named: Option<&str>,
) -> Result<View, Error> {
    view_marked(gw, who, child, purpose_named, None).await
}

/// [`view`], marked as made for a police investigation or a section 47 enquiry (`exemption`):
/// the access is kept out of subject access reports until its release ([`super::sar`]).
pub async fn view_marked(
    gw: &Gateway,
    who: &Principal,
    child: &str,
    purpose_named: Option<&str>,
    exemption: Option<&str>,
) -> Result<View, Error> {
    let purpose = match purpose(purpose_named) {
        Ok(p) => p,
        Err(e) => return Err(gw.refuse(who, ACTION, Some(child), None, e).await),
    };
    if let Err(e) = super::sar::check_exemption(who, exemption) {
        return Err(gw.refuse(who, ACTION, Some(child), Some(purpose), e).await);
    }
    // The grant in force, if any, is read with the links: a grant can give the relationship
    // and open kinds of source the fan-out would otherwise pass over.
    let Some((links, grant)) = grants::links_and_active(&gw.store, who, child).await? else {
        let e = Error::NotFound("no child with that id");
        return Err(gw.refuse(who, ACTION, Some(child), Some(purpose), e).await);
    };
    let grant = grant.filter(|g| g.purpose == purpose);
    // Relate. The index's links may already show a relationship to confirm from the
    // practitioner's own agency's record (a roll, an allocation, a force's or a trust's
    // records): then the sources are asked at once, with the register read alongside.
    // Otherwise Weft's own records (a referral, the MASH's triage) or a grant must show one
    // before any partner system is asked.
    let wanted = relate::relations(&gw.config.relationships, who.role);
    let own_la = relate::own_la(&gw.config.agencies, who);
    let none = relate::Records::default();
    let from_links = relate::candidates(&wanted, who, own_la, &gw.sources, &links, &none, None);
    let policy = gw.policy();
    let consents = async {
        if policy.may_need_consent(who.role, &who.agency, who.agency_kind, purpose) {
            consent::load(&gw.store, child).await
        } else {
            Ok(Consents::default())
        }
    };
    // Only the sources whose kind this viewer could be shown are asked, with two exceptions:
    // the practitioner's own agency's sources that must confirm a relationship, and — when a
    // restriction would hold fields back from this viewer — the sources that can mark a child
    // restricted. Every other source receives no request at all.
    let restricts = restriction_applies(&policy, who.role, &who.agency, who.agency_kind, purpose);
    let ask = |pending: std::collections::BTreeSet<String>, grant: Option<grants::Grant>| {
        let policy = &policy;
        move |s: &crate::sources::Source| {
            pending.contains(&s.id)
                || (restricts && s.marks_restrictions)
                || may_know(
                    policy,
                    who.role,
                    &who.agency,
                    who.agency_kind,
                    purpose,
                    s.agency.kind,
                    grant.as_ref(),
                )
        }
    };
    let (candidates, consents, fetched, records_read) = if from_links.is_empty() {
        let records = relate::records(&gw.store, &wanted, who, child).await?;
        let candidates = relate::candidates(
            &wanted,
            who,
            own_la,
            &gw.sources,
            &links,
            &records,
            grant.as_ref(),
        );
        if candidates.is_empty() {
            let e = relate::refusal();
            return Err(gw.refuse(who, ACTION, Some(child), Some(purpose), e).await);
        }
        let asked = ask(candidates.pending_sources(), grant.clone());
        let (consents, fetched) = tokio::join!(consents, fan_out_to(&gw.sources, &links, asked));
        (candidates, consents?, fetched, true)
    } else {
        let asked = ask(from_links.pending_sources(), grant.clone());
        let (consents, fetched) = tokio::join!(consents, fan_out_to(&gw.sources, &links, asked));
        (from_links, consents?, fetched, false)
    };
    let recently_left = gw.config.relationships.recently_left_days;
    let mut relationship = relate::confirm(candidates, who, recently_left, &fetched);
    if !records_read {
        // The links promised what the records did not confirm: Weft's own records and the
        // grant may still show a relationship.
        if relationship.is_empty() {
            let records = relate::records(&gw.store, &wanted, who, child).await?;
            let c = relate::candidates(&wanted, who, own_la, &gw.sources, &[], &records, None);
            relationship = relate::confirm(c, who, recently_left, &fetched);
        }
        relationship.extend(grant.as_ref().map(relate::of_grant));
    }
    if relationship.is_empty() {
        let e = relate::refusal();
        return Err(gw.refuse(who, ACTION, Some(child), Some(purpose), e).await);
    }
    // Read before policy takes the fetch: the access notification needs the child's status and
    // worker even when this viewer may not see the worker.
    let facts = (who.agency_kind != AgencyKind::SocialCare).then(|| read_facts(&fetched));
    let ctx = Context {
        policy: &policy,
        role: who.role,
        agency: &who.agency,
        kind: who.agency_kind,
        purpose,
        consents: &consents,
        grant: grant.as_ref(),
    };
    let listed = listed_categories(&ctx);
    let (view, disclosure) = merge(
        child,
        purpose,
        relationship.clone(),
        &listed,
        judge(&ctx, fetched),
    );
    let outcome = if !disclosure.break_glass.is_empty() {
        tracing::warn!(grant = ?grant.as_ref().map(|g| &g.id), "view released data under break-glass");
        "break_glass"
    } else if disclosure.shown.is_empty() {
        "denied"
    } else {
        "shown"
    };
    let mut detail =
        serde_json::to_value(&disclosure).map_err(|e| Error::Internal(e.to_string()))?;
    super::sar::defer(gw, &mut detail, exemption);
    detail["relationship"] =
        serde_json::to_value(&relationship).map_err(|e| Error::Internal(e.to_string()))?;
    gw.record(who, ACTION, Some(child), Some(purpose), outcome, detail)
        .await?;
    if let Some(facts) = &facts {
        access_notification(gw, who, child, purpose, facts, &disclosure).await?;
    }
    Ok(view)
}

/// The access notification: someone outside social care was shown `social_care.status` for a
/// child whose status the rules name (a protection plan, looked after). The allocated worker is
/// told who, when and why. Called after the view's audit entry is written; `facts` were read
/// from the same fetch the view was built from. An error means the notification could not be
/// queued, and the view fails closed.
async fn access_notification(
    gw: &Gateway,
    p: &Principal,
    child: &str,
    purpose: Purpose,
    facts: &ChildFacts,
    disclosure: &Disclosure,
) -> Result<(), Error> {
    if p.agency_kind == AgencyKind::SocialCare
        || !disclosure.shown.contains("social_care.status")
        || !gw.routing.access_statuses.contains(&facts.status)
    {
        return Ok(());
    }
    let to = gw.routing.resolve_strict(&gw.routing.access, ACCESS, facts);
    if to.is_empty() {
        return Ok(());
    }
    let now = ts(Utc::now());
    let deliveries: Vec<NewDelivery> = to
        .into_iter()
        .map(|r| NewDelivery {
            topic: "notification",
            subject: format!("access:{child}:{now}"),
            child: Some(child.to_string()),
            to: r.to,
            webhook: None,
            data: json!({
                "notification": ACCESS,
                "child": child,
                "child_status": facts.status,
                "viewed_by": {"user": p.user, "agency": p.agency, "agency_kind": p.agency_kind, "role": p.role},
                "viewed_at": now,
                "purpose": purpose,
                "categories": ["social_care.status"],
            }),
        })
        .collect();
    let mut conn = gw.store.pool.acquire().await?;
    gw.outbox
        .enqueue(&mut conn, &deliveries)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "access notification could not be queued; failing closed");
            Error::Unavailable("the access notification could not be queued")
        })?;
    gw.outbox.wake();
    Ok(())
}
