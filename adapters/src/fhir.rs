//! FHIR R4 JSON over HTTP, as health systems and the NHS Personal Demographics Service speak it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use url::Url;

use crate::http::{self, Response};
use crate::record::{
    address_lines, household, Address, Demographics, Identifier, Item, Probe, SourceRecord,
};
use crate::{Adapter, AdapterError};

/// A FHIR server: a PDS-style endpoint (search only) or a full server that can list patients.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Base URL of the FHIR R4 endpoint, e.g. `https://fhir.example.nhs.uk/R4`.
    pub base_url: String,
    /// Bearer token sent to the source, when it wants one.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Whether `GET Patient` without parameters lists every patient (a local server does; PDS
    /// does not, so children are traced into it by NHS number or demographics).
    #[serde(default)]
    pub list: bool,
    /// Flag codes (`Flag.code.coding.code`) and the data category each maps to. A flag whose code
    /// is not listed is treated as `health.sensitive`, so unknown health information fails safe.
    #[serde(default)]
    pub flags: Vec<FlagMapping>,
    /// Whether to search `Flag?patient=…` when fetching a patient. PDS has no Flag endpoint
    /// and answers such a search with an error, which would make every fetch fail; set
    /// `flag_search = false` for PDS and other Patient-only servers.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub flag_search: bool,
    /// Client-certificate authentication (mutual TLS), alone or with the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::ClientTls>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Configurations get logged; the token must not be.
impl std::fmt::Debug for FhirConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirConfig")
            .field("base_url", &self.base_url)
            .field("bearer_token", &crate::redacted(&self.bearer_token))
            .field("list", &self.list)
            .field("flags", &self.flags)
            .field("flag_search", &self.flag_search)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagMapping {
    pub code: String,
    pub category: String,
}

/// The identifier system of NHS numbers in every NHS England FHIR API.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// Where `Patient.meta.security` confidentiality codes come from.
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
/// The UK Core extension on an NHS number saying whether it has been traced and verified.
pub const NHS_NUMBER_VERIFICATION_EXTENSION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";
/// The same extension as real systems send it: UK Core (R4, PDS), Care Connect (STU3, many
/// trust and GP systems), and GP Connect's own STU3 copy. The codes are the same in all three.
pub const NHS_NUMBER_VERIFICATION_EXTENSIONS: [&str; 3] = [
    NHS_NUMBER_VERIFICATION_EXTENSION,
    "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-NHSNumberVerificationStatus-1",
    "https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-GPC-NHSNumberVerificationStatus-1",
];
const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
/// UK Core's address key (a UPRN or a PAF key), as PDS sends it on `Patient.address`.
pub const ADDRESS_KEY_EXTENSION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AddressKey";

/// Flags are few; more pages than this means the server is looping or the search went wrong.
const FLAG_PAGE_LIMIT: usize = 20;
/// Traces return a handful of candidates; PDS never pages them.
const SEARCH_PAGE_LIMIT: usize = 20;
/// `_count=100` per page: 100 000 patients is far beyond any local child-health system.
const LIST_PAGE_LIMIT: usize = 1000;
const LIST_PAGE_SIZE: &str = "100";

const FHIR_JSON: &str = "application/fhir+json";

/// Category of a flag whose code the configuration does not map; see [`FhirConfig::flags`].
pub const UNMAPPED_FLAG_CATEGORY: &str = "health.sensitive";

/// Reads patients (and their flags) from a FHIR R4 server.
pub struct FhirAdapter {
    config: FhirConfig,
    base: Url,
    client: reqwest::Client,
}

impl FhirAdapter {
    pub fn new(config: FhirConfig) -> Result<Self, AdapterError> {
        let base = Url::parse(config.base_url.trim())
            .map_err(|e| AdapterError::Config(format!("FHIR base_url: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(AdapterError::Config(
                "FHIR base_url must be an http(s) URL".into(),
            ));
        }
        let client = http::client(
            FHIR_JSON,
            config.bearer_token.as_deref(),
            config.tls.as_ref(),
        )?;
        Ok(Self {
            config,
            base,
            client,
        })
    }

    /// `{base}/{segments…}`, each segment percent-encoded, so an id can never change the path.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One GET, with the checks every FHIR interaction shares. `Ok(None)` is "not found";
    /// what that means is up to the caller.
    async fn get(&self, url: Url) -> Result<Option<Value>, AdapterError> {
        let response = http::get(&self.client, url).await?;
        read_answer(&response)
    }

