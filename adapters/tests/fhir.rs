//! The FHIR adapter against a loopback FHIR server that answers with the NHS PDS sandbox's own
//! responses (`shared/data/samples/pds_sandbox_*.json`) and with Flag bundles built here.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use weft_adapters::fhir::{FhirAdapter, FhirConfig, FlagMapping};
use weft_adapters::{Adapter, AdapterError, Demographics, Identifier, Item, Probe};

use common::{json_response, refused_port, sample_json, serve, text_response};

const FHIR: &str = "application/fhir+json";

#[derive(Clone)]
struct Fhir {
    base: String,
    search: Value,
    sensitive: Value,
    /// Query strings of the Patient searches received, to check what the adapter asked for.
    searches: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Authorization headers received.
    auth: Arc<Mutex<Vec<String>>>,
}

fn first_patient(bundle: &Value) -> Value {
    bundle["entry"][0]["resource"].clone()
}

fn searchset(base: &str, patients: &[Value], next: Option<String>) -> Value {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": patients.len(),
        "entry": patients.iter().map(|p| json!({
            "fullUrl": format!("{base}/{}/{}", p["resourceType"].as_str().unwrap(), p["id"].as_str().unwrap()),
            "search": {"mode": "match"},
            "resource": p,
        })).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        bundle["link"] =
            json!([{"relation": "self", "url": "ignored"}, {"relation": "next", "url": next}]);
    }
    bundle
}

fn flag(id: &str, status: &str, codings: Value, start: &str) -> Value {
    json!({
        "resourceType": "Flag",
        "id": id,
        "status": status,
        "code": {"coding": codings},
        "subject": {"reference": "Patient/9000000009"},
        "period": {"start": start},
    })
}

fn too_many_matches() -> Value {
    // The shape PDS answers with (Spine error code in details, FHIR issue code beside it).
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "multiple-matches",
            "details": {"coding": [{
                "system": "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode",
                "version": "1",
                "code": "TOO_MANY_MATCHES",
                "display": "Too Many Matches"
            }]}
        }]
    })
}

fn not_found() -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "not-found",
                   "details": {"coding": [{"code": "RESOURCE_NOT_FOUND"}]}}]
    })
}

async fn patient_search(
    State(s): State<Fhir>,
    headers: axum::http::HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(auth) = headers.get("authorization") {
        s.auth
            .lock()
            .unwrap()
            .push(auth.to_str().unwrap().to_owned());
    }
    s.searches.lock().unwrap().push(q.clone());
    if let Some(identifier) = q.get("identifier") {
        return match identifier.as_str() {
            "https://fhir.nhs.uk/Id/nhs-number|9000000009" => json_response(200, FHIR, &s.search),
            "https://fhir.nhs.uk/Id/nhs-number|9000000025" => {
                json_response(200, FHIR, &s.sensitive)
            }
            "https://fhir.nhs.uk/Id/nhs-number|1111111111" => {
                json_response(200, FHIR, &too_many_matches())
            }
            "https://fhir.nhs.uk/Id/nhs-number|2222222222" => text_response(200, "<html>oops"),
            "https://fhir.nhs.uk/Id/nhs-number|3333333333" => text_response(500, "down"),
            _ => json_response(200, FHIR, &searchset(&s.base, &[], None)),
        };
    }
    if q.contains_key("_count") {
        let page = q.get("page").map(String::as_str).unwrap_or("1");
        return if page == "1" {
            let next = format!("{}/Patient?_count=100&page=2", s.base);
            json_response(
                200,
                FHIR,
                &searchset(&s.base, &[first_patient(&s.search)], Some(next)),
            )
        } else {
            json_response(
                200,
                FHIR,
                &searchset(&s.base, &[first_patient(&s.sensitive)], None),
            )
        };
    }
    match q.get("family").map(String::as_str) {
        Some("Smith") => json_response(200, FHIR, &s.search),
        // PDS answers a too-broad search with 200; other servers use an error status.
        Some("Jones") => json_response(400, FHIR, &too_many_matches()),
        _ => json_response(200, FHIR, &searchset(&s.base, &[], None)),
    }
}

