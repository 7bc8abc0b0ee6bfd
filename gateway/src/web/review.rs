//! The data administrator's match review queue: each uncertain match (and each `recheck` a model
//! upgrade asked) with the record in question and the proposed child's records side by side,
//! how each field compared in words, and the decision as a form. It calls what
//! `GET /v1/matches/review` and `POST /v1/matches/{id}/decision` call
//! ([`crate::write::matches`]): data administrators only, every look and every decision audited,
//! and the page shows the records the API returns and nothing more.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use weft_matching::Explained;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::resolve::linkage::{
    AMBIGUOUS, AMBIGUOUS_RULE, RECHECK, SECOND_RECORD, SECOND_RECORD_RULE,
};
use crate::pipeline::resolve::records::RecordIdentity;
use crate::web::forms::FieldError;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};
use crate::write::matches::{self, ReviewItem};

/// The longest reason a decision takes (`schemas/match-decision.schema.json`).
const REASON_MAX: usize = 1000;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/admin/matches", get(queue))
        .route("/admin/matches/{id}/decision", post(decide))
        .route("/admin/children/{id}/links", get(links))
}

/// One match as the page lays it out.
#[derive(Debug, Serialize)]
pub struct Item {
    pub id: String,
    pub recheck: bool,
    /// "74%", or empty when the row has no score.
    pub probability: String,
    pub proposed_at: String,
    pub model_version: Option<String>,
    /// The column headings: the record under review first, then the child's records.
    pub columns: Vec<String>,
    pub child: String,
    pub rows: Vec<FieldRow>,
    /// Rules that hold the pair back (twins, different verified identifiers), in words.
    pub rules: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FieldRow {
    pub label: &'static str,
    /// One value per column; empty when the record does not hold it.
    pub values: Vec<String>,
    /// How the matcher compared this field, in words; empty when it was not compared.
    pub compared: String,
    /// `for`, `against` or `none`: the tag beside the words.
    pub leaning: &'static str,
}

/// The rows of the side-by-side table: a label, the record's value, and the comparisons of the
/// explanation that are about it.
const ROWS: &[(&str, &[&str])] = &[
    ("First name", &["given_name"]),
    ("Middle names", &[]),
    ("Last name", &["family_name"]),
    ("Former last names", &[]),
    ("Date of birth", &["birth_date"]),
    ("Sex", &["sex"]),
    ("Postcode", &["postcode"]),
    (
        "Address",
        &["house_number", "street", "locality", "town", "region"],
    ),
    ("NHS number", &["nhs_number"]),
    ("Unique pupil number", &["upn"]),
    ("Other identifiers", &["other_id"]),
];

fn identifier(r: &RecordIdentity, kinds: &[&str], others: bool) -> String {
    r.identifiers
        .iter()
        .filter(|i| kinds.contains(&i.kind.as_str()) != others)
        .map(|i| {
            let mut text = if others {
                format!("{}: {}", i.kind.replace('_', " "), i.value)
            } else {
                i.value.clone()
            };
            if !i.valid {
                text.push_str(" (fails its check: not used to match)");
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn date(d: &Option<String>) -> String {
    d.as_deref()
        .map(|s| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.format("%-d %B %Y").to_string())
                .unwrap_or_else(|_| s.to_string())
        })
        .unwrap_or_default()
}

/// What the page says in place of an address held back from the reviewer: that it was, and
/// why, never any of it.
pub const ADDRESS_HELD_BACK: &str =
    "Held back: a child in this match is restricted, and your role may not see where they live";

fn value(r: &RecordIdentity, label: &str) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    match label {
        "First name" => text(&r.given_name),
        "Middle names" => text(&r.middle_names),
        "Last name" => text(&r.family_name),
        "Former last names" => r.former_family_names.join(", "),
        "Date of birth" => date(&r.birth_date),
        "Sex" => text(&r.sex),
        "Postcode" | "Address" if r.address_held_back => ADDRESS_HELD_BACK.into(),
        "Postcode" => text(&r.postcode),
        "Address" => r.address_lines.join(", "),
        "NHS number" => identifier(r, &["nhs_number"], false),
        "Unique pupil number" => identifier(r, &["upn"], false),
        _ => identifier(r, &["nhs_number", "upn"], true),
    }
}

/// A comparison's name in words.
fn comparison_label(c: &str) -> String {
    match c {
        "given_name" => "first name".into(),
        "family_name" => "last name".into(),
        "birth_date" => "date of birth".into(),
        "house_number" => "house number".into(),
        "nhs_number" => "NHS number".into(),
        "upn" => "unique pupil number".into(),
        "other_id" => "other identifier".into(),
        other => other.replace('_', " "),
    }
}

/// How much one comparison moved the score, in words: its weight is log2 of how much likelier
/// the agreement is between records of one child than of two.
fn strength(weight: f64) -> &'static str {
    match weight {
        w if w >= 4.0 => "strong evidence of the same child",
        w if w >= 1.5 => "some evidence of the same child",
        w if w > 0.0 => "weak evidence of the same child",
        w if w <= -4.0 => "strong evidence of two children",
        w if w <= -1.5 => "some evidence of two children",
        w if w < 0.0 => "weak evidence of two children",
        _ => "no evidence either way",
    }
}

/// One comparison of the explanation as a reviewer reads it.
pub fn explain(e: &Explained) -> String {
    if e.level == "missing" {
        return "Not in both records, so not compared".into();
    }
    let mut level = e.level.clone();
    if let Some(first) = level.get(0..1) {
        let upper = first.to_uppercase();
        level.replace_range(0..1, &upper);
    }
    let mut text = format!("{level}: {}", strength(e.weight));
    if e.term_frequency_adjusted {
        text.push_str(" (weighed by how common the name is)");
    }
    text
}

fn leaning(weights: impl Iterator<Item = f64>) -> &'static str {
    let total: f64 = weights.sum();
    if total > 0.0 {
        "for"
    } else if total < 0.0 {
        "against"
    } else {
        "none"
    }
}

