//! Finding a child: by NHS number, UPN, a source's local id and/or demographics, through the
//! master child index. Every search is audited with what it found, before the answer leaves.
//!
//! A child the searcher has no relationship with is answered with its id, what the searcher's
//! own terms matched on, and how access is gained — nothing the searcher did not type (no
//! grade, probability or per-field comparison). A local id is searched only in the searcher's
//! own agency's sources: in anyone else's it would tell them whether that agency holds a record.

use serde::Serialize;
use serde_json::{json, Value};

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

/// Searches the index for the search in `body` (`schemas/search.schema.json`).
pub async fn search(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<SearchResult, Error> {
    let (query, purpose, terms) = match parse(gw, who, body) {
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
    // What was searched for, as typed: a search that found nobody is traced by its terms. The
    // audit log is protected like the data it describes.
    let detail = json!({
        "terms": terms,
        "children": ids,
        "matched_on": children.iter().map(|c| c.matched_on).collect::<Vec<_>>(),
        "grades": children.iter().map(|c| c.grade).collect::<Vec<_>>(),
        "access": hits.iter().map(|h| h.access).collect::<Vec<_>>(),
    });
    gw.record(who, ACTION, child, Some(purpose), outcome, detail)
        .await?;
    Ok(SearchResult { children: hits })
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
