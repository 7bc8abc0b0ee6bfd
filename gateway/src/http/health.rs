//! Liveness, readiness and metrics: unauthenticated, for load balancers and monitoring.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;

use crate::gateway::{Gateway, PolicyStatus};
use crate::pipeline::resolve::SyncReport;
use crate::sources::SourceHealth;

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

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    ready: bool,
    database: &'static str,
    index_ready: bool,
    index: SyncReport,
    policy: PolicyStatus,
    sources: Vec<SourceHealth>,
}

/// Readiness: the database answers and the first index pass is done; each source's state.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready", body = Readiness)
))]
pub(crate) async fn readyz(State(gw): State<Gateway>) -> impl IntoResponse {
    let database = match gw.store.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    let index_ready = gw.index.is_ready();
    let ready = database == "ok" && index_ready;
    let body = Readiness {
        ready,
        database,
        index_ready,
        index: gw.index.last_sync(),
        policy: gw.policy_status(),
        sources: gw.sources.all.iter().map(|s| s.health()).collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::foundation::metrics::render(),
    )
}
