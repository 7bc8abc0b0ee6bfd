//! Stage 3, fan out: ask every source that holds the child, all at once, each within its own
//! deadline. A source that fails or is late becomes `unavailable` with a reason; it never fails
//! the request, and it never holds the others up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;
use weft_adapters::{Adapter, AdapterConfig, Item};

use crate::config::{AgencyConfig, Config};
use crate::resolve::Link;

/// A configured source with its adapter and what the gateway has seen of its health.
pub struct Source {
    pub id: String,
    pub agency: AgencyConfig,
    pub deadline: Duration,
    pub kind: &'static str,
    pub adapter: Arc<dyn Adapter>,
    health: Health,
}

#[derive(Default)]
struct Health {
    ok: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<(DateTime<Utc>, Option<String>)>>,
}

/// A source's health as `/readyz` reports it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceHealth {
    pub source: String,
    pub kind: &'static str,
    /// `ok`, `failing` (the last call failed) or `unknown` (not called yet).
    pub state: &'static str,
    pub last_reason: Option<String>,
    pub last_at: Option<DateTime<Utc>>,
    pub calls_ok: u64,
    pub calls_failed: u64,
}

impl Source {
    fn record(&self, failure: Option<&str>) {
        let counter = if failure.is_some() {
            &self.health.failed
        } else {
            &self.health.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.health.last.lock() {
            *last = Some((Utc::now(), failure.map(String::from)));
        }
    }

    pub fn health(&self) -> SourceHealth {
        let last = self.health.last.lock().ok().and_then(|l| l.clone());
        SourceHealth {
            source: self.id.clone(),
            kind: self.kind,
            state: match &last {
                None => "unknown",
                Some((_, None)) => "ok",
                Some((_, Some(_))) => "failing",
            },
            last_reason: last.as_ref().and_then(|(_, r)| r.clone()),
            last_at: last.map(|(at, _)| at),
            calls_ok: self.health.ok.load(Ordering::Relaxed),
            calls_failed: self.health.failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
impl Source {
    /// A source for unit tests of the stages after fan-out, which never call its adapter.
    pub fn for_tests(id: &str, kind: crate::config::AgencyKind, deadline: Duration) -> Source {
        struct Never;
        #[async_trait::async_trait]
        impl Adapter for Never {
            async fn list(
                &self,
            ) -> Result<Option<Vec<weft_adapters::SourceRecord>>, weft_adapters::AdapterError>
            {
                Ok(None)
            }
            async fn find(
                &self,
                _: &weft_adapters::Probe,
            ) -> Result<Vec<weft_adapters::SourceRecord>, weft_adapters::AdapterError> {
                Ok(Vec::new())
            }
            async fn fetch(
                &self,
                _: &str,
            ) -> Result<Option<Vec<Item>>, weft_adapters::AdapterError> {
                Ok(None)
            }
        }
        Source {
            id: id.to_string(),
            agency: AgencyConfig {
                id: format!("{id}-agency"),
                name: id.to_string(),
                kind,
            },
            deadline,
            kind: "test",
            adapter: Arc::new(Never),
            health: Health::default(),
        }
    }
}

/// Every configured source, in configuration order (which is the order views list them in).
pub struct Sources {
    pub all: Vec<Arc<Source>>,
}

impl Sources {
    /// Builds every adapter; `file` sources read the import store in `store`.
    pub fn build(config: &Config, store: &crate::store::Store) -> anyhow::Result<Sources> {
        let imports = crate::imports::DbImports::new(store.clone());
        let all = config
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let agency = config
                    .agency(&s.agency)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("sources[{i}].agency: unknown agency"))?;
                let ctx = weft_adapters::BuildContext {
                    source: s.id.clone(),
                    imports: Some(imports.clone()),
                };
                let adapter = s
                    .adapter
                    .build_with(&ctx)
                    .map_err(|e| anyhow::anyhow!("sources[{i}].adapter: {e}"))?;
                Ok(Arc::new(Source {
                    id: s.id.clone(),
                    agency,
                    deadline: Duration::from_millis(s.deadline_ms),
                    kind: AdapterConfig::kind(&s.adapter),
                    adapter,
                    health: Health::default(),
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Sources { all })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Source>> {
        self.all.iter().find(|s| s.id == id)
    }
}

/// What one source gave for one child.
pub enum Outcome {
    /// The items of each linked record, by the record's local id.
    Records(Vec<(String, Vec<Item>)>),
    /// The child is not linked to this source, or the source no longer holds the record.
    NoRecord,
    Unavailable(String),
}

pub struct Fetched {
    pub source: Arc<Source>,
    pub fetched_at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Fetches the child's records from every source concurrently. Returns one entry per
/// configured source, in configuration order, within the slowest deadline.
pub async fn fan_out(sources: &Sources, links: &[Link]) -> Vec<Fetched> {
    join_all(sources.all.iter().map(|source| {
        let ids: Vec<&str> = links
            .iter()
            .filter(|l| l.source == source.id)
            .map(|l| l.local_id.as_str())
            .collect();
        fetch_source(source.clone(), ids)
    }))
    .await
}

async fn fetch_source(source: Arc<Source>, ids: Vec<&str>) -> Fetched {
    if ids.is_empty() {
        return Fetched {
            source,
            fetched_at: Utc::now(),
            outcome: Outcome::NoRecord,
        };
    }
    let started = Instant::now();
    let calls = join_all(ids.iter().map(|id| source.adapter.fetch(id)));
    let outcome = match tokio::time::timeout(source.deadline, calls).await {
        Err(_) => Outcome::Unavailable("timeout".into()),
        Ok(results) => {
            let mut records = Vec::new();
            let mut failure = None;
            for (id, r) in ids.iter().zip(results) {
                match r {
                    Ok(Some(items)) => records.push((id.to_string(), items)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(source = %source.id, reason = e.reason(), error = %e, "source fetch failed");
                        failure.get_or_insert(e.reason().to_string());
                    }
                }
            }
            // A partial answer would read as the whole picture; show the source as unavailable.
            match failure {
                Some(reason) => Outcome::Unavailable(reason),
                None if records.is_empty() => Outcome::NoRecord,
                None => Outcome::Records(records),
            }
        }
    };
    let label = match &outcome {
        Outcome::Unavailable(reason) => reason.as_str(),
        Outcome::NoRecord => "no_record",
        Outcome::Records(_) => "ok",
    };
    crate::metrics::SOURCE_FETCH
        .with_label_values(&[&source.id, label])
        .observe(started.elapsed().as_secs_f64());
    source.record(match &outcome {
        Outcome::Unavailable(reason) => Some(reason.as_str()),
        _ => None,
    });
    Fetched {
        source,
        fetched_at: Utc::now(),
        outcome,
    }
}
