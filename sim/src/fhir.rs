//! A health partner speaking FHIR R4 JSON, shaped like the NHS PDS sandbox responses
//! (`/work/shared/data/samples/pds_sandbox_PatientSearch.json`) but able to list its patients
//! as a trust's own FHIR server would.
//!
//! Endpoints: `GET /metadata`, `GET /Patient/{id}`, `GET /Patient?…` (search by
//! `identifier=https://fhir.nhs.uk/Id/nhs-number|n`, `family`, `given`, `birthdate`, `gender`,
//! `_id`; without criteria it lists everyone), and `GET /Flag?patient={id}`. Results are paged
//! with `_count` (default [`DEFAULT_PAGE`]) and `_offset`, and `Bundle.link` `next` points at the
//! following page, so a listing client that ignores paging misses children.
//!
//! Restricted patients (`meta.security` R) are returned without address, telecom or GP, as PDS
//! returns them; their flags are still served.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use serde_json::{json, Value};

use crate::population::{flag_codes, HealthFlag, HealthRecord, Population};
use crate::server::SimServer;

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
pub const FHIR_JSON: &str = "application/fhir+json";
/// Page size when the client sends no `_count`, as small as public FHIR servers use.
pub const DEFAULT_PAGE: usize = 20;
const MAX_PAGE: usize = 1000;

struct Fhir {
    base: String,
    patients: Vec<HealthRecord>,
}

/// Starts the server on a free loopback port with every health record of the population.
pub async fn start(pop: &Population) -> anyhow::Result<SimServer> {
    let patients: Vec<HealthRecord> = pop.health_records().cloned().collect();
    SimServer::start(|base| router(base, patients)).await
}

fn router(base: &str, patients: Vec<HealthRecord>) -> Router {
    let state = Arc::new(Fhir {
        base: base.to_string(),
        patients,
    });
    Router::new()
        .route("/metadata", get(metadata))
        .route("/Patient", get(search_patients))
        .route("/Patient/{id}", get(read_patient))
        .route("/Flag", get(search_flags))
        .with_state(state)
}

fn fhir(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    fhir(
        status,
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }],
        }),
    )
}

async fn metadata(State(s): State<Arc<Fhir>>) -> Response {
    let patient_params: Vec<Value> = ["_id", "identifier", "family", "given", "gender"]
        .iter()
        .map(|n| json!({ "name": n, "type": if *n == "_id" { "token" } else { "string" } }))
        .chain([json!({ "name": "birthdate", "type": "date" })])
        .collect();
    fhir(
        StatusCode::OK,
        json!({
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json"],
            "implementation": { "description": "Weft simulated health partner", "url": s.base },
            "rest": [{
                "mode": "server",
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{ "code": "read" }, { "code": "search-type" }],
                        "searchParam": patient_params,
                    },
                    {
                        "type": "Flag",
                        "interaction": [{ "code": "search-type" }],
                        "searchParam": [{ "name": "patient", "type": "reference" }],
                    },
                ],
            }],
        }),
    )
}

async fn read_patient(State(s): State<Arc<Fhir>>, Path(id): Path<String>) -> Response {
    match s.patients.iter().find(|p| p.identity.local_id == id) {
        Some(p) => fhir(StatusCode::OK, patient(p)),
        None => outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "Patient resource not found",
        ),
    }
}

/// One search criterion, as FHIR string search reads it: case-insensitive, prefix match.
enum Criterion {
    Id(String),
    NhsNumber(Option<String>),
    Family(String),
    Given(String),
    BirthDate(NaiveDate),
    Gender(String),
}

impl Criterion {
    fn matches(&self, p: &HealthRecord) -> bool {
        let i = &p.identity;
        let starts = |have: &str, want: &str| have.to_lowercase().starts_with(&want.to_lowercase());
        match self {
            Criterion::Id(id) => &i.local_id == id,
            Criterion::NhsNumber(n) => n.is_some() && i.nhs_number.as_ref() == n.as_ref(),
            Criterion::Family(f) => starts(&i.family_name, f),
            Criterion::Given(g) => starts(&i.given_name, g),
            Criterion::BirthDate(d) => i.birth_date == *d,
            Criterion::Gender(g) => i.sex.as_str().eq_ignore_ascii_case(g),
        }
    }
}

