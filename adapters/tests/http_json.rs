//! The JSON-over-HTTP adapter against a loopback server that serves the DfE SUI stub police
//! custodian file (`shared/data/samples/sui_stub_police-01.custodian.json`) and generated JSON.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use weft_adapters::http_json::{FieldMapping, HttpJsonAdapter, HttpJsonConfig, IdentityPointers};
use weft_adapters::{Adapter, AdapterError, Demographics, Identifier, Item, Probe};

use common::{json_response, refused_port, sample_json, serve, text_response};

const JSON: &str = "application/json";

#[derive(Clone)]
struct Police {
    custodian: Value,
    people: Value,
    /// Request paths as received (still percent-encoded).
    paths: Arc<Mutex<Vec<String>>>,
}

fn people() -> Value {
    json!([
        {
            "id": 17,
            "ids": {"nhs": "9912003888", "upn": "B801200005001"},
            "name": {"given": "Amy", "middle": ["Rose", "May"], "family": "Bloggs",
                     "previous": ["Smith", "Bloggs", ""]},
            "dob": "2011-03-04",
            "sex": "F",
            "address": {"lines": ["12 High Street", " ", "Leeds"], "postcode": "AB1 2CD",
                        "uprn": 100023336956_u64},
            "carers": [{"phone": "+44 1632 960587"}, {"phone": "01632 960001"}],
            "incidents": [{"date": "2025-01-05", "type": "domestic"}]
        },
        {
            "id": "P-18",
            "ids": {"nhs": null, "upn": "P207000016049"},
            "name": {"given": "Ben", "family": "Bloggs"},
            "dob": "2013-07-08"
        },
        // No id: cannot be fetched, so not listed.
        {"ids": {"nhs": "9691292211"}, "name": {"family": "Nobody"}}
    ])
}

async fn custodian(State(s): State<Police>) -> Response {
    json_response(200, JSON, &s.custodian)
}

async fn record(State(s): State<Police>, uri: Uri, Path(id): Path<String>) -> Response {
    s.paths.lock().unwrap().push(uri.path().to_owned());
    match id.as_str() {
        "boom" => text_response(500, "Internal Server Error"),
        "moved" => moved("/records/POL-3210-P"),
        "garbage" => text_response(200, "<html>not json"),
        "array" => json_response(200, JSON, &json!([1, 2, 3])),
        "a b/c?d#e" => json_response(200, JSON, &json!({"recordId": id})),
        _ => {
            let found = s.custodian["records"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["recordId"] == json!(id));
            match found {
                Some(r) => json_response(200, JSON, r),
                None => json_response(404, JSON, &json!({"error": "not found"})),
            }
        }
    }
}

/// A redirect to another of the server's own records.
fn moved(to: &str) -> Response {
    Response::builder()
        .status(302)
        .header("location", to)
        .body(axum::body::Body::empty())
        .unwrap()
}

async fn people_list(State(s): State<Police>) -> Response {
    json_response(200, JSON, &s.people)
}

async fn person(State(s): State<Police>, Path(id): Path<String>) -> Response {
    let found = s
        .people
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].to_string().trim_matches('"') == id);
    match found {
        Some(p) => json_response(200, JSON, p),
        None => json_response(404, JSON, &json!({})),
    }
}

struct Server {
    base: String,
    paths: Arc<Mutex<Vec<String>>>,
}

async fn server() -> Server {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let state = Police {
        custodian: sample_json("sui_stub_police-01.custodian.json"),
        people: people(),
        paths: paths.clone(),
    };
    let base = serve(move |_| {
        Router::new()
            .route("/custodian", get(custodian))
            .route("/records/{id}", get(record))
            .route("/not-a-list", get(custodian))
            .route(
                "/garbage-list",
                get(|| async { text_response(200, "[1, 2,") }),
            )
            .route(
                "/failing-list",
                get(|| async { text_response(503, "busy") }),
            )
            .route("/moved-list", get(|| async { moved("/custodian") }))
            .route("/people", get(people_list))
            .route("/people/{id}", get(person))
            .with_state(state)
    })
    .await;
    Server { base, paths }
}

