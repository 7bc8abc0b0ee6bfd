//! JSON over HTTP with a declarative mapping, for systems such as a police force's records API.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::http::{self, ClientTls};
use crate::record::{
    address_lines, household, scalar_text, truthy, Demographics, Identifier, Item, Probe,
    SourceRecord,
};
use crate::{Adapter, AdapterError};

/// A JSON-over-HTTP source. Records are fetched from `record_url` with `{id}` replaced by the
/// (percent-encoded) local id; values are picked out with JSON pointers (RFC 6901).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpJsonConfig {
    /// e.g. `https://police.example/api/people/{id}`.
    pub record_url: String,
    /// Lists records for the master child index; omitted for query-only sources.
    #[serde(default)]
    pub list_url: Option<String>,
    /// Where the array of records sits in the list response (`""` for a bare array).
    #[serde(default)]
    pub list_pointer: String,
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Client-certificate authentication (mutual TLS), alone or with the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// How to read a record's identity: pointers for `local_id`, identifiers and demographics.
    pub identity: IdentityPointers,
    /// Fields of the view, each with its category.
    pub fields: Vec<FieldMapping>,
}

/// Configurations get logged; the token must not be.
impl std::fmt::Debug for HttpJsonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpJsonConfig")
            .field("record_url", &self.record_url)
            .field("list_url", &self.list_url)
            .field("list_pointer", &self.list_pointer)
            .field("bearer_token", &crate::redacted(&self.bearer_token))
            .field("tls", &self.tls)
            .field("identity", &self.identity)
            .field("fields", &self.fields)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityPointers {
    pub local_id: String,
    /// Identifier kind (`nhs_number`, `upn`, …) → pointer.
    #[serde(default)]
    pub identifiers: BTreeMap<String, String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub family_name: Option<String>,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub postcode: Option<String>,
    /// Middle names: a string, or an array of strings joined with spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_names: Option<String>,
    /// Former family names: a string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_family_names: Option<String>,
    /// The current address's lines, the postcode apart: a string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_lines: Option<String>,
    /// Household key kind (`uprn`, `phone`, `carer`, `family`) → pointer to a scalar or an
    /// array of scalars (e.g. every carer's telephone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub household: BTreeMap<String, String>,
    /// A restriction marking (a refuge, a protected address): a pointer to a value that,
    /// when true (or `yes`, `y`, `1`, a non-zero number), marks the record restricted for the
    /// master child index, as a `restricted`, `refuge` or `protected_address` field set true
    /// marks it in a view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted: Option<String>,
}

/// The household key kinds a configuration may name: the ones [`crate::record::household`]
/// defines, so that two sources' keys can agree.
const HOUSEHOLD_KINDS: [&str; 4] = [
    household::UPRN,
    household::PHONE,
    household::CARER,
    household::FAMILY,
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    pub pointer: String,
    pub field: String,
    pub category: String,
}

const ID_PLACEHOLDER: &str = "{id}";

/// Reads records from a JSON API through the configured pointers.
pub struct HttpJsonAdapter {
    config: HttpJsonConfig,
    record_url: RecordUrl,
    list_url: Option<Url>,
    /// For each of `config.fields`, whether its value may be moved out of the record document
    /// instead of copied ([`movable`]).
    movable: Vec<bool>,
    client: reqwest::Client,
}

/// How a record's URL is made from `record_url` on every fetch.
enum RecordUrl {
    /// The template parsed once with [`MARK`] for the id, which only its path holds: a fetch
    /// sets the path alone, and the scheme, host and query are not parsed again.
    Path(Url),
    /// Anywhere else (a query, say): the whole URL is parsed on every fetch.
    Parsed,
}

/// Stands for the id in a parsed [`RecordUrl::Path`]: unreserved characters, so the URL
/// parser leaves it as it is.
const MARK: &str = "weft-record-id-8c1f";

