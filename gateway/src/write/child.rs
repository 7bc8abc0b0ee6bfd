//! A child as a concern or an event names it — by Weft id, national identifier, a source's local
//! id or demographics — and the one child of the index it names, if exactly one.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::resolve::Search;
use weft_ids::{NhsNumber, Upn};

/// A child as a payload names it, parsed.
pub(crate) struct ChildRef {
    weft_id: Option<String>,
    search: Search,
}

impl ChildRef {
    /// The source a local id in the payload names, if it names one.
    pub(crate) fn local_source(&self) -> Option<&str> {
        self.search.local_id.as_ref().map(|(s, _)| s.as_str())
    }
}

/// Turns a schema-valid `child` object into a search; identifiers that fail their check are a
/// 400 naming the field, so the reporter can correct them.
pub(crate) fn parse_child(v: &Value, at: &str) -> Result<ChildRef, Error> {
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let mut search = Search::default();
    if let Some(n) = text("nhs_number") {
        search.nhs_number = Some(
            NhsNumber::parse(n)
                .map_err(|e| Error::unprocessable(&format!("{at}/nhs_number"), e.to_string()))?,
        );
    }
    if let Some(u) = text("upn") {
        search.upn = Some(
            Upn::parse(u).map_err(|e| Error::unprocessable(&format!("{at}/upn"), e.to_string()))?,
        );
    }
    if let Some(l) = v.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        search.local_id = Some((part("source"), part("id")));
    }
    if let (Some(f), Some(g), Some(d)) =
        (text("family_name"), text("given_name"), text("birth_date"))
    {
        search.demographics = Some(weft_adapters::Demographics {
            family_name: Some(f.into()),
            given_name: Some(g.into()),
            birth_date: Some(d.into()),
            ..Default::default()
        });
    }
    Ok(ChildRef {
        weft_id: text("weft_id").map(String::from),
        search,
    })
}

/// The child a payload names: exactly one match, or none (`unmatched`, `ambiguous`).
pub(crate) async fn match_child(
    gw: &Gateway,
    child: &ChildRef,
) -> Result<(Option<String>, String), sqlx::Error> {
    if let Some(id) = &child.weft_id {
        if gw.index.links(id).await?.is_some() {
            return Ok((Some(id.clone()), "weft_id".into()));
        }
    }
    let found = gw.index.find(&child.search).await?;
    Ok(match found.as_slice() {
        [] => (None, "unmatched".into()),
        [one] => (Some(one.id.clone()), one.matched_on.into()),
        _ => (None, "ambiguous".into()),
    })
}

pub(crate) fn parse_time(v: &Value, pointer: &str) -> Result<DateTime<Utc>, Error> {
    let raw = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default();
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::unprocessable(pointer, format!("not an RFC 3339 time: {e}")))
}
