//! Stage 5, merge: one view of the child. Every value carries its source, the source's record id
//! and when it was fetched; where sources disagree, all their values stand side by side and the
//! field is marked as a conflict. Every configured source appears with its status, so that the
//! absence of data never reads as the absence of concern.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::foundation::config::AgencyKind;
use crate::foundation::domain::Purpose;
use crate::pipeline::authorise::{basis_text, CategoryDecision, Judged};
use crate::pipeline::fanout::Fetched;

/// The merged view returned by `GET /v1/children/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct View {
    pub child: String,
    pub purpose: Purpose,
    pub generated_at: DateTime<Utc>,
    /// Every configured source, in configuration order.
    pub sources: Vec<SourceView>,
    /// category → field → the values sources gave.
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, BTreeMap<String, FieldView>>,
    /// Categories held back, per source, with the rule and the reason. Never their values.
    pub withheld: Vec<Withheld>,
    /// The lawful bases of what is shown.
    pub lawful_basis: Vec<Basis>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub source: String,
    pub agency: String,
    pub agency_kind: AgencyKind,
    /// `shown`, `withheld`, `unavailable` or `no_record`.
    pub status: &'static str,
    /// For `unavailable`: why (e.g. `timeout`, `connection_failed`). For `withheld`: `no_policy`
    /// or `consent_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `withheld`: the rule that withheld the source's data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub record_ids: Vec<String>,
    pub fetched_at: DateTime<Utc>,
    pub categories: Vec<CategoryDecision>,
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
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Withheld {
    pub source: String,
    pub category: String,
    /// Set when only some fields of a shown category were held back (a restricted record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub rule: String,
    /// `no_policy`, `consent_required`, `consent_withdrawn`, `consent_refused` or
    /// `restricted_record`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Basis {
    pub code: String,
    pub text: &'static str,
}

/// What the audit entry records of a view: categories shown and withheld, the rules and the
/// lawful bases, and each source's status.
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
    /// `category.field` held back from restricted records.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub redacted: BTreeSet<String>,
}

/// Builds the view from what policy let through.
pub fn merge(child: &str, purpose: Purpose, judged: Vec<(Fetched, Judged)>) -> (View, Disclosure) {
    let mut fields: BTreeMap<String, BTreeMap<String, FieldView>> = BTreeMap::new();
    let mut sources = Vec::new();
    let mut withheld = Vec::new();
    let mut disclosure = Disclosure::default();

    for (f, j) in judged {
        let mut view = SourceView {
            source: f.source.id.clone(),
            agency: f.source.agency.id.clone(),
            agency_kind: f.source.agency.kind,
            status: "no_record",
            reason: None,
            rule: None,
            record_ids: Vec::new(),
            fetched_at: f.fetched_at,
            categories: Vec::new(),
        };
        match j {
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
                            withheld.push(Withheld {
                                source: f.source.id.clone(),
                                category: c.category.clone(),
                                field: Some(field.clone()),
                                rule: c.redaction_rule.clone().unwrap_or_default(),
                                reason: "restricted_record",
                            });
                        }
                    } else {
                        disclosure.withheld.insert(c.category.clone());
                        withheld.push(Withheld {
                            source: f.source.id.clone(),
                            category: c.category.clone(),
                            field: None,
                            rule: c.rule.clone(),
                            reason: c.reason.unwrap_or("no_policy"),
                        });
                    }
                }
                let any_shown = categories.iter().any(|c| c.shown());
                if any_shown {
                    view.status = "shown";
                } else if let Some(first) = categories.first() {
                    view.status = "withheld";
                    view.rule = Some(first.rule.clone());
                    view.reason = first.reason.map(String::from);
                }
                for (record_id, items) in records {
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
                    view.record_ids.push(record_id);
                }
                view.categories = categories;
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
    let view = View {
        child: child.to_string(),
        purpose,
        generated_at: Utc::now(),
        sources,
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
}