impl HttpJsonAdapter {
    /// Checks the whole configuration up front (URLs, pointers), so a typo shows at start-up as
    /// `misconfigured` rather than as missing fields in every view.
    pub fn new(config: HttpJsonConfig) -> Result<Self, AdapterError> {
        if !config.record_url.contains(ID_PLACEHOLDER) {
            return Err(AdapterError::Config(format!(
                "record_url must contain {ID_PLACEHOLDER}"
            )));
        }
        http_url(
            &config.record_url.replace(ID_PLACEHOLDER, "x"),
            "record_url",
        )?;
        let record_url = RecordUrl::of(&config.record_url);
        let list_url = config
            .list_url
            .as_deref()
            .map(|u| http_url(u, "list_url"))
            .transpose()?;
        check_pointer(&config.list_pointer, "list_pointer")?;
        let identity = &config.identity;
        check_pointer(&identity.local_id, "identity.local_id")?;
        for (kind, pointer) in &identity.identifiers {
            check_pointer(pointer, &format!("identity.identifiers.{kind}"))?;
        }
        for (name, pointer) in [
            ("given_name", &identity.given_name),
            ("family_name", &identity.family_name),
            ("birth_date", &identity.birth_date),
            ("sex", &identity.sex),
            ("postcode", &identity.postcode),
            ("middle_names", &identity.middle_names),
            ("former_family_names", &identity.former_family_names),
            ("address_lines", &identity.address_lines),
            ("restricted", &identity.restricted),
        ] {
            if let Some(pointer) = pointer {
                check_pointer(pointer, &format!("identity.{name}"))?;
            }
        }
        for (kind, pointer) in &identity.household {
            if !HOUSEHOLD_KINDS.contains(&kind.as_str()) {
                return Err(AdapterError::Config(format!(
                    "identity.household.{kind}: unknown kind (use {})",
                    HOUSEHOLD_KINDS.join(", ")
                )));
            }
            check_pointer(pointer, &format!("identity.household.{kind}"))?;
        }
        for field in &config.fields {
            check_pointer(&field.pointer, &format!("fields.{}", field.field))?;
        }
        let client = http::client(
            "application/json",
            config.bearer_token.as_deref(),
            config.tls.as_ref(),
        )?;
        Ok(Self {
            movable: movable(&config.fields),
            config,
            record_url,
            list_url,
            client,
        })
    }

    /// The record's URL; `None` for ids that would not stay one path segment (`.` and `..`
    /// are dot segments even when percent-encoded) and so cannot name a record.
    fn record_url(&self, local_id: &str) -> Result<Option<Url>, AdapterError> {
        if matches!(local_id, "" | "." | "..") {
            return Ok(None);
        }
        let id = percent_encode(local_id);
        if let RecordUrl::Path(template) = &self.record_url {
            let mut url = template.clone();
            url.set_path(&template.path().replace(MARK, &id));
            return Ok(Some(url));
        }
        let url = self.config.record_url.replace(ID_PLACEHOLDER, &id);
        Url::parse(&url)
            .map(Some)
            .map_err(|e| AdapterError::Config(format!("record_url: {e}")))
    }
}

impl RecordUrl {
    /// [`RecordUrl::Path`] when the template's every `{id}` lies in its path, and nothing
    /// else in it could be taken for the mark.
    fn of(template: &str) -> RecordUrl {
        let ids = template.matches(ID_PLACEHOLDER).count();
        if template.contains(MARK) {
            return RecordUrl::Parsed;
        }
        match Url::parse(&template.replace(ID_PLACEHOLDER, MARK)) {
            Ok(url) if url.path().matches(MARK).count() == ids => RecordUrl::Path(url),
            _ => RecordUrl::Parsed,
        }
    }
}

/// For each field, whether no other field's pointer is the same, inside it or around it: only
/// then can its value be moved out of the document without another field missing it.
fn movable(fields: &[FieldMapping]) -> Vec<bool> {
    let overlap = |a: &str, b: &str| {
        let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
        long.starts_with(short) && matches!(long.as_bytes().get(short.len()), None | Some(b'/'))
    };
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            !fields
                .iter()
                .enumerate()
                .any(|(j, g)| i != j && overlap(&f.pointer, &g.pointer))
        })
        .collect()
}

fn http_url(url: &str, what: &str) -> Result<Url, AdapterError> {
    let parsed = Url::parse(url).map_err(|e| AdapterError::Config(format!("{what}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AdapterError::Config(format!(
            "{what} must be an http(s) URL"
        )));
    }
    Ok(parsed)
}

/// RFC 6901: a pointer is empty (the whole document) or starts with `/`. Anything else would
/// silently never match.
fn check_pointer(pointer: &str, what: &str) -> Result<(), AdapterError> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(AdapterError::Config(format!(
            "{what}: JSON pointer must be empty or start with '/'"
        )))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an id cannot add path