/// A probability as a reviewer reads it: never "100%" for a match short of certain.
fn percent(p: f64) -> String {
    let pct = p * 100.0;
    if p >= 1.0 {
        "100%".into()
    } else if pct >= 99.95 {
        "over 99.9%".into()
    } else if pct >= 99.0 {
        format!("{:.1}%", (pct * 10.0).floor() / 10.0)
    } else {
        format!("{:.0}%", pct)
    }
}

/// How the page names a record's source: the agency's name, then the source.
fn source_label(gw: &Gateway, source: &str) -> String {
    gw.sources
        .all
        .iter()
        .find(|s| s.id == source)
        .map(|s| format!("{} ({source})", s.agency.name))
        .unwrap_or_else(|| source.to_string())
}

/// The page's layout of a queue item: only what the item holds.
pub fn item(gw: &Gateway, m: &ReviewItem) -> Item {
    let link = &m.link;
    let records: Vec<&RecordIdentity> = m.record.iter().chain(m.child_records.iter()).collect();
    let mut columns = Vec::new();
    if let Some(r) = &m.record {
        columns.push(format!("This record: {}", source_label(gw, &r.source)));
    } else {
        columns.push("This record (no longer held)".into());
    }
    for r in &m.child_records {
        columns.push(format!(
            "The child's record: {}",
            source_label(gw, &r.source)
        ));
    }
    let mut used = Vec::new();
    let rows = ROWS
        .iter()
        .filter_map(|(label, comparisons)| {
            let mut values: Vec<String> = records.iter().map(|r| value(r, label)).collect();
            if m.record.is_none() {
                values.insert(0, String::new());
            }
            let explained: Vec<&Explained> = link
                .explanation
                .iter()
                .filter(|e| comparisons.contains(&e.comparison.as_str()))
                .collect();
            used.extend(explained.iter().map(|e| e.comparison.clone()));
            if values.iter().all(String::is_empty) && explained.is_empty() {
                return None;
            }
            let several = explained.len() > 1;
            let compared = explained
                .iter()
                .filter(|e| !(several && e.level == "missing"))
                .map(|e| {
                    if several {
                        format!("{}: {}", comparison_label(&e.comparison), explain(e))
                    } else {
                        explain(e)
                    }
                })
                .collect::<Vec<_>>()
                .join(". ");
            Some(FieldRow {
                label,
                values,
                compared,
                leaning: leaning(explained.iter().map(|e| e.weight)),
            })
        })
        .collect();
    let mut rules: Vec<String> = link
        .explanation
        .iter()
        .filter(|e| e.comparison == "rule")
        .map(|e| e.level.clone())
        .collect();
    // Why a rule held the record for a person rather than linking it, first.
    match link.method.as_str() {
        SECOND_RECORD => rules.insert(0, SECOND_RECORD_RULE.into()),
        AMBIGUOUS => rules.insert(
            0,
            format!("{AMBIGUOUS_RULE}: both are proposed here, and confirming one ends the other"),
        ),
        _ => {}
    }
    // Anything the table has no row for still reaches the reviewer.
    rules.extend(
        link.explanation
            .iter()
            .filter(|e| e.comparison != "rule" && !used.contains(&e.comparison))
            .map(|e| format!("{}: {}", comparison_label(&e.comparison), explain(e))),
    );
    Item {
        id: link.id.clone(),
        recheck: link.method == RECHECK,
        probability: link.probability.map(percent).unwrap_or_default(),
        proposed_at: chrono::DateTime::parse_from_rfc3339(&link.created_at)
            .map(|t| t.format("%-d %B %Y %H:%M").to_string())
            .unwrap_or_else(|_| link.created_at.clone()),
        model_version: link.model_version.clone(),
        child: link.child_id.clone(),
        columns,
        rows,
        rules,
    }
}

