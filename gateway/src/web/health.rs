//! Sources' health for the data administrator: the gateway's readiness, the index's last pass,
//! the policy in force, and per source whether it is up, when it last answered, its circuit
//! breaker and how long its calls take — what `GET /v1/status` returns, from the same function
//! ([`crate::read::sources::status`]): data administrators only, every look audited.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::gateway::Gateway;
use crate::sources::resilience::BreakerState;
use crate::sources::SourceHealth;
use crate::web::render::{self, Page};
use crate::web::session::SignedIn;

pub fn routes() -> Router<Gateway> {
    Router::new().route("/admin/sources", get(page))
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%-d %b %Y %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// One source as the page shows it.
#[derive(Debug, Serialize)]
pub struct SourceLine {
    pub source: String,
    pub agency: String,
    pub kind: &'static str,
    /// The status in words, and the tag's colour.
    pub status: &'static str,
    pub colour: &'static str,
    pub last_ok: String,
    pub breaker: String,
    pub latency: String,
    pub calls: String,
    pub last_error: Option<String>,
}

fn line(gw: &Gateway, s: &SourceHealth) -> SourceLine {
    let (status, colour) = match s.state {
        "ok" => ("Up", "green"),
        "failing" => ("Failing", "red"),
        "unavailable" => ("Down: not called", "red"),
        _ => ("Not called yet", "grey"),
    };
    let b = &s.breaker;
    let breaker = match b.state {
        BreakerState::Closed if b.consecutive_failures == 0 => "Closed".to_string(),
        BreakerState::Closed => format!(
            "Closed, {} failure{} in a row",
            b.consecutive_failures,
            if b.consecutive_failures == 1 { "" } else { "s" }
        ),
        BreakerState::Open => match b.probe_after {
            Some(t) => format!("Open: next try after {}", when(Some(t))),
            None => "Open".to_string(),
        },
        BreakerState::HalfOpen => "Half open: one call is trying the source".to_string(),
    };
    let breaker = if b.times_opened > 0 {
        format!(
            "{breaker} (opened {} time{} since start-up)",
            b.times_opened,
            if b.times_opened == 1 { "" } else { "s" }
        )
    } else {
        breaker
    };
    let latency = match (s.last_latency_ms, s.mean_latency_ms) {
        (Some(last), Some(mean)) => format!(
            "Last call {last} ms, mean {mean} ms (deadline {} ms)",
            s.deadline_ms
        ),
        _ => format!("No calls yet (deadline {} ms)", s.deadline_ms),
    };
    SourceLine {
        source: s.source.clone(),
        agency: gw
            .config
            .agency(&s.agency)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| s.agency.clone()),
        kind: s.kind,
        status,
        colour,
        last_ok: if s.last_ok_at.is_some() {
            when(s.last_ok_at)
        } else {
            "Never since start-up".into()
        },
        breaker,
        latency,
        calls: format!(
            "{} answered, {} failed, {} not sent (breaker open), {} retries",
            s.calls_ok, s.calls_failed, s.calls_refused, s.retries
        ),
        last_error: s.last_error.as_ref().map(|e| {
            format!(
                "{} at {}: {}",
                e.reason.replace('_', " "),
                when(Some(e.at)),
                e.detail
            )
        }),
    }
}

async fn page(State(gw): State<Gateway>, who: SignedIn) -> Response {
    match crate::read::sources::status(&gw, &who.principal).await {
        Ok(status) => {
            let sources: Vec<SourceLine> = status.sources.iter().map(|s| line(&gw, s)).collect();
            let down = sources.iter().filter(|s| s.colour == "red").count();
            let failed: Vec<String> = status
                .index
                .failed
                .iter()
                .map(|(source, why)| format!("{source}: {}", why.replace('_', " ")))
                .collect();
            Page::new("sources.html", "Sources' health", &who)
                .with("ready", status.ready)
                .with("database", status.checks.database)
                .with("index_state", status.checks.index)
                .with("index_at", when(status.index.finished_at))
                .with("records", status.index.records)
                .with("children", status.index.children)
                .with("flagged", status.index.flagged_identifiers)
                .with("failed", failed)
                .with("rules", status.policy.rules)
                .with("policy_at", when(Some(status.policy.loaded_at)))
                .with("policy_refused", status.policy.refused)
                .with("sources", sources)
                .with("down", down)
                .render()
        }
        Err(e) => render::error_page(Some(&who), &e),
    }
}
