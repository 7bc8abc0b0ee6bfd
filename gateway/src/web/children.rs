//! Finding a child, and a child's page. Both call the functions the JSON API calls —
//! [`crate::read::search::search`] and [`crate::read::view::view`] — with the same body and the
//! same purpose, so the search is audited and the page shows what the view returns and nothing
//! more: a withheld category is named as withheld and its values are never in the HTML.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::merge::{FieldView, View};
use crate::web::forms::pointer_of;
use crate::web::render::{self, Page};
use crate::web::session::{Posted, SignedIn};

// Where other pages found these before they had a module of their own.
pub use crate::web::forms::{form_date, BadDate, FieldError};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/children/find", get(find_form).post(find))
        .route("/children/{id}", get(child))
}

async fn find_form(who: SignedIn) -> Response {
    let values: BTreeMap<&str, &str> = [("purpose", "safeguarding")].into();
    Page::new("find.html", "Find a child", &who)
        .with("values", values)
        .with("errors", Vec::<FieldError>::new())
        .render()
}

/// What each search field is called when it is wrong.
fn search_message(field: &str) -> &'static str {
    match field {
        "nhs_number" => "Enter a real NHS number: 10 digits, like 485 777 3456",
        "upn" => "Enter a real unique pupil number: a letter, 11 digits and a check character, like A123456789012",
        "given_name" => "Enter a first name of 100 characters or fewer",
        "family_name" => "Enter a last name of 100 characters or fewer",
        "dob" => "Enter a real date of birth, like 27 3 2012",
        "purpose" => "Select why you are looking",
        _ => "Enter an NHS number, a unique pupil number, or a name and date of birth",
    }
}

/// The field of the form a JSON pointer of the search body names.
fn search_field(pointer: &str) -> &'static str {
    match pointer.trim_start_matches('/') {
        "nhs_number" => "nhs_number",
        "upn" => "upn",
        "given_name" => "given_name",
        "family_name" => "family_name",
        "birth_date" => "dob",
        "purpose" => "purpose",
        _ => "nhs_number",
    }
}

#[derive(Serialize)]
struct Result_ {
    id: String,
    shown: Option<crate::read::search::Distinguishing>,
    grade: String,
    matched_on: &'static str,
    probability: String,
    why: Vec<String>,
    /// Without a relationship: how access is gained (the child cannot be opened from here).
    how_to_gain_access: Option<&'static str>,
}

