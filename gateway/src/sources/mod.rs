//! The configured sources, each with its adapter and what the gateway has seen of its health.
//! Every adapter call — the index listing a source, a trace into a query-only one, a view's
//! fetch — goes through [`Source::call`]: retries for transient failures within the deadline
//! ([`resilience`]), and a circuit breaker that spares a failing source every call. `file`
//! sources serve what was last imported ([`imported`]).

pub mod imported;
pub mod resilience;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use weft_adapters::{Adapter, AdapterConfig, AdapterError};

use crate::foundation::config::{AgencyConfig, Config, Resilience};
use resilience::{Admission, Breaker, BreakerState, BreakerStatus, RetryPolicy};

/// A configured source with its adapter and what the gateway has seen of its health.
pub struct Source {
    pub id: String,
    pub agency: AgencyConfig,
    pub deadline: Duration,
    pub kind: &'static str,
    pub adapter: Arc<dyn Adapter>,
    /// Whether it can mark a child restricted (`sources[].restrictions`).
    pub marks_restrictions: bool,
    retry: RetryPolicy,
    breaker: Breaker,
    health: Health,
    /// This source's series of the breaker gauge and of the fetch histogram's `ok` outcome,
    /// looked up once: every view would otherwise hash the labels into the metric's map
    /// three times for each source it asks.
    breaker_gauge: prometheus::IntGauge,
    fetched_ok: prometheus::Histogram,
}

#[derive(Default)]
struct Health {
    ok: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
    last: Mutex<Option<(DateTime<Utc>, Option<String>)>>,
    last_error: Mutex<Option<LastError>>,
    last_ok: Mutex<Option<DateTime<Utc>>>,
    /// Calls that reached the source (the breaker let them through): their number, their total
    /// time, and the last one's, in milliseconds.
    timed: AtomicU64,
    total_ms: AtomicU64,
    last_ms: AtomicU64,
}

/// The most recent failure of a source, for its administrator.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastError {
    /// The `unavailable` reason views showed (`timeout`, `source_error`, …).
    pub reason: String,
    /// What went wrong, as the adapter put it (URLs and values are never in it).
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A source's health as `GET /v1/sources` and `GET /v1/status` report it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceHealth {
    pub source: String,
    pub agency: String,
    pub kind: &'static str,
    /// `ok` (the last call succeeded), `failing` (it failed), `unavailable` (the breaker is
    /// open or probing: views do not call it) or `unknown` (not called yet).
    pub state: &'static str,
    pub last_reason: Option<String>,
    pub last_at: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    pub breaker: BreakerStatus,
    pub deadline_ms: u64,
    /// Calls that succeeded, since start-up.
    pub calls_ok: u64,
    /// Calls that failed (after their retries), since start-up.
    pub calls_failed: u64,
    /// Calls the open breaker refused, which never reached the source.
    pub calls_refused: u64,
    /// Retries sent after transient failures.
    pub retries: u64,
    /// When a call last succeeded (a `failing` source's last good answer).
    pub last_ok_at: Option<DateTime<Utc>>,
    /// How long the last call that reached the source took, retries included, in ms.
    pub last_latency_ms: Option<u64>,
    /// The mean time of the calls that reached the source since start-up, in ms.
    pub mean_latency_ms: Option<u64>,
}

/// Why a call through [`Source::call`] gave nothing.
#[derive(Debug)]
pub enum Failure {
    /// The breaker is open: the source was not asked.
    CircuitOpen,
    /// The deadline passed first.
    Timeout,
    Adapter(AdapterError),
}

impl Failure {
    /// The `unavailable` reason a view shows, and the `reason` label of the error metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::CircuitOpen => "circuit_open",
            Failure::Timeout => "timeout",
            Failure::Adapter(e) => e.reason(),
        }
    }
}

