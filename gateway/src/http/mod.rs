//! The JSON API, versioned under `/v1`: one module per resource, each handler thin — it parses
//! what HTTP carries, calls the function in [`crate::read`] or [`crate::write`] that does the
//! work (policy, audit and failing closed included), and renders the answer or the
//! [`error::ApiError`]. The middleware every request passes through is built once, here.

pub mod audit;
pub mod breakglass;
pub mod children;
pub mod concerns;
pub mod consents;
pub mod contract;
pub mod error;
pub mod events;
pub mod health;
pub mod inbox;
pub mod matches;
pub mod params;
pub mod policy;
pub mod principal;
pub mod reports;
pub mod sar;
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
        sources::status,
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
        sar::report,
        sar::deferred,
        sar::release,
        reports::area_report,
        reports::quality_report,
    ),
    components(schemas(
        contract::ErrorBody,
        crate::http::inbox::OutboxState,
        crate::http::breakglass::QueueStatus,
        crate::read::search::SearchResult,
        crate::read::search::Hit,
        crate::read::search::Distinguishing,
        crate::pipeline::resolve::Found,
        crate::pipeline::authorise::relate::Relationship,
        crate::pipeline::merge::View,
        crate::pipeline::merge::SourceView,
        crate::pipeline::merge::CategoryView,
        crate::pipeline::merge::Withheld,
        crate::pipeline::authorise::grants::Grant,
        crate::pipeline::authorise::grants::Viewed,
        crate::foundation::audit::Recorded,
        crate::foundation::schema::SchemaError,
        crate::write::matches::ReviewQueue,
        crate::write::matches::ReviewItem,
        crate::pipeline::resolve::records::RecordIdentity,
        crate::pipeline::resolve::records::IdentifierCheck,
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
        crate::read::sar::Report,
        crate::read::sar::Access,
        crate::read::sar::Who,
        crate::read::sar::Deferred,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The whole API description, as `/openapi.json` serves it: utoipa's document with the request
/// schemas from `schemas/` and the shared error responses in place ([`contract::document`]).
pub fn openapi() -> &'static serde_json::Value {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| contract::document(ApiDoc::openapi()))
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
        .merge(sar::routes())
        .merge(reports::routes())
        .merge(health::routes())
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .layer(middleware::from_fn(error::require_json))
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
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            error::oversized_bodies(limits.body_bytes, req, next)
        }))
        .layer(middleware::from_fn(too_large))
        .layer(
            // Spans carry the route template, never the URI: paths and queries hold child and
            // user ids.
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = route_of(req);
                tracing::info_span!("request", method = %req.method(), route = route.as_str())
            }),
        )
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}

/// A body over `limits.body_bytes` is refused before anyone is authenticated, so it is counted
/// (`weft_http_requests_total{status="413"}`) but not audited; the answer is JSON like any other.
async fn too_large(req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let response = next.run(req).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    // A body cut off while a handler read it was counted on its way out; one refused on its
    // declared length never reached the handler.
    if response.extensions().get::<Counted>().is_none() {
        crate::foundation::metrics::HTTP_REQUESTS
            .with_label_values(&[route.as_str(), "413"])
            .inc();
    }
    // The limit's own answer says how large the body was and what the limit is; keep it.
    if response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        return response;
    }
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(json!({"error": "payload_too_large", "message": "the body is larger than this gateway accepts"})),
    )
        .into_response()
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = route_of(&req);
    let started = Instant::now();
    let response = next.run(req).await;
    crate::foundation::metrics::HTTP_LATENCY
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    crate::foundation::metrics::HTTP_REQUESTS
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    let mut response = response;
    response.extensions_mut().insert(Counted);
    response
}

/// The route template a request matched, for spans and metrics labels (never the URI: paths
/// and queries hold child and user ids). A shared handle on the router's own string, not a
/// copy: three layers ask on every request.
enum Route {
    Matched(MatchedPath),
    Unmatched,
}

impl Route {
    fn as_str(&self) -> &str {
        match self {
            Route::Matched(m) => m.as_str(),
            Route::Unmatched => "unmatched",
        }
    }
}

fn route_of(req: &Request) -> Route {
    req.extensions()
        .get::<MatchedPath>()
        .cloned()
        .map_or(Route::Unmatched, Route::Matched)
}

/// Marks a response [`record_metrics`] has counted.
#[derive(Clone, Copy)]
struct Counted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc = openapi();
        for path in [
            "/v1/children/search",
            "/v1/children/{id}",
            "/v1/children/{id}/links",
            "/v1/children/{id}/consents",
            "/v1/children/{id}/break-glass",
            "/v1/audit",
            "/v1/policy/explain",
            "/v1/sources",
            "/v1/status",
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
            "/v1/children/{id}/access-report",
            "/v1/children/{id}/access-report/deferred",
            "/v1/children/{id}/access-report/deferred/{entry}/release",
            "/v1/outbox/{id}/retry",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }
}
