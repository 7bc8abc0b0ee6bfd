//! What adapters hand back. Values are kept as the source states them; checking identifiers and
//! normalising demographics is the master child index's job, so a bad value is flagged there and
//! never silently dropped here.

use serde::{Deserialize, Serialize};

/// An identifier as a source records it. `kind` is `nhs_number`, `upn`, or a source-scoped kind
/// such as `police_person_id`; the value is unchecked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    pub kind: String,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

/// Demographics as a source records them. Dates of birth are ISO `YYYY-MM-DD` when the adapter
/// can read them, otherwise passed through as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demographics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
}

/// One record in one source: the unit the master child index links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's own id for the record; scoped by the source.
    pub local_id: String,
    pub identifiers: Vec<Identifier>,
    pub demographics: Demographics,
    /// The source's own confidence that this record answers the search, in thousandths
    /// (FHIR `Bundle.entry.search.score` × 1000; PDS gives 1000 for an exact match). `None`
    /// when the source gives none, or the record was listed rather than searched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u16>,
}

impl SourceRecord {
    /// Whether the record carries any of the probe's identifiers (same kind, same value).
    ///
    /// Sources that can list but not search (SQL, JSON over HTTP) answer [`crate::Adapter::find`]
    /// with this, so a trace into them is as deterministic as a link in the master child index:
    /// demographics are never guessed at here.
    pub fn matches_identifiers(&self, probe: &Probe) -> bool {
        probe.identifiers.iter().any(|p| {
            self.identifiers
                .iter()
                .any(|i| i.kind == p.kind && i.value.trim() == p.value.trim())
        })
    }
}

/// A JSON scalar as the text a source would have written; `None` for null, arrays and objects,
/// which cannot be an identifier or a demographic.
pub(crate) fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What to look a child up by in a query-only source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub identifiers: Vec<Identifier>,
    pub demographics: Demographics,
}

impl Probe {
    /// The first identifier of a kind, if the probe carries one.
    pub fn identifier(&self, kind: &str) -> Option<&str> {
        self.identifiers
            .iter()
            .find(|i| i.kind == kind)
            .map(|i| i.value.as_str())
    }
}

/// One value from a source, labelled with the data category that policy decides on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Dotted data category, e.g. `education.attendance`.
    pub category: String,
    /// Field name within the view; the same field from two sources is compared side by side.
    pub field: String,
    pub value: serde_json::Value,
}

impl Item {
    pub fn new(
        category: impl Into<String>,
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        Self {
            category: category.into(),
            field: field.into(),
            value: value.into(),
        }
    }
}
