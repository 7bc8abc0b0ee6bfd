//! Stage 5, merge: one view of the child. Every value carries its source, the source's record id
//! and when it was fetched; where sources disagree, all their values stand side by side and the
//! field is marked as a conflict. Every source this role may know of appears with its status, so
//! that the absence of data never reads as the absence of concern.
//!
//! The view's shape never depends on what is withheld: it lists the categories the role's
//! policy could ever show (each `shown` or `not_available`), whatever the sources hold; a source
//! the role may not know of is not named; a record's id is shown only with something of that
//! record; fields held back from a restricted child are simply absent.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::foundation::config::AgencyKind;
use crate::foundation::domain::Purpose;
use crate::pipeline::authorise::relate::Relationship;
use crate::pipeline::authorise::{basis_text, CategoryDecision, Judged};
use crate::pipeline::fanout::Fetched;

/// The merged view returned by `GET /v1/children/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct View {
    pub child: String,
    pub purpose: Purpose,
    #[serde(serialize_with = "rfc3339")]
    pub generated_at: DateTime<Utc>,
    /// Why this practitioner may see the child at all.
    pub relationship: Vec<Relationship>,
    /// Every configured source this role may know of, in configuration order.
    pub sources: Vec<SourceView>,
    /// Every category this role's policy could ever show for this purpose: `shown`, or
    /// `not_available` with the rule and the reason. The same list whatever the sources hold.
    pub categories: Vec<CategoryView>,
    /// category → field → the values sources gave.
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, BTreeMap<String, FieldView>>,
    /// The `not_available` entries of `categories`, for a reader that wants only those.
    pub withheld: Vec<Withheld>,
    /// The lawful bases of what is shown.
    pub lawful_basis: Vec<Basis>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub source: String,
    pub agency: String,
    pub agency_kind: AgencyKind,
    /// `shown` (something of its record is shown), `known` (it holds a record, nothing of which
    /// is available to you), `no_record` or `unavailable`.
    pub status: &'static str,
    /// For `unavailable`: why (e.g. `timeout`, `connection_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The local ids of the records something was shown from.
    pub record_ids: Vec<String>,
    #[serde(serialize_with = "rfc3339")]
    pub fetched_at: DateTime<Utc>,
}

/// One category as this role may see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CategoryView {
    pub category: String,
    /// `shown` or `not_available`.
    pub status: &'static str,
    pub rule: String,
    /// For `not_available`: `consent_required`, `consent_withdrawn`, `consent_refused` or
    /// `no_policy`; `break_glass` when a grant released it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The break-glass grant that released this category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

