//! The served API keeps to its OpenAPI document where the document is easiest to break: query
//! ranges are refused rather than changed, bodies must be JSON, and every error — including the
//! ones no handler writes — has the one JSON error body. (`scripts/schemathesis` checks the
//! rest against the running gateway.)

use serde_json::Value;

use crate::harness::{Env, Gateway};

/// Status, `Allow` header and JSON body of a request (Null when the body is not JSON).
async fn send(gw: &Gateway, req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let allow = r
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let _ = gw;
    (status, allow, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_api_keeps_to_its_document() {
    let env = Env::new(2).await;
    let gw = Gateway::start(&env, env.write_config("weft.toml", &env.config(false))).await;
    let csc = env.agency_of("social_care");
    let sw = env.token("sw-5", &csc, "social_worker");
    let admin = env.token("admin-5", &csc, "data_admin");

    let (status, doc) = gw.get("/openapi.json", &sw).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["paths"]["/v1/children/search"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/Search"
    );
    assert_eq!(
        doc["components"]["schemas"]["Search"]["required"],
        serde_json::json!(["purpose"])
    );
    assert_eq!(
        doc["paths"]["/v1/inbox"]["get"]["parameters"][1]["schema"]["maximum"], 1000,
        "{}",
        doc["paths"]["/v1/inbox"]
    );

    // A limit outside its documented range is refused, not quietly changed.
    for path in ["/v1/inbox?limit=0", "/v1/inbox?limit=5000"] {
        let (status, body) = gw.get(path, &sw).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["errors"][0]["pointer"], "/limit", "{body}");
    }
    let (status, body) = gw.get("/v1/outbox?limit=1001", &admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(gw.get("/v1/inbox?limit=1000", &sw).await.0, 200);

    // A body not declared JSON is 415, with the error body.
    let req = gw
        .client()
        .post(gw.url("/v1/children/search"))
        .bearer_auth(&sw)
        .header("content-type", "text/plain")
        .body(r#"{"purpose": "safeguarding", "nhs_number": "9434765919"}"#);
    let (status, _, body) = send(&gw, req).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"], "unsupported_media_type", "{body}");

    // A body over the limit is read and dropped, then refused: the client gets the 413 rather
    // than a connection reset while it is still sending.
    let big = format!(r#"{{"text": "{}"}}"#, "é".repeat(100_000));
    let req = gw
        .client()
        .post(gw.url("/v1/concerns/some-id/addenda"))
        .bearer_auth(&sw)
        .header("content-type", "application/json")
        .body(big);
    let (status, _, body) = send(&gw, req).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large", "{body}");

    // Errors no handler writes have the same body: an unknown path, a method the path does not
    // take (with its Allow header), a query string that does not parse.
    let (status, _, body) =
        send(&gw, gw.client().get(gw.url("/v1/nowhere")).bearer_auth(&sw)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found", "{body}");
    let (status, allow, body) = send(
        &gw,
        gw.client().delete(gw.url("/v1/inbox")).bearer_auth(&sw),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(allow.is_some_and(|a| a.contains("GET")), "Allow header");
    let (status, body) = gw.get("/v1/inbox?limit=many", &sw).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request", "{body}");
}