async fn find(State(gw): State<Gateway>, posted: Posted<BTreeMap<String, String>>) -> Response {
    let who = &posted.who;
    let fields = &posted.form;
    let text = |k: &str| {
        fields
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let mut body = Map::new();
    let purpose = text("purpose").unwrap_or_default();
    body.insert("purpose".into(), json!(purpose));
    for k in ["nhs_number", "upn", "given_name", "family_name"] {
        if let Some(v) = text(k) {
            body.insert(k.into(), json!(v));
        }
    }
    let mut errors = Vec::new();
    match form_date(fields, "dob") {
        Ok(Some(d)) => {
            body.insert("birth_date".into(), json!(d));
        }
        Ok(None) => {}
        Err(BadDate) => errors.push(FieldError::new("dob", search_message("dob"))),
    }
    let values: BTreeMap<String, String> = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let form_again = |errors: Vec<FieldError>| {
        Page::new("find.html", "Find a child", who)
            .status(StatusCode::BAD_REQUEST)
            .with("values", &values)
            .with("errors", errors)
            .render()
    };
    if !errors.is_empty() {
        return form_again(errors);
    }
    let raw = Value::Object(body).to_string();
    match crate::read::search::search(&gw, &who.principal, raw.as_bytes()).await {
        Ok(found) => {
            let results: Vec<Result_> = found
                .children
                .iter()
                .map(|h| {
                    let m = h.r#match.as_ref();
                    Result_ {
                        id: h.id.clone(),
                        shown: found.shown.get(&h.id).cloned(),
                        grade: m
                            .and_then(|c| serde_json::to_value(c.grade).ok())
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        matched_on: h.matched_on,
                        probability: m
                            .map(|c| format!("{:.0}%", c.probability * 100.0))
                            .unwrap_or_default(),
                        why: m
                            .map(|c| {
                                c.explanation
                                    .iter()
                                    .map(|e| {
                                        let v = serde_json::to_value(e).unwrap_or(Value::Null);
                                        let field = v
                                            .get("comparison")
                                            .and_then(Value::as_str)
                                            .unwrap_or("");
                                        let level =
                                            v.get("level").and_then(Value::as_str).unwrap_or("");
                                        format!("{field}: {level}")
                                    })
                                    .filter(|s| s != ": ")
                                    .collect()
                            })
                            .unwrap_or_default(),
                        how_to_gain_access: h.how_to_gain_access,
                    }
                })
                .collect();
            Page::new("find.html", "Find a child", who)
                .with("values", &values)
                .with("errors", Vec::<FieldError>::new())
                .with("searched", true)
                .with("purpose", &purpose)
                .with("results", results)
                .render()
        }
        Err(Error::Invalid { errors: list, .. } | Error::Unprocessable { errors: list, .. }) => {
            let mut errors: Vec<FieldError> = Vec::new();
            for e in &list {
                let pointer = pointer_of(e);
                let field = search_field(&pointer);
                // The schema's "anyOf" (nothing to search by) is reported at the root.
                let message = if pointer.is_empty() {
                    search_message("")
                } else {
                    search_message(field)
                };
                if !errors.iter().any(|x| x.field == field) {
                    errors.push(FieldError::new(field, message));
                }
            }
            if errors.is_empty() {
                errors.push(FieldError::new("nhs_number", search_message("")));
            }
            form_again(errors)
        }
        Err(e) => render::error_page(Some(who), &e),
    }
}

#[derive(Deserialize)]
struct ViewQuery {
    purpose: Option<String>,
}

async fn child(
    State(gw): State<Gateway>,
    who: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
) -> Response {
    match crate::read::view::view(&gw, &who.principal, &id, q.purpose.as_deref()).await {
        Ok(view) => {
            let summary = summary(&gw, &view);
            Page::new("child.html", summary.title.clone(), &who)
                .with("child", summary)
                .with("id", &id)
                .with("purpose", view.purpose.as_str())
                .with("glass", crate::web::breakglass::on_page(&view))
                .render()
        }
        Err(Error::Forbidden(crate::pipeline::authorise::relate::NO_RELATIONSHIP)) => {
            crate::web::breakglass::no_relationship_page(&who, &id, q.purpose.as_deref())
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}

/// A child's page: a summary first, then every category by area.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub title: String,
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub nhs_number: Option<String>,
    pub school: Option<String>,
    pub attendance: Vec<Term>,
    pub attendance_trend: Option<&'static str>,
    pub status: Vec<String>,
    pub police_incidents: Option<usize>,
    pub police_domestic_abuse: Option<usize>,
    /// On roll, or when the child left.
    pub roll: Option<String>,
    /// Suspensions and permanent exclusions in words, when shared.
    pub exclusions: Option<String>,
    /// The allocated worker and team, when shared.
    pub worker: Option<String>,
    /// The GP practice, when shared.
    pub gp: Option<String>,
    /// Each summary row's provenance (source and when fetched), by category.
    pub from: BTreeMap<&'static str, String>,
    /// "Known to …" for each agency kind whose existence this role may learn: yes, no, or not
    /// reachable now.
    pub known_to: Vec<(String, &'static str)>,
    /// A source could not be reached: what it holds is missing from the page.
    pub incomplete: bool,
    /// Every category this role could ever see for this purpose: a summary row for any other
    /// is left out rather than answered "none".
    pub may_see: Vec<String>,
    pub areas: Vec<Area>,
    /// The categories policy withheld from this viewer, so the page can say "not available to
    /// you" rather than "none".
    pub withheld: Vec<String>,
    pub sources: Vec<SourceLine>,
    pub lawful_basis: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Term {
    pub term: String,
    pub percent: f64,
    /// The bar's height class, in tens of percent (CSS classes, as the CSP forbids inline style).
    pub height: u32,
    pub low: bool,
}

#[derive(Debug, Serialize)]
pub struct Area {
    pub heading: &'static str,
    pub categories: Vec<CategoryView>,
}

#[derive(Debug, Serialize)]
pub struct CategoryView {
    pub label: String,
    /// `shown`, `withheld` or `none` (shareable, but no source holds anything).
    pub state: &'static str,
    /// Why a withheld category is withheld, in words.
    pub why: Option<&'static str>,
    pub fields: Vec<FieldLine>,
}

#[derive(Debug, Serialize)]
pub struct FieldLine {
    pub label: String,
    pub conflict: bool,
    pub values: Vec<ValueLine>,
}

#[derive(Debug, Serialize)]
pub struct ValueLine {
    /// A single value in words, or a table for lists of records.
    pub text: Option<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub from: String,
}

#[derive(Debug, Serialize)]
pub struct SourceLine {
    pub source: String,
    pub agency: String,
    pub status: &'static str,
    pub reason: Option<String>,
    pub fetched_at: String,
}

const AREAS: &[(&str, &[(&str, &str)])] = &[
    (
        "Identity",
        &[
            ("identity.core", "Name, date of birth and sex"),
            ("identity.contact", "Contact and address"),
        ],
    ),
    (
        "Education",
        &[
            ("education.enrolment", "School"),
            ("education.attendance", "Attendance"),
            ("education.exclusions", "Exclusions"),
            ("education.attainment", "Attainment"),
            ("education.send", "Special educational needs"),
        ],
    ),
    (
        "Social care",
        &[
            ("social_care.status", "Plans and status"),
            ("social_care.allocated_worker", "Allocated worker"),
            ("social_care.case_notes", "Case notes"),
        ],
    ),
    (
        "Health",
        &[
            ("health.registration", "GP registration"),
            ("health.cp_flag", "Child protection information sharing"),
            ("health.appointments", "Appointments"),
            ("health.sensitive", "Sensitive health information"),
        ],
    ),
    (
        "Police",
        &[
            ("police.incidents", "Incidents"),
            ("police.domestic_abuse", "Domestic abuse notifications"),
        ],
    ),
];

fn words(v: &Value) -> String {
    match v {
        Value::Null => "none recorded".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items.iter().map(words).collect::<Vec<_>>().join("; "),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{}: {}", label(k), words(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn label(key: &str) -> String {
    let mut s = key.replace('_', " ");
    if let Some(first) = s.get(0..1) {
        let upper = first.to_uppercase();
        s.replace_range(0..1, &upper);
    }
    s
}

fn first_text(view: &View, category: &str, field: &str) -> Option<String> {
    let f = view.fields.get(category)?.get(field)?;
    f.values.first().map(|v| words(&v.value))
}

fn value_line(v: &crate::pipeline::merge::ValueView) -> ValueLine {
    let from = v
        .from
        .iter()
        .map(|p| {
            format!(
                "{}, fetched {}",
                p.source,
                p.fetched_at.format("%-d %b %Y %H:%M")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    // A list of records (terms, episodes, incidents) reads best as a table.
    if let Value::Array(items) = &v.value {
        if !items.is_empty() && items.iter().all(Value::is_object) {
            let mut columns: Vec<String> = Vec::new();
            for item in items {
                for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            let rows = items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|c| item.get(c).map(words).unwrap_or_default())
                        .collect()
                })
                .collect();
            return ValueLine {
                text: None,
                columns: columns.iter().map(|c| label(c)).collect(),
                rows,
                from,
            };
        }
    }
    ValueLine {
        text: Some(words(&v.value)),
        columns: Vec::new(),
        rows: Vec::new(),
        from,
    }
}

fn field_line(name: &str, f: &FieldView) -> FieldLine {
    FieldLine {
        label: label(name),
        conflict: f.conflict,
        values: f.values.iter().map(value_line).collect(),
    }
}

/// What the page shows of a view: only ever what the view holds.
pub fn summary(gw: &Gateway, view: &View) -> Summary {
    let name = match (
        first_text(view, "identity.core", "given_name"),
        first_text(view, "identity.core", "family_name"),
    ) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        (g, f) => g.or(f),
    };
    let school = first_text(view, "education.enrolment", "school_urn").map(|urn| {
        gw.config
            .agency(&format!("urn-{urn}"))
            .map(|a| a.name.clone())
            .unwrap_or_else(|| format!("School with URN {urn}"))
    });
    let attendance: Vec<Term> = view
        .fields
        .get("education.attendance")
        .and_then(|f| f.get("terms"))
        .and_then(|f| f.values.first())
        .and_then(|v| v.value.as_array())
        .map(|terms| {
            terms
                .iter()
                .filter_map(|t| {
                    let percent = t.get("attendance_percent").and_then(Value::as_f64)?;
                    let term = t.get("term").map(words).unwrap_or_default();
                    Some(Term {
                        term,
                        percent,
                        height: ((percent.clamp(0.0, 100.0) / 10.0).round() as u32) * 10,
                        low: percent < 90.0,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let attendance_trend = match attendance.as_slice() {
        [.., a, b] if b.percent < a.percent - 1.0 => Some("falling"),
        [.., a, b] if b.percent > a.percent + 1.0 => Some("rising"),
        [_, _, ..] => Some("steady"),
        _ => None,
    };
    let status: Vec<String> = view
        .fields
        .get("social_care.status")
        .into_iter()
        .flat_map(|f| f.values())
        .flat_map(|f| f.values.iter())
        .flat_map(|v| match &v.value {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        })
        .filter(|e| e.get("end_date").is_none_or(Value::is_null))
        .map(|e| {
            let kind = e.get("kind").map(words).unwrap_or_default();
            let since = e.get("start_date").map(words).unwrap_or_default();
            format!("{} since {since}", status_label(&kind))
        })
        .collect();
    let count = |category: &str| {
        view.fields.get(category).map(|f| {
            f.values()
                .flat_map(|f| f.values.iter())
                .map(|v| v.value.as_array().map_or(1, Vec::len))
                .sum::<usize>()
        })
    };
    let police_incidents = count("police.incidents");
    let police_domestic_abuse = count("police.domestic_abuse");
    let withheld: std::collections::BTreeSet<&str> =
        view.withheld.iter().map(|w| w.category.as_str()).collect();
    // Every category this role could ever see for this purpose, in the page's order, each
    // shown, withheld (and why) or absent: the same list whatever the sources hold.
    let category = |cat: &str, label: String| -> Option<CategoryView> {
        let decided = view.categories.iter().find(|c| c.category == cat)?;
        Some(match (decided.status, view.fields.get(cat)) {
            ("shown", Some(fields)) if !fields.is_empty() => CategoryView {
                label,
                state: "shown",
                why: None,
                fields: fields.iter().map(|(n, f)| field_line(n, f)).collect(),
            },
            ("shown", _) => CategoryView {
                label,
                state: "none",
                why: None,
                fields: Vec::new(),
            },
            _ => CategoryView {
                label,
                state: "withheld",
                why: Some(withheld_words(decided.reason)),
                fields: Vec::new(),
            },
        })
    };
    let placed: std::collections::BTreeSet<&str> = AREAS
        .iter()
        .flat_map(|(_, cats)| cats.iter().map(|(c, _)| *c))
        .collect();
    let mut areas: Vec<Area> = AREAS
        .iter()
        .map(|(heading, cats)| Area {
            heading,
            categories: cats
                .iter()
                .filter_map(|(cat, label)| category(cat, label.to_string()))
                .collect(),
        })
        .collect();
    let others: Vec<CategoryView> = view
        .categories
        .iter()
        .filter(|c| !placed.contains(c.category.as_str()) && !c.category.ends_with(".known"))
        .filter_map(|c| category(&c.category, label(&c.category.replace('.', " "))))
        .collect();
    areas.push(Area {
        heading: "Other",
        categories: others,
    });
    areas.retain(|a| !a.categories.is_empty());
    let known_to = KINDS
        .iter()
        .filter(|(kind, _)| {
            view.categories
                .iter()
                .any(|c| c.category == format!("{kind}.known") && c.status == "shown")
        })
        .map(|(kind, words)| {
            let of_kind: Vec<&str> = view
                .sources
                .iter()
                .filter(|s| s.agency_kind.as_str() == *kind)
                .map(|s| s.status)
                .collect();
            let answer = if of_kind.iter().any(|s| *s == "shown" || *s == "known") {
                "yes"
            } else if of_kind.contains(&"unavailable") {
                "cannot be checked now"
            } else {
                "no"
            };
            (words.to_string(), answer)
        })
        .collect();
    let text = |category: &str, field: &str| first_text(view, category, field);
    let roll = match view
        .fields
        .get("education.enrolment")
        .and_then(|f| f.get("on_roll"))
        .and_then(|f| f.values.first())
        .map(|v| &v.value)
    {
        Some(Value::Bool(true)) => Some("On roll".to_string()),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Some("On roll".to_string()),
        Some(_) => Some(match text("education.enrolment", "leaving_date") {
            Some(d) => format!("Left on {d}"),
            None => "Not on roll".to_string(),
        }),
        None => None,
    };
    let exclusions = view.fields.get("education.exclusions").map(|f| {
        let all: Vec<&Value> = f
            .values()
            .flat_map(|f| f.values.iter())
            .flat_map(|v| match &v.value {
                Value::Array(a) => a.iter().collect::<Vec<_>>(),
                other => vec![other],
            })
            .collect();
        let kind = |k: &str| {
            all.iter()
                .filter(|e| e.get("kind").and_then(Value::as_str) == Some(k))
                .count()
        };
        match (kind("suspension"), kind("permanent")) {
            (0, 0) if all.is_empty() => "None recorded".to_string(),
            (0, 0) => format!("{} recorded", all.len()),
            (s, 0) => format!("{s} suspension{}", if s == 1 { "" } else { "s" }),
            (0, p) => format!("{p} permanent exclusion{}", if p == 1 { "" } else { "s" }),
            (s, p) => format!(
                "{s} suspension{}, {p} permanent exclusion{}",
                if s == 1 { "" } else { "s" },
                if p == 1 { "" } else { "s" }
            ),
        }
    });
    let worker = match (
        text("social_care.allocated_worker", "worker"),
        text("social_care.allocated_worker", "team"),
    ) {
        (Some(w), Some(t)) => Some(format!("{w} ({t})")),
        (w, t) => w.or(t),
    };
    let gp = view
        .fields
        .get("health.registration")
        .and_then(|f| f.get("gp"))
        .and_then(|f| f.values.first())
        .map(|v| match &v.value {
            Value::Object(o) => o
                .get("name")
                .or_else(|| o.get("ods_code"))
                .map(words)
                .unwrap_or_else(|| words(&v.value)),
            other => words(other),
        });
    let from = SUMMARY_ROWS
        .iter()
        .filter_map(|cat| provenance(view, cat).map(|p| (*cat, p)))
        .collect();
    let incomplete = view.sources.iter().any(|s| s.status == "unavailable");
    let sources = view
        .sources
        .iter()
        .map(|s| SourceLine {
            source: s.source.clone(),
            agency: gw
                .config
                .agency(&s.agency)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| s.agency.clone()),
            status: s.status,
            reason: s.reason.clone(),
            fetched_at: s.fetched_at.format("%-d %b %Y %H:%M:%S").to_string(),
        })
        .collect();
    Summary {
        title: name.clone().unwrap_or_else(|| "A child".into()),
        name,
        birth_date: first_text(view, "identity.core", "birth_date"),
        nhs_number: first_text(view, "identity.core", "nhs_number"),
        school,
        attendance,
        attendance_trend,
        status,
        police_incidents,
        police_domestic_abuse,
        roll,
        exclusions,
        worker,
        gp,
        from,
        known_to,
        incomplete,
        may_see: view.categories.iter().map(|c| c.category.clone()).collect(),
        areas,
        withheld: withheld.iter().map(|c| c.to_string()).collect(),
        sources,
        lawful_basis: view
            .lawful_basis
            .iter()
            .map(|b| b.text.to_string())
            .collect(),
    }
}

/// The agency kinds whose existence (`<kind>.known`) policy may share, in words.
const KINDS: &[(&str, &str)] = &[
    ("education", "A school"),
    ("social_care", "Children's social care"),
    ("health", "Health services"),
    ("police", "Police"),
];

/// The categories the summary draws on, whose provenance it shows beside each row.
const SUMMARY_ROWS: &[&str] = &[
    "education.enrolment",
    "education.attendance",
    "education.exclusions",
    "social_care.status",
    "social_care.allocated_worker",
    "health.registration",
    "police.incidents",
];

/// Where a category's values came from, and when: each source once.
fn provenance(view: &View, category: &str) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for f in view.fields.get(category)?.values() {
        for v in &f.values {
            for p in &v.from {
                let line = format!(
                    "{}, fetched {}",
                    p.source,
                    p.fetched_at.format("%-d %b %Y %H:%M")
                );
                if !seen.contains(&line) {
                    seen.push(line);
                }
            }
        }
    }
    (!seen.is_empty()).then(|| seen.join("; "))
}

/// Why a category is not available, as a practitioner would say it.
fn withheld_words(reason: Option<&str>) -> &'static str {
    match reason {
        Some("consent_required") => "It needs the family's consent, which is not recorded.",
        Some("consent_withdrawn") => "The family has withdrawn consent to share it.",
        Some("consent_refused") => "The family has refused consent to share it.",
        _ => "The agreement does not share this with your role for this purpose.",
    }
}

fn status_label(kind: &str) -> String {
    match kind {
        "cp_plan" | "child_protection" | "cpp" => "Child protection plan".into(),
        "cin" | "child_in_need" => "Child in need".into(),
        "looked_after" | "cla" | "lac" => "Looked after".into(),
        "early_help" => "Early help".into(),
        other => label(other),
    }
}
