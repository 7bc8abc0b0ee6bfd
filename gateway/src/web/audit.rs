//! The IG officer's audit explorer: the audit log filtered by child, user, agency, purpose,
//! outcome and dates, each entry in words, a page at a time, with the chain's verification state
//! beside it. It calls [`crate::read::audit::entries`] — the function `GET /v1/audit` calls, with
//! the same IG-only rule, the same scope (`audit.ig_lead_agencies`) and the same audit entry of
//! the read — and [`crate::read::audit::verify`], the check `weft audit verify` makes.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDate, TimeZone, Utc};
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::foundation::audit::{self, Recorded};
use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::read::sar;
use crate::web::children::{form_date, BadDate, FieldError};
use crate::web::render::{self, Page};
use crate::web::session::SignedIn;

/// Entries on one page of the explorer.
pub const PAGE: u32 = 50;

/// The outcomes an entry can have, in the order the filter offers them.
const OUTCOMES: &[(&str, &str)] = &[
    ("shown", "Shown"),
    ("break_glass", "Shown under break-glass"),
    ("denied", "Denied"),
    ("rejected", "Rejected"),
    ("not_found", "Not found"),
    ("found", "Found"),
    ("no_match", "No match"),
    ("granted", "Granted"),
    ("recorded", "Recorded"),
    ("released", "Released"),
];

/// The filters' longest text: an id or a user id, never an essay.
const MAX_TEXT: usize = 200;

pub fn routes() -> Router<Gateway> {
    Router::new().route("/ig/audit", get(explorer))
}

/// One entry, in words.
#[derive(Debug, Serialize)]
pub struct Row {
    pub seq: i64,
    pub at: String,
    pub at_iso: String,
    pub user: String,
    pub role: String,
    pub agency: String,
    pub what: String,
    pub child: Option<String>,
    pub why: Option<String>,
    pub shown: Vec<String>,
    pub withheld: Vec<String>,
    pub lawful_basis: Vec<String>,
    pub outcome: String,
    pub outcome_label: String,
    /// The tag's colour class: green for shown, red for refused, blue otherwise.
    pub outcome_tag: &'static str,
}

fn row(gw: &Gateway, e: &Recorded) -> Row {
    let words = sar::describe(gw, e);
    let withheld = e
        .entry
        .detail
        .get("withheld")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(sar::category_words)
                .collect()
        })
        .unwrap_or_default();
    let outcome = e.entry.outcome.clone();
    Row {
        seq: e.seq,
        at: e.entry.at.format("%-d %b %Y, %H:%M:%S").to_string(),
        at_iso: e.entry.at.to_rfc3339(),
        user: e.entry.user.clone(),
        role: words.who.role,
        agency: words.who.agency,
        what: words.what,
        child: e.entry.child.clone(),
        why: words.why,
        shown: words.categories,
        withheld,
        lawful_basis: words.lawful_basis,
        outcome_label: OUTCOMES
            .iter()
            .find(|(k, _)| *k == outcome)
            .map(|(_, l)| l.to_string())
            .unwrap_or_else(|| {
                let words = outcome.replace('_', " ");
                let mut chars = words.chars();
                chars
                    .next()
                    .map(|c| c.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }),
        outcome_tag: match outcome.as_str() {
            "shown" | "break_glass" | "found" => "govuk-tag--green",
            "denied" | "rejected" | "not_found" | "forbidden" => "govuk-tag--red",
            _ => "govuk-tag--blue",
        },
        outcome,
    }
}

/// The chain's state as the page shows it.
#[derive(Debug, Serialize)]
struct Chain {
    ok: bool,
    entries: i64,
    checkpointed: bool,
    checkpoints: usize,
    sealed: i64,
    sealed_at: Option<String>,
    unsealed: i64,
    problem_kind: Option<&'static str>,
    problem_seq: Option<i64>,
    problem: Option<String>,
}

/// A filter that is set, with the link that removes it.
#[derive(Debug, Serialize)]
struct Selected {
    label: String,
    remove: String,
}