    /// Runs a search and follows `next` links, returning the resources of `resource_type`
    /// with each entry's `search.score`. `Ok(None)` when the first page is 404.
    async fn search(
        &self,
        first: Url,
        resource_type: &str,
        page_limit: usize,
    ) -> Result<Option<Vec<(Value, Option<f64>)>>, AdapterError> {
        let mut resources = Vec::new();
        let mut url = first;
        for page in 0..page_limit {
            let Some(bundle) = self.get(url.clone()).await? else {
                if page == 0 {
                    return Ok(None);
                }
                return Err(AdapterError::Status(404));
            };
            expect_resource_type(&bundle, "Bundle")?;
            resources.extend(
                bundle_entries(&bundle)
                    .filter(|(r, _)| resource_type_of(r) == Some(resource_type))
                    .map(|(r, score)| (r.clone(), score)),
            );
            match next_link(&bundle, &url, &self.base)? {
                Some(next) => url = next,
                None => {
                    tracing::debug!(pages = page + 1, count = resources.len(), "FHIR search");
                    return Ok(Some(resources));
                }
            }
        }
        Err(AdapterError::Protocol(format!(
            "search still had a next page after {page_limit} pages"
        )))
    }

    async fn flags(&self, local_id: &str) -> Result<Vec<Value>, AdapterError> {
        if !self.config.flag_search {
            return Ok(Vec::new());
        }
        let url = self.url(&["Flag"], &[("patient", local_id)]);
        Ok(self
            .search(url, "Flag", FLAG_PAGE_LIMIT)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|(flag, _)| flag)
            .collect())
    }

    async fn patients(
        &self,
        url: Url,
        page_limit: usize,
    ) -> Result<Vec<SourceRecord>, AdapterError> {
        // A 404 on a search is not "no such patient" (that is an empty Bundle) but a wrong URL.
        let patients = self
            .search(url, "Patient", page_limit)
            .await?
            .ok_or(AdapterError::Status(404))?;
        Ok(patients
            .iter()
            .filter_map(|(patient, score)| {
                let mut record = source_record(patient)?;
                // Scores outside 0..=1 are the source's error; they are dropped, not clamped.
                record.score = score
                    .filter(|s| (0.0..=1.0).contains(s))
                    .map(|s| (s * 1000.0).round() as u16);
                Some(record)
            })
            .collect())
    }
}

#[async_trait]
impl Adapter for FhirAdapter {
    async fn list(&self) -> Result<Option<Vec<SourceRecord>>, AdapterError> {
        if !self.config.list {
            return Ok(None);
        }
        let url = self.url(&["Patient"], &[("_count", LIST_PAGE_SIZE)]);
        self.patients(url, LIST_PAGE_LIMIT).await.map(Some)
    }

    async fn find(&self, probe: &Probe) -> Result<Vec<SourceRecord>, AdapterError> {
        let Some(query) = search_parameters(probe) else {
            return Ok(Vec::new());
        };
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = self.url(&["Patient"], &query);
        self.patients(url, SEARCH_PAGE_LIMIT).await
    }

    async fn fetch(&self, local_id: &str) -> Result<Option<Vec<Item>>, AdapterError> {
        if !is_addressable_id(local_id) {
            // No resource can have it; and `..` would otherwise address another URL.
            return Ok(None);
        }
        // Both at once: the caller's deadline covers the pair, and a missing patient simply
        // has its (empty) flag search thrown away.
        let (patient, flags) = futures::join!(
            self.get(self.url(&["Patient", local_id], &[])),
            self.flags(local_id)
        );
        let Some(patient) = patient? else {
            return Ok(None);
        };
        expect_resource_type(&patient, "Patient")?;
        let mut items = patient_items(&patient);
        let flags = flags?;
        items.extend(flag_items(&flags, &self.config.flags));
        tracing::debug!(items = items.len(), flags = flags.len(), "FHIR fetch");
        Ok(Some(items))
    }
}

/// Whether an id can be put in a read URL. Ids outside FHIR's `[A-Za-z0-9.-]{1,64}` are
/// tolerated (they are percent-encoded), but an empty id or a dot segment would address another
/// URL (`Patient/..` is the search endpoint), even percent-encoded.
fn is_addressable_id(id: &str) -> bool {
    !matches!(id, "" | "." | "..")
}