async fn patient_read(State(s): State<Fhir>, Path(id): Path<String>) -> Response {
    match id.as_str() {
        "9000000009" => json_response(200, FHIR, &first_patient(&s.search)),
        "9000000025" => json_response(200, FHIR, &first_patient(&s.sensitive)),
        // The unrestricted sample with its confidentiality code changed to R: every contact
        // detail is present in the resource, and none may come out.
        "restricted-copy" | "very-restricted-copy" => {
            let mut p = first_patient(&s.search);
            p["id"] = json!(id);
            let code = if id == "restricted-copy" { "R" } else { "V" };
            p["meta"]["security"][0]["code"] = json!(code);
            json_response(200, FHIR, &p)
        }
        "offsite" => {
            let mut p = first_patient(&s.search);
            p["id"] = json!("offsite");
            json_response(200, FHIR, &p)
        }
        "garbage" => text_response(200, "this is not { json"),
        "not-fhir" => json_response(200, "application/json", &json!({"hello": "world"})),
        "outcome" => json_response(200, FHIR, &not_found()),
        "boom" => text_response(500, "Internal Server Error"),
        _ => json_response(404, FHIR, &not_found()),
    }
}

async fn flag_search(State(s): State<Fhir>, Query(q): Query<HashMap<String, String>>) -> Response {
    let patient = q.get("patient").map(String::as_str).unwrap_or("");
    let page = q.get("page").map(String::as_str).unwrap_or("1");
    match (patient, page) {
        ("9000000009", "1") => {
            let flags = [
                flag(
                    "f1",
                    "active",
                    json!([{"system": "https://example.nhs.uk/flags", "code": "CPIS", "display": "Child protection plan"}]),
                    "2024-01-01",
                ),
                flag(
                    "f2",
                    "active",
                    json!([{"code": "DV", "display": "Domestic violence concern"}]),
                    "2024-02-01",
                ),
            ];
            let next = format!("{}/Flag?patient=9000000009&page=2", s.base);
            json_response(200, FHIR, &searchset(&s.base, &flags, Some(next)))
        }
        ("9000000009", "2") => {
            let flags = [
                flag(
                    "f3",
                    "inactive",
                    json!([{"code": "CPIS", "display": "Child protection plan"}]),
                    "2020-01-01",
                ),
                // Mapped through its second coding.
                flag(
                    "f4",
                    "active",
                    json!([{"code": "LOCAL-7", "display": "Local code"}, {"code": "CPIS", "display": "Child protection plan"}]),
                    "2024-03-01",
                ),
            ];
            json_response(200, FHIR, &searchset(&s.base, &flags, None))
        }
        ("offsite", _) => {
            let next = "http://elsewhere.invalid/Flag?patient=offsite&page=2".to_owned();
            json_response(200, FHIR, &searchset(&s.base, &[], Some(next)))
        }
        // No flags for anyone else: some servers answer an empty search with 404.
        _ => json_response(404, FHIR, &not_found()),
    }
}

struct Server {
    base: String,
    searches: Arc<Mutex<Vec<HashMap<String, String>>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

async fn fhir_server() -> Server {
    let searches = Arc::new(Mutex::new(Vec::new()));
    let auth = Arc::new(Mutex::new(Vec::new()));
    let (s2, a2) = (searches.clone(), auth.clone());
    let base = serve(move |base| {
        let state = Fhir {
            base,
            search: sample_json("pds_sandbox_PatientSearch.json"),
            sensitive: sample_json("pds_sandbox_Sensitive_PatientSearch.json"),
            searches: s2,
            auth: a2,
        };
        Router::new()
            .route("/Patient", get(patient_search))
            .route("/Patient/{id}", get(patient_read))
            .route("/Flag", get(flag_search))
            .with_state(state)
    })
    .await;
    Server {
        base,
        searches,
        auth,
    }
}

fn config(base: &str) -> FhirConfig {
    FhirConfig {
        base_url: base.to_owned(),
        bearer_token: Some("sandbox-token".into()),
        tls: None,
        flag_search: true,
        list: false,
        flags: vec![FlagMapping {
            code: "CPIS".into(),
            category: "health.cp_flag".into(),
        }],
    }
}

fn adapter(base: &str) -> FhirAdapter {
    FhirAdapter::new(config(base)).unwrap()
}

fn by_nhs(nhs: &str) -> Probe {
    Probe {
        identifiers: vec![Identifier::new("nhs_number", nhs)],
        ..Probe::default()
    }
}

fn field<'a>(items: &'a [Item], category: &str, field: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|i| i.category == category && i.field == field)
        .map(|i| &i.value)
}

