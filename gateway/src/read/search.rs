//! Finding a child: by NHS number, UPN, a source's local id and/or demographics, through the
//! master child index. Every search is audited with what it found, before the answer leaves.
//!
//! A child the searcher has no relationship with is answered with its id, what the searcher's
//! own terms matched on, and how access is gained — nothing the searcher did not type (no
//! grade, probability or per-field comparison). A local id is searched only in the searcher's
//! own agency's sources: in anyone else's it would tell them whether that agency holds a record.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::foundation::config::AgencyKind;
use crate::pipeline::authorise::{Effect, Question};

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::relate::{self, Relationship};
use crate::pipeline::resolve::{Found, Search};
use weft_ids::{NhsNumber, Upn};

const ACTION: &str = "search";

/// What a search returns: each child found, best first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub children: Vec<Hit>,
    /// By child id, for the children this searcher has a relationship with only: what tells
    /// them apart, as the index's records hold it and only as far as policy lets this searcher
    /// see it for this purpose (`identity.core` for name, date of birth and sex;
    /// `education.enrolment` for the school) — so the right child can be chosen before anything
    /// is opened. A child with nothing visible, or no relationship, has no entry.
    pub shown: BTreeMap<String, Distinguishing>,
}

/// One child found. With a relationship, its grade and why; without, only that it matches and
/// how access is gained.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub id: String,
    /// `nhs_number`, `upn`, `local_id` or `demographics`: which of the searcher's terms matched.
    pub matched_on: &'static str,
    /// `granted` (a relationship, listed) or `no_relationship`.
    pub access: &'static str,
    pub relationship: Vec<Relationship>,
    /// For `no_relationship`: how access is gained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how_to_gain_access: Option<&'static str>,
    /// With a relationship: the match's grade, probability and per-field explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Found>,
}

/// What distinguishes a found child, from the records a searcher's policy lets them see.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Distinguishing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// The schools (by name) whose records are linked to the child.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schools: Vec<String>,
}

