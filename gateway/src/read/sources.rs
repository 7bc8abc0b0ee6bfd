//! Each source's health for the people who run the gateway — whether it answers, whether its
//! circuit breaker is open, its last error and its call counts. It shows no children's data, but
//! it tells a reader which partner systems are down, so it is for data administrators only and
//! every read of it is audited like any other.

use serde::Serialize;
use serde_json::json;

use crate::foundation::domain::Role;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
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