impl From<&CategoryDecision> for CategoryView {
    fn from(c: &CategoryDecision) -> Self {
        CategoryView {
            category: c.category.clone(),
            status: if c.shown() { "shown" } else { "not_available" },
            rule: c.rule.clone(),
            reason: c.reason,
            break_glass: c.break_glass.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldView {
    /// Distinct values, each with every source that gave it.
    pub values: Vec<ValueView>,
    /// Sources gave different values.
    pub conflict: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValueView {
    #[schema(value_type = Object)]
    pub value: Value,
    pub from: Vec<Provenance>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Provenance {
    pub source: String,
    pub record_id: String,
    #[serde(serialize_with = "rfc3339")]
    pub fetched_at: DateTime<Utc>,
}

/// A time as chrono's `Serialize` writes it (RFC 3339, the fraction as long as it needs, `Z`),
/// made into one string first: chrono hands serde_json the text a few characters at a time,
/// each piece escaped on its own, and a view carries a time with every value it shows.
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A category not available to this role now, with the rule and the reason. Never a value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Withheld {
    pub category: String,
    pub rule: String,
    /// `no_policy`, `consent_required`, `consent_withdrawn` or `consent_refused`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Basis {
    pub code: String,
    pub text: &'static str,
}

/// What the audit entry records of a view: categories shown and withheld (whatever existed,
/// including sources the role may not know of), the rules and the lawful bases, and each
/// source's status. The audit is protected data; the view is not told any of this.
#[derive(Debug, Default, Serialize)]
pub struct Disclosure {
    pub shown: BTreeSet<String>,
    pub withheld: BTreeSet<String>,
    pub rules: BTreeSet<String>,
    pub lawful_basis: BTreeSet<String>,
    pub sources: BTreeMap<String, String>,
    /// Categories released by a break-glass grant, and the grant.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub break_glass: BTreeMap<String, String>,
    /// `category.field` held back from a restricted child.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub redacted: BTreeSet<String>,
}

/// Builds the view from what policy let through. `listed` is
/// [`crate::pipeline::authorise::listed_categories`].
pub fn merge(
    child: &str,
    purpose: Purpose,
    relationship: Vec<Relationship>,
    listed: &[CategoryDecision],
    judged: Vec<(Fetched, Judged)>,
) -> (View, Disclosure) {
    let mut fields: BTreeMap<String, BTreeMap<String, FieldView>> = BTreeMap::new();
    let mut sources = Vec::new();
    let mut disclosure = Disclosure::default();

    for (f, j) in judged {
        let mut view = SourceView {
            source: f.source.id.clone(),
            agency: f.source.agency.id.clone(),
            agency_kind: f.source.agency.kind,
            status: "no_record",
            reason: None,
            record_ids: Vec::new(),
            fetched_at: f.fetched_at,
        };
        match j {
            Judged::Hidden { held, asked } => {
                let state = match (asked, held) {
                    (false, _) => "hidden_not_asked",
                    (true, true) => "hidden_record",
                    (true, false) => "hidden",
                };
                disclosure
                    .sources
                    .insert(view.source.clone(), state.to_string());
                if held {
                    disclosure
                        .withheld
                        .insert(super::authorise::known_category(f.source.agency.kind).into());
                }
                continue;
            }
            Judged::NoRecord => {}
            Judged::Unavailable(reason) => {
                view.status = "unavailable";
                view.reason = Some(reason);
            }
            Judged::Shown {
                records,
                categories,
            } => {
                for c in &categories {
                    disclosure.rules.insert(c.rule.clone());
                    if c.shown() {
                        disclosure.shown.insert(c.category.clone());
                        disclosure.lawful_basis.extend(c.basis.iter().cloned());
                        if let Some(grant) = &c.break_glass {
                            disclosure
                                .break_glass
                                .insert(c.category.clone(), grant.clone());
                        }
                        for field in &c.redacted {
                            disclosure
                                .redacted
                                .insert(format!("{}.{field}", c.category));
                        }
                    } else {
                        disclosure.withheld.insert(c.category.clone());
                    }
                }
                view.status = "known";
                for (record_id, items) in records {
                    if items.is_empty() {
                        continue;
                    }
                    for item in items {
                        let field = fields
                            .entry(item.category)
                            .or_default()
                            .entry(item.field)
                            .or_insert_with(|| FieldView {
                                values: Vec::new(),
                                conflict: false,
                            });
                        let from = Provenance {
                            source: f.source.id.clone(),
                            record_id: record_id.clone(),
                            fetched_at: f.fetched_at,
                        };
                        match field
                            .values
                            .iter_mut()
                            .find(|v| same(&v.value, &item.value))
                        {
                            Some(v) => v.from.push(from),
                            None => field.values.push(ValueView {
                                value: item.value,
                                from: vec![from],
                            }),
                        }
                    }
                    view.status = "shown";
                    view.record_ids.push(record_id);
                }
            }
        }
        disclosure
            .sources
            .insert(view.source.clone(), view.status.to_string());
        sources.push(view);
    }
    for field in fields.values_mut().flat_map(|f| f.values_mut()) {
        field.conflict = field.values.len() > 1;
    }
    let lawful_basis = disclosure
        .lawful_basis
        .iter()
        .map(|code| Basis {
            code: code.clone(),
            text: basis_text(code),
        })
        .collect();
    let categories: Vec<CategoryView> = listed.iter().map(CategoryView::from).collect();
    let withheld = listed
        .iter()
        .filter(|c| !c.shown())
        .map(|c| Withheld {
            category: c.category.clone(),
            rule: c.rule.clone(),
            reason: c.reason.unwrap_or("no_policy"),
        })
        .collect();
    let view = View {
        child: child.to_string(),
        purpose,
        generated_at: Utc::now(),
        relationship,
        sources,
        categories,
        fields,
        withheld,
        lawful_basis,
    };
    (view, disclosure)
}

/// Values agree when equal, ignoring case and surrounding space in text: "SMITH" from one
/// system and "Smith" from another is not a disagreement worth a practitioner's attention.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_agreement_ignores_case_and_space() {
        assert!(same(&json!("Smith "), &json!("SMITH")));
        assert!(!same(&json!("Smith"), &json!("Smyth")));
        assert!(!same(&json!(1), &json!("1")));
    }

    /// The view's times read exactly as chrono's own `Serialize` writes them, whatever the
    /// fraction: none, milliseconds, microseconds or nanoseconds.
    #[test]
    fn times_serialise_as_chrono_does() {
        #[derive(Serialize)]
        struct Ours(#[serde(serialize_with = "rfc3339")] DateTime<Utc>);
        let base = DateTime::parse_from_rfc3339("2026-12-01T11:07:49Z")
            .unwrap()
            .with_timezone(&Utc);
        for nanos in [
            0,
            120_000_000,
            123_000_000,
            123_456_000,
            123_456_789,
            1,
            999_999_999,
        ] {
            let t = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(
                serde_json::to_string(&Ours(t)).unwrap(),
                serde_json::to_string(&t).unwrap(),
                "{nanos} ns"
            );
        }
        let now = Utc::now();
        assert_eq!(
            serde_json::to_string(&Ours(now)).unwrap(),
            serde_json::to_string(&now).unwrap()
        );
    }
}