/// Judges a response the FHIR way: a `TOO_MANY_MATCHES` outcome whatever the status, 404/410 as
/// not found, other errors as their status, and a success body that must be a FHIR resource.
fn read_answer(response: &Response) -> Result<Option<Value>, AdapterError> {
    let json = response.json();
    if let Ok(body) = &json {
        if is_too_many_matches(body) {
            return Err(AdapterError::TooManyMatches);
        }
    }
    if matches!(response.status, 404 | 410) {
        return Ok(None);
    }
    if !response.is_success() {
        return Err(AdapterError::Status(response.status));
    }
    let body = json?;
    if resource_type_of(&body).is_none() {
        return Err(AdapterError::Protocol(
            "response is JSON but not a FHIR resource (no resourceType)".into(),
        ));
    }
    Ok(Some(body))
}

fn resource_type_of(resource: &Value) -> Option<&str> {
    resource.get("resourceType").and_then(Value::as_str)
}

/// A successful answer of the wrong type is a protocol error. An `OperationOutcome` is reported
/// by its issue codes only: its diagnostics text may quote the search, i.e. identifiers.
fn expect_resource_type(resource: &Value, expected: &str) -> Result<(), AdapterError> {
    match resource_type_of(resource) {
        Some(t) if t == expected => Ok(()),
        Some("OperationOutcome") => {
            let codes: Vec<&str> = issues(resource)
                .filter_map(|i| i.get("code").and_then(Value::as_str))
                .collect();
            Err(AdapterError::Protocol(format!(
                "expected {expected}, got OperationOutcome ({})",
                codes.join(", ")
            )))
        }
        Some(other) => Err(AdapterError::Protocol(format!(
            "expected {expected}, got {other}"
        ))),
        None => Err(AdapterError::Protocol(format!(
            "expected {expected}, got no resourceType"
        ))),
    }
}

fn issues(outcome: &Value) -> impl Iterator<Item = &Value> {
    array(outcome, "issue")
}

/// PDS says `TOO_MANY_MATCHES` in `issue.details.coding.code` (with issue code
/// `multiple-matches`); other servers only use the issue code, so either is accepted.
fn is_too_many_matches(body: &Value) -> bool {
    if resource_type_of(body) != Some("OperationOutcome") {
        return false;
    }
    issues(body).any(|issue| {
        let code = issue.get("code").and_then(Value::as_str);
        matches!(code, Some("multiple-matches" | "TOO_MANY_MATCHES"))
            || issue
                .get("details")
                .map(|d| array(d, "coding").any(|c| str_at(c, "code") == Some("TOO_MANY_MATCHES")))
                .unwrap_or(false)
    })
}

fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .unwrap_or_default()
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn bundle_entries(bundle: &Value) -> impl Iterator<Item = (&Value, Option<f64>)> {
    array(bundle, "entry")
        // Outcome entries carry warnings about the search, not matches.
        .filter(|e| e.pointer("/search/mode").and_then(Value::as_str) != Some("outcome"))
        .filter_map(|e| {
            let score = e.pointer("/search/score").and_then(Value::as_f64);
            e.get("resource").map(|r| (r, score))
        })
}

/// The `next` page of a Bundle, resolved against the page it came from. It must stay on the
/// source's origin: the client sends the source's bearer token with every request.
fn next_link(bundle: &Value, current: &Url, base: &Url) -> Result<Option<Url>, AdapterError> {
    let Some(href) = array(bundle, "link")
        .find(|l| str_at(l, "relation") == Some("next"))
        .and_then(|l| str_at(l, "url"))
    else {
        return Ok(None);
    };
    let next = current
        .join(href)
        .map_err(|e| AdapterError::Protocol(format!("bad next link: {e}")))?;
    if next.origin() != base.origin() {
        return Err(AdapterError::Protocol(
            "next link points away from the source's base URL".into(),
        ));
    }
    Ok(Some(next))
}