/// Searches the index for the search in `body` (`schemas/search.schema.json`).
pub async fn search(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<SearchResult, Error> {
    search_marked(gw, who, body, None).await
}

/// [`search`], marked as made for a police investigation or a section 47 enquiry
/// (`exemption`): the search is kept out of the found child's subject access reports until its
/// release ([`super::sar`]).
pub async fn search_marked(
    gw: &Gateway,
    who: &Principal,
    body: &[u8],
    exemption: Option<&str>,
) -> Result<SearchResult, Error> {
    let parsed = super::sar::check_exemption(who, exemption).and_then(|()| parse(gw, who, body));
    let (query, purpose, terms) = match parsed {
        Ok(q) => q,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let children = gw.index.find(&query).await?;
    let mut hits = Vec::with_capacity(children.len());
    for found in &children {
        let relationship = gw.relationships(who, &found.id).await?.unwrap_or_default();
        let related = !relationship.is_empty();
        hits.push(Hit {
            id: found.id.clone(),
            matched_on: found.matched_on,
            access: if related {
                "granted"
            } else {
                "no_relationship"
            },
            relationship,
            how_to_gain_access: (!related).then_some(relate::NO_RELATIONSHIP),
            r#match: related.then(|| found.clone()),
        });
    }
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let child = match ids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let outcome = if ids.is_empty() { "no_match" } else { "found" };
    // Distinguishing details only for the children the searcher may open: a search without a
    // relationship says that a child matches and nothing more.
    let granted: Vec<&str> = hits
        .iter()
        .filter(|h| h.access == "granted")
        .map(|h| h.id.as_str())
        .collect();
    let (shown, categories) = distinguishing(gw, who, purpose, &granted).await?;
    // What was searched for, as typed: a search that found nobody is traced by its terms. The
    // audit log is protected like the data it describes.
    let mut detail = json!({
        "terms": terms,
        "children": ids,
        "matched_on": children.iter().map(|c| c.matched_on).collect::<Vec<_>>(),
        "grades": children.iter().map(|c| c.grade).collect::<Vec<_>>(),
        "access": hits.iter().map(|h| h.access).collect::<Vec<_>>(),
        "shown": categories,
    });
    super::sar::defer(gw, &mut detail, exemption);
    gw.record(who, ACTION, child, Some(purpose), outcome, detail)
        .await?;
    Ok(SearchResult {
        children: hits,
        shown,
    })
}

/// Most children whose distinguishing details a search returns.
const DISTINGUISH_AT_MOST: usize = 20;

/// What tells the found children apart, from the index's own copy of each source record's
/// demographics, each record's values shown only where policy permits the category outright
/// (not under consent, not under break-glass) for this searcher, purpose and the record's
/// agency kind. Returns the details and the categories shown, for the audit entry.
async fn distinguishing(
    gw: &Gateway,
    who: &Principal,
    purpose: Purpose,
    ids: &[&str],
) -> Result<(BTreeMap<String, Distinguishing>, BTreeSet<&'static str>), Error> {
    let policy = gw.policy();
    let permits = |kind: AgencyKind, category: &str| {
        policy
            .decide(&Question {
                role: who.role,
                agency: &who.agency,
                kind,
                category,
                purpose,
            })
            .effect
            == Effect::Permit
    };
    let mut shown = BTreeMap::new();
    let mut categories = BTreeSet::new();
    for id in ids.iter().take(DISTINGUISH_AT_MOST) {
        let rows = sqlx::query(
            "SELECT source, demographics FROM source_records WHERE child_id = $1 \
             ORDER BY source, local_id",
        )
        .bind(*id)
        .fetch_all(&gw.store.pool)
        .await?;
        let mut d = Distinguishing::default();
        for row in &rows {
            let source: String = row.try_get("source")?;
            let Some(agency) = gw
                .config
                .sources
                .iter()
                .find(|s| s.id == source)
                .and_then(|s| gw.config.agency(&s.agency))
            else {
                continue;
            };
            if permits(agency.kind, "identity.core") {
                let text: String = row.try_get("demographics")?;
                let demo: weft_adapters::Demographics =
                    serde_json::from_str(&text).unwrap_or_default();
                categories.insert("identity.core");
                d.given_name = d.given_name.or(demo.given_name);
                d.family_name = d.family_name.or(demo.family_name);
                d.birth_date = d.birth_date.or(demo.birth_date);
                d.sex = d.sex.or(demo.sex);
            }
            if agency.kind == AgencyKind::Education
                && permits(agency.kind, "education.enrolment")
                && !d.schools.contains(&agency.name)
            {
                categories.insert("education.enrolment");
                d.schools.push(agency.name.clone());
            }
        }
        let nothing = d.given_name.is_none()
            && d.family_name.is_none()
            && d.birth_date.is_none()
            && d.sex.is_none()
            && d.schools.is_empty();
        if !nothing {
            shown.insert(id.to_string(), d);
        }
    }
    Ok((shown, categories))
}

fn parse(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<(Search, Purpose, Value), Error> {
    let value = validated(body, |v| gw.schemas.search_errors(v), "search")?;
    let mut terms = value.clone();
    if let Some(t) = terms.as_object_mut() {
        t.remove("purpose");
    }
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let purpose = super::view::purpose(text("purpose"))?;
    let mut q = Search::default();
    if let Some(n) = text("nhs_number") {
        q.nhs_number = Some(
            NhsNumber::parse(n).map_err(|e| Error::unprocessable("/nhs_number", e.to_string()))?,
        );
    }
    if let Some(u) = text("upn") {
        q.upn = Some(Upn::parse(u).map_err(|e| Error::unprocessable("/upn", e.to_string()))?);
    }
    if let Some(l) = value.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        gw.own_source(who, &part("source"), "/local_id/source")?;
        q.local_id = Some((part("source"), part("id")));
    }
    let demographics = weft_adapters::Demographics {
        given_name: text("given_name").map(String::from),
        family_name: text("family_name").map(String::from),
        birth_date: text("birth_date").map(String::from),
        sex: text("sex").map(String::from),
        postcode: text("postcode").map(String::from),
        ..weft_adapters::Demographics::default()
    };
    if demographics != weft_adapters::Demographics::default() {
        q.demographics = Some(demographics);
    }
    q.certain_only = value
        .get("certain_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((q, purpose, terms))
}
