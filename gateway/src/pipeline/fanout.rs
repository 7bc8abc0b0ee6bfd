//! Stage 3, fan out: ask every source that holds the child, all at once, each within its own
//! deadline. A source that fails or is late becomes `unavailable` with a reason; it never fails
//! the request, and it never holds the others up. Every call goes through the source's retries
//! and circuit breaker ([`crate::sources`]), so a source that keeps failing is not asked.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use weft_adapters::Item;

use crate::pipeline::resolve::Link;
use crate::sources::{Source, Sources};

/// What one source gave for one child.
pub enum Outcome {
    /// The items of each linked record, by the record's local id.
    Records(Vec<(String, Vec<Item>)>),
    /// The child is not linked to this source, or the source no longer holds the record.
    NoRecord,
    Unavailable(String),
    /// The source was not asked: the view could show nothing of it to this viewer (a kind of
    /// source they may not know of), and nothing it could say would change what they see.
    NotAsked,
}

pub struct Fetched {
    pub source: Arc<Source>,
    pub fetched_at: DateTime<Utc>,
    pub outcome: Outcome,
}

/// Fetches the child's records from every source concurrently. Returns one entry per
/// configured source, in configuration order, within the slowest deadline.
pub async fn fan_out(sources: &Sources, links: &[Link]) -> Vec<Fetched> {
    fan_out_to(sources, links, |_| true).await
}

/// [`fan_out`], asking only the sources `ask` picks: every other linked source is
/// [`Outcome::NotAsked`] and receives no request. Still one entry per configured source.
pub async fn fan_out_to(
    sources: &Sources,
    links: &[Link],
    ask: impl Fn(&Source) -> bool,
) -> Vec<Fetched> {
    join_all(sources.all.iter().map(|source| {
        let ids = linked(links, source);
        let asked = ids.is_empty() || ask(source);
        async move {
            if asked {
                fetch_source(source.clone(), ids).await
            } else {
                Fetched {
                    source: source.clone(),
                    fetched_at: Utc::now(),
                    outcome: Outcome::NotAsked,
                }
            }
        }
    }))
    .await
}

fn linked<'a>(links: &'a [Link], source: &Source) -> Vec<&'a str> {
    links
        .iter()
        .filter(|l| l.source == source.id)
        .map(|l| l.local_id.as_str())
        .collect()
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
    // All of the child's records at this source, or none: a partial answer would read as the
    // whole picture, so one failed record makes the source unavailable.
    let (ids, adapter) = (&ids, &source.adapter);
    let fetch_all = || async move {
        let results = join_all(ids.iter().map(|id| adapter.fetch(id))).await;
        let mut records = Vec::new();
        for (id, r) in ids.iter().zip(results) {
            if let Some(items) = r? {
                records.push((id.to_string(), items));
            }
        }
        Ok(records)
    };
    let outcome = match source.call(source.deadline, fetch_all).await {
        Err(failure) => Outcome::Unavailable(failure.reason().to_string()),
        Ok(records) if records.is_empty() => Outcome::NoRecord,
        Ok(records) => Outcome::Records(records),
    };
    let label = match &outcome {
        Outcome::Unavailable(reason) => reason.as_str(),
        Outcome::NoRecord => "no_record",
        Outcome::NotAsked => "not_asked",
        Outcome::Records(_) => "ok",
    };
    source.observe_fetch(label, started.elapsed().as_secs_f64());
    Fetched {
        source,
        fetched_at: Utc::now(),
        outcome,
    }
}