#[derive(Deserialize)]
struct QueueQuery {
    done: Option<String>,
}

async fn queue(State(gw): State<Gateway>, who: SignedIn, Query(q): Query<QueueQuery>) -> Response {
    page(
        &gw,
        &who,
        q.done,
        Vec::new(),
        BTreeMap::new(),
        StatusCode::OK,
    )
    .await
}

async fn page(
    gw: &Gateway,
    who: &SignedIn,
    done: Option<String>,
    errors: Vec<FieldError>,
    values: BTreeMap<String, String>,
    status: StatusCode,
) -> Response {
    match matches::queue(gw, &who.principal).await {
        Ok(q) => {
            let items: Vec<Item> = q.matches.iter().map(|m| item(gw, m)).collect();
            let done = done.as_deref().and_then(|d| match d {
                "confirm" => Some("The match is confirmed: the record is the child's."),
                "reject" => Some("The match is rejected: it will not be proposed again."),
                "split" => Some("The record is split off the child and matched again without it."),
                _ => None,
            });
            Page::new("review.html", "Match review", who)
                .status(status)
                .with("items", items)
                .with("upper", format!("{:.0}%", q.upper * 100.0))
                .with("lower", format!("{:.0}%", q.lower * 100.0))
                .with("done", done)
                .with("errors", errors)
                .with("values", values)
                .render()
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

async fn decide(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    posted: Posted<BTreeMap<String, String>>,
) -> Response {
    let who = &posted.who;
    let decision = posted.form.get("decision").map(|d| d.trim()).unwrap_or("");
    // Each match's reason field is named after it, so that its error lands beside it.
    let field = format!("reason-{id}");
    let reason = posted
        .form
        .get(&field)
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > REASON_MAX) {
        let values: BTreeMap<String, String> =
            [(field.clone(), reason.unwrap_or_default().to_string())].into();
        let errors = vec![FieldError::new(
            &field,
            "Enter a reason of 1,000 characters or fewer",
        )];
        return page(&gw, who, None, errors, values, StatusCode::BAD_REQUEST).await;
    }
    let mut body = Map::new();
    body.insert("decision".into(), json!(decision));
    if let Some(r) = reason {
        body.insert("reason".into(), json!(r));
    }
    let raw = Value::Object(body).to_string();
    match matches::decide(&gw, &who.principal, &id, raw.as_bytes()).await {
        Ok(d) => {
            let word = serde_json::to_value(d.decision)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if posted.form.get("from").map(String::as_str) == Some("history") {
                // Back to the history of the child the record was taken from.
                let child = d.previous_child_id.as_deref().unwrap_or(&d.child_id);
                return Redirect::to(&format!("/admin/children/{child}/links?done={word}"))
                    .into_response();
            }
            Redirect::to(&format!("/admin/matches?done={word}")).into_response()
        }
        Err(Error::Invalid { .. } | Error::Unprocessable { .. }) => render::message_page(
            Some(who),
            StatusCode::BAD_REQUEST,
            "There is a problem",
            "Choose confirm, reject or split with the buttons under the match. Nothing was changed.",
        ),
        Err(e) => render::error_page(Some(who), &e),
    }
}

/// One row of a child's link history as the page shows it.
#[derive(Debug, Serialize)]
struct HistoryLine {
    id: String,
    source: String,
    local_id: String,
    status: String,
    colour: &'static str,
    how: String,
    probability: String,
    decided: String,
    when: String,
    /// An active link a data administrator may split off.
    splittable: bool,
    explanation: Vec<String>,
}

fn method_words(method: &str) -> String {
    match method {
        "probabilistic" => "By the matcher, on the records' details".into(),
        "manual" => "By a person".into(),
        "new" => "A new child: nothing matched".into(),
        RECHECK => "Asked again after a model upgrade".into(),
        SECOND_RECORD => {
            "Held for a person: the child already has a record from this system".into()
        }
        AMBIGUOUS => "Held for a person: another child matches this record as well".into(),
        m => match m.strip_prefix("identifier:") {
            Some("nhs_number") => "By NHS number".into(),
            Some("upn") => "By unique pupil number".into(),
            Some(other) => format!("By identifier ({})", other.replace('_', " ")),
            None => m.replace('_', " "),
        },
    }
}

fn stamp(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| t.format("%-d %b %Y %H:%M").to_string())
        .unwrap_or_else(|_| t.to_string())
}

#[derive(Deserialize)]
struct LinksQuery {
    done: Option<String>,
}

/// A child's link history (`GET /v1/children/{id}/links`): every record linked to the child now
/// or before, how and why, every decision; an active link can be split off here.
async fn links(
    State(gw): State<Gateway>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<LinksQuery>,
) -> Response {
    match matches::history(&gw, &who.principal, &id).await {
        Ok(h) => {
            let admin = who.principal.role == crate::foundation::domain::Role::DataAdmin;
            let lines: Vec<HistoryLine> = h
                .links
                .iter()
                .map(|l| HistoryLine {
                    id: l.id.clone(),
                    source: source_label(&gw, &l.source),
                    local_id: l.local_id.clone(),
                    colour: match l.status.as_str() {
                        "active" => "green",
                        "review" => "yellow",
                        "rejected" | "split" => "red",
                        _ => "grey",
                    },
                    status: l.status.replace('_', " "),
                    how: method_words(&l.method),
                    probability: l.probability.map(percent).unwrap_or_default(),
                    decided: match (&l.decision, &l.decided_by) {
                        (Some(d), Some(by)) => match &l.reason {
                            Some(r) => format!("{} by {by}: {r}", d.replace('_', " ")),
                            None => format!("{} by {by}", d.replace('_', " ")),
                        },
                        _ => String::new(),
                    },
                    when: match &l.ended_at {
                        Some(end) => format!("{} to {}", stamp(&l.created_at), stamp(end)),
                        None => format!("Since {}", stamp(&l.created_at)),
                    },
                    splittable: admin && l.status == "active",
                    explanation: l
                        .explanation
                        .iter()
                        .map(|e| {
                            if e.comparison == "rule" {
                                e.level.clone()
                            } else {
                                format!("{}: {}", comparison_label(&e.comparison), explain(e))
                            }
                        })
                        .collect(),
                })
                .collect();
            let done = q.done.as_deref().and_then(|d| match d {
                "split" => Some("The record is split off the child and matched again without it."),
                "confirm" => Some("The link is confirmed."),
                _ => None,
            });
            Page::new("links.html", "Link history", &who)
                .with("child", &id)
                .with("lines", lines)
                .with("done", done)
                .with("errors", Vec::<FieldError>::new())
                .with("values", BTreeMap::<String, String>::new())
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(comparison: &str, level: &str, weight: f64) -> Explained {
        Explained {
            comparison: comparison.into(),
            level: level.into(),
            weight,
            term_frequency_adjusted: false,
        }
    }

    #[test]
    fn comparisons_read_as_words() {
        assert_eq!(
            explain(&e("given_name", "close spelling", 3.0)),
            "Close spelling: some evidence of the same child"
        );
        assert_eq!(
            explain(&e("birth_date", "different", -6.2)),
            "Different: strong evidence of two children"
        );
        assert_eq!(
            explain(&e("postcode", "missing", 0.0)),
            "Not in both records, so not compared"
        );
        assert_eq!(comparison_label("upn"), "unique pupil number");
        assert_eq!(leaning([1.0, -3.0].into_iter()), "against");
        assert_eq!(percent(0.9996), "over 99.9%");
        assert_eq!(percent(0.9949), "99.4%");
        assert_eq!(percent(0.74), "74%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(method_words("identifier:nhs_number"), "By NHS number");
        assert_eq!(method_words(RECHECK), "Asked again after a model upgrade");
        assert_eq!(
            method_words(SECOND_RECORD),
            "Held for a person: the child already has a record from this system"
        );
        assert_eq!(
            method_words(AMBIGUOUS),
            "Held for a person: another child matches this record as well"
        );
    }
}