#[tokio::test]
async fn search_by_nhs_number_returns_the_sandbox_patient() {
    let server = fhir_server().await;
    let found = adapter(&server.base)
        .find(&by_nhs("9000000009"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let record = &found[0];
    assert_eq!(record.local_id, "9000000009");
    assert_eq!(
        record.identifiers,
        vec![Identifier::new("nhs_number", "9000000009")]
    );
    assert_eq!(
        record.demographics,
        Demographics {
            given_name: Some("Jane".into()),
            family_name: Some("Smith".into()),
            birth_date: Some("2010-10-22".into()),
            sex: Some("female".into()),
            postcode: Some("LS1 6AE".into()),
            address_lines: vec![
                "1 Trevelyan Square".into(),
                "Boar Lane".into(),
                "City Centre".into(),
                "Leeds".into(),
                "West Yorkshire".into(),
            ],
            // The address's UPRN (its PAF key is not a household), and the home telephone,
            // which is also the emergency contact's: one key.
            household: vec!["uprn:123456789012".into(), "phone:01632960587".into()],
            ..Demographics::default()
        }
    );
    // The sandbox scores its answer 0.75: carried as thousandths for the index to weigh.
    assert_eq!(record.score, Some(750));
    let searches = server.searches.lock().unwrap();
    assert_eq!(
        searches[0].get("identifier").map(String::as_str),
        Some("https://fhir.nhs.uk/Id/nhs-number|9000000009")
    );
    assert_eq!(
        server.auth.lock().unwrap().first().map(String::as_str),
        Some("Bearer sandbox-token")
    );
}

#[tokio::test]
async fn search_finds_a_restricted_patient_without_its_postcode() {
    let server = fhir_server().await;
    let found = adapter(&server.base)
        .find(&by_nhs("9000000025"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].local_id, "9000000025");
    assert_eq!(found[0].demographics.family_name.as_deref(), Some("Smythe"));
    assert_eq!(found[0].demographics.postcode, None);
    assert!(found[0].demographics.address_lines.is_empty());
    assert!(found[0].demographics.household.is_empty());
}

#[tokio::test]
async fn search_by_demographics_sends_only_what_the_probe_has() {
    let server = fhir_server().await;
    let probe = Probe {
        identifiers: vec![Identifier::new("upn", "B801200005001")],
        demographics: Demographics {
            given_name: Some("Jane".into()),
            family_name: Some("Smith".into()),
            birth_date: Some("2010-10-22".into()),
            sex: Some("F".into()),
            ..Demographics::default()
        },
    };
    let found = adapter(&server.base).find(&probe).await.unwrap();
    assert_eq!(found.len(), 1);
    let searches = server.searches.lock().unwrap();
    let q = &searches[0];
    assert_eq!(q.get("family").map(String::as_str), Some("Smith"));
    assert_eq!(q.get("given").map(String::as_str), Some("Jane"));
    assert_eq!(q.get("birthdate").map(String::as_str), Some("2010-10-22"));
    assert_eq!(q.get("gender").map(String::as_str), Some("female"));
    assert!(!q.contains_key("identifier"));
}

#[tokio::test]
async fn a_probe_without_nhs_number_or_family_and_birth_date_is_not_sent() {
    let server = fhir_server().await;
    let probe = Probe {
        demographics: Demographics {
            family_name: Some("Smith".into()),
            ..Demographics::default()
        },
        ..Probe::default()
    };
    assert!(adapter(&server.base).find(&probe).await.unwrap().is_empty());
    assert!(server.searches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn no_match_is_an_empty_result() {
    let server = fhir_server().await;
    let found = adapter(&server.base)
        .find(&by_nhs("9000000017"))
        .await
        .unwrap();
    assert!(found.is_empty());
}

#[tokio::test]
async fn too_many_matches_is_reported_whatever_the_status() {
    let server = fhir_server().await;
    let a = adapter(&server.base);
    let err = a.find(&by_nhs("1111111111")).await.unwrap_err();
    assert!(matches!(err, AdapterError::TooManyMatches), "{err:?}");
    assert_eq!(err.reason(), "too_many_matches");

    let probe = Probe {
        demographics: Demographics {
            family_name: Some("Jones".into()),
            birth_date: Some("2010-01-01".into()),
            ..Demographics::default()
        },
        ..Probe::default()
    };
    let err = a.find(&probe).await.unwrap_err();
    assert!(matches!(err, AdapterError::TooManyMatches), "{err:?}");
}

#[tokio::test]
async fn read_maps_the_patient_and_its_flags() {
    let server = fhir_server().await;
    let items = adapter(&server.base)
        .fetch("9000000009")
        .await
        .unwrap()
        .unwrap();
    let core = |f| field(&items, "identity.core", f).cloned();
    assert_eq!(core("nhs_number"), Some(json!("9000000009")));
    assert_eq!(core("family_name"), Some(json!("Smith")));
    assert_eq!(core("given_name"), Some(json!("Jane")));
    assert_eq!(core("birth_date"), Some(json!("2010-10-22")));
    assert_eq!(core("sex"), Some(json!("female")));
    assert_eq!(
        core("nhs_number_verification"),
        Some(json!({"code": "01", "display": "Number present and verified"}))
    );
    assert_eq!(core("restricted"), None);
    assert_eq!(
        field(&items, "identity.contact", "address"),
        Some(&json!(
            "1 Trevelyan Square, Boar Lane, City Centre, Leeds, West Yorkshire, LS1 6AE"
        ))
    );
    assert_eq!(
        field(&items, "identity.contact", "postcode"),
        Some(&json!("LS1 6AE"))
    );
    assert_eq!(
        field(&items, "identity.contact", "telephone"),
        Some(&json!("01632960587"))
    );
    assert_eq!(
        field(&items, "health.registration", "gp"),
        Some(&json!({"ods_code": "Y12345"}))
    );

    // Two pages of flags: the inactive one is dropped, CPIS (in any coding) is a CP flag, and
    // the unmapped code falls to health.sensitive.
    assert_eq!(
        field(&items, "health.cp_flag", "flags"),
        Some(&json!([
            {"code": "CPIS", "display": "Child protection plan", "status": "active", "period_start": "2024-01-01"},
            {"code": "CPIS", "display": "Child protection plan", "status": "active", "period_start": "2024-03-01"},
        ]))
    );
    assert_eq!(
        field(&items, "health.sensitive", "flags"),
        Some(&json!([
            {"code": "DV", "display": "Domestic violence concern", "status": "active", "period_start": "2024-02-01"},
        ]))
    );
    assert_eq!(items.iter().filter(|i| i.field == "flags").count(), 2);
}

#[tokio::test]
async fn restricted_patient_yields_no_address_telecom_or_gp() {
    let server = fhir_server().await;
    let a = adapter(&server.base);
    for id in ["9000000025", "restricted-copy", "very-restricted-copy"] {
        let items = a.fetch(id).await.unwrap().unwrap();
        assert_eq!(
            field(&items, "identity.core", "restricted"),
            Some(&json!(true)),
            "{id}"
        );
        for forbidden in ["address", "postcode", "telephone", "gp"] {
            assert!(
                items.iter().all(|i| i.field != forbidden),
                "{id} leaked {forbidden}"
            );
        }
        assert!(items
            .iter()
            .all(|i| i.category != "identity.contact" && i.category != "health.registration"));
        // Identity is still there: the child can be recognised, not found.
        assert!(field(&items, "identity.core", "birth_date").is_some());
        // No flags for these patients: the 404 flag search is not an error.
        assert!(items.iter().all(|i| i.field != "flags"));
    }
}

#[tokio::test]
async fn unknown_patient_is_no_record() {
    let server = fhir_server().await;
    assert_eq!(
        adapter(&server.base).fetch("9999999999").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn ids_are_one_path_segment() {
    let server = fhir_server().await;
    // Would read Patient/9000000009 if the id were pasted into the path unencoded.
    let a = adapter(&server.base);
    assert_eq!(a.fetch("../Patient/9000000009").await.unwrap(), None);
    assert_eq!(a.fetch("..").await.unwrap(), None);
    assert_eq!(a.fetch("").await.unwrap(), None);
}

#[tokio::test]
async fn garbage_body_is_a_protocol_error() {
    let server = fhir_server().await;
    let a = adapter(&server.base);
    for id in ["garbage", "not-fhir", "outcome"] {
        let err = a.fetch(id).await.unwrap_err();
        assert!(matches!(err, AdapterError::Protocol(_)), "{id}: {err:?}");
        assert_eq!(err.reason(), "bad_response");
    }
    let err = a.find(&by_nhs("2222222222")).await.unwrap_err();
    assert!(matches!(err, AdapterError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn server_error_is_its_status() {
    let server = fhir_server().await;
    let a = adapter(&server.base);
    let err = a.fetch("boom").await.unwrap_err();
    assert!(matches!(err, AdapterError::Status(500)), "{err:?}");
    assert_eq!(err.reason(), "source_error");
    let err = a.find(&by_nhs("3333333333")).await.unwrap_err();
    assert!(matches!(err, AdapterError::Status(500)), "{err:?}");
}

#[tokio::test]
async fn next_links_may_not_leave_the_source() {
    let server = fhir_server().await;
    let err = adapter(&server.base).fetch("offsite").await.unwrap_err();
    assert!(matches!(err, AdapterError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let base = format!("http://127.0.0.1:{}/FHIR/R4", refused_port());
    let a = adapter(&base);
    let err = a.fetch("9000000009").await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
    assert_eq!(err.reason(), "connection_failed");
    // The message explains the failure but never carries the URL (and so the identifier).
    let message = err.to_string();
    assert!(!message.contains("9000000009"), "{message}");
    let err = a.find(&by_nhs("9000000009")).await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains("9000000009"), "{err}");
}

#[tokio::test]
async fn list_is_off_for_search_only_sources() {
    let server = fhir_server().await;
    assert_eq!(adapter(&server.base).list().await.unwrap(), None);
    assert!(server.searches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn list_follows_next_links() {
    let server = fhir_server().await;
    let a = FhirAdapter::new(FhirConfig {
        list: true,
        ..config(&server.base)
    })
    .unwrap();
    let records = a.list().await.unwrap().unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.local_id.as_str()).collect();
    assert_eq!(ids, ["9000000009", "9000000025"]);
    assert_eq!(
        server.searches.lock().unwrap()[0]
            .get("_count")
            .map(String::as_str),
        Some("100")
    );
}

#[tokio::test]
async fn trailing_slash_on_base_url() {
    let server = fhir_server().await;
    // The loopback server serves at its root; a trailing slash must not produce `//Patient`.
    let a = adapter(&format!("{}/", server.base));
    assert!(a.fetch("9000000009").await.unwrap().is_some());
}

#[test]
fn bad_base_url_is_a_configuration_error() {
    for url in [
        "not a url",
        "ftp://example.org/fhir",
        "mailto:someone@example.org",
    ] {
        let err = FhirAdapter::new(config(url)).err().unwrap();
        assert!(matches!(err, AdapterError::Config(_)), "{url}: {err:?}");
    }
    let err = FhirAdapter::new(FhirConfig {
        bearer_token: Some("bad\ntoken".into()),
        ..config("https://example.org/fhir")
    })
    .err()
    .unwrap();
    assert!(matches!(err, AdapterError::Config(_)), "{err:?}");
    let shown = format!("{:?}", config("https://example.org/fhir"));
    assert!(!shown.contains("sandbox-token"), "{shown}");
}

#[test]
fn fhir_config_reads_from_the_configuration_file() {
    let config: weft_adapters::AdapterConfig = serde_json::from_value(json!({
        "kind": "fhir",
        "base_url": "https://sandbox.api.service.nhs.uk/personal-demographics/FHIR/R4",
        "flags": [{"code": "CPIS", "category": "health.cp_flag"}]
    }))
    .unwrap();
    assert_eq!(config.kind(), "fhir");
    assert!(config.build().is_ok());
}