struct Paging {
    count: usize,
    offset: usize,
}

/// Reads `_count`/`_offset` and the search criteria; parameters this server does not support
/// are ignored, as FHIR's lenient handling allows.
/// An error is the diagnostic for a 400 OperationOutcome.
fn parse_search(params: &[(String, String)]) -> Result<(Vec<Criterion>, Paging), &'static str> {
    let mut paging = Paging {
        count: DEFAULT_PAGE,
        offset: 0,
    };
    let mut criteria = vec![];
    for (k, v) in params {
        let v = v.trim();
        match k.as_str() {
            "_count" => {
                paging.count = v
                    .parse::<usize>()
                    .map_err(|_| "_count must be a whole number")?
                    .clamp(1, MAX_PAGE)
            }
            "_offset" => paging.offset = v.parse().map_err(|_| "_offset must be a whole number")?,
            "_id" => criteria.push(Criterion::Id(v.to_string())),
            "identifier" => {
                let (system, value) = v.split_once('|').unwrap_or(("", v));
                let wanted = (system.is_empty() || system == NHS_NUMBER_SYSTEM)
                    .then(|| value.chars().filter(|c| !c.is_whitespace()).collect());
                criteria.push(Criterion::NhsNumber(wanted));
            }
            "family" => criteria.push(Criterion::Family(v.to_string())),
            "given" => criteria.push(Criterion::Given(v.to_string())),
            "gender" => criteria.push(Criterion::Gender(v.to_string())),
            "birthdate" => {
                let date = v.strip_prefix("eq").unwrap_or(v);
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                    .map_err(|_| "birthdate must be YYYY-MM-DD (optionally eqYYYY-MM-DD)")?;
                criteria.push(Criterion::BirthDate(date));
            }
            _ => {}
        }
    }
    Ok((criteria, paging))
}

async fn search_patients(
    State(s): State<Arc<Fhir>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let (criteria, paging) = match parse_search(&params) {
        Ok(parsed) => parsed,
        Err(problem) => return outcome(StatusCode::BAD_REQUEST, "invalid", problem),
    };
    let matches: Vec<&HealthRecord> = s
        .patients
        .iter()
        .filter(|p| criteria.iter().all(|c| c.matches(p)))
        .collect();
    let entries = matches
        .iter()
        .skip(paging.offset)
        .take(paging.count)
        .map(|p| {
            json!({
                "fullUrl": format!("{}/Patient/{}", s.base, p.identity.local_id),
                "search": { "mode": "match" },
                "resource": patient(p),
            })
        })
        .collect();
    fhir(
        StatusCode::OK,
        bundle(&s.base, "Patient", &params, &paging, matches.len(), entries),
    )
}

async fn search_flags(
    State(s): State<Arc<Fhir>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let paging = Paging {
        count: MAX_PAGE,
        offset: 0,
    };
    let subject = params
        .iter()
        .find(|(k, _)| k == "patient" || k == "subject")
        .map(|(_, v)| v.trim().trim_start_matches("Patient/").to_string());
    let flags: Vec<Value> = s
        .patients
        .iter()
        .filter(|p| subject.as_ref().is_none_or(|id| &p.identity.local_id == id))
        .flat_map(|p| p.flags.iter().map(move |f| (p, f)))
        .map(|(p, f)| {
            json!({
                "fullUrl": format!("{}/Flag/{}", s.base, f.id),
                "search": { "mode": "match" },
                "resource": flag(&p.identity.local_id, f),
            })
        })
        .collect();
    let total = flags.len();
    fhir(
        StatusCode::OK,
        bundle(&s.base, "Flag", &params, &paging, total, flags),
    )
}

