//! A police force's records API: plain JSON over HTTP, read by the `http_json` adapter.
//!
//! `GET /people` lists person summaries (a bare array); `GET /people/{id}` returns one person:
//! the summary fields at the same JSON pointers (so one set of identity pointers reads both),
//! plus `address`, `incidents` and `domesticAbuse`. `nhsNumber` is omitted when the force never
//! recorded it. Times are UTC (`…Z`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDateTime;
use serde_json::{json, Value};

use crate::population::{PoliceRecord, Population};
use crate::server::SimServer;

/// Name of the force, used in its agency configuration.
pub const FORCE_NAME: &str = "Weftshire Constabulary";

/// Starts the server on a free loopback port with every police record of the population.
pub async fn start(pop: &Population) -> anyhow::Result<SimServer> {
    let people: Arc<Vec<PoliceRecord>> = Arc::new(pop.police_records().cloned().collect());
    SimServer::start(|_| {
        Router::new()
            .route("/people", get(list))
            .route("/people/{id}", get(person))
            .with_state(people)
    })
    .await
}

async fn list(State(people): State<Arc<Vec<PoliceRecord>>>) -> Json<Vec<Value>> {
    Json(people.iter().map(summary).collect())
}

async fn person(State(people): State<Arc<Vec<PoliceRecord>>>, Path(id): Path<String>) -> Response {
    match people.iter().find(|p| p.identity.local_id == id) {
        Some(p) => Json(full(p)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "not_found", "message": "no person with that id" })),
        )
            .into_response(),
    }
}

fn utc(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn summary(p: &PoliceRecord) -> Value {
    let i = &p.identity;
    let mut v = json!({
        "personId": i.local_id,
        "forename": i.given_name,
        "surname": i.family_name,
        "dateOfBirth": i.birth_date.to_string(),
        "sex": i.sex.as_str(),
        "addressLines": [i.address.line, i.address.town],
    });
    // A force that never recorded the postcode sends none, rather than an empty one.
    if !i.address.postcode.is_empty() {
        v["postcode"] = json!(i.address.postcode);
    }
    if let Some(n) = &i.nhs_number {
        v["nhsNumber"] = json!(n);
    }
    v
}

fn full(p: &PoliceRecord) -> Value {
    let mut v = summary(p);
    let a = &p.identity.address;
    v["address"] = json!({ "line": a.line, "town": a.town });
    if !a.postcode.is_empty() {
        v["address"]["postcode"] = json!(a.postcode);
    }
    v["incidents"] = p
        .incidents
        .iter()
        .map(|i| {
            json!({
                "reference": i.reference,
                "occurredAt": utc(&i.occurred_at),
                "type": i.kind,
                "location": i.location,
                "childPresent": i.child_present,
                "summary": i.summary,
            })
        })
        .collect();
    v["domesticAbuse"] = p
        .domestic_abuse
        .iter()
        .map(|d| {
            json!({
                "reference": d.reference,
                "occurredAt": utc(&d.occurred_at),
                "location": d.location,
                "postcode": d.postcode,
                "childPresent": d.child_present,
                "riskLevel": d.risk,
                "summary": d.summary,
            })
        })
        .collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::generate;

    #[tokio::test]
    async fn lists_and_reads_people() {
        let pop = generate(5, 50);
        let server = start(&pop).await.unwrap();
        let base = server.base_url();

        let list: Vec<Value> = reqwest::get(format!("{base}/people"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list.len(), pop.police_records().count());
        assert!(list.iter().any(|p| p.get("nhsNumber").is_none()));

        let child = pop.scenario().unwrap();
        let id = &child.police.as_ref().unwrap().identity.local_id;
        let p: Value = reqwest::get(format!("{base}/people/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p["personId"], id.as_str());
        assert_eq!(p["nhsNumber"], child.truth.nhs_number);
        assert_eq!(p["surname"], "Calder");
        assert_eq!(p["dateOfBirth"], "2011-05-14");
        let da = p["domesticAbuse"].as_array().unwrap();
        assert_eq!(da.last().unwrap()["occurredAt"], "2025-09-30T23:40:00Z");
        assert_eq!(da.last().unwrap()["childPresent"], true);
        assert!(p["incidents"].is_array());

        let r = reqwest::get(format!("{base}/people/P-unknown"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
}