/// The search a probe asks for: by NHS number when it has one (deterministic, and what PDS
/// answers best), otherwise by demographics, which PDS only accepts with family name and date
/// of birth. `None` when the probe has too little to search on.
fn search_parameters(probe: &Probe) -> Option<Vec<(&'static str, String)>> {
    if let Some(nhs) = probe.identifier("nhs_number") {
        return Some(vec![(
            "identifier",
            format!("{NHS_NUMBER_SYSTEM}|{}", nhs.trim()),
        )]);
    }
    let d = &probe.demographics;
    let family = non_empty(d.family_name.as_deref())?;
    let birth_date = non_empty(d.birth_date.as_deref())?;
    let mut query = vec![("family", family.to_owned())];
    if let Some(given) = non_empty(d.given_name.as_deref()) {
        query.push(("given", given.to_owned()));
    }
    query.push(("birthdate", birth_date.to_owned()));
    if let Some(gender) = d.sex.as_deref().and_then(fhir_gender) {
        query.push(("gender", gender.to_owned()));
    }
    Some(query)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Sex as sources record it (`F`, `female`, the census codes `1`/`2`) in FHIR's words. An
/// unknown spelling is left out of the search rather than guessed, which would miss the child.
fn fhir_gender(sex: &str) -> Option<&'static str> {
    match sex.trim().to_ascii_lowercase().as_str() {
        "f" | "female" | "2" => Some("female"),
        "m" | "male" | "1" => Some("male"),
        "other" | "9" => Some("other"),
        "u" | "unknown" | "0" => Some("unknown"),
        _ => None,
    }
}

/// `R` (restricted) and `V` (very restricted) mark a patient whose whereabouts must not be
/// disclosed, typically someone in hiding from an abuser. A code without a system is treated as
/// the confidentiality code it looks like: failing safe matters more than strictness here.
pub fn is_restricted(patient: &Value) -> bool {
    patient
        .pointer("/meta/security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| {
            matches!(str_at(s, "system"), None | Some(CONFIDENTIALITY_SYSTEM))
                && matches!(str_at(s, "code"), Some("R" | "V"))
        })
}

fn nhs_number_identifier(patient: &Value) -> Option<&Value> {
    array(patient, "identifier").find(|i| str_at(i, "system") == Some(NHS_NUMBER_SYSTEM))
}

/// The NHS number's verification status (`01` = present and verified), as `{code, display}`.
/// Any of the three extension URLs in [`NHS_NUMBER_VERIFICATION_EXTENSIONS`] is read, with the
/// value as a `valueCodeableConcept` (as profiled) or a bare `valueCoding` (as some systems
/// send it). Read leniently: a missing or odd extension is simply absent.
pub fn nhs_number_verification(patient: &Value) -> Option<Value> {
    let extension = array(nhs_number_identifier(patient)?, "extension").find(|e| {
        str_at(e, "url").is_some_and(|u| NHS_NUMBER_VERIFICATION_EXTENSIONS.contains(&u))
    })?;
    let coding = extension
        .get("valueCodeableConcept")
        .and_then(|cc| array(cc, "coding").find(|c| str_at(c, "code").is_some()))
        .or_else(|| extension.get("valueCoding"))?;
    let code = str_at(coding, "code")?;
    Some(json!({ "code": code, "display": str_at(coding, "display") }))
}

/// Today as `YYYY-MM-DD`, for comparing with FHIR period ends (dates or date-times).
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

fn has_ended(element: &Value, today: &str) -> bool {
    element
        .pointer("/period/end")
        .and_then(Value::as_str)
        .map(|end| end.get(..10).unwrap_or(end) < today)
        .unwrap_or(false)
}

/// The name to show: `usual` (what PDS uses for the current name), then `official`. Periods are
/// not used to exclude names: PDS sandbox and real records carry stale periods on current names.
fn preferred_name(patient: &Value) -> Option<&Value> {
    let rank = |n: &Value| match str_at(n, "use") {
        Some("usual") => 0,
        Some("official") => 1,
        None => 2,
        Some("temp") => 3,
        Some("nickname") => 4,
        _ => 5,
    };
    array(patient, "name").min_by_key(|n| rank(n))
}

fn given_names(name: &Value) -> Option<String> {
    let given: Vec<&str> = array(name, "given")
        .filter_map(Value::as_str)
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    (!given.is_empty()).then(|| given.join(" "))
}

/// The home address, current if there is one. Old and billing addresses are never a child's
/// whereabouts.
fn current_address(patient: &Value) -> Option<&Value> {
    let today = today();
    array(patient, "address")
        .filter(|a| !matches!(str_at(a, "use"), Some("old" | "billing")))
        .min_by_key(|a| (str_at(a, "use") != Some("home"), has_ended(a, &today)))
}