fn bundle(
    base: &str,
    resource: &str,
    params: &[(String, String)],
    paging: &Paging,
    total: usize,
    entries: Vec<Value>,
) -> Value {
    let page_url = |offset: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params
            .iter()
            .filter(|(k, _)| k != "_offset" && k != "_count")
        {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &paging.count.to_string());
        q.append_pair("_offset", &offset.to_string());
        format!("{base}/{resource}?{}", q.finish())
    };
    let mut links = vec![json!({ "relation": "self", "url": page_url(paging.offset) })];
    if paging.offset + paging.count < total {
        links.push(json!({ "relation": "next", "url": page_url(paging.offset + paging.count) }));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "total": total,
        "link": links,
        "entry": entries,
    })
}

/// A Patient resource as PDS shapes it.
fn patient(p: &HealthRecord) -> Value {
    let i = &p.identity;
    let (code, display) = if p.restricted {
        ("R", "restricted")
    } else {
        ("U", "unrestricted")
    };
    let identifiers: Vec<Value> = i
        .nhs_number
        .iter()
        .map(|n| {
            json!({
                "system": NHS_NUMBER_SYSTEM,
                "value": n,
                "extension": [{
                    "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                    "valueCodeableConcept": { "coding": [{
                        "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatus",
                        "version": "1.0.0",
                        "code": "01",
                        "display": "Number present and verified",
                    }]},
                }],
            })
        })
        .collect();
    let mut resource = json!({
        "resourceType": "Patient",
        "id": i.local_id,
        "meta": {
            "versionId": "1",
            "security": [{ "system": CONFIDENTIALITY_SYSTEM, "code": code, "display": display }],
        },
        "identifier": identifiers,
        "name": [{ "use": "usual", "family": i.family_name, "given": [i.given_name] }],
        "gender": i.sex.as_str(),
        "birthDate": i.birth_date.to_string(),
    });
    if !p.restricted {
        resource["address"] = json!([{
            "use": "home",
            "line": [i.address.line, i.address.town],
            "city": i.address.town,
            "postalCode": i.address.postcode,
        }]);
        resource["telecom"] = json!([{ "system": "phone", "value": p.phone, "use": "home" }]);
        resource["generalPractitioner"] = json!([{
            "type": "Organization",
            "identifier": { "system": ODS_SYSTEM, "value": p.gp_ods },
        }]);
    }
    resource
}

