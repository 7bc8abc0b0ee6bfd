//! Counts over time: each report taken writes its counts as the day's row for each source
//! (`quality_snapshots`, the last report of a day wins), so a data team sees them fall as
//! records are corrected at source. Counts only: no record, name or identifier is kept here.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use super::findings::Counts;
use crate::foundation::store::Store;

/// One source's counts on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub source: String,
    pub records: i64,
    pub disagreeing_records: i64,
    pub disagreements: i64,
    pub invalid_identifiers: i64,
    pub in_review: i64,
    pub duplicate_pairs: i64,
}

/// Writes today's row of every source in `counts` (replacing an earlier one of the same day).
pub async fn record(
    store: &Store,
    counts: &BTreeMap<String, Counts>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let day = at.format("%Y-%m-%d").to_string();
    let taken = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut tx = store.begin_write().await?;
    for (source, c) in counts {
        sqlx::query(
            "INSERT INTO quality_snapshots (day, source, records, disagreeing_records, \
             disagreements, invalid_identifiers, in_review, duplicate_pairs, taken_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (day, source) DO UPDATE SET records = excluded.records, \
             disagreeing_records = excluded.disagreeing_records, \
             disagreements = excluded.disagreements, \
             invalid_identifiers = excluded.invalid_identifiers, \
             in_review = excluded.in_review, duplicate_pairs = excluded.duplicate_pairs, \
             taken_at = excluded.taken_at",
        )
        .bind(&day)
        .bind(source)
        .bind(c.records as i64)
        .bind(c.disagreeing_records as i64)
        .bind(c.disagreements_total() as i64)
        .bind(c.invalid_identifiers as i64)
        .bind(c.in_review as i64)
        .bind(c.duplicate_pairs as i64)
        .bind(&taken)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The rows of `sources` (every source when `None`), oldest day first.
pub async fn read(store: &Store, sources: Option<&[String]>) -> Result<Vec<Snapshot>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT day, source, records, disagreeing_records, disagreements, invalid_identifiers, \
         in_review, duplicate_pairs FROM quality_snapshots ORDER BY day, source",
    )
    .fetch_all(&store.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let source: String = r.try_get("source")?;
        if sources.is_some_and(|s| !s.contains(&source)) {
            continue;
        }
        out.push(Snapshot {
            day: r.try_get("day")?,
            source,
            records: r.try_get("records")?,
            disagreeing_records: r.try_get("disagreeing_records")?,
            disagreements: r.try_get("disagreements")?,
            invalid_identifiers: r.try_get("invalid_identifiers")?,
            in_review: r.try_get("in_review")?,
            duplicate_pairs: r.try_get("duplicate_pairs")?,
        });
    }
    Ok(out)
}
