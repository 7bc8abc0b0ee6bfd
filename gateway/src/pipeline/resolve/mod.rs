//! Stage 2, resolve identity: the master child index. It maps a Weft child id to the records
//! that each source holds on that child, and an identifier or demographics to a child.
//!
//! Linking, in order: a record already linked keeps its link (a link is never moved
//! automatically); a verified national identifier (NHS number, UPN) shared with a linked record
//! links deterministically; otherwise the probabilistic matcher ([`crate::pipeline::resolve::linkage`]) scores the
//! candidates blocking finds: at or above the upper threshold the record links, between the
//! thresholds it starts a child of its own and the match goes to the review queue, below it
//! starts a new child. Invalid identifiers are kept on the record, flagged, and never used for
//! linking. Each record is matched as it arrives or changes, never re-run; many new records at
//! once (a first import, a pass over a source) are placed by the same rules in batches
//! ([`bulk`]). Every change to the index holds its write lock
//! ([`crate::foundation::store::Store::lock_index`]), so nodes sharing a store never both
//! place one record. A linked
//! record whose demographics change keeps its link, but if it now matches another child better
//! than its own, that child is proposed for review.

pub mod bulk;
pub mod linkage;
pub(crate) mod partners;
pub mod records;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{stream, StreamExt};
use serde::Serialize;
use sqlx::Row;
use weft_adapters::{Demographics, Probe, SourceRecord};

use crate::foundation::audit;
use crate::foundation::store::{placeholders, Store};
use crate::pipeline::resolve::linkage::{stored_record, Grade, Matcher, NewLink};
use crate::pipeline::resolve::partners::Partners;
use crate::sources::{Source, Sources};
use weft_ids as identity;
use weft_matching::{Explained, Record};

/// A child's record in one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub source: String,
    pub local_id: String,
}

/// An identifier as the index keeps it: checked, and flagged when it failed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Checked {
    kind: String,
    value: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    problem: Option<String>,
}

/// A source record as the index stores it, worked out before any row is written: what
/// [`Index::upsert`] writes, and what a bulk load of new records (`weft bench search`) writes
/// too, so the two cannot drift apart.
pub(crate) struct Stored {
    /// Every identifier the source gave, checked.
    checked: Vec<Checked>,
    /// Whether any identifier failed its check.
    pub flagged: bool,
    /// What the matcher sees: demographics and the verified identifiers only.
    pub record: Record,
    /// `source_records.identifiers`: every identifier, checked, the invalid ones flagged.
    pub identifiers: String,
    /// `source_records.demographics`: as the source gave them.
    pub demographics: String,
    /// `source_records.restricted`: 1 when the source marks the record restricted, else 0.
    pub restricted: i64,
}

impl Stored {
    pub(crate) fn new(rec: &SourceRecord) -> Self {
        let checked = Self::check(rec);
        Self {
            flagged: checked.iter().any(|c| !c.valid),
            record: Self::record_from(rec, &checked),
            identifiers: serde_json::to_string(&checked).unwrap_or_else(|_| "[]".into()),
            demographics: serde_json::to_string(&rec.demographics).unwrap_or_else(|_| "{}".into()),
            restricted: i64::from(rec.restricted),
            checked,
        }
    }

    /// What the matcher sees of a source record ([`Stored::record`]) without the rest.
    pub(crate) fn matched(rec: &SourceRecord) -> Record {
        Self::record_from(rec, &Self::check(rec))
    }

    fn check(rec: &SourceRecord) -> Vec<Checked> {
        rec.identifiers
            .iter()
            .map(|i| match identity::verify(&i.kind, &i.value) {
                Ok(v) => Checked {
                    kind: i.kind.clone(),
                    value: v,
                    valid: true,
                    problem: None,
                },
                Err(e) => Checked {
                    kind: i.kind.clone(),
                    value: i.value.clone(),
                    valid: false,
                    problem: Some(e.to_string()),
                },
            })
            .collect()
    }

    fn record_from(rec: &SourceRecord, checked: &[Checked]) -> Record {
        let valid: Vec<weft_adapters::Identifier> = checked
            .iter()
            .filter(|c| c.valid)
            .map(|c| weft_adapters::Identifier::new(c.kind.clone(), c.value.clone()))
            .collect();
        crate::pipeline::resolve::linkage::record_of(
            rec.local_id.clone(),
            &rec.demographics,
            &valid,
        )
    }

    /// The rows of `record_identifiers`: each verified identifier once.
    pub(crate) fn verified(&self) -> Vec<(&str, &str)> {
        let mut seen = BTreeSet::new();
        self.checked
            .iter()
            .filter(|c| c.valid)
            .map(|c| (c.kind.as_str(), c.value.as_str()))
            .filter(|kv| seen.insert(*kv))
            .collect()
    }
}

/// A child found by a search, and what it was found by.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub id: String,
    /// `nhs_number`, `upn`, `local_id` or `demographics`.
    pub matched_on: &'static str,
    /// `certain` for an identifier, else from the match probability and the thresholds.
    pub grade: Grade,
    /// Match probability; 1 for an identifier.
    pub probability: f64,
    /// For demographic matches: each comparison, the level it reached and its weight.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explanation: Vec<Explained>,
}

