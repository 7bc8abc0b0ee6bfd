//! Seeing and testing the policy: explain one decision, check many in bulk, lint the files, and
//! reload them without a restart. A policy that fails to load or lint is refused; the previous
//! one stays in force and the error shows at `/readyz`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::foundation::config::{AgencyKind, Config};
use crate::foundation::domain::{Purpose, Role};
use crate::foundation::schema::Schemas;
use crate::http::error::ApiError;
use crate::http::record;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{basis_text, Decision, Effect, Policy, Question};

/// A decision as explained to a person: the effect, the rule and the lawful basis in words.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub role: Role,
    pub agency: String,
    pub agency_kind: AgencyKind,
    pub category: String,
    pub purpose: Purpose,
    pub effect: Effect,
    pub rule: String,
    pub breakable: bool,
    pub lawful_basis: Vec<Basis>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Basis {
    pub code: String,
    pub text: &'static str,
}

/// A question as it arrives (API body or a line of a check file), validated by
/// `schemas/explain.schema.json` and resolved against the configured agencies.
pub fn question(
    schemas: &Schemas,
    config: &Config,
    v: &Value,
) -> Result<(Role, String, AgencyKind, String, Purpose), ApiError> {
    let errors = schemas.explain_errors(v);
    if !errors.is_empty() {
        return Err(ApiError::BadRequest {
            message: format!("{} problem(s) in the question", errors.len()),
            errors,
        });
    }
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let role: Role = text("role")
        .parse()
        .map_err(|e| ApiError::field("/role", format!("{e}")))?;
    let purpose: Purpose = text("purpose")
        .parse()
        .map_err(|e| ApiError::field("/purpose", format!("{e}")))?;
    let agency = text("agency").to_string();
    let kind = match (config.agency(&agency), v.get("agency_kind")) {
        (Some(a), _) => a.kind,
        (None, Some(k)) => serde_json::from_value(k.clone())
            .map_err(|e| ApiError::field("/agency_kind", e.to_string()))?,
        (None, None) => {
            return Err(ApiError::field(
                "/agency",
                "not a configured agency; name its agency_kind to ask about it",
            ))
        }
    };
    Ok((role, agency, kind, text("category").to_string(), purpose))
}

pub fn answer(
    role: Role,
    agency: String,
    kind: AgencyKind,
    category: String,
    purpose: Purpose,
    d: Decision,
) -> Answer {
    Answer {
        role,
        agency,
        agency_kind: kind,
        category,
        purpose,
        effect: d.effect,
        rule: d.rule,
        breakable: d.breakable,
        lawful_basis: d
            .basis
            .into_iter()
            .map(|code| Basis {
                text: basis_text(&code),
                code,
            })
            .collect(),
    }
}

/// Explains the decision the gateway would make now for a role, agency, category and purpose.
#[utoipa::path(post, path = "/v1/policy/explain",
    request_body(content = Object, description = "See schemas/explain.schema.json"),
    responses((status = 200, body = Answer), (status = 400)),
    security(("bearer" = [])))]
pub async fn explain(
    State(state): State<AppState>,
    principal: Principal,
    body: Bytes,
) -> Result<Json<Answer>, ApiError> {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let e = ApiError::bad_request(format!("body is not valid JSON: {e}"));
            return Err(
                crate::http::refuse(&state, &principal, "policy_explain", None, None, e).await,
            );
        }
    };
    let (role, agency, kind, category, purpose) =
        match question(&state.schemas, &state.config, &value) {
            Ok(q) => q,
            Err(e) => {
                return Err(crate::http::refuse(
                    &state,
                    &principal,
                    "policy_explain",
                    None,
                    None,
                    e,
                )
                .await)
            }
        };
    let d = state.policy().decide(&Question {
        role,
        agency: &agency,
        kind,
        category: &category,
        purpose,
    });
    let a = answer(role, agency, kind, category, purpose, d);
    record(
        &state,
        &principal,
        "policy_explain",
        None,
        Some(purpose),
        "answered",
        json!({"rule": a.rule, "effect": a.effect}),
    )
    .await?;
    Ok(Json(a))
}

/// What `/readyz` says of the policy.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyStatus {
    pub rules: usize,
    pub loaded_at: DateTime<Utc>,
    /// The last reload that was refused, with why; the policy loaded before it stays in force.
    pub refused: Option<String>,
}

/// Loads the configured policy, with the configured agencies as the domains it may name.
pub async fn load(config: &Config) -> Result<Policy, crate::pipeline::authorise::PolicyError> {
    let agencies: Vec<String> = config.agencies.iter().map(|a| a.id.clone()).collect();
    Policy::load(&config.policy.model, &config.policy.policy, Some(&agencies)).await
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the policy on SIGHUP or when either file changes (polled every two seconds).
pub async fn watch(state: AppState) {
    let files = [
        state.config.policy.model.clone(),
        state.config.policy.policy.clone(),
    ];
    let mut seen: Vec<Option<SystemTime>> = files.iter().map(|f| modified(f)).collect();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            () = signalled => {},
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                let now: Vec<Option<SystemTime>> = files.iter().map(|f| modified(f)).collect();
                if now == seen {
                    continue;
                }
                seen = now;
            }
        }
        reload(&state).await;
    }
}

/// Loads the files again; swaps the new policy in whole, or keeps the old one and says why.
pub async fn reload(state: &AppState) {
    match load(&state.config).await {
        Ok(p) => {
            let rules = p.rules();
            if let Ok(mut slot) = state.policy.write() {
                *slot = Arc::new(p);
            }
            if let Ok(mut s) = state.policy_status.write() {
                *s = PolicyStatus {
                    rules,
                    loaded_at: Utc::now(),
                    refused: None,
                };
            }
            tracing::info!(rules, "policy reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "policy reload refused; the previous policy stays in force");
            if let Ok(mut s) = state.policy_status.write() {
                s.refused = Some(e.to_string());
            }
        }
    }
}