impl Source {
    pub(crate) fn new(
        id: String,
        agency: AgencyConfig,
        deadline: Duration,
        kind: &'static str,
        adapter: Arc<dyn Adapter>,
        resilience: &Resilience,
    ) -> Source {
        let breaker_gauge = crate::foundation::metrics::SOURCE_BREAKER.with_label_values(&[&id]);
        breaker_gauge.set(BreakerState::Closed.gauge());
        let fetched_ok = crate::foundation::metrics::SOURCE_FETCH.with_label_values(&[&id, "ok"]);
        Source {
            breaker_gauge,
            fetched_ok,
            id,
            agency,
            deadline,
            kind,
            adapter,
            marks_restrictions: kind == "fhir",
            retry: RetryPolicy::new(resilience),
            breaker: Breaker::new(resilience),
            health: Health::default(),
        }
    }

    /// Calls the source through its breaker, retrying transient failures, all within
    /// `deadline`. Every adapter read goes through here, so the breaker sees every failure and
    /// an open breaker spares the source every call.
    pub async fn call<T, F, Fut>(&self, deadline: Duration, op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AdapterError>>,
    {
        let started = Instant::now();
        if self.breaker.admit(started) == Admission::Refuse {
            self.health.refused.fetch_add(1, Ordering::Relaxed);
            crate::foundation::metrics::SOURCE_ERRORS
                .with_label_values(&[&self.id, "circuit_open"])
                .inc();
            return Err(Failure::CircuitOpen);
        }
        self.publish_breaker();
        let attempt = self.retry.run(started + deadline, op);
        let timed = Timed(&self.health, started);
        let result = match tokio::time::timeout(deadline, attempt).await {
            Err(_) => Err(Failure::Timeout),
            Ok((result, retries)) => {
                if retries > 0 {
                    self.health
                        .retries
                        .fetch_add(u64::from(retries), Ordering::Relaxed);
                    crate::foundation::metrics::SOURCE_RETRIES
                        .with_label_values(&[&self.id])
                        .inc_by(u64::from(retries));
                }
                result.map_err(Failure::Adapter)
            }
        };
        drop(timed);
        match &result {
            // The source answered; that the search was too broad is not its failure.
            Ok(_) | Err(Failure::Adapter(AdapterError::TooManyMatches)) => {
                self.breaker.success();
                if let Ok(mut at) = self.health.last_ok.lock() {
                    *at = Some(Utc::now());
                }
                self.record(None);
            }
            Err(failure) => {
                if let Failure::Adapter(e) = failure {
                    tracing::warn!(source = %self.id, reason = e.reason(), error = %e, "source call failed");
                } else {
                    tracing::warn!(source = %self.id, reason = failure.reason(), "source call failed");
                }
                if self.breaker.failure(Instant::now()) {
                    tracing::warn!(source = %self.id, "circuit breaker opened");
                }
                crate::foundation::metrics::SOURCE_ERRORS
                    .with_label_values(&[&self.id, failure.reason()])
                    .inc();
                self.record(Some(failure));
            }
        }
        self.publish_breaker();
        result
    }

    fn publish_breaker(&self) {
        self.breaker_gauge.set(self.breaker.state().gauge());
    }

    /// Records how long a view's fetch from this source took, by its outcome (`ok`,
    /// `no_record` or the `unavailable` reason).
    pub(crate) fn observe_fetch(&self, outcome: &str, seconds: f64) {
        if outcome == "ok" {
            self.fetched_ok.observe(seconds);
        } else {
            crate::foundation::metrics::SOURCE_FETCH
                .with_label_values(&[&self.id, outcome])
                .observe(seconds);
        }
    }

    fn record(&self, failure: Option<&Failure>) {
        let counter = if failure.is_some() {
            &self.health.failed
        } else {
            &self.health.ok
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        if let Ok(mut last) = self.health.last.lock() {
            *last = Some((now, failure.map(|f| f.reason().to_string())));
        }
        if let Some(f) = failure {
            let detail = match f {
                Failure::Adapter(e) => e.to_string(),
                Failure::Timeout => format!("no answer within {} ms", self.deadline.as_millis()),
                Failure::CircuitOpen => "circuit breaker open".to_string(),
            };
            if let Ok(mut last) = self.health.last_error.lock() {
                *last = Some(LastError {
                    reason: f.reason().to_string(),
                    detail,
                    at: now,
                });
            }
        }
    }

    pub fn health(&self) -> SourceHealth {
        let last = self.health.last.lock().ok().and_then(|l| l.clone());
        let breaker = self.breaker.status();
        let timed = self.health.timed.load(Ordering::Relaxed);
        SourceHealth {
            source: self.id.clone(),
            agency: self.agency.id.clone(),
            kind: self.kind,
            state: match (&last, breaker.state) {
                (_, BreakerState::Open | BreakerState::HalfOpen) => "unavailable",
                (None, _) => "unknown",
                (Some((_, None)), _) => "ok",
                (Some((_, Some(_))), _) => "failing",
            },
            last_reason: last.as_ref().and_then(|(_, r)| r.clone()),
            last_at: last.map(|(at, _)| at),
            last_error: self.health.last_error.lock().ok().and_then(|l| l.clone()),
            breaker,
            deadline_ms: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
            calls_ok: self.health.ok.load(Ordering::Relaxed),
            calls_failed: self.health.failed.load(Ordering::Relaxed),
            calls_refused: self.health.refused.load(Ordering::Relaxed),
            retries: self.health.retries.load(Ordering::Relaxed),
            last_ok_at: self.health.last_ok.lock().ok().and_then(|l| *l),
            last_latency_ms: (timed > 0).then(|| self.health.last_ms.load(Ordering::Relaxed)),
            mean_latency_ms: (timed > 0)
                .then(|| self.health.total_ms.load(Ordering::Relaxed) / timed),
        }
    }
}

/// Times a call that reached the source, when dropped: however it ended (answered, failed,
/// timed out), its time counts.
struct Timed<'a>(&'a Health, Instant);

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let ms = crate::foundation::metrics::elapsed_ms(self.1);
        self.0.last_ms.store(ms, Ordering::Relaxed);
        self.0.total_ms.fetch_add(ms, Ordering::Relaxed);
        self.0.timed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Source {
    /// A source for unit tests of the stages after fan-out, which never call its adapter.
    pub fn for_tests(
        id: &str,
        kind: crate::foundation::config::AgencyKind,
        deadline: Duration,
    ) -> Source {
        Self::fixed_for_tests(id, kind, deadline, None)
    }

    /// A source for unit tests whose listing is `listed` (`None`: it only answers searches),
    /// which finds and fetches nothing.
    pub fn fixed_for_tests(
        id: &str,
        kind: crate::foundation::config::AgencyKind,
        deadline: Duration,
        listed: Option<Vec<weft_adapters::SourceRecord>>,
    ) -> Source {
        struct Fixed(Option<Vec<weft_adapters::SourceRecord>>);
        #[async_trait::async_trait]
        impl Adapter for Fixed {
            async fn list(
                &self,
            ) -> Result<Option<Vec<weft_adapters::SourceRecord>>, weft_adapters::AdapterError>
            {
                Ok(self.0.clone())
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
            ) -> Result<Option<Vec<weft_adapters::Item>>, weft_adapters::AdapterError> {
                Ok(None)
            }
        }
        Source::new(
            id.to_string(),
            AgencyConfig {
                id: format!("{id}-agency"),
                name: id.to_string(),
                kind,
                local_authority: None,
            },
            deadline,
            "test",
            Arc::new(Fixed(listed)),
            &Resilience::default(),
        )
    }
}

/// Every configured source, in configuration order (which is the order views list them in).
pub struct Sources {
    pub all: Vec<Arc<Source>>,
}

impl Sources {
    /// Builds every adapter; `file` sources read the import store in `store`.
    pub fn build(
        config: &Config,
        store: &crate::foundation::store::Store,
    ) -> anyhow::Result<Sources> {
        let imports = imported::DbImports::new(store.clone());
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
                let mut source = Source::new(
                    s.id.clone(),
                    agency,
                    Duration::from_millis(s.deadline_ms),
                    AdapterConfig::kind(&s.adapter),
                    adapter,
                    &s.resilience,
                );
                if let Some(marks) = s.restrictions {
                    source.marks_restrictions = marks;
                }
                Ok(Arc::new(source))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Sources { all })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Source>> {
        self.all.iter().find(|s| s.id == id)
    }
}