/// What to search the index by; built from a validated request.
#[derive(Debug, Default, Clone)]
pub struct Search {
    pub nhs_number: Option<identity::NhsNumber>,
    pub upn: Option<identity::Upn>,
    pub local_id: Option<(String, String)>,
    pub demographics: Option<Demographics>,
    /// Return only `certain` children.
    pub certain_only: bool,
}

/// A source record as the index held it before an upsert.
struct Previous {
    child: Option<String>,
    record: Record,
    /// Whether the demographics differ from the ones arriving.
    changed: bool,
}

/// What one pass over the sources did, for `GET /v1/status` and the logs.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    pub finished_at: Option<DateTime<Utc>>,
    pub records: usize,
    pub children: i64,
    /// Records carrying an identifier that failed its check.
    pub flagged_identifiers: usize,
    /// Sources that could not be read, with the reason.
    pub failed: Vec<(String, String)>,
}

/// How strongly a listed record says which child it is, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Anchor {
    /// A verified NHS number: no record with another one can join its child.
    Nhs,
    /// A verified UPN and no verified NHS number.
    Upn,
    /// Demographics alone (identifiers absent or failing their check).
    Demographics,
}

impl Anchor {
    fn of(rec: &SourceRecord) -> Anchor {
        let verified = |kind: &str| {
            rec.identifiers
                .iter()
                .any(|i| i.kind == kind && identity::verify(&i.kind, &i.value).is_ok())
        };
        if verified("nhs_number") {
            Anchor::Nhs
        } else if verified("upn") {
            Anchor::Upn
        } else {
            Anchor::Demographics
        }
    }

    /// A listing split by anchor, each part in listing order. A local id listed more than
    /// once (a source's later row is a change to its earlier one) stays together, in the part
    /// of its strongest row, so its rows keep their order.
    fn split(records: Vec<SourceRecord>) -> [Vec<SourceRecord>; 3] {
        let mut strongest: HashMap<String, Anchor> = HashMap::with_capacity(records.len());
        for rec in &records {
            let a = Anchor::of(rec);
            strongest
                .entry(rec.local_id.clone())
                .and_modify(|s| *s = (*s).min(a))
                .or_insert(a);
        }
        let mut out: [Vec<SourceRecord>; 3] = Default::default();
        for rec in records {
            let a = strongest
                .get(&rec.local_id)
                .copied()
                .unwrap_or(Anchor::Demographics);
            out[a as usize].push(rec);
        }
        out
    }
}

/// The master child index over the gateway's store.
pub struct Index {
    store: Store,
    matcher: Matcher,
    ready: AtomicBool,
    last: Mutex<SyncReport>,
}

/// How long one listing or one trace may take before the pass moves on.
const LIST_DEADLINE: Duration = Duration::from_secs(120);

impl Index {
    /// An index with the built-in matching model and default thresholds.
    pub fn new(store: Store) -> Self {
        Self::with_matcher(store, Matcher::builtin())
    }

