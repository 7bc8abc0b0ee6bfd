//! The HTTP API, versioned under `/v1`, and the middleware every request passes through.
//! Handlers are thin: they run the pipeline stages in order and write the audit entry last,
//! before anything is returned.

pub mod error;
pub mod inbox;
pub mod sources;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::foundation::audit::{self, Entry};
use crate::foundation::domain::{Purpose, Role};
use crate::http::error::ApiError;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{judge, Context};
use crate::pipeline::fanout::{fan_out, SourceHealth};
use crate::pipeline::merge::{merge, View};
use crate::pipeline::resolve::{Found, Search, SyncReport};
use weft_ids::{NhsNumber, Upn};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft",
        description = "Inter-agency information-sharing gateway for children's services. Every \
                       read names a purpose, is decided per data category by policy, and is \
                       recorded in a hash-chained audit log before the response leaves."
    ),
    paths(
        search,
        view,
        audit_query,
        healthz,
        readyz,
        metrics,
        crate::write::consent::list,
        crate::write::consent::create,
        crate::write::consent::withdraw,
        crate::write::breakglass::create,
        crate::write::breakglass::queue,
        crate::write::breakglass::review,
        crate::read::policy::explain,
        crate::http::sources::list,
        crate::write::matches::review,
        crate::write::matches::decide,
        crate::write::matches::links
    ),
    components(schemas(
        SearchResult,
        Found,
        View,
        audit::Recorded,
        crate::foundation::schema::SchemaError,
        crate::write::matches::ReviewQueue,
        crate::write::matches::LinkHistory,
        crate::pipeline::resolve::linkage::LinkRow,
        crate::pipeline::resolve::linkage::Decided,
        crate::pipeline::resolve::linkage::Decision,
        crate::pipeline::resolve::linkage::Grade,
        weft_matching::Explained
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The whole API description: the read paths above and the write paths of their own modules.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::write::concerns::ConcernsDoc::openapi());
    doc
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
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    Router::new()
        .route("/v1/children/search", post(search))
        .route("/v1/children/{id}", get(view))
        .route("/v1/audit", get(audit_query))
        .merge(crate::write::matches::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/policy/explain", post(crate::read::policy::explain))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .merge(crate::write::consent::routes())
        .merge(crate::write::breakglass::routes())
        .merge(crate::write::concerns::routes())
        .merge(crate::http::inbox::routes())
        .merge(crate::write::events::routes())
        .merge(crate::http::sources::routes())
        .layer(middleware::from_fn(record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
                    if e.is::<tower::load_shed::error::Overloaded>() {
                        ApiError::Unavailable("overloaded; retry shortly").into_response()
                    } else if e.is::<tower::timeout::error::Elapsed>() {
                        (
                            StatusCode::REQUEST_TIMEOUT,
                            Json(json!({"error": "timeout"})),
                        )
                            .into_response()
                    } else {
                        ApiError::Internal(e.to_string()).into_response()
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

/// The audit entry for a request: who asked, from which client, for what, and what happened.
pub(crate) fn entry(
    p: &Principal,
    action: &str,
    child: Option<&str>,
    purpose: Option<Purpose>,
    outcome: &str,
    mut detail: Value,
) -> Entry {
    if let (Some(client), Some(obj)) = (&p.client, detail.as_object_mut()) {
        obj.insert("client".into(), json!(client));
    }
    Entry {
        at: Utc::now(),
        user: p.user.clone(),
        agency: p.agency.clone(),
        role: p.role.as_str().into(),
        action: action.into(),
        child: child.map(String::from),
        purpose: purpose.map(|p| p.as_str().to_string()),
        outcome: outcome.into(),
        detail,
    }
}

/// Writes the request's audit entry. Any failure means the caller gets 503 and nothing else.
pub(crate) async fn record(
    state: &AppState,
    p: &Principal,
    action: &str,
    child: Option<&str>,
    purpose: Option<Purpose>,
    outcome: &str,
    detail: Value,
) -> Result<(), ApiError> {
    let entry = entry(p, action, child, purpose, outcome, detail);
    state.auditor.append(entry).await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "audit append failed; failing closed");
        ApiError::AuditUnavailable
    })
}

/// Audits a refused request, then returns the refusal (or 503 if even that cannot be audited).
pub(crate) async fn refuse(
    state: &AppState,
    p: &Principal,
    action: &str,
    child: Option<&str>,
    purpose: Option<Purpose>,
    error: ApiError,
) -> ApiError {
    let outcome = if error.status() == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "rejected"
    };
    let detail = json!({"status": error.status().as_u16(), "error": error.to_string()});
    match record(state, p, action, child, purpose, outcome, detail).await {
        Ok(()) => error,
        Err(audit) => audit,
    }
}

fn parse_purpose(raw: Option<&str>, pointer: &str) -> Result<Purpose, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::field(pointer, "a purpose of use is required"))?;
    raw.parse::<Purpose>()
        .map_err(|e| ApiError::field(pointer, e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct ViewParams {
    /// Purpose of use: safeguarding, child_in_need, early_help, education_welfare, direct_care
    /// or audit.
    purpose: Option<String>,
}

/// The merged view of a child, for a purpose.
#[utoipa::path(
    get,
    path = "/v1/children/{id}",
    params(("id" = String, Path, description = "Weft child id"), ViewParams),
    responses(
        (status = 200, description = "Merged view", body = View),
        (status = 400, description = "Purpose missing or unknown"),
        (status = 401, description = "Missing or invalid token"),
        (status = 404, description = "No such child"),
        (status = 503, description = "Audit log unavailable: no data is returned"),
    ),
    security(("bearer" = []))
)]
async fn view(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<ViewParams>,
) -> Result<Json<View>, ApiError> {
    let purpose = match parse_purpose(params.purpose.as_deref(), "/purpose") {
        Ok(p) => p,
        Err(e) => return Err(refuse(&state, &principal, "view", Some(&id), None, e).await),
    };
    let Some(links) = state.index.links(&id).await? else {
        let e = ApiError::NotFound("no child with that id");
        return Err(refuse(&state, &principal, "view", Some(&id), Some(purpose), e).await);
    };
    // The register and any grant are read while the sources are asked; if they cannot be
    // read, nothing is decided and nothing is shown.
    let policy = state.policy();
    let consents = async {
        if policy.may_need_consent(
            principal.role,
            &principal.agency,
            principal.agency_kind,
            purpose,
        ) {
            crate::write::consent::load(&state.store, &id).await
        } else {
            Ok(crate::write::consent::Consents::default())
        }
    };
    let (consents, grant, fetched) = tokio::join!(
        consents,
        crate::write::breakglass::active(&state.store, &principal.user, &id),
        fan_out(&state.sources, &links),
    );
    let (consents, grant) = (consents?, grant?);
    // Read before policy takes the fetch: the access notification needs the child's status and
    // worker even when this viewer may not see the worker.
    let facts = (principal.agency_kind != crate::foundation::config::AgencyKind::SocialCare)
        .then(|| crate::delivery::routing::read_facts(&fetched));
    let ctx = Context {
        policy: &policy,
        role: principal.role,
        agency: &principal.agency,
        kind: principal.agency_kind,
        purpose,
        consents: &consents,
        grant: grant.as_ref(),
    };
    let (view, disclosure) = merge(&id, purpose, judge(&ctx, fetched));
    let outcome = if !disclosure.break_glass.is_empty() {
        tracing::warn!(grant = ?grant.as_ref().map(|g| &g.id), "view released data under break-glass");
        "break_glass"
    } else if disclosure.shown.is_empty() {
        "denied"
    } else {
        "shown"
    };
    let detail =
        serde_json::to_value(&disclosure).map_err(|e| ApiError::Internal(e.to_string()))?;
    record(
        &state,
        &principal,
        "view",
        Some(&id),
        Some(purpose),
        outcome,
        detail,
    )
    .await?;
    if let Some(facts) = &facts {
        crate::write::events::access_notification(
            &state,
            &principal,
            &id,
            purpose,
            facts,
            &disclosure,
        )
        .await?;
    }
    Ok(Json(view))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SearchResult {
    children: Vec<Found>,
}

/// Find a child by NHS number, UPN, a source's local id, and/or demographics. Demographics are
/// scored by the probabilistic matcher: each child comes with a grade (`certain`, `probable`,
/// `possible`), the probability and the per-comparison explanation; `certain_only` keeps only
/// certain matches.
#[utoipa::path(
    post,
    path = "/v1/children/search",
    request_body(content = Object, description = "See schemas/search.schema.json"),
    responses(
        (status = 200, description = "Matching Weft child ids", body = SearchResult),
        (status = 400, description = "Invalid body; every error with its JSON pointer"),
        (status = 401, description = "Missing or invalid token"),
    ),
    security(("bearer" = []))
)]
async fn search(
    State(state): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> Result<Json<SearchResult>, ApiError> {
    let (query, purpose) = match parse_search(&state, &body) {
        Ok(q) => q,
        Err(e) => return Err(refuse(&state, &principal, "search", None, None, e).await),
    };
    let children = state.index.find(&query).await?;
    let ids: Vec<&str> = children.iter().map(|c| c.id.as_str()).collect();
    let child = match ids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let outcome = if ids.is_empty() { "no_match" } else { "found" };
    let detail = json!({
        "children": ids,
        "matched_on": children.iter().map(|c| c.matched_on).collect::<Vec<_>>(),
        "grades": children.iter().map(|c| c.grade).collect::<Vec<_>>(),
    });
    record(
        &state,
        &principal,
        "search",
        child,
        Some(purpose),
        outcome,
        detail,
    )
    .await?;
    Ok(Json(SearchResult { children }))
}

/// A schema-valid JSON body, or the 400 listing every problem with its pointer.
pub(crate) fn validated(
    body: &[u8],
    check: impl Fn(&Value) -> Vec<crate::foundation::schema::SchemaError>,
    what: &str,
) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let errors = check(&value);
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::BadRequest {
            message: format!("{} problem(s) in the {what}", errors.len()),
            errors,
        })
    }
}