fn mapping(pointer: &str, field: &str, category: &str) -> FieldMapping {
    FieldMapping {
        pointer: pointer.into(),
        field: field.into(),
        category: category.into(),
    }
}

fn police_config(base: &str) -> HttpJsonConfig {
    HttpJsonConfig {
        record_url: format!("{base}/records/{{id}}"),
        list_url: Some(format!("{base}/custodian")),
        list_pointer: "/records".into(),
        bearer_token: None,
        tls: None,
        identity: IdentityPointers {
            local_id: "/recordId".into(),
            identifiers: BTreeMap::from([("nhs_number".into(), "/personId".into())]),
            given_name: None,
            family_name: None,
            birth_date: None,
            sex: None,
            postcode: None,
            ..IdentityPointers::default()
        },
        fields: vec![
            mapping("/payload/policeMarkerDetails", "marker", "police.incidents"),
            mapping(
                "/payload/missingEpisodes",
                "missing_episodes",
                "police.incidents",
            ),
            mapping(
                "/payload/riskCriminalExploitation",
                "risk_criminal_exploitation",
                "police.incidents",
            ),
            mapping(
                "/payload/riskSexualExploitation",
                "risk_sexual_exploitation",
                "police.incidents",
            ),
            mapping(
                "/payload/domesticAbuse",
                "domestic_abuse",
                "police.domestic_abuse",
            ),
        ],
    }
}

fn people_config(base: &str) -> HttpJsonConfig {
    HttpJsonConfig {
        record_url: format!("{base}/people/{{id}}"),
        list_url: Some(format!("{base}/people")),
        list_pointer: String::new(),
        bearer_token: Some("t0ken".into()),
        tls: None,
        identity: IdentityPointers {
            local_id: "/id".into(),
            identifiers: BTreeMap::from([
                ("nhs_number".into(), "/ids/nhs".into()),
                ("upn".into(), "/ids/upn".into()),
            ]),
            given_name: Some("/name/given".into()),
            family_name: Some("/name/family".into()),
            birth_date: Some("/dob".into()),
            sex: Some("/sex".into()),
            postcode: Some("/address/postcode".into()),
            middle_names: Some("/name/middle".into()),
            former_family_names: Some("/name/previous".into()),
            address_lines: Some("/address/lines".into()),
            household: BTreeMap::from([
                ("uprn".into(), "/address/uprn".into()),
                ("phone".into(), "/carers/0/phone".into()),
            ]),
            restricted: None,
        },
        fields: vec![mapping("/incidents", "incidents", "police.incidents")],
    }
}

fn adapter(config: HttpJsonConfig) -> HttpJsonAdapter {
    HttpJsonAdapter::new(config).unwrap()
}

fn by(kind: &str, value: &str) -> Probe {
    Probe {
        identifiers: vec![Identifier::new(kind, value)],
        ..Probe::default()
    }
}

fn field<'a>(items: &'a [Item], field: &str) -> Option<&'a Item> {
    items.iter().find(|i| i.field == field)
}

#[tokio::test]
async fn lists_the_custodian_records() {
    let s = server().await;
    let records = adapter(police_config(&s.base))
        .list()
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.local_id.as_str()).collect();
    assert_eq!(ids, ["POL-3210-P", "POL-3211-P"]);
    for r in &records {
        assert_eq!(
            r.identifiers,
            vec![Identifier::new("nhs_number", "9691292211")]
        );
        assert_eq!(r.demographics, Demographics::default());
    }
}