fn flag(patient_id: &str, f: &HealthFlag) -> Value {
    let safeguarding = flag_codes::is_cp(&f.code);
    let (category, category_display) = if safeguarding {
        ("safety", "Safety")
    } else {
        ("clinical", "Clinical")
    };
    json!({
        "resourceType": "Flag",
        "id": f.id,
        "status": "active",
        "category": [{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
            "code": category,
            "display": category_display,
        }]}],
        "code": {
            "coding": [{ "system": flag_codes::SYSTEM, "code": f.code, "display": f.display }],
            "text": f.text,
        },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "period": { "start": f.start.to_string() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::generate;
    use crate::server::Fault;

    async fn get(url: &str) -> (StatusCode, String, Value) {
        let r = reqwest::get(url).await.expect("request");
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let ctype = r
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.json().await.expect("JSON body"))
    }

    #[tokio::test]
    async fn reads_searches_and_pages() {
        let pop = generate(3, 50);
        let server = start(&pop).await.unwrap();
        let base = server.base_url();
        let child = pop.scenario().unwrap();
        let h = &child.health.as_ref().unwrap().identity;

        let (status, ctype, p) = get(&format!("{base}/Patient/{}", h.local_id)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, FHIR_JSON);
        assert_eq!(p["resourceType"], "Patient");
        assert_eq!(p["identifier"][0]["system"], NHS_NUMBER_SYSTEM);
        assert_eq!(p["identifier"][0]["value"], child.truth.nhs_number);
        assert_eq!(p["name"][0]["family"], "Calder");
        assert_eq!(p["gender"], "female");
        assert_eq!(p["birthDate"], "2011-05-14");
        assert_eq!(p["address"][0]["postalCode"], "WT3 5QP");
        assert_eq!(p["meta"]["security"][0]["code"], "U");
        assert_eq!(
            p["generalPractitioner"][0]["identifier"]["system"],
            ODS_SYSTEM
        );

        let (status, _, oo) = get(&format!("{base}/Patient/nobody")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(oo["resourceType"], "OperationOutcome");

        let (_, _, b) = get(&format!(
            "{base}/Patient?identifier={NHS_NUMBER_SYSTEM}|{}",
            child.truth.nhs_number
        ))
        .await;
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 1);
        assert_eq!(b["entry"][0]["resource"]["id"], h.local_id);

        let (_, _, b) = get(&format!(
            "{base}/Patient?family=calder&given=RUBY&birthdate=2011-05-14&gender=female"
        ))
        .await;
        assert_eq!(b["total"], 1);
        let (_, _, b) = get(&format!(
            "{base}/Patient?family=Calder&birthdate=2011-05-15"
        ))
        .await;
        assert_eq!(b["total"], 0);
        let (status, _, _) = get(&format!("{base}/Patient?birthdate=14/05/2011")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Follow `next` links through the whole list.
        let mut url = format!("{base}/Patient?_count=7");
        let mut ids = vec![];
        loop {
            let (_, _, b) = get(&url).await;
            assert_eq!(b["total"], 50);
            ids.extend(
                b["entry"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
            );
            match b["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
            {
                Some(next) => url = next["url"].as_str().unwrap().to_string(),
                None => break,
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        let (_, _, b) = get(&format!("{base}/Patient")).await;
        assert_eq!(b["entry"].as_array().unwrap().len(), DEFAULT_PAGE);
    }

    #[tokio::test]
    async fn restricted_patients_and_flags() {
        let pop = generate(11, 50);
        let server = start(&pop).await.unwrap();
        let base = server.base_url();
        let r = pop.restricted()[0];
        let id = r.local_id(crate::System::Health).unwrap();
        let (_, _, p) = get(&format!("{base}/Patient/{id}")).await;
        assert_eq!(p["meta"]["security"][0]["code"], "R");
        assert!(p.get("address").is_none() && p.get("telecom").is_none());
        assert!(p.get("generalPractitioner").is_none());

        let flagged = pop
            .health_records()
            .find(|h| !h.flags.is_empty())
            .expect("someone has a flag");
        let (status, ctype, b) = get(&format!(
            "{base}/Flag?patient={}",
            flagged.identity.local_id
        ))
        .await;
        assert_eq!((status, ctype.as_str()), (StatusCode::OK, FHIR_JSON));
        assert_eq!(b["total"], flagged.flags.len());
        let f = &b["entry"][0]["resource"];
        assert_eq!(f["resourceType"], "Flag");
        assert_eq!(f["code"]["coding"][0]["code"], flagged.flags[0].code);
        assert_eq!(
            f["subject"]["reference"],
            format!("Patient/{}", flagged.identity.local_id)
        );
        let (_, _, b) = get(&format!("{base}/Flag?patient=Patient/unknown")).await;
        assert_eq!(b["total"], 0);
    }

    #[tokio::test]
    async fn faults_apply_to_every_request() {
        let pop = generate(1, 5);
        let server = start(&pop).await.unwrap();
        let url = format!("{}/Patient", server.base_url());
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(400))
            .build()
            .unwrap();

        server.set_fault(Fault::Status(500));
        assert_eq!(client.get(&url).send().await.unwrap().status(), 500);

        server.set_fault(Fault::Garbage);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.json::<Value>().await.is_err());

        server.set_fault(Fault::DropConnection);
        let e = client.get(&url).send().await.unwrap_err();
        assert!(!e.is_timeout() && e.status().is_none(), "{e}");

        server.set_fault(Fault::Hang);
        let e = client.get(&url).send().await.unwrap_err();
        assert!(e.is_timeout(), "{e}");

        server.set_fault(Fault::Delay(std::time::Duration::from_millis(150)));
        let t = std::time::Instant::now();
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        assert!(t.elapsed() >= std::time::Duration::from_millis(150));

        server.set_fault(Fault::Normal);
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        assert_eq!(server.requests(), 6);

        let addr = server.addr;
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
