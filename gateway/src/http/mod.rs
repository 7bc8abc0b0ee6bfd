//! The JSON API, versioned under `/v1`: one module per resource, each handler thin — it parses
//! what HTTP carries, calls the function in [`crate::read`] or [`crate::write`] that does the
//! work (policy, audit and failing closed included), and renders the answer or the
//! [`error::ApiError`]. The middleware every request passes through is built once, here.

pub mod audit;
pub mod breakglass;
pub mod children;
pub mod concerns;
pub mod consents;
pub mod error;
pub mod events;
pub mod health;
pub mod inbox;
pub mod matches;
pub mod policy;
pub mod principal;
pub mod sources;

use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::foundation::error::Error;
use crate::gateway::Gateway;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft",
        description = "Inter-agency information-sharing gateway for children's services. Every \
                       read names a purpose, is decided per data category by policy, and is \
                       recorded in a hash-chained audit log before the response leaves."
    ),
    paths(
        children::search,
        children::view,
        audit::entries,
        health::healthz,
        health::readyz,
        health::metrics,
        consents::list,
        consents::record,
        consents::withdraw,
        breakglass::request,
        breakglass::queue,
        breakglass::review,
        policy::explain,
        sources::list,
        matches::review,
        matches::decide,
        matches::links,
        concerns::submit,
        concerns::mine,
        concerns::show,
        concerns::progress,
        concerns::addendum,
        inbox::items,
        inbox::read,
        inbox::outbox,
        inbox::retry,
        events::ingest,
        events::subscribe,
    ),
    components(schemas(
        crate::read::search::SearchResult,
        crate::read::search::Distinguishing,
        crate::pipeline::resolve::Found,
        crate::pipeline::merge::View,
        crate::foundation::audit::Recorded,
        crate::foundation::schema::SchemaError,
        crate::write::matches::ReviewQueue,
        crate::write::matches::LinkHistory,
        crate::pipeline::resolve::linkage::LinkRow,
        crate::pipeline::resolve::linkage::Decided,
        crate::pipeline::resolve::linkage::Decision,
        crate::pipeline::resolve::linkage::Grade,
        weft_matching::Explained,
        crate::write::concerns::ConcernView,
        crate::write::concerns::MyConcern,
        crate::write::concerns::RecipientView,
        crate::write::concerns::LogEntry,
        crate::delivery::outbox::InboxItem,
        crate::delivery::outbox::DeliveryStatus,
        crate::write::events::EventAccepted,
        crate::write::events::Subscription,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The whole API description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Builds the router with its middleware: panics become 500s, bodies are bounded, requests time
/// out, and load beyond `max_in_flight` is shed with 503 rather than queued without bound.
pub fn router(state: Gateway) -> Router {
    let limits = state.config.limits.clone();
    Router::new()
        .merge(children::routes())
        .merge(audit::routes())
        .merge(consents::routes())
        .merge(breakglass::routes())
        .merge(policy::routes())
        .merge(matches::routes())
        .merge(concerns::routes())
        .merge(events::routes())
        .merge(inbox::routes())
        .merge(sources::routes())
        .merge(health::routes())
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .merge(crate::web::routes())
        .layer(middleware::from_fn(record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
                    if e.is::<tower::load_shed::error::Overloaded>() {
                        ApiError::from(Error::Unavailable("overloaded; retry shortly"))
                            .into_response()
                    } else if e.is::<tower::timeout::error::Elapsed>() {
                        (
                            StatusCode::REQUEST_TIMEOUT,
                            Json(json!({"error": "timeout"})),
                        )
                            .into_response()
                    } else {
                        ApiError::from(Error::Internal(e.to_string())).into_response()
                    }
                }))
                .load_shed()
                .concurrency_limit(limits.max_in_flight)
                .timeout(Duration::from_millis(limits.request_timeout_ms)),
        )
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .layer(
            // Spans carry the route template, never the URI: paths and queries hold child and
            // user ids.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_else(|| "unmatched".into());
                tracing::info_span!("request", method = %req.method(), route)
            }),
        )
        .layer(CatchPanicLayer::new())
        .with_state(state)
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    crate::foundation::metrics::HTTP_LATENCY
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    crate::foundation::metrics::HTTP_REQUESTS
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = serde_json::to_value(openapi()).expect("serialises");
        for path in [
            "/v1/children/search",
            "/v1/children/{id}",
            "/v1/children/{id}/links",
            "/v1/children/{id}/consents",
            "/v1/children/{id}/break-glass",
            "/v1/audit",
            "/v1/policy/explain",
            "/v1/sources",
            "/v1/matches/review",
            "/v1/concerns",
            "/v1/concerns/{id}",
            "/v1/concerns/{id}/status",
            "/v1/concerns/{id}/addenda",
            "/v1/events",
            "/v1/subscriptions",
            "/v1/inbox",
            "/v1/inbox/{id}/read",
            "/v1/outbox",
            "/v1/outbox/{id}/retry",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }
}
