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
    /// Middle names, space-separated, where the source keeps them apart from the given name
    /// (CTF `MiddleNames`, FHIR's second and later `given`). A child is often known by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_names: Option<String>,
    /// Family names the child was known by before, most recent first: after a parent's
    /// remarriage, an adoption, or a school's "former surname".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_family_names: Vec<String>,
    /// The current address's lines as written, the postcode apart (it is `postcode`): the house
    /// name or number and street first, the town last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_lines: Vec<String>,
    /// Earlier addresses, most recent first, where the source keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_addresses: Vec<Address>,
    /// What the source says places the child in a household, beyond the address itself: each
    /// `kind:value`, compared only for equality (see [`household`]). Twins and siblings share
    /// these; one child's records in two sources usually do too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub household: Vec<String>,
}

/// An address as a source records it: lines as written, the postcode apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
}

impl Address {
    /// An address from lines as a source wrote them: blank lines dropped, each trimmed. `None`
    /// when nothing is left.
    pub fn new<'a>(
        lines: impl IntoIterator<Item = &'a str>,
        postcode: Option<&str>,
    ) -> Option<Address> {
        let lines = address_lines(lines);
        let postcode = postcode
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from);
        (!lines.is_empty() || postcode.is_some()).then_some(Address { lines, postcode })
    }
}

/// Address lines as a source wrote them: each trimmed, blank ones dropped.
pub fn address_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Household keys: the kinds a source can state, each written `kind:value`. Keys are compared
/// for equality only, so each kind is spelled one way by every adapter: a value is trimmed, and
/// letters are upper-cased and everything but letters and digits dropped, so `LS1 6AE` and
/// `ls16ae` agree.
pub mod household {

    /// A property: the Unique Property Reference Number (UK Core `AddressKey` of type `UPRN`,
    /// the SSD address's `UPRN`, the CTF's `UniquePropertyReferenceNumber`). National, so it
    /// agrees across sources.
    pub const UPRN: &str = "uprn";
    /// A household's telephone: a parent's or carer's (FHIR `Patient.contact.telecom`, CTF
    /// `Contact/Phones`, an MIS's contact columns) or the home's (FHIR `Patient.telecom` in
    /// `home` use, the CTF pupil's home phone). The one detail of a carer that sources record
    /// alike; only the digits are kept.
    pub const PHONE: &str = "phone";
    /// A parent or carer by the source's own id for that person (the SSD's `ssd_mother`):
    /// meaningful within one source only.
    pub const CARER: &str = "carer";
    /// A family or household the source records by its own id (the SSD's `ssd_family`):
    /// meaningful within one source only.
    pub const FAMILY: &str = "family";

    /// `kind:value`, the value normalised as above; `None` when nothing is left of it. A
    /// telephone number keeps its digits only, a UK number written internationally (`+44 …`)
    /// in its national form, so one number written two ways is one key.
    pub fn key(kind: &str, value: &str) -> Option<String> {
        let mut value: String = value
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase)
            .collect();
        if kind == PHONE {
            value.retain(|c| c.is_ascii_digit());
            // `+44 1632 960587`, and `+44 (0)1632 960587` as it is often written.
            if let Some(national) = value
                .strip_prefix("440")
                .filter(|n| n.len() == 10)
                .or_else(|| value.strip_prefix("44").filter(|n| n.len() == 10))
            {
                value = format!("0{national}");
            }
        }
        (!value.is_empty()).then(|| format!("{kind}:{value}"))
    }

    /// Whether a kind of key is scoped to the source that states it, so that two sources'
    /// keys agree by accident only.
    pub fn source_scoped(key: &str) -> bool {
        key.split_once(':')
            .is_some_and(|(kind, _)| kind == CARER || kind == FAMILY)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn keys_are_spelt_one_way() {
            assert_eq!(
                key(UPRN, " 1234 5678 9012 ").as_deref(),
                Some("uprn:123456789012")
            );
            assert_eq!(key(PHONE, "01632 960587"), key(PHONE, "+44 1632 960587"));
            assert_eq!(key(PHONE, "01632 960587"), key(PHONE, "+44 (0)1632 960587"));
            assert_eq!(
                key(PHONE, "(01632) 960-587").as_deref(),
                Some("phone:01632960587")
            );
            assert_eq!(key(FAMILY, "f-12a").as_deref(), Some("family:F12A"));
            assert_eq!(key(PHONE, "n/a"), None);
            assert!(source_scoped("family:F12A") && source_scoped("carer:77"));
            assert!(!source_scoped("uprn:1") && !source_scoped("phone:0"));
        }
    }
}

impl Demographics {
    /// Adds a household key unless it is empty or already there.
    pub fn add_household(&mut self, kind: &str, value: &str) {
        if let Some(k) = household::key(kind, value) {
            if !self.household.contains(&k) {
                self.household.push(k);
            }
        }
    }

    /// Adds a former family name unless it is blank, already there, or the current one.
    pub fn add_former_family_name(&mut self, name: &str) {
        let name = name.trim();
        if name.is_empty()
            || self
                .family_name
                .as_deref()
                .is_some_and(|f| f.trim().eq_ignore_ascii_case(name))
            || self
                .former_family_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        {
            return;
        }
        self.former_family_names.push(name.to_string());
    }
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
    /// Whether the source marks the record restricted (NHS `R`/`V`, a refuge, a protected
    /// address): the master child index keeps this, so that what it shows of a child before
    /// any source is asked (a search's postcode district, the review queue's addresses) holds
    /// back where a restricted child lives. Set by the adapter that reads the marking.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted: bool,
}

/// Fields that mark a whole child as restricted when any source sets them true: NHS `R`/`V`
/// (`restricted`), a refuge, a protected address. One list for the adapters that read them and
/// the gateway that applies them.
pub const RESTRICTION_MARKERS: &[&str] = &["restricted", "protected_address", "refuge"];

/// Whether a view item marks its record restricted: a [`RESTRICTION_MARKERS`] field set true.
pub fn marks_restriction(item: &Item) -> bool {
    RESTRICTION_MARKERS.contains(&item.field.as_str())
        && item.value == serde_json::Value::Bool(true)
}

/// Whether a value a source gives for a restriction marker says "restricted": true, a non-zero
/// number, or text such as `true`, `yes`, `y` or `1` (any case). Anything else, a blank or
/// null included, does not.
pub fn truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        serde_json::Value::String(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "true" | "t" | "yes" | "y" | "1"
        ),
        _ => false,
    }
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
