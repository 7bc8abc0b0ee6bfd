//! Finding a child: by NHS number, UPN, a source's local id and/or demographics, through the
//! master child index. Every search is audited with what it found, before the answer leaves.

use serde::Serialize;
use serde_json::{json, Value};

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::foundation::schema::validated;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::{Found, Search};
use weft_ids::{NhsNumber, Upn};

const ACTION: &str = "search";

/// What a search returns: each child found, best first, with its grade and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub children: Vec<Found>,
}

/// Searches the index for the search in `body` (`schemas/search.schema.json`).
pub async fn search(gw: &Gateway, who: &Principal, body: &[u8]) -> Result<SearchResult, Error> {
    let (query, purpose) = match parse(gw, body) {
        Ok(q) => q,
        Err(e) => return Err(gw.refuse(who, ACTION, None, None, e).await),
    };
    let children = gw.index.find(&query).await?;
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let child = match ids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let outcome = if ids.is_empty() { "no_match" } else { "found" };
    let detail = json!({
        "children": ids,
        "matched_on": children.iter().map(|c| c.matched_on).collect::<Vec<_>>(),
        "grades": children.iter().map(|c| c.grade).collect::<Vec<_>>(),
    });
    gw.record(who, ACTION, child, Some(purpose), outcome, detail)
        .await?;
    Ok(SearchResult { children })
}

fn parse(gw: &Gateway, body: &[u8]) -> Result<(Search, Purpose), Error> {
    let value = validated(body, |v| gw.schemas.search_errors(v), "search")?;
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let purpose = super::view::purpose(text("purpose"))?;
    let mut q = Search::default();
    if let Some(n) = text("nhs_number") {
        q.nhs_number =
            Some(NhsNumber::parse(n).map_err(|e| Error::field("/nhs_number", e.to_string()))?);
    }
    if let Some(u) = text("upn") {
        q.upn = Some(Upn::parse(u).map_err(|e| Error::field("/upn", e.to_string()))?);
    }
    if let Some(l) = value.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
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
    Ok((q, purpose))
}