    pub fn with_matcher(store: Store, matcher: Matcher) -> Self {
        Self {
            store,
            matcher,
            ready: AtomicBool::new(false),
            last: Mutex::new(SyncReport::default()),
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a first pass over the sources has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn last_sync(&self) -> SyncReport {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The records linked to a child; `None` when there is no such child. One query: this runs
    /// on every view.
    pub async fn links(&self, child: &str) -> Result<Option<Vec<Link>>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT sr.source AS source, sr.local_id AS local_id FROM children c \
             LEFT JOIN source_records sr ON sr.child_id = c.id WHERE c.id = $1 \
             ORDER BY sr.source, sr.local_id",
        )
        .bind(child)
        .fetch_all(&self.store.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut links = Vec::with_capacity(rows.len());
        for r in &rows {
            let source: Option<String> = r.try_get("source")?;
            let local_id: Option<String> = r.try_get("local_id")?;
            if let (Some(source), Some(local_id)) = (source, local_id) {
                links.push(Link { source, local_id });
            }
        }
        Ok(Some(links))
    }

    /// Which of `children` are restricted: any record linked to them now is marked so by its
    /// source (NHS `R`/`V`, a refuge, a protected address). Derived from the records on every
    /// call, so a restriction lifted at the record's next indexing, or a record split off or
    /// linked, counts at once.
    pub async fn restricted(&self, children: &[&str]) -> Result<BTreeSet<String>, sqlx::Error> {
        let mut out = BTreeSet::new();
        for chunk in children.chunks(500) {
            if chunk.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT DISTINCT child_id FROM source_records \
                 WHERE restricted = 1 AND child_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for c in chunk {
                q = q.bind(*c);
            }
            for row in q.fetch_all(&self.store.pool).await? {
                out.insert(row.try_get("child_id")?);
            }
        }
        Ok(out)
    }

    /// Children matching a search; identifiers first (certain), then demographics scored by the
    /// matcher, best first.
    pub async fn find(&self, q: &Search) -> Result<Vec<Found>, sqlx::Error> {
        let mut found: Vec<Found> = Vec::new();
        let mut add = |ids: Vec<String>, on: &'static str| {
            for id in ids {
                if !found.iter().any(|f| f.id == id) {
                    found.push(Found {
                        id,
                        matched_on: on,
                        grade: Grade::Certain,
                        probability: 1.0,
                        explanation: Vec::new(),
                    });
                }
            }
        };
        if let Some(n) = &q.nhs_number {
            add(
                self.by_identifier("nhs_number", n.as_str()).await?,
                "nhs_number",
            );
        }
        if let Some(u) = &q.upn {
            add(self.by_identifier("upn", u.as_str()).await?, "upn");
        }
        if let Some((source, id)) = &q.local_id {
            let rows = sqlx::query(
                "SELECT child_id FROM source_records WHERE source = $1 AND local_id = $2 AND child_id IS NOT NULL",
            )
            .bind(source)
            .bind(id)
            .fetch_all(&self.store.pool)
            .await?;
            add(child_ids(&rows)?, "local_id");
        }
        if let Some(d) = &q.demographics {
            let mut ids = Vec::new();
            if let Some(n) = &q.nhs_number {
                ids.push(weft_adapters::Identifier::new("nhs_number", n.as_str()));
            }
            if let Some(u) = &q.upn {
                ids.push(weft_adapters::Identifier::new("upn", u.as_str()));
            }
            let query = crate::pipeline::resolve::linkage::record_of("search", d, &ids);
            let mut conn = self.store.pool.acquire().await?;
            for c in self
                .matcher
                .candidates(&mut conn, &query, &[], None)
                .await?
            {
                let Some(grade) = self.matcher.grade_score(&c.score) else {
                    continue;
                };
                if !found.iter().any(|f| f.id == c.child) {
                    found.push(Found {
                        id: c.child,
                        matched_on: "demographics",
                        grade,
                        probability: c.score.probability,
                        explanation: c.explanation,
                    });
                }
            }
        }
        if q.certain_only {
            found.retain(|f| f.grade == Grade::Certain);
        }
        Ok(found)
    }

    async fn by_identifier(&self, kind: &str, value: &str) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT sr.child_id FROM record_identifiers ri \
             JOIN source_records sr ON sr.source = ri.source AND sr.local_id = ri.local_id \
             WHERE ri.kind = $1 AND ri.value = $2 AND sr.child_id IS NOT NULL \
             ORDER BY sr.child_id",
        )
        .bind(kind)
        .bind(value)
        .fetch_all(&self.store.pool)
        .await?;
        child_ids(&rows)
    }

    /// Adds or refreshes one source record and links it. Returns the child id and whether any
    /// of its identifiers was flagged invalid.
    pub async fn upsert(
        &self,
        source: &str,
        rec: &SourceRecord,
    ) -> Result<(String, bool), sqlx::Error> {
        self.upsert_with(source, rec, &Partners::default()).await
    }

    /// [`Index::upsert`] of a record of a pass, with the pass's [`Partners`] (asked for the
    /// record's own only when it is placed).
    pub(crate) async fn upsert_with(
        &self,
        source: &str,
        rec: &SourceRecord,
        partners: &Partners<'_>,
    ) -> Result<(String, bool), sqlx::Error> {
        let stored = Stored::new(rec);
        let Stored {
            flagged,
            record,
            identifiers,
            demographics,
            restricted,
            ..
        } = &stored;
        let now = Utc::now().to_rfc3339();

        let mut tx = self.store.begin_write().await?;
        self.store.lock_index(&mut tx).await?;
        let existing = sqlx::query(
            "SELECT child_id, identifiers, demographics FROM source_records \
             WHERE source = $1 AND local_id = $2",
        )
        .bind(source)
        .bind(&rec.local_id)
        .fetch_optional(&mut *tx)
        .await?;
        let before = match &existing {
            Some(row) => {
                let old: String = row.try_get("demographics")?;
                Some(Previous {
                    child: row.try_get("child_id")?,
                    record: stored_record(
                        &rec.local_id,
                        &old,
                        &row.try_get::<String, _>("identifiers")?,
                    ),
                    changed: old != *demographics,
                })
            }
            None => None,
        };
        // What the matcher links or proposes is audited in this transaction: a link no entry
        // records never takes effect.
        let mut entries = Vec::new();
        let child = match before.as_ref().and_then(|b| b.child.clone()) {
            Some(child) => {
                sqlx::query(
                    "UPDATE source_records SET identifiers = $1, demographics = $2, updated_at = $3, \
                     restricted = $6 WHERE source = $4 AND local_id = $5",
                )
                .bind(identifiers)
                .bind(demographics)
                .bind(&now)
                .bind(source)
                .bind(&rec.local_id)
                .bind(*restricted)
                .execute(&mut *tx)
                .await?;
                // Linked before links were recorded: give the link a row of its own once.
                let has = sqlx::query(
                    "SELECT id FROM match_links WHERE source = $1 AND local_id = $2 AND status = 'active'",
                )
                .bind(source)
                .bind(&rec.local_id)
                .fetch_optional(&mut *tx)
                .await?;
                if has.is_none() {
                    let version = &self.matcher.model.version;
                    let legacy =
                        NewLink::automatic(source, &rec.local_id, &child, "legacy", None, version);
                    let id = legacy.insert(&mut tx).await?;
                    entries.push(legacy.entry(&id, None));
                }
                if before.as_ref().is_some_and(|b| b.changed) {
                    let proposed = self
                        .matcher
                        .propose(&mut tx, source, &rec.local_id, record, &child)
                        .await?;
                    entries.extend(proposed);
                }
                child
            }
            None => {
                let placement = self
                    .matcher
                    .place(
                        &mut tx,
                        source,
                        &rec.local_id,
                        record,
                        partners.of(source, &rec.local_id),
                    )
                    .await?;
                // A row without a child is only rewritten; a new record is added.
                let sql = if existing.is_some() {
                    "UPDATE source_records SET child_id = $3, identifiers = $4, demographics = $5, \
                     link_method = $6, updated_at = $7, restricted = $8 \
                     WHERE source = $1 AND local_id = $2"
                } else {
                    "INSERT INTO source_records (source, local_id, child_id, identifiers, demographics, link_method, updated_at, restricted) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                };
                sqlx::query(sql)
                    .bind(source)
                    .bind(&rec.local_id)
                    .bind(&placement.child)
                    .bind(identifiers)
                    .bind(demographics)
                    .bind(&placement.method)
                    .bind(&now)
                    .bind(*restricted)
                    .execute(&mut *tx)
                    .await?;
                entries = self
                    .matcher
                    .write_placement(&mut tx, source, &rec.local_id, &placement)
                    .await?;
                placement.child
            }
        };
        self.matcher
            .count_terms(&mut tx, before.as_ref().map(|b| &b.record), record)
            .await?;
        self.matcher
            .write_keys(&mut tx, source, &rec.local_id, record)
            .await?;
        sqlx::query("DELETE FROM record_identifiers WHERE source = $1 AND local_id = $2")
            .bind(source)
            .bind(&rec.local_id)
            .execute(&mut *tx)
            .await?;
        for (kind, value) in stored.verified() {
            sqlx::query(
                "INSERT INTO record_identifiers (kind, value, source, local_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(kind)
            .bind(value)
            .bind(source)
            .bind(&rec.local_id)
            .execute(&mut *tx)
            .await?;
        }
        audit::chain(&mut tx, &entries.iter().collect::<Vec<_>>()).await?;
        tx.commit().await?;
        Ok((child, *flagged))
    }

    /// One pass over every source: listable sources are read whole; children are then traced
    /// into query-only sources (such as PDS) by NHS number, or by demographics without one.
    ///
    /// The listed records are placed strongest anchor first ([`Anchor`]): those with a verified
    /// NHS number from every source, then those with a verified UPN, then the rest. A record
    /// with only a UPN placed before the record that carries its UPN beside an NHS number
    /// would be scored on demographics alone, and could join another child of the same name
    /// and birthday before the identifier that tells them apart arrived; placed after it, it
    /// joins by its UPN. So which source is listed first no longer decides that.
    ///
    /// Every source is listed before anything is placed, so that each record is placed
    /// knowing which records of the pass it is certain with ([`partners`], found once the
    /// first new or changed record is placed).
    pub async fn sync(&self, sources: &Sources) -> SyncReport {
        let mut report = SyncReport::default();
        let mut query_only = Vec::new();
        let mut listed: Vec<(String, Vec<SourceRecord>)> = Vec::new();
        for source in &sources.all {
            match source.call(LIST_DEADLINE, || source.adapter.list()).await {
                Err(failure) => {
                    tracing::warn!(source = %source.id, reason = failure.reason(), "listing source failed");
                    report
                        .failed
                        .push((source.id.clone(), failure.reason().into()));
                }
                Ok(None) => query_only.push(source.clone()),
                Ok(Some(records)) => listed.push((source.id.clone(), records)),
            }
        }
        let tiers: Vec<(String, [Vec<SourceRecord>; 3])> = listed
            .into_iter()
            .map(|(source, records)| (source, Anchor::split(records)))
            .collect();
        let pass = tiers
            .iter()
            .flat_map(|(source, split)| split.iter().map(|r| (source.as_str(), r.as_slice())))
            .collect();
        let partners = Partners::of_pass(&self.matcher, pass);
        for tier in 0..3 {
            for (source, split) in &tiers {
                self.place_listed(source, &split[tier], &partners, &mut report)
                    .await;
            }
        }
        for source in query_only {
            if let Err(e) = self.trace(&source, &mut report).await {
                tracing::warn!(source = %source.id, error = %e, "tracing into source failed");
                report
                    .failed
                    .push((source.id.clone(), "database_error".into()));
            }
        }
        report.children = sqlx::query("SELECT COUNT(*) AS n FROM children")
            .fetch_one(&self.store.pool)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"))
            .unwrap_or(-1);
        report.finished_at = Some(Utc::now());
        tracing::info!(
            records = report.records,
            children = report.children,
            flagged = report.flagged_identifiers,
            failed_sources = report.failed.len(),
            "index pass finished"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = report.clone();
        }
        self.ready.store(true, Ordering::Release);
        report
    }

    /// Places one source's listed records of one [`Anchor`] tier.
    async fn place_listed(
        &self,
        source: &str,
        records: &[SourceRecord],
        partners: &Partners<'_>,
        report: &mut SyncReport,
    ) {
        if records.is_empty() {
            return;
        }
        let done = self.upsert_many_of_pass(source, records, partners).await;
        report.records += done.records;
        report.flagged_identifiers += done.flagged;
        if done.failed > 0 && !report.failed.iter().any(|(s, _)| s == source) {
            report
                .failed
                .push((source.to_string(), "database_error".into()));
        }
    }

    async fn count(&self, report: &mut SyncReport, source: &Source, rec: &SourceRecord) {
        match self.upsert(&source.id, rec).await {
            Ok((_, flagged)) => {
                report.records += 1;
                report.flagged_identifiers += usize::from(flagged);
            }
            Err(e) => {
                tracing::warn!(source = %source.id, error = %e, "index upsert failed");
                report
                    .failed
                    .push((source.id.clone(), "database_error".into()));
            }
        }
    }

    /// Probes a query-only source for each child it is not yet linked to.
    async fn trace(&self, source: &Source, report: &mut SyncReport) -> Result<(), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT c.id AS id FROM children c WHERE NOT EXISTS \
             (SELECT 1 FROM source_records sr WHERE sr.child_id = c.id AND sr.source = $1)",
        )
        .bind(&source.id)
        .fetch_all(&self.store.pool)
        .await?;
        let children = child_ids_col(&rows, "id")?;
        let probes = stream::iter(children)
            .map(|child| async move { self.probe(&child).await })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let found = stream::iter(probes.into_iter().flatten())
            .map(|probe| async move {
                let probe = &probe;
                let by_identifier = !probe.identifiers.is_empty();
                let result = source
                    .call(source.deadline * 4, || source.adapter.find(probe))
                    .await;
                (by_identifier, result)
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        for (by_identifier, result) in found {
            match result {
                Ok(records) => {
                    for rec in records.iter().filter(|r| by_identifier || exact(r)) {
                        self.count(report, source, rec).await;
                    }
                }
                Err(failure) => {
                    tracing::debug!(source = %source.id, reason = failure.reason(), "trace found nothing")
                }
            }
        }
        Ok(())
    }

    /// The best probe for a child: a verified NHS number, else the demographics of one record.
    /// (A demographic trace keeps only what the source scores as exact; see [`exact`].)
    async fn probe(&self, child: &str) -> Option<Probe> {
        let rows =
            sqlx::query("SELECT identifiers, demographics FROM source_records WHERE child_id = $1")
                .bind(child)
                .fetch_all(&self.store.pool)
                .await
                .ok()?;
        let mut demographics = None;
        for row in &rows {
            let ids: String = row.try_get("identifiers").ok()?;
            let ids: Vec<Checked> = serde_json::from_str(&ids).unwrap_or_default();
            if let Some(n) = ids.iter().find(|c| c.valid && c.kind == "nhs_number") {
                return Some(Probe {
                    identifiers: vec![weft_adapters::Identifier::new(
                        "nhs_number",
                        n.value.clone(),
                    )],
                    demographics: Demographics::default(),
                });
            }
            if demographics.is_none() {
                let d: String = row.try_get("demographics").ok()?;
                demographics = serde_json::from_str::<Demographics>(&d).ok();
            }
        }
        let d = demographics?;
        (d.family_name.is_some() && d.birth_date.is_some()).then(|| Probe {
            identifiers: Vec::new(),
            demographics: d,
        })
    }
}

/// Whether a record found by demographics alone may be linked: only when the source does not
/// score its answers, or scores this one as an exact match (PDS gives 1.0). A partial PDS match
/// is a different child often enough that linking it would merge two children's records.
fn exact(record: &SourceRecord) -> bool {
    record.score.is_none_or(|s| s >= 1000)
}

fn child_ids(rows: &[sqlx::any::AnyRow]) -> Result<Vec<String>, sqlx::Error> {
    child_ids_col(rows, "child_id")
}

fn child_ids_col(rows: &[sqlx::any::AnyRow], col: &str) -> Result<Vec<String>, sqlx::Error> {
    rows.iter().map(|r| r.try_get(col)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_adapters::Identifier;

    fn rec(id: &str, ids: &[(&str, &str)], family: &str, given: &str, dob: &str) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: ids.iter().map(|(k, v)| Identifier::new(*k, *v)).collect(),
            demographics: Demographics {
                family_name: Some(family.into()),
                given_name: Some(given.into()),
                birth_date: Some(dob.into()),
                ..Default::default()
            },
            score: None,
            restricted: false,
        }
    }

    #[tokio::test]
    async fn links_by_identifier_then_demographics_and_flags_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store);

        let (a, _) = index
            .upsert(
                "health",
                &rec(
                    "p1",
                    &[("nhs_number", "9000000009")],
                    "O'Brien",
                    "Amy",
                    "2012-03-04",
                ),
            )
            .await
            .unwrap();
        // Same NHS number, different spelling: linked by identifier.
        let (b, _) = index
            .upsert(
                "school",
                &rec(
                    "s1",
                    &[("nhs_number", "9000000009"), ("upn", "A801200005001")],
                    "Obrien",
                    "Amelia",
                    "2012-03-04",
                ),
            )
            .await
            .unwrap();
        assert_eq!(a, b);
        // Invalid NHS number is flagged and ignored; exact demographics link instead.
        let (c, flagged) = index
            .upsert(
                "police",
                &rec(
                    "x9",
                    &[("nhs_number", "9000000015")],
                    "O'BRIEN",
                    "amy",
                    "2012-03-04",
                ),
            )
            .await
            .unwrap();
        assert!(flagged);
        assert_eq!(a, c);
        // The invalid UPN on s1 is not a linking key.
        let found = index
            .find(&Search {
                upn: None,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(found.is_empty());
        let links = index.links(&a).await.unwrap().unwrap();
        assert_eq!(links.len(), 3);
        // Re-upserting keeps the link.
        let (again, _) = index
            .upsert("police", &rec("x9", &[], "Different", "Name", "2001-01-01"))
            .await
            .unwrap();
        assert_eq!(again, a);
        // A stranger starts a new child.
        let (d, _) = index
            .upsert(
                "health",
                &rec(
                    "p2",
                    &[("nhs_number", "9912003888")],
                    "Khan",
                    "Sara",
                    "2010-01-01",
                ),
            )
            .await
            .unwrap();
        assert_ne!(a, d);
        let found = index
            .find(&Search {
                nhs_number: Some(identity::NhsNumber::parse("9912003888").unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, d);
        assert!(index.links("nope").await.unwrap().is_none());
    }

    /// The index keeps each record's restriction as its source last gave it, and a child is
    /// restricted while any record linked to it is: set and lifted by indexing the record again
    /// (one at a time and through the bulk path, where a record changed only in its restriction
    /// is not taken for unchanged), and carried with the record when it is split off.
    #[tokio::test]
    async fn a_restriction_is_kept_lifted_on_reindexing_and_follows_the_record() {
        use crate::foundation::audit::Entry;
        use crate::pipeline::resolve::linkage::{decide, link_history, Decision};
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store);
        let nhs = [("nhs_number", "9000000009")];
        let mut health = rec("p1", &nhs, "Smith", "Amy", "2012-03-04");
        health.restricted = true;
        let mut school = rec("s1", &nhs, "Smith", "Amy", "2012-03-04");
        school.demographics.postcode = Some("WT3 5QP".into());
        let (child, _) = index.upsert("health", &health).await.unwrap();
        assert_eq!(index.upsert("school", &school).await.unwrap().0, child);
        let (other, _) = index
            .upsert(
                "school",
                &rec(
                    "s2",
                    &[("nhs_number", "9912003888")],
                    "Khan",
                    "Sara",
                    "2010-01-01",
                ),
            )
            .await
            .unwrap();
        async fn check(index: &Index, child: &str, other: &str) -> bool {
            let r = index.restricted(&[child, other]).await.unwrap();
            assert!(!r.contains(other), "an unrestricted child");
            r.contains(child)
        }
        assert!(
            check(&index, &child, &other).await,
            "a restricted record restricts its child"
        );

        // The source lifts the restriction: the next indexing clears it.
        health.restricted = false;
        index.upsert("health", &health).await.unwrap();
        assert!(!check(&index, &child, &other).await, "lifted");
        // Through the bulk path too, in both directions; nothing else about the record changed.
        health.restricted = true;
        let done = index
            .upsert_many_with("health", std::slice::from_ref(&health), 1, 10)
            .await;
        assert_eq!((done.unchanged, done.failed), (0, 0));
        assert!(
            check(&index, &child, &other).await,
            "set again through the bulk path"
        );
        health.restricted = false;
        index
            .upsert_many_with("health", std::slice::from_ref(&health), 1, 10)
            .await;
        assert!(
            !check(&index, &child, &other).await,
            "lifted through the bulk path"
        );
        let done = index
            .upsert_many_with("health", std::slice::from_ref(&health), 1, 10)
            .await;
        assert_eq!(done.unchanged, 1, "then unchanged");

        // A record new to the index through the bulk path keeps its restriction.
        let mut fresh = rec(
            "p9",
            &[("nhs_number", "9434765919")],
            "Patel",
            "Ravi",
            "2013-05-06",
        );
        fresh.restricted = true;
        let done = index
            .upsert_many_with("health", std::slice::from_ref(&fresh), 1, 10)
            .await;
        assert_eq!(done.bulk, 1);
        let found = index
            .find(&Search {
                nhs_number: Some(identity::NhsNumber::parse("9434765919").unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        let newcomer = found[0].id.as_str();
        assert!(index
            .restricted(&[newcomer])
            .await
            .unwrap()
            .contains(newcomer));

        // Restricted again, then split off: the restriction goes with the record.
        health.restricted = true;
        index.upsert("health", &health).await.unwrap();
        assert!(check(&index, &child, &other).await);
        let link = link_history(&index, &child)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|l| l.local_id == "p1" && l.status == "active")
            .unwrap();
        let split = decide(&index, &link.id, Decision::Split, "admin1", None, |d| {
            Entry::system(
                "match_decision",
                Some(&d.child_id),
                "changed",
                serde_json::json!({}),
            )
        })
        .await
        .unwrap();
        assert_ne!(split.child_id, child);
        assert!(
            !check(&index, &child, &other).await,
            "the school record's child is not restricted"
        );
        assert!(index
            .restricted(&[&split.child_id])
            .await
            .unwrap()
            .contains(&split.child_id));
        assert!(index.restricted(&[]).await.unwrap().is_empty());
    }

    #[test]
    fn demographic_traces_link_only_exact_scores() {
        let mut r = rec("p1", &[], "Smith", "Jane", "2010-10-22");
        assert!(exact(&r), "a source that gives no score");
        r.score = Some(1000);
        assert!(exact(&r));
        r.score = Some(750);
        assert!(
            !exact(&r),
            "PDS's partial match is not linked on demographics"
        );
    }

    fn listed(id: &str, records: Vec<SourceRecord>) -> std::sync::Arc<Source> {
        std::sync::Arc::new(Source::fixed_for_tests(
            id,
            crate::foundation::config::AgencyKind::SocialCare,
            Duration::from_secs(5),
            Some(records),
        ))
    }

    /// The records of each child after one pass over `sources`, as sorted `source/local id`
    /// lists, sorted: which records share a child, whatever the children's ids.
    async fn pass(sources: Vec<std::sync::Arc<Source>>) -> Vec<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let report = index.sync(&Sources { all: sources }).await;
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let rows = sqlx::query("SELECT source, local_id, child_id FROM source_records")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            let child: String = row.get("child_id");
            let (source, local): (String, String) = (row.get("source"), row.get("local_id"));
            children
                .entry(child)
                .or_default()
                .push(format!("{source}/{local}"));
        }
        let mut out: Vec<Vec<String>> = children
            .into_values()
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        out.sort();
        out
    }

    /// Two girls of the same name born the same day, at two addresses: health knows one by her
    /// NHS number, the school the other by her UPN alone, social care the other by both. Listed
    /// health first, the school record used to be scored on demographics before social care's
    /// record brought the UPN's NHS number, and joined the wrong girl; placed after every
    /// record with an NHS number it joins its own by the UPN, whichever source is listed first.
    #[tokio::test]
    async fn a_pass_places_records_with_an_nhs_number_before_those_with_only_a_upn() {
        let girl = |id: &str, ids: &[(&str, &str)], postcode: &str| {
            let mut r = rec(id, ids, "Wright", "Amelia", "2016-03-27");
            r.demographics.sex = Some("female".into());
            r.demographics.postcode = Some(postcode.into());
            r
        };
        let health = || {
            listed(
                "health",
                vec![girl("h1", &[("nhs_number", "9000000009")], "WT1 1AA")],
            )
        };
        let school = || {
            listed(
                "school",
                vec![girl("s1", &[("upn", "B801200005001")], "WT9 9ZZ")],
            )
        };
        let social = || {
            listed(
                "social_care",
                vec![girl(
                    "c1",
                    &[("nhs_number", "9434765919"), ("upn", "B801200005001")],
                    "WT9 9ZZ",
                )],
            )
        };
        let want = vec![
            vec!["health/h1".to_string()],
            vec!["school/s1".to_string(), "social_care/c1".to_string()],
        ];
        assert_eq!(pass(vec![health(), school(), social()]).await, want);
        assert_eq!(pass(vec![social(), school(), health()]).await, want);
    }

    /// Two boys of one name born on one day, at two addresses: health knows one by his NHS
    /// number; the school knows the other by a UPN no one else holds, and health him again
    /// without an NHS number. The school's record is placed before that health record (a UPN
    /// is the stronger anchor) and scores high against the first boy, short of certain; it used
    /// to join him, and the second health record then joined its school record, certain: the
    /// first boy's child held the other's records. Read with its partner (the second health
    /// record, certain with it), the school's record would bring a second health record into
    /// the first boy's child, so it waits for a person; the two boys stay two children,
    /// whichever source is listed first.
    #[tokio::test]
    async fn a_pass_keeps_apart_a_boy_whose_records_together_would_be_a_second_from_one_source() {
        let boy = |id: &str, ids: &[(&str, &str)], postcode: &str, line: &str| {
            let mut r = rec(id, ids, "Watson", "Oliver", "2015-10-10");
            r.demographics.sex = Some("male".into());
            r.demographics.postcode = Some(postcode.into());
            r.demographics.address_lines = vec![line.into()];
            r
        };
        let health = || {
            listed(
                "health",
                vec![
                    boy(
                        "h1",
                        &[("nhs_number", "9434765919")],
                        "WT7 8RN",
                        "34 Victoria Road",
                    ),
                    boy("h2", &[], "WT19 7EP", "10 Chestnut Grove"),
                ],
            )
        };
        let school = || {
            listed(
                "school",
                vec![boy(
                    "s2",
                    &[("upn", "B801200005001")],
                    "WT19 7EP",
                    "10 Chestnut Grove",
                )],
            )
        };
        let want = vec![
            vec!["health/h1".to_string()],
            vec!["health/h2".to_string(), "school/s2".to_string()],
        ];
        assert_eq!(pass(vec![health(), school()]).await, want);
        assert_eq!(pass(vec![school(), health()]).await, want);
    }

    /// What a test's code logs, kept for it to read.
    #[derive(Clone, Default)]
    struct Logged(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logged {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A pass finds the records' partners only when it places a record: a refresh over
    /// sources that have not changed places nothing and never looks.
    #[test]
    fn a_pass_over_unchanged_sources_does_not_look_for_partners() {
        let logged = Logged::default();
        let writer = logged.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let found = || {
            let text = String::from_utf8(logged.0.lock().unwrap().clone()).unwrap();
            text.matches("records certain with a record of another source found")
                .count()
        };
        let girl = |id: &str, ids: &[(&str, &str)]| {
            let mut r = rec(id, ids, "Wright", "Amelia", "2016-03-27");
            r.demographics.postcode = Some("WT9 9ZZ".into());
            r
        };
        let sources = Sources {
            all: vec![
                listed("health", vec![girl("h1", &[("nhs_number", "9434765919")])]),
                listed("school", vec![girl("s1", &[("upn", "B801200005001")])]),
            ],
        };
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
                let index = Index::new(store);
                index.sync(&sources).await;
                assert_eq!(found(), 1, "the first pass places both records");
                index.sync(&sources).await;
                assert_eq!(found(), 1, "the second places nothing");
            });
        });
    }

    #[test]
    fn a_listing_splits_by_anchor_keeping_a_local_id_together() {
        let nhs = [("nhs_number", "9000000009")];
        let upn = [("upn", "B801200005001")];
        let bad = [("nhs_number", "9000000001")];
        let [a, b, c] = Anchor::split(vec![
            rec("1", &upn, "A", "B", "2012-01-01"),
            rec("2", &bad, "A", "B", "2012-01-01"),
            rec("3", &nhs, "A", "B", "2012-01-01"),
            rec("2", &nhs, "A", "B", "2012-01-01"),
            rec("4", &[], "A", "B", "2012-01-01"),
        ]);
        let ids = |v: &[SourceRecord]| v.iter().map(|r| r.local_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ["2", "3", "2"]);
        assert_eq!(ids(&b), ["1"]);
        assert_eq!(ids(&c), ["4"]);
    }

    /// A changed record's blocking keys replace its old ones (found by its local id, through
    /// PostgreSQL's hash index on it), and nobody else's go with them: not another record of
    /// its source, nor the record with the same local id in another source.
    #[tokio::test]
    async fn a_changed_record_keeps_only_its_new_blocking_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store);
        let keys = |source: &'static str, id: &'static str| {
            let pool = index.store.pool.clone();
            async move {
                let rows = sqlx::query(
                    "SELECT rule, key FROM match_keys WHERE source = $1 AND local_id = $2",
                )
                .bind(source)
                .bind(id)
                .fetch_all(&pool)
                .await
                .unwrap();
                rows.iter()
                    .map(|r| (r.get::<String, _>("rule"), r.get::<String, _>("key")))
                    .collect::<BTreeSet<_>>()
            }
        };
        let first = rec("s1", &[], "Okafor", "Chidi", "2014-05-06");
        let sister = rec("s2", &[], "Okafor", "Adaeze", "2016-01-02");
        let changed = rec("s1", &[], "Mensah", "Chidi", "2014-06-05");
        for (source, r) in [("school", &first), ("school", &sister), ("health", &first)] {
            index.upsert(source, r).await.unwrap();
        }
        let held = |r: &SourceRecord| -> BTreeSet<(String, String)> {
            index
                .matcher
                .keys(&Stored::new(r).record)
                .into_iter()
                .collect()
        };
        assert_eq!(keys("school", "s1").await, held(&first));
        index.upsert("school", &changed).await.unwrap();
        assert_eq!(keys("school", "s1").await, held(&changed));
        assert_ne!(held(&changed), held(&first));
        assert_eq!(keys("school", "s2").await, held(&sister));
        assert_eq!(keys("health", "s1").await, held(&first));
    }
}