#[tokio::test]
async fn finds_by_identifier_in_the_list() {
    let s = server().await;
    let a = adapter(police_config(&s.base));
    assert_eq!(
        a.find(&by("nhs_number", "9691292211")).await.unwrap().len(),
        2
    );
    assert!(a
        .find(&by("nhs_number", "9000000009"))
        .await
        .unwrap()
        .is_empty());
    assert!(a.find(&by("upn", "9691292211")).await.unwrap().is_empty());
    assert!(a.find(&Probe::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn fetch_maps_pointers_to_items() {
    let s = server().await;
    let items = adapter(police_config(&s.base))
        .fetch("POL-3210-P")
        .await
        .unwrap()
        .unwrap();
    let marker = field(&items, "marker").unwrap();
    assert_eq!(marker.category, "police.incidents");
    assert_eq!(
        marker.value,
        json!("Individuals at the address may resort to violent behaviour")
    );
    assert_eq!(
        field(&items, "missing_episodes").unwrap().value,
        json!([{"date": "2024-10-30", "returnedHomeInterviewAttended": true}])
    );
    assert_eq!(
        field(&items, "risk_criminal_exploitation").unwrap().value,
        json!(true)
    );
    // Present but null: the source said so, and the item says so.
    assert_eq!(
        field(&items, "risk_sexual_exploitation").unwrap().value,
        Value::Null
    );
    // Not in the document: no item.
    assert!(field(&items, "domestic_abuse").is_none());
    assert_eq!(items.len(), 4);
}

#[tokio::test]
async fn unknown_record_is_no_record() {
    let s = server().await;
    let a = adapter(police_config(&s.base));
    assert_eq!(a.fetch("POL-0000-X").await.unwrap(), None);
    assert_eq!(a.fetch("..").await.unwrap(), None);
}

#[tokio::test]
async fn ids_are_percent_encoded() {
    let s = server().await;
    let items = adapter(police_config(&s.base))
        .fetch("a b/c?d#e")
        .await
        .unwrap()
        .unwrap();
    assert!(items.is_empty());
    assert_eq!(
        s.paths.lock().unwrap().as_slice(),
        ["/records/a%20b%2Fc%3Fd%23e"]
    );
}

#[tokio::test]
async fn generated_people_with_nested_pointers() {
    let s = server().await;
    let a = adapter(people_config(&s.base));
    let records = a.list().await.unwrap().unwrap();
    assert_eq!(records.len(), 2, "the element without an id is skipped");
    assert_eq!(records[0].local_id, "17");
    assert_eq!(
        records[0].identifiers,
        vec![
            Identifier::new("nhs_number", "9912003888"),
            Identifier::new("upn", "B801200005001"),
        ]
    );
    assert_eq!(
        records[0].demographics,
        Demographics {
            given_name: Some("Amy".into()),
            family_name: Some("Bloggs".into()),
            birth_date: Some("2011-03-04".into()),
            sex: Some("F".into()),
            postcode: Some("AB1 2CD".into()),
            middle_names: Some("Rose May".into()),
            former_family_names: vec!["Smith".into()],
            address_lines: vec!["12 High Street".into(), "Leeds".into()],
            former_addresses: vec![],
            household: vec!["phone:01632960587".into(), "uprn:100023336956".into()],
        },
        "the current family name and blanks are not former names"
    );
    assert_eq!(records[1].local_id, "P-18");
    assert_eq!(
        records[1].identifiers,
        vec![Identifier::new("upn", "P207000016049")],
        "a null identifier is not an identifier"
    );
    assert_eq!(records[1].demographics.postcode, None);

    let found = a.find(&by("upn", "P207000016049")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].local_id, "P-18");

    let items = a.fetch("17").await.unwrap().unwrap();
    assert_eq!(
        items,
        vec![Item::new(
            "police.incidents",
            "incidents",
            json!([{"date": "2025-01-05", "type": "domestic"}])
        )]
    );
}

#[tokio::test]
async fn server_error_is_its_status() {
    let s = server().await;
    let err = adapter(police_config(&s.base))
        .fetch("boom")
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Status(500)), "{err:?}");
    let config = HttpJsonConfig {
        list_url: Some(format!("{}/failing-list", s.base)),
        ..police_config(&s.base)
    };
    let err = adapter(config).list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Status(503)), "{err:?}");
}

