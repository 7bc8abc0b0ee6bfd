//! Each source's health for the people who run the gateway — whether it answers, whether its
//! circuit breaker is open, its last error and its call counts — and the gateway's own status.
//! It shows no children's data, but it tells a reader which partner systems are down, so it is
//! for data administrators only and every read of it is audited like any other. Readiness, for
//! load balancers, says only whether the gateway can serve.

use serde::Serialize;
use serde_json::json;

use crate::foundation::domain::Role;
use crate::foundation::error::Error;
use crate::gateway::{Gateway, PolicyStatus};
use crate::pipeline::authenticate::Principal;
use crate::pipeline::resolve::SyncReport;
use crate::sources::SourceHealth;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourcesReport {
    /// In configuration order.
    pub sources: Vec<SourceHealth>,
}

/// Every source's health. Data administrators only.
pub async fn health(gw: &Gateway, who: &Principal) -> Result<SourcesReport, Error> {
    if who.role != Role::DataAdmin {
        let e = Error::Forbidden("source health is open to data administrators only");
        return Err(gw.refuse(who, "sources", None, None, e).await);
    }
    let sources: Vec<SourceHealth> = gw.sources.all.iter().map(|s| s.health()).collect();
    let unavailable: Vec<&str> = sources
        .iter()
        .filter(|s| s.state == "unavailable")
        .map(|s| s.source.as_str())
        .collect();
    let detail = json!({"returned": sources.len(), "unavailable": unavailable});
    gw.record(who, "sources", None, None, "shown", detail)
        .await?;
    Ok(SourcesReport { sources })
}

/// What anyone may know of the gateway's readiness: whether it can serve, and which of its own
/// checks failed. Nothing about sources, agencies, children or records: it is unauthenticated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Checks,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checks {
    /// `ok`, or `unavailable` when the database cannot be written (the write probe failed).
    #[schema(example = "ok")]
    pub database: &'static str,
    /// `ready` once the first pass over the sources has built the index, `starting` before.
    #[schema(example = "ready")]
    pub index: &'static str,
}

/// Whether the gateway can serve: the database takes a write (see
/// [`crate::foundation::store::Store::probe_write`]) and the first index pass is done. Not
/// audited, since it shows nothing about anyone; a failed probe is logged with the database's
/// error.
pub async fn readiness(gw: &Gateway) -> Readiness {
    let database = match gw.store.probe_write().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database cannot be written");
            "unavailable"
        }
    };
    let index = if gw.index.is_ready() {
        "ready"
    } else {
        "starting"
    };
    Readiness {
        ready: database == "ok" && index == "ready",
        checks: Checks { database, index },
    }
}

/// The gateway's state in detail, for the people who run it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub ready: bool,
    pub checks: Checks,
    /// The last pass over the sources: counts, and the sources it could not read, with why.
    pub index: SyncReport,
    /// The policy in force, and the last reload refused with why.
    pub policy: PolicyStatus,
    /// Each source's health, in configuration order, as `GET /v1/sources` gives it.
    pub sources: Vec<SourceHealth>,
}

/// Readiness with its detail — the index's last pass, the policy in force and its last refused
/// reload, each source's health. Data administrators only, audited like [`health`]; when the
/// database cannot be written this cannot be audited either, so it answers 503 and the logs
/// carry the probe's error.
pub async fn status(gw: &Gateway, who: &Principal) -> Result<Status, Error> {
    if who.role != Role::DataAdmin {
        let e = Error::Forbidden("the gateway's status is open to data administrators only");
        return Err(gw.refuse(who, "status", None, None, e).await);
    }
    let Readiness { ready, checks } = readiness(gw).await;
    let status = Status {
        ready,
        checks,
        index: gw.index.last_sync(),
        policy: gw.policy_status(),
        sources: gw.sources.all.iter().map(|s| s.health()).collect(),
    };
    let detail = json!({"ready": status.ready, "sources": status.sources.len()});
    gw.record(who, "status", None, None, "shown", detail)
        .await?;
    Ok(status)
}
