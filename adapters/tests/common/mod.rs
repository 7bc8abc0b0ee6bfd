//! Helpers shared by the adapter integration tests: loopback servers and the sample files.

#![allow(dead_code)] // each test crate uses a different subset

use std::path::PathBuf;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

/// Serves a router on 127.0.0.1 on a free port. `make` gets the base URL (`http://127.0.0.1:N`)
/// so handlers can write absolute links, as FHIR servers do.
pub async fn serve(make: impl FnOnce(String) -> Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = make(base.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// A loopback port that nothing listens on (bound, then released).
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One of the third-party sample files beside the repository (`../shared/data/samples`).
pub fn sample_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/samples")
        .join(name)
}

pub fn sample_json(name: &str) -> Value {
    let path = sample_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read sample {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A JSON response with a given status and content type.
pub fn json_response(status: u16, content_type: &'static str, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

pub fn text_response(status: u16, body: &'static str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "text/plain")],
        body,
    )
        .into_response()
}