/// The filters as a query string, without `skip` and with `extra` added.
fn query_string(
    values: &BTreeMap<String, String>,
    skip: &[&str],
    extra: &[(&str, String)],
) -> String {
    let mut pairs: Vec<(String, String)> = values
        .iter()
        .filter(|(k, v)| {
            !v.trim().is_empty() && !skip.contains(&k.as_str()) && k.as_str() != "before"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

fn to_utc(d: &str) -> Option<chrono::DateTime<Utc>> {
    let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

async fn explorer(
    State(gw): State<Gateway>,
    who: SignedIn,
    Query(values): Query<BTreeMap<String, String>>,
) -> Response {
    let text = |k: &str| {
        values
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let mut errors = Vec::new();
    let mut q = audit::Query {
        limit: Some(PAGE),
        ..Default::default()
    };
    for (field, slot) in [("child", &mut q.child), ("user", &mut q.user)] {
        match text(field) {
            Some(v) if v.chars().count() > MAX_TEXT => {
                errors.push(FieldError::new(field, "Enter 200 characters or fewer"))
            }
            v => *slot = v,
        }
    }
    let agencies = agency_options(&gw);
    q.agency = text("agency");
    if q.agency
        .as_ref()
        .is_some_and(|a| !agencies.iter().any(|(id, _)| id == a))
    {
        errors.push(FieldError::new("agency", "Select an agency from the list"));
    }
    q.purpose = text("purpose");
    if q.purpose
        .as_ref()
        .is_some_and(|p| p.parse::<Purpose>().is_err())
    {
        errors.push(FieldError::new("purpose", "Select a purpose from the list"));
    }
    q.outcome = text("outcome");
    if q.outcome
        .as_ref()
        .is_some_and(|o| !OUTCOMES.iter().any(|(k, _)| k == o))
    {
        errors.push(FieldError::new(
            "outcome",
            "Select an outcome from the list",
        ));
    }
    let map: BTreeMap<String, String> = values.clone();
    let from = form_date(&map, "from");
    let to = form_date(&map, "to");
    match &from {
        Ok(Some(d)) => q.from = to_utc(d),
        Ok(None) => {}
        Err(BadDate) => errors.push(FieldError::new(
            "from",
            "Enter a real date, not in the future, like 27 3 2026",
        )),
    }
    match &to {
        // Up to and including the day given.
        Ok(Some(d)) => q.to = to_utc(d).map(|t| t + chrono::Duration::days(1)),
        Ok(None) => {}
        Err(BadDate) => errors.push(FieldError::new(
            "to",
            "Enter a real date, not in the future, like 27 3 2026",
        )),
    }
    if let (Some(f), Some(t)) = (q.from, q.to) {
        if t <= f {
            errors.push(FieldError::new(
                "to",
                "The end date must be the same as or after the start date",
            ));
        }
    }
    match text("before").map(|b| b.parse::<i64>()) {
        None => {}
        Some(Ok(b)) if b > 0 => q.before = Some(b),
        Some(_) => {
            return render::error_page(Some(&who), &Error::invalid("before: not a page of the log"))
        }
    }
    let page = |status: StatusCode| {
        Page::new("ig_audit.html", "Audit log", &who)
            .status(status)
            .with("values", &values)
            .with("errors", &errors)
            .with("agencies", any("Any agency", agencies.iter().cloned()))
            .with(
                "purposes",
                any(
                    "Any purpose",
                    Purpose::ALL
                        .iter()
                        .map(|p| (p.as_str().to_string(), sar::purpose_words(p.as_str()))),
                ),
            )
            .with(
                "outcomes",
                any(
                    "Any outcome",
                    OUTCOMES.iter().map(|(k, l)| (k.to_string(), l.to_string())),
                ),
            )
    };
    if !errors.is_empty() {
        return page(StatusCode::BAD_REQUEST).render();
    }
    let entries = match crate::read::audit::entries(&gw, &who.principal, Ok(q.clone())).await {
        Ok(e) => e,
        Err(e) => return render::error_page(Some(&who), &e),
    };
    let chain = match crate::read::audit::verify(&gw, &who.principal).await {
        Ok(v) => {
            let v2 = &v.verification;
            Chain {
                ok: v2.problem.is_none(),
                entries: v2.entries,
                checkpointed: v.checkpointed,
                checkpoints: v2.checkpoints,
                sealed: v2.sealed,
                sealed_at: v2.sealed_at.clone(),
                unsealed: v2.unsealed(),
                problem_kind: v2.problem.as_ref().map(|p| p.kind.as_str()),
                problem_seq: v2.problem.as_ref().map(|p| p.seq),
                problem: v2.problem.as_ref().map(|p| p.what.clone()),
            }
        }
        Err(e) => return render::error_page(Some(&who), &e),
    };
    let rows: Vec<Row> = entries.iter().map(|e| row(&gw, e)).collect();
    let older = (rows.len() == PAGE as usize)
        .then(|| {
            rows.last()
                .map(|r| query_string(&values, &[], &[("before", r.seq.to_string())]))
        })
        .flatten();
    let selected = selected(&values, &agencies);
    page(StatusCode::OK)
        .with("rows", rows)
        .with("chain", chain)
        .with("selected", selected)
        .with("older", older)
        .with("paged", q.before.is_some())
        .with("first", query_string(&values, &[], &[]))
        .render()
}

/// A select's options: "any" first.
fn any(label: &str, options: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    std::iter::once((String::new(), label.to_string()))
        .chain(options)
        .collect()
}

/// The agencies the filter offers: the partnership's, and Weft itself (the matcher's entries).
fn agency_options(gw: &Gateway) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = gw
        .config
        .agencies
        .iter()
        .map(|a| (a.id.clone(), a.name.clone()))
        .collect();
    out.push(("weft".into(), sar::agency_name(gw, "weft")));
    out
}

/// The filters that are set, each with a link to the same page without it.
fn selected(values: &BTreeMap<String, String>, agencies: &[(String, String)]) -> Vec<Selected> {
    let mut out = Vec::new();
    let get = |k: &str| values.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let remove = |fields: &[&str]| format!("/ig/audit?{}", query_string(values, fields, &[]));
    if let Some(c) = get("child") {
        out.push(Selected {
            label: format!("Child: {c}"),
            remove: remove(&["child"]),
        });
    }
    if let Some(u) = get("user") {
        out.push(Selected {
            label: format!("User: {u}"),
            remove: remove(&["user"]),
        });
    }
    if let Some(a) = get("agency") {
        let name = agencies
            .iter()
            .find(|(id, _)| id == a)
            .map(|(_, n)| n.as_str())
            .unwrap_or(a);
        out.push(Selected {
            label: format!("Agency: {name}"),
            remove: remove(&["agency"]),
        });
    }
    if let Some(p) = get("purpose") {
        out.push(Selected {
            label: format!("Purpose: {}", p.replace('_', " ")),
            remove: remove(&["purpose"]),
        });
    }
    if let Some(o) = get("outcome") {
        out.push(Selected {
            label: format!("Outcome: {}", o.replace('_', " ")),
            remove: remove(&["outcome"]),
        });
    }
    for (field, label) in [("from", "From"), ("to", "To")] {
        let parts: Vec<&str> = ["day", "month", "year"]
            .iter()
            .filter_map(|p| get(&format!("{field}-{p}")))
            .collect();
        if !parts.is_empty() {
            let f = [
                format!("{field}-day"),
                format!("{field}-month"),
                format!("{field}-year"),
            ];
            let skip: Vec<&str> = f.iter().map(String::as_str).collect();
            out.push(Selected {
                label: format!("{label}: {}", parts.join("/")),
                remove: remove(&skip),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_link_keeps_the_other_filters_and_drops_the_page() {
        let values: BTreeMap<String, String> = [
            ("child", "c-1"),
            ("user", "a b&c"),
            ("before", "40"),
            ("outcome", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(query_string(&values, &["child"], &[]), "user=a+b%26c");
        assert_eq!(
            query_string(&values, &[], &[("before", "9".into())]),
            "child=c-1&user=a+b%26c&before=9"
        );
        let s = selected(&values, &[]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].remove, "/ig/audit?user=a+b%26c");
    }

    #[test]
    fn dates_are_whole_days_in_utc() {
        assert_eq!(
            to_utc("2026-03-27").map(|t| t.to_rfc3339()),
            Some("2026-03-27T00:00:00+00:00".into())
        );
        assert!(to_utc("2026-02-31").is_none());
    }
}
