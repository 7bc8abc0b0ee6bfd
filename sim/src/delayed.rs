//! A partner that is always exactly this slow, for the benchmark: it isolates the gateway's own
//! overhead (fan-out, deadlines, policy, audit) from any real partner's variance.
//!
//! It holds one child, in the police API's shape: `GET /people` lists it and
//! `GET /people/{id}` returns it, each after the delay. Every delayed source holds the same
//! child under the same [`NHS_NUMBER`], so the master child index links one child across all of
//! them and a view fans out to every one. The wait is a timer, so thousands of concurrent
//! requests cost no threads.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use weft_adapters::http_json::HttpJsonConfig;
use weft_adapters::AdapterConfig;

use crate::server::SimServer;
use crate::sources::Source;
use crate::sources::{person_fields, person_identity};

/// The benchmark child's NHS number (valid, from the never-issued 999 range).
pub const NHS_NUMBER: &str = "9990000018";
/// The benchmark child's id in every delayed source.
pub const LOCAL_ID: &str = "BENCH-1";
/// The allocated worker every delayed source names: the benchmark's social worker, whose
/// relationship with the child the gateway confirms from the social-care source's record.
pub const WORKER: &str = "bench-sw";

/// Starts the server on a free loopback port. Faults can still be injected through the returned
/// [`SimServer`]; they apply before the delay.
pub async fn start_delayed_source(delay: Duration) -> anyhow::Result<SimServer> {
    SimServer::start(move |_| {
        Router::new()
            .route(
                "/people",
                get(move || async move {
                    tokio::time::sleep(delay).await;
                    Json(json!([person()]))
                }),
            )
            .route(
                "/people/{id}",
                get(move |Path(id): Path<String>| async move {
                    tokio::time::sleep(delay).await;
                    if id == LOCAL_ID {
                        Json(person()).into_response()
                    } else {
                        not_found()
                    }
                }),
            )
    })
    .await
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "message": "no person with that id" })),
    )
        .into_response()
}

fn person() -> Value {
    json!({
        "personId": LOCAL_ID,
        "nhsNumber": NHS_NUMBER,
        "forename": "Sam",
        "surname": "Example",
        "dateOfBirth": "2013-04-01",
        "sex": "female",
        "postcode": "WT1 1AA",
        "incidents": [{
            "reference": "WTC-20250901-0001",
            "occurredAt": "2025-09-01T21:00:00Z",
            "type": "Concern for welfare",
            "location": "Loom Street, Weftbridge",
            "childPresent": true,
            "summary": "Benchmark fixture.",
        }],
        "domesticAbuse": [],
        "allocatedWorker": WORKER,
    })
}

/// The `http_json` source configuration for a delayed server at `addr`, read with the same
/// pointers as the police API.
pub fn source_config(id: &str, agency: &str, addr: SocketAddr, deadline: Duration) -> Source {
    Source {
        id: id.to_string(),
        agency: agency.to_string(),
        deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        adapter: AdapterConfig::HttpJson(HttpJsonConfig {
            record_url: format!("http://{addr}/people/{{id}}"),
            list_url: Some(format!("http://{addr}/people")),
            list_pointer: String::new(),
            bearer_token: None,
            tls: None,
            identity: person_identity(),
            fields: person_fields()
                .into_iter()
                .chain(std::iter::once(weft_adapters::http_json::FieldMapping {
                    pointer: "/allocatedWorker".into(),
                    field: "worker".into(),
                    category: "social_care.allocated_worker".into(),
                }))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use weft_ids::NhsNumber;

    #[tokio::test]
    async fn answers_after_the_delay_concurrently() {
        let server = start_delayed_source(Duration::from_millis(200))
            .await
            .unwrap();
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::new();
        let started = Instant::now();
        let replies = futures::future::join_all((0..50).map(|_| {
            let url = format!("{base}/people/{LOCAL_ID}");
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        }))
        .await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(2000),
            "delays overlap: {elapsed:?}"
        );
        assert_eq!(replies[7]["personId"], LOCAL_ID);
        assert_eq!(replies[7]["nhsNumber"], NHS_NUMBER);
        assert_eq!(server.requests(), 50);

        let list: Value = client
            .get(format!("{base}/people"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list[0]["personId"], LOCAL_ID);
        let missing = client
            .get(format!("{base}/people/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }

    #[test]
    fn fixture_and_config() {
        assert!(NhsNumber::parse(NHS_NUMBER).is_ok());
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        let config = source_config("slow", "bench-police", addr, Duration::from_millis(500));
        assert_eq!(config.deadline_ms, 500);
        match config.adapter {
            AdapterConfig::HttpJson(c) => {
                assert_eq!(c.record_url, "http://127.0.0.1:4321/people/{id}");
                assert_eq!(c.list_url.as_deref(), Some("http://127.0.0.1:4321/people"));
            }
            other => panic!("unexpected adapter {other:?}"),
        }
    }
}
