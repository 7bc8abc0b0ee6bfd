//! Liveness, readiness and metrics: unauthenticated, for load balancers and monitoring.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;

use crate::gateway::Gateway;
use crate::read::sources::Readiness;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness, for load balancers: whether the database takes a write and the first index pass
/// is done — and nothing else, since anyone may ask. The detail is `GET /v1/status`.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready: a check failed", body = Readiness)
))]
pub(crate) async fn readyz(State(gw): State<Gateway>) -> impl IntoResponse {
    let readiness = crate::read::sources::readiness(&gw).await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::foundation::metrics::render(),
    )
}