/// segments, a query or a fragment to the record URL.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One element of a list response as a record; `None` when it has no usable local id.
fn source_record(element: &Value, identity: &IdentityPointers) -> Option<SourceRecord> {
    let text = |pointer: &Option<String>| {
        pointer
            .as_deref()
            .and_then(|p| element.pointer(p))
            .and_then(scalar_text)
    };
    let local_id = element.pointer(&identity.local_id).and_then(scalar_text)?;
    let identifiers = identity
        .identifiers
        .iter()
        .filter_map(|(kind, pointer)| {
            let value = element.pointer(pointer).and_then(scalar_text)?;
            Some(Identifier::new(kind.as_str(), value))
        })
        .collect();
    // A scalar, or each scalar of an array; anything else finds nothing.
    let texts = |pointer: &Option<String>| -> Vec<String> {
        match pointer.as_deref().and_then(|p| element.pointer(p)) {
            Some(Value::Array(values)) => values.iter().filter_map(scalar_text).collect(),
            Some(value) => scalar_text(value).into_iter().collect(),
            None => Vec::new(),
        }
    };
    let middle = texts(&identity.middle_names);
    let mut demographics = Demographics {
        given_name: text(&identity.given_name),
        family_name: text(&identity.family_name),
        birth_date: text(&identity.birth_date),
        sex: text(&identity.sex),
        postcode: text(&identity.postcode),
        middle_names: (!middle.is_empty()).then(|| middle.join(" ")),
        address_lines: address_lines(texts(&identity.address_lines).iter().map(String::as_str)),
        ..Demographics::default()
    };
    for name in texts(&identity.former_family_names) {
        demographics.add_former_family_name(&name);
    }
    for (kind, pointer) in &identity.household {
        for value in texts(&Some(pointer.clone())) {
            demographics.add_household(kind, &value);
        }
    }
    let restricted = identity
        .restricted
        .as_deref()
        .and_then(|p| element.pointer(p))
        .is_some_and(truthy);
    Some(SourceRecord {
        local_id,
        identifiers,
        demographics,
        score: None,
        restricted,
    })
}

/// A record document as view items. A pointer that finds nothing yields no item; one that finds
/// `null` yields a null item, because the source said so explicitly. The value of a field
/// whose pointer no other field's overlaps ([`movable`]) is moved out of the document.
fn record_items(mut document: Value, fields: &[FieldMapping], movable: &[bool]) -> Vec<Item> {
    fields
        .iter()
        .zip(movable)
        .filter_map(|(f, &movable)| {
            let value = if movable {
                document.pointer_mut(&f.pointer).map(Value::take)?
            } else {
                document.pointer(&f.pointer)?.clone()
            };
            Some(Item::new(f.category.as_str(), f.field.as_str(), value))
        })
        .collect()
}