/// An address as one line: its lines, town, district and postcode, comma-separated.
fn address_line(address: &Value) -> Option<String> {
    let mut parts: Vec<&str> = array(address, "line").filter_map(Value::as_str).collect();
    if parts.is_empty() {
        parts.extend(str_at(address, "text"));
    }
    parts.extend(str_at(address, "city"));
    parts.extend(str_at(address, "district"));
    parts.extend(str_at(address, "postalCode"));
    let parts: Vec<&str> = parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn telephone(patient: &Value) -> Option<&str> {
    let today = today();
    array(patient, "telecom")
        .filter(|t| str_at(t, "system") == Some("phone") && str_at(t, "use") != Some("old"))
        .min_by_key(|t| has_ended(t, &today))
        .and_then(|t| str_at(t, "value"))
}

/// The registered GP practice as `{ods_code, name}`: UK FHIR identifies practices by ODS code,
/// and the name (when the server sends a display) is what a practitioner recognises.
fn general_practitioner(patient: &Value) -> Option<Value> {
    let gp = array(patient, "generalPractitioner").next()?;
    let mut out = Map::new();
    if let Some(identifier) = gp.get("identifier") {
        if let Some(value) = str_at(identifier, "value") {
            match str_at(identifier, "system") {
                None | Some(ODS_SYSTEM) => {
                    out.insert("ods_code".into(), value.into());
                }
                Some(system) => {
                    out.insert("identifier".into(), value.into());
                    out.insert("system".into(), system.into());
                }
            }
        }
    }
    if let Some(display) = str_at(gp, "display") {
        out.insert("name".into(), display.into());
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// A Patient as view items. A restricted patient yields no address, postcode, telephone or GP
/// (any of them could lead someone to the child) and carries `restricted = true` instead.
pub fn patient_items(patient: &Value) -> Vec<Item> {
    const CORE: &str = "identity.core";
    const CONTACT: &str = "identity.contact";
    let restricted = is_restricted(patient);
    let mut items = Vec::new();
    let mut push = |category: &str, field: &str, value: Option<Value>| {
        if let Some(value) = value {
            items.push(Item::new(category, field, value));
        }
    };
    push(
        CORE,
        "nhs_number",
        nhs_number_identifier(patient)
            .and_then(|i| str_at(i, "value"))
            .map(Value::from),
    );
    push(
        CORE,
        "nhs_number_verification",
        nhs_number_verification(patient),
    );
    let name = preferred_name(patient);
    push(
        CORE,
        "family_name",
        name.and_then(|n| str_at(n, "family")).map(Value::from),
    );
    push(
        CORE,
        "given_name",
        name.and_then(given_names).map(Value::from),
    );
    push(
        CORE,
        "birth_date",
        str_at(patient, "birthDate").map(Value::from),
    );
    push(CORE, "sex", str_at(patient, "gender").map(Value::from));
    if restricted {
        push(CORE, "restricted", Some(Value::Bool(true)));
    } else {
        let address = current_address(patient);
        push(
            CONTACT,
            "address",
            address.and_then(address_line).map(Value::from),
        );
        push(
            CONTACT,
            "postcode",
            address
                .and_then(|a| str_at(a, "postalCode"))
                .map(Value::from),
        );
        push(CONTACT, "telephone", telephone(patient).map(Value::from));
        push("health.registration", "gp", general_practitioner(patient));
    }
    items
}

/// A Patient as a record for the master child index. The postcode of a restricted patient is
/// left out for the same reason as in [`patient_items`], and so is everything else that says
/// where the child lives or who with: address lines, former addresses and household keys.
///
/// The preferred name's first `given` is the given name and the rest are middle names; the
/// family names of the patient's other names (`old`, `maiden`, `official` beside `usual`) are
/// former family names. The household keys are the current address's UPRN (UK Core
/// `AddressKey`), the home telephone, and the telephone numbers of the patient's contacts
/// (`Patient.contact`, where PDS and GP systems keep parents and carers).
fn source_record(patient: &Value) -> Option<SourceRecord> {
    let local_id = str_at(patient, "id")?.to_owned();
    let identifiers = nhs_number_identifier(patient)
        .and_then(|i| str_at(i, "value"))
        .map(|v| vec![Identifier::new("nhs_number", v)])
        .unwrap_or_default();
    let name = preferred_name(patient);
    let given: Vec<&str> = name
        .map(|n| {
            array(n, "given")
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut demographics = Demographics {
        given_name: given.first().map(|g| (*g).to_owned()),
        middle_names: (given.len() > 1).then(|| given[1..].join(" ")),
        family_name: name.and_then(|n| str_at(n, "family")).map(str::to_owned),
        birth_date: str_at(patient, "birthDate").map(str::to_owned),
        sex: str_at(patient, "gender").map(str::to_owned),
        ..Demographics::default()
    };
    for other in array(patient, "name") {
        if Some(other) == name || str_at(other, "use") == Some("anonymous") {
            continue;
        }
        if let Some(family) = str_at(other, "family") {
            demographics.add_former_family_name(family);
        }
    }
    if !is_restricted(patient) {
        let current = current_address(patient);
        if let Some(a) = current {
            demographics.postcode = str_at(a, "postalCode").map(str::to_owned);
            demographics.address_lines = fhir_address_lines(a);
            for uprn in address_keys(a, "UPRN") {
                demographics.add_household(household::UPRN, uprn);
            }
        }
        let today = today();
        demographics.former_addresses = array(patient, "address")
            .filter(|a| Some(*a) != current)
            .filter(|a| str_at(a, "use") == Some("old") || has_ended(a, &today))
            .filter_map(|a| {
                let lines = fhir_address_lines(a);
                Address::new(lines.iter().map(String::as_str), str_at(a, "postalCode"))
            })
            .collect();
        for phone in array(patient, "telecom")
            .filter(|t| str_at(t, "system") == Some("phone") && str_at(t, "use") == Some("home"))
            .filter_map(|t| str_at(t, "value"))
        {
            demographics.add_household(household::PHONE, phone);
        }
        for contact in array(patient, "contact") {
            for phone in array(contact, "telecom")
                .filter(|t| matches!(str_at(t, "system"), Some("phone" | "sms")))
                .filter_map(|t| str_at(t, "value"))
            {
                demographics.add_household(household::PHONE, phone);
            }
        }
    }
    Some(SourceRecord {
        local_id,
        identifiers,
        demographics,
        score: None,
        restricted: is_restricted(patient),
    })
}

/// An address's lines, city and district, the postcode apart; a line repeated (some systems
/// put the town in `line` and in `city`) is kept once.
fn fhir_address_lines(address: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let parts = array(address, "line")
        .filter_map(Value::as_str)
        .chain(str_at(address, "city"))
        .chain(str_at(address, "district"));
    for part in address_lines(parts) {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&part)) {
            out.push(part);
        }
    }
    out
}

/// The values of an address's UK Core `AddressKey` extensions of one type (`UPRN`, `PAF`).
fn address_keys<'a>(address: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    array(address, "extension")
        .filter(|e| str_at(e, "url") == Some(ADDRESS_KEY_EXTENSION))
        .filter(move |e| {
            array(e, "extension").any(|p| {
                str_at(p, "url") == Some("type")
                    && p.pointer("/valueCoding/code").and_then(Value::as_str) == Some(kind)
            })
        })
        .filter_map(|e| {
            array(e, "extension")
                .find(|p| str_at(p, "url") == Some("value"))
                .and_then(|p| str_at(p, "valueString"))
        })
}

/// Active flags as one `flags` item per category. A flag is categorised by the first of its
/// codings that the configuration maps; one with no mapped coding is `health.sensitive`, so an
/// unexpected kind of flag is withheld unless policy allows the most sensitive category.
pub fn flag_items(flags: &[Value], mappings: &[FlagMapping]) -> Vec<Item> {
    let mut by_category: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for flag in flags {
        if str_at(flag, "status") != Some("active") {
            continue;
        }
        let codings: Vec<&Value> = flag
            .get("code")
            .map(|c| array(c, "coding").collect())
            .unwrap_or_default();
        let mapped = codings.iter().find_map(|coding| {
            let code = str_at(coding, "code")?;
            mappings
                .iter()
                .find(|m| m.code == code)
                .map(|m| (*coding, m.category.as_str()))
        });
        let (coding, category) = match mapped {
            Some((coding, category)) => (Some(coding), category),
            None => (codings.first().copied(), UNMAPPED_FLAG_CATEGORY),
        };
        let display = coding
            .and_then(|c| str_at(c, "display"))
            .or_else(|| flag.pointer("/code/text").and_then(Value::as_str));
        by_category.entry(category).or_default().push(json!({
            "code": coding.and_then(|c| str_at(c, "code")),
            "display": display,
            "status": "active",
            "period_start": flag.pointer("/period/start").and_then(Value::as_str),
        }));
    }
    by_category
        .into_iter()
        .map(|(category, flags)| Item::new(category, "flags", Value::Array(flags)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(security: &str) -> Value {
        json!({
            "resourceType": "Patient",
            "id": "9000000009",
            "meta": {"security": [{"system": CONFIDENTIALITY_SYSTEM, "code": security}]},
            "name": [
                {"use": "old", "family": "Maiden", "given": ["Old"]},
                {"use": "official", "family": "Smith", "given": ["Jane", "Anne"]},
            ],
            "address": [
                {"use": "old", "line": ["1 Old Road"], "postalCode": "OL1 1DD"},
                {"use": "home", "line": ["2 Former Street"], "postalCode": "FO1 1RM",
                 "period": {"end": "2001-01-01"}},
                {"use": "home", "line": ["3 New Street"], "city": "Leeds", "postalCode": "LS1 1AA"},
            ],
            "telecom": [
                {"system": "email", "value": "x@example.org"},
                {"system": "phone", "use": "old", "value": "000"},
                {"system": "phone", "use": "mobile", "value": "07700900000"},
            ],
            "generalPractitioner": [{"display": "The Surgery",
                "identifier": {"system": ODS_SYSTEM, "value": "Y12345"}}],
        })
    }

    fn item<'a>(items: &'a [Item], field: &str) -> Option<&'a Value> {
        items.iter().find(|i| i.field == field).map(|i| &i.value)
    }

    #[test]
    fn picks_the_current_home_address_and_a_live_phone() {
        let items = patient_items(&patient("U"));
        assert_eq!(
            item(&items, "address"),
            Some(&json!("3 New Street, Leeds, LS1 1AA"))
        );
        assert_eq!(item(&items, "postcode"), Some(&json!("LS1 1AA")));
        assert_eq!(item(&items, "telephone"), Some(&json!("07700900000")));
        assert_eq!(item(&items, "given_name"), Some(&json!("Jane Anne")));
        assert_eq!(item(&items, "family_name"), Some(&json!("Smith")));
        assert_eq!(
            item(&items, "gp"),
            Some(&json!({"ods_code": "Y12345", "name": "The Surgery"}))
        );
        assert_eq!(item(&items, "restricted"), None);
    }

    #[test]
    fn a_record_carries_middle_and_former_names_addresses_and_household() {
        let mut p = patient("U");
        p["address"][2]["extension"] = json!([{"url": ADDRESS_KEY_EXTENSION, "extension": [
            {"url": "type", "valueCoding": {"code": "UPRN"}},
            {"url": "value", "valueString": "100023336956"}]}]);
        p["contact"] = json!([{"relationship": [{"coding": [{"code": "N"}]}],
            "telecom": [{"system": "phone", "value": "+44 7700 900001"},
                        {"system": "email", "value": "parent@example.org"}]}]);
        // A stale period does not end a home phone: PDS carries them on current numbers.
        p["telecom"]
            .as_array_mut()
            .unwrap()
            .push(json!({"system": "phone", "use": "home",
            "value": "0113 496 0000", "period": {"end": "2001-01-01"}}));
        p["name"]
            .as_array_mut()
            .unwrap()
            .push(json!({"use": "anonymous", "family": "Unknown", "given": ["Baby"]}));
        let d = source_record(&p).unwrap().demographics;
        assert_eq!(d.given_name.as_deref(), Some("Jane"));
        assert_eq!(d.middle_names.as_deref(), Some("Anne"));
        assert_eq!(d.family_name.as_deref(), Some("Smith"));
        assert_eq!(d.former_family_names, ["Maiden"], "not the anonymous name");
        assert_eq!(d.postcode.as_deref(), Some("LS1 1AA"));
        assert_eq!(d.address_lines, ["3 New Street", "Leeds"]);
        assert_eq!(
            d.former_addresses,
            vec![
                Address::new(["1 Old Road"], Some("OL1 1DD")).unwrap(),
                Address::new(["2 Former Street"], Some("FO1 1RM")).unwrap(),
            ]
        );
        assert_eq!(
            d.household,
            [
                "uprn:100023336956",
                "phone:01134960000",
                "phone:07700900001"
            ],
            "the home phone and the contact's; not the old or the mobile number"
        );
        // What a view shows is unchanged: the given name as the source wrote all of it.
        assert_eq!(
            item(&patient_items(&p), "given_name"),
            Some(&json!("Jane Anne"))
        );
    }

    #[test]
    fn restricted_and_very_restricted_hide_whereabouts() {
        for code in ["R", "V"] {
            let p = patient(code);
            assert!(is_restricted(&p));
            let items = patient_items(&p);
            assert_eq!(item(&items, "restricted"), Some(&json!(true)));
            for hidden in ["address", "postcode", "telephone", "gp"] {
                assert_eq!(item(&items, hidden), None, "{code}: {hidden}");
            }
            let d = source_record(&p).unwrap().demographics;
            assert_eq!(d.postcode, None);
            assert!(d.address_lines.is_empty() && d.former_addresses.is_empty());
            assert!(d.household.is_empty());
        }
        assert!(!is_restricted(&patient("N")));
        // A restricted code from another code system is not a confidentiality marking.
        let mut other = patient("R");
        other["meta"]["security"][0]["system"] = json!("http://example.org/other");
        assert!(!is_restricted(&other));
    }

    #[test]
    fn unmapped_flags_fail_safe_and_inactive_ones_are_dropped() {
        let flags = vec![
            json!({"resourceType": "Flag", "status": "active",
                   "code": {"text": "Free text only"}}),
            json!({"resourceType": "Flag", "status": "entered-in-error",
                   "code": {"coding": [{"code": "CPIS"}]}}),
        ];
        let mappings = vec![FlagMapping {
            code: "CPIS".into(),
            category: "health.cp_flag".into(),
        }];
        let items = flag_items(&flags, &mappings);
        assert_eq!(
            items,
            vec![Item::new(
                UNMAPPED_FLAG_CATEGORY,
                "flags",
                json!([{"code": null, "display": "Free text only", "status": "active",
                        "period_start": null}])
            )]
        );
    }

    #[test]
    fn too_many_matches_by_issue_code_or_details() {
        let by_code = json!({"resourceType": "OperationOutcome",
                             "issue": [{"code": "multiple-matches"}]});
        let by_details = json!({"resourceType": "OperationOutcome",
            "issue": [{"code": "invalid", "details": {"coding": [{"code": "TOO_MANY_MATCHES"}]}}]});
        let other = json!({"resourceType": "OperationOutcome", "issue": [{"code": "not-found"}]});
        assert!(is_too_many_matches(&by_code));
        assert!(is_too_many_matches(&by_details));
        assert!(!is_too_many_matches(&other));
        assert!(!is_too_many_matches(&json!({"resourceType": "Bundle"})));
    }

    #[test]
    fn gender_spellings() {
        assert_eq!(fhir_gender("F"), Some("female"));
        assert_eq!(fhir_gender(" male "), Some("male"));
        assert_eq!(fhir_gender("2"), Some("female"));
        assert_eq!(fhir_gender("X"), None);
    }

    #[test]
    fn verification_status_is_read_leniently() {
        let mut p = patient("U");
        assert_eq!(nhs_number_verification(&p), None);
        p["identifier"] = json!([{"system": NHS_NUMBER_SYSTEM, "value": "9000000009",
            "extension": [{"url": NHS_NUMBER_VERIFICATION_EXTENSION,
                           "valueCodeableConcept": {"coding": [{"code": "02"}]}}]}]);
        assert_eq!(
            nhs_number_verification(&p),
            Some(json!({"code": "02", "display": null}))
        );
    }

    #[test]
    fn verification_status_in_each_form_real_systems_send() {
        let with = |extension: Value| {
            let mut p = patient("U");
            p["identifier"] = json!([{"system": NHS_NUMBER_SYSTEM, "value": "9000000009",
                                      "extension": [extension]}]);
            nhs_number_verification(&p)
        };
        let verified = Some(json!({"code": "01", "display": "Number present and verified"}));
        // UK Core (R4), as PDS sends it.
        assert_eq!(
            with(json!({"url": NHS_NUMBER_VERIFICATION_EXTENSIONS[0],
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus",
                    "code": "01", "display": "Number present and verified"}]}})),
            verified
        );
        // Care Connect (STU3).
        assert_eq!(
            with(json!({"url": NHS_NUMBER_VERIFICATION_EXTENSIONS[1],
                "valueCodeableConcept": {"coding": [{
                    "system": "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1",
                    "code": "01", "display": "Number present and verified"}]}})),
            verified
        );
        // GP Connect's STU3 copy, here with a bare valueCoding.
        assert_eq!(
            with(json!({"url": NHS_NUMBER_VERIFICATION_EXTENSIONS[2],
                "valueCoding": {"code": "01", "display": "Number present and verified"}})),
            verified
        );
        // Another extension on the identifier is not mistaken for it.
        assert_eq!(
            with(json!({"url": "https://example.org/other",
                "valueCoding": {"code": "01"}})),
            None
        );
    }
}