/// A partner system answers for itself: a redirect is reported as the status it is and not
/// followed, so the gateway never takes records, or presents its credentials, anywhere its
/// configuration does not name.
#[tokio::test]
async fn a_redirect_is_its_status_and_not_followed() {
    let s = server().await;
    let err = adapter(police_config(&s.base))
        .fetch("moved")
        .await
        .unwrap_err();
    assert!(matches!(err, AdapterError::Status(302)), "{err:?}");
    assert_eq!(*s.paths.lock().unwrap(), ["/records/moved"]);
    let config = HttpJsonConfig {
        list_url: Some(format!("{}/moved-list", s.base)),
        ..police_config(&s.base)
    };
    let err = adapter(config).list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Status(302)), "{err:?}");
}

#[tokio::test]
async fn garbage_is_a_protocol_error() {
    let s = server().await;
    let a = adapter(police_config(&s.base));
    for id in ["garbage", "array"] {
        let err = a.fetch(id).await.unwrap_err();
        assert!(matches!(err, AdapterError::Protocol(_)), "{id}: {err:?}");
    }
    for (list, pointer) in [("garbage-list", "/records"), ("not-a-list", "/orgName")] {
        let config = HttpJsonConfig {
            list_url: Some(format!("{}/{list}", s.base)),
            list_pointer: pointer.into(),
            ..police_config(&s.base)
        };
        let err = adapter(config).list().await.unwrap_err();
        assert!(matches!(err, AdapterError::Protocol(_)), "{list}: {err:?}");
    }
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let base = format!("http://127.0.0.1:{}", refused_port());
    let a = adapter(police_config(&base));
    let err = a.fetch("POL-3210-P").await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains("POL-3210-P"), "{err}");
    let err = a.list().await.unwrap_err();
    assert!(matches!(err, AdapterError::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn query_only_source_lists_and_finds_nothing() {
    let s = server().await;
    let a = adapter(HttpJsonConfig {
        list_url: None,
        ..police_config(&s.base)
    });
    assert_eq!(a.list().await.unwrap(), None);
    assert!(a
        .find(&by("nhs_number", "9691292211"))
        .await
        .unwrap()
        .is_empty());
    assert!(a.fetch("POL-3211-P").await.unwrap().is_some());
}

#[test]
fn configuration_is_checked_up_front() {
    let base = "http://127.0.0.1:1";
    let cases = [
        HttpJsonConfig {
            record_url: format!("{base}/records"),
            ..police_config(base)
        },
        HttpJsonConfig {
            record_url: "records/{id}".into(),
            ..police_config(base)
        },
        HttpJsonConfig {
            list_url: Some("ftp://example.org/list".into()),
            ..police_config(base)
        },
        HttpJsonConfig {
            list_pointer: "records".into(),
            ..police_config(base)
        },
        HttpJsonConfig {
            fields: vec![mapping("payload", "x", "police.incidents")],
            ..police_config(base)
        },
        HttpJsonConfig {
            identity: IdentityPointers {
                household: BTreeMap::from([("neighbour".into(), "/x".into())]),
                ..police_config(base).identity
            },
            ..police_config(base)
        },
        HttpJsonConfig {
            identity: IdentityPointers {
                address_lines: Some("address".into()),
                ..police_config(base).identity
            },
            ..police_config(base)
        },
    ];
    for config in cases {
        let err = HttpJsonAdapter::new(config.clone()).err();
        assert!(
            matches!(err, Some(AdapterError::Config(_))),
            "{config:?}: {err:?}"
        );
    }
}

#[test]
fn http_json_config_reads_from_the_configuration_file() {
    let config: weft_adapters::AdapterConfig = serde_json::from_value(json!({
        "kind": "http_json",
        "record_url": "https://police.example/api/people/{id}",
        "list_url": "https://police.example/api/people",
        "list_pointer": "/records",
        "identity": {"local_id": "/recordId", "identifiers": {"nhs_number": "/personId"}},
        "fields": [{"pointer": "/payload/policeMarkerDetails", "field": "marker", "category": "police.incidents"}]
    }))
    .unwrap();
    assert_eq!(config.kind(), "http_json");
    assert!(config.build().is_ok());
}