#[async_trait]
impl Adapter for HttpJsonAdapter {
    async fn list(&self) -> Result<Option<Vec<SourceRecord>>, AdapterError> {
        let Some(url) = &self.list_url else {
            return Ok(None);
        };
        let response = http::get(&self.client, url.clone()).await?;
        if !response.is_success() {
            return Err(AdapterError::Status(response.status));
        }
        let document = response.json()?;
        let elements = document
            .pointer(&self.config.list_pointer)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                AdapterError::Protocol("list_pointer does not point at an array".into())
            })?;
        let records: Vec<SourceRecord> = elements
            .iter()
            .filter_map(|e| source_record(e, &self.config.identity))
            .collect();
        let skipped = elements.len() - records.len();
        if skipped > 0 {
            // Counted, not itemised: the elements hold personal data.
            tracing::warn!(skipped, "list elements without a local id were skipped");
        }
        tracing::debug!(count = records.len(), "JSON list");
        Ok(Some(records))
    }

    /// Sources of this kind have no search; a listable one is searched by identifier in memory,
    /// a query-only one cannot be traced into and answers no matches.
    async fn find(&self, probe: &Probe) -> Result<Vec<SourceRecord>, AdapterError> {
        if probe.identifiers.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .list()
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.matches_identifiers(probe))
            .collect())
    }

    async fn fetch(&self, local_id: &str) -> Result<Option<Vec<Item>>, AdapterError> {
        let Some(url) = self.record_url(local_id)? else {
            return Ok(None);
        };
        let response = http::get(&self.client, url).await?;
        if matches!(response.status, 404 | 410) {
            return Ok(None);
        }
        if !response.is_success() {
            return Err(AdapterError::Status(response.status));
        }
        let document = response.json()?;
        if !document.is_object() {
            return Err(AdapterError::Protocol("record is not a JSON object".into()));
        }
        let items = record_items(document, &self.config.fields, &self.movable);
        tracing::debug!(items = items.len(), "JSON fetch");
        Ok(Some(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encode_leaves_only_unreserved_characters() {
        assert_eq!(percent_encode("POL-3210-P"), "POL-3210-P");
        assert_eq!(percent_encode("a b/c?d#e%"), "a%20b%2Fc%3Fd%23e%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn pointers_must_be_rfc6901() {
        assert!(check_pointer("", "x").is_ok());
        assert!(check_pointer("/records/0", "x").is_ok());
        assert!(check_pointer("records", "x").is_err());
    }

    #[test]
    fn numeric_local_ids_are_read_as_text() {
        let identity = IdentityPointers {
            local_id: "/id".into(),
            identifiers: BTreeMap::from([("upn".into(), "/upn".into())]),
            given_name: None,
            family_name: None,
            birth_date: Some("/dob".into()),
            sex: None,
            postcode: None,
            middle_names: None,
            former_family_names: None,
            address_lines: None,
            household: BTreeMap::new(),
            restricted: Some("/refuge".into()),
        };
        let record = source_record(
            &serde_json::json!({"id": 42, "upn": ["not", "scalar"], "dob": "2011-03-04"}),
            &identity,
        )
        .unwrap();
        assert_eq!(record.local_id, "42");
        assert!(record.identifiers.is_empty());
        assert_eq!(
            record.demographics.birth_date.as_deref(),
            Some("2011-03-04")
        );
        assert_eq!(
            source_record(&serde_json::json!({"upn": "x"}), &identity),
            None
        );
        // The restriction pointer: true marks the record; absent or false does not.
        assert!(!record.restricted);
        for (refuge, restricted) in [
            (serde_json::json!(true), true),
            (serde_json::json!("yes"), true),
            (serde_json::json!(false), false),
            (serde_json::json!(null), false),
        ] {
            let r = source_record(&serde_json::json!({"id": 1, "refuge": refuge}), &identity);
            assert_eq!(r.unwrap().restricted, restricted);
        }
    }

    fn adapter(record_url: &str, pointers: &[&str]) -> HttpJsonAdapter {
        HttpJsonAdapter::new(HttpJsonConfig {
            record_url: record_url.into(),
            list_url: None,
            list_pointer: String::new(),
            bearer_token: None,
            tls: None,
            identity: IdentityPointers {
                local_id: "/id".into(),
                ..IdentityPointers::default()
            },
            fields: pointers
                .iter()
                .enumerate()
                .map(|(i, p)| FieldMapping {
                    pointer: (*p).into(),
                    field: format!("f{i}"),
                    category: "police.incidents".into(),
                })
                .collect(),
        })
        .unwrap()
    }

    /// A record's URL made by setting the parsed template's path is the URL the whole
    /// template would parse to, and a template with the id outside its path is parsed whole.
    #[test]
    fn a_record_url_is_the_template_parsed_with_the_id() {
        let templates = [
            ("http://127.0.0.1:8080/people/{id}", true),
            (
                "https://police.example/api/v2/{id}/record?view=full#top",
                true,
            ),
            ("https://police.example/a%20b/{id}.json", true),
            ("https://police.example/x/.{id}/y", true),
            ("https://police.example/{id}/{id}", true),
            ("https://police.example/people?id={id}", false),
            ("https://police.example/people#{id}", false),
            ("https://police.example/{id}/../people", false),
        ];
        let ids = ["POL-3210-P", "a b/c?d#e%", "é", "x.y", ".x", "..a", "~_-"];
        for (template, path) in templates {
            let a = adapter(template, &[]);
            assert_eq!(
                matches!(a.record_url, RecordUrl::Path(_)),
                path,
                "{template}"
            );
            for id in ids {
                let whole =
                    Url::parse(&template.replace(ID_PLACEHOLDER, &percent_encode(id))).unwrap();
                assert_eq!(a.record_url(id).unwrap(), Some(whole), "{template} {id}");
            }
        }
    }

    /// Moving values out of the document gives every field what copying them would, however
    /// the fields' pointers overlap.
    #[test]
    fn record_items_are_the_documents_values_whichever_fields_overlap() {
        let document = serde_json::json!({
            "incidents": [{"type": "Concern", "at": "2025-09-01"}, {"type": "Assault"}],
            "incidentsCount": 2,
            "a/b": {"c": true},
            "worker": null,
        });
        let pointers = [
            "/incidents",
            "/incidents/0/type",
            "/incidentsCount",
            "/incidents/1",
            "/a~1b",
            "/a~1b/c",
            "/worker",
            "/missing",
            "/incidentsCount",
        ];
        let a = adapter("http://127.0.0.1/people/{id}", &pointers);
        assert_eq!(
            a.movable,
            [false, false, false, false, false, false, true, true, false]
        );
        let items = record_items(document.clone(), &a.config.fields, &a.movable);
        let expected: Vec<Item> = a
            .config
            .fields
            .iter()
            .filter_map(|f| {
                let value = document.pointer(&f.pointer)?.clone();
                Some(Item::new(f.category.as_str(), f.field.as_str(), value))
            })
            .collect();
        assert_eq!(items, expected);
        assert_eq!(items.len(), 8);
        let lone = adapter("http://127.0.0.1/people/{id}", &["/incidents", "/worker"]);
        assert_eq!(lone.movable, [true, true]);
        assert_eq!(
            record_items(document.clone(), &lone.config.fields, &lone.movable)[0].value,
            document["incidents"]
        );
    }
}