fn parse_search(state: &AppState, body: &[u8]) -> Result<(Search, Purpose), ApiError> {
    let value = validated(body, |v| state.schemas.search_errors(v), "search")?;
    let text = |k: &str| value.get(k).and_then(Value::as_str);
    let purpose = parse_purpose(text("purpose"), "/purpose")?;
    let mut q = Search::default();
    if let Some(n) = text("nhs_number") {
        q.nhs_number =
            Some(NhsNumber::parse(n).map_err(|e| ApiError::field("/nhs_number", e.to_string()))?);
    }
    if let Some(u) = text("upn") {
        q.upn = Some(Upn::parse(u).map_err(|e| ApiError::field("/upn", e.to_string()))?);
    }
    if let Some(l) = value.get("local_id") {
        let part = |k: &str| {
            l.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        q.local_id = Some((part("source"), part("id")));
    }
    let demographics = weft_adapters::Demographics {
        given_name: text("given_name").map(String::from),
        family_name: text("family_name").map(String::from),
        birth_date: text("birth_date").map(String::from),
        sex: text("sex").map(String::from),
        postcode: text("postcode").map(String::from),
    };
    if demographics != weft_adapters::Demographics::default() {
        q.demographics = Some(demographics);
    }
    q.certain_only = value
        .get("certain_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((q, purpose))
}

/// Audit entries, newest first. Information-governance officers only.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(audit::Query),
    responses(
        (status = 200, description = "Audit entries", body = Vec<audit::Recorded>),
        (status = 403, description = "Not an IG officer"),
    ),
    security(("bearer" = []))
)]
async fn audit_query(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<audit::Query>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<audit::Recorded>>, ApiError> {
    if principal.role != Role::IgOfficer {
        let e =
            ApiError::Forbidden("the audit log is open to information-governance officers only");
        return Err(refuse(&state, &principal, "audit_query", None, None, e).await);
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            let e = ApiError::bad_request(e.body_text());
            return Err(refuse(&state, &principal, "audit_query", None, None, e).await);
        }
    };
    let entries = audit::search(&state.store, &q)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let detail = json!({"returned": entries.len(), "filters": {
        "child": q.child, "user": q.user, "from": q.from, "to": q.to
    }});
    record(
        &state,
        &principal,
        "audit_query",
        q.child.as_deref(),
        Some(Purpose::Audit),
        "shown",
        detail,
    )
    .await?;
    Ok(Json(entries))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
async fn healthz() -> &'static str {
    "ok"
}

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    database: &'static str,
    index_ready: bool,
    index: SyncReport,
    policy: crate::read::policy::PolicyStatus,
    sources: Vec<SourceHealth>,
}

/// Readiness: the database answers and the first index pass is done; each source's state.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready", body = Readiness)
))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.store.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    let index_ready = state.index.is_ready();
    let ready = database == "ok" && index_ready;
    let body = Readiness {
        ready,
        database,
        index_ready,
        index: state.index.last_sync(),
        policy: match state.policy_status.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        },
        sources: state.sources.all.iter().map(|s| s.health()).collect(),
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
async fn metrics() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::foundation::metrics::render(),
    )
}
