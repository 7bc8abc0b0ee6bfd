//! Imports for `file` sources: read the dropped files, reject the whole drop if any of it is
//! malformed, otherwise apply only what changed to the import store in one transaction, then
//! feed the new and changed records to the master child index.
//!
//! The import store is two tables in the gateway's own database (migration 0004), so every
//! gateway node serves the same imported data and a view never reads a file half-written.
//!
//! - An unchanged drop (every file byte-identical to the last applied import) is recognised by
//!   its SHA-256 digests and not parsed at all.
//! - Otherwise each record's canonical JSON is hashed and compared with the stored digest: only
//!   added and changed records are written and re-indexed; records missing from the new drop
//!   are removed (a census export is the whole roll), so their views say `no_record`.
//! - Each added or changed record's area-report facts (`read::area::facts`) are derived from
//!   its parsed form and written in the same transaction, so the first area report after an
//!   import parses nothing.
//! - A rejected drop writes nothing but its own `import_runs` row: the previous data stays.
//! - A drop that would remove every stored record of the source, or more than
//!   `limits.removed_percent` of them, is refused the same way unless the caller allows it
//!   (`weft import --allow-removals`): an export cut to its header row is not a school emptied.
//! - Nothing read from a file reaches a log line or `import_runs`: errors name the file, line,
//!   element or column and the rule (see `weft_adapters::file`); store errors their code.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use weft_adapters::file::{self, FileConfig, Found, ImportError, Imported};
use weft_adapters::AdapterConfig;

use crate::foundation::config::SourceConfig;
use crate::foundation::metrics::elapsed_ms;
use crate::foundation::store::{placeholders, Backend, Cell, Store};
use crate::pipeline::resolve::bulk::After;
use crate::pipeline::resolve::Index;
use crate::read::area::facts::{self, Facts};

/// A parsed record as the store keeps it.
struct Hashed {
    local_id: String,
    json: String,
    digest: String,
    /// What the area report counts of it, derived from the parsed form while it is at hand;
    /// `None` for a record the report cannot read (counted nowhere).
    facts: Option<Facts>,
}

/// A file as an import saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FileDigest {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub source: String,
    /// `applied` (something changed) or `unchanged` (identical files; nothing parsed).
    pub outcome: &'static str,
    pub files: Vec<FileDigest>,
    pub records: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Records carrying an identifier that fails its check (kept, flagged by the index).
    pub flagged: usize,
    /// Tolerated oddities, each with its file and line.
    pub warnings: Vec<String>,
    /// Added and changed records fed to the master child index, and how many of those failed
    /// (they are retried by the index's next pass over the source).
    pub indexed: usize,
    pub index_failures: usize,
    /// Milliseconds spent reading and parsing, writing the import store, and indexing. On
    /// PostgreSQL the index places the records while the import store is written, so the last
    /// two overlap.
    pub parse_ms: u64,
    pub apply_ms: u64,
    pub index_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    #[error("no source {0:?} in the configuration")]
    UnknownSource(String),
    #[error("source {0:?} is not a file source")]
    NotFile(String),
    /// The drop was malformed; nothing was applied.
    #[error("import rejected, previous data kept: {0}")]
    Rejected(#[from] ImportError),
    /// The drop would remove too much of what is stored; nothing was applied.
    #[error("import refused, previous data kept: {}", removals(*.removed, *.stored, *.limit))]
    Removals {
        removed: usize,
        stored: usize,
        limit: u8,
    },
    #[error("import store: {}", store_error(.0))]
    Store(#[from] sqlx::Error),
    /// The import's audit entry could not be written, so nothing was: not the records, not
    /// even the attempt.
    #[error("the audit log cannot be written: nothing was imported")]
    AuditUnavailable,
    #[error("import task failed: {0}")]
    Task(String),
}

fn removals(removed: usize, stored: usize, limit: u8) -> String {
    if removed == stored {
        format!(
            "the drop would remove all {stored} records stored for this source; if every one \
             has really gone, import again with --allow-removals"
        )
    } else {
        format!(
            "the drop would remove {removed} of the {stored} records stored for this source, \
             more than limits.removed_percent ({limit} %); if that is right, import again with \
             --allow-removals"
        )
    }
}

/// A store error as it may be logged: a database's own message can quote the value it refused,
/// so only its code is kept.
fn store_error(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => format!(
            "database error {}",
            d.code().as_deref().unwrap_or("without a code")
        ),
        None => e.to_string(),
    }
}

/// How an import was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Parse and compare every record even when the files are identical to the last import.
    pub force: bool,
    /// Apply even if the drop removes all of the source's records or more than its limit.
    pub allow_removals: bool,
}

/// The `file` configuration of a source, by id.
pub fn file_source<'a>(
    sources: &'a [SourceConfig],
    id: &str,
) -> Result<&'a FileConfig, ImportFailure> {
    let s = sources
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ImportFailure::UnknownSource(id.into()))?;
    match &s.adapter {
        AdapterConfig::File(f) => Ok(f),
        _ => Err(ImportFailure::NotFile(id.into())),
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Imports a source's folder.
pub async fn import(
    store: &Store,
    index: &Index,
    source: &str,
    config: &FileConfig,
    options: Options,
) -> Result<ImportReport, ImportFailure> {
    let started = now();
    let clock = std::time::Instant::now();
    let limits = config.limits;
    let folder = config.clone();
    let dropped = tokio::task::spawn_blocking(move || file::collect(&folder))
        .await
        .map_err(|e| ImportFailure::Task(e.to_string()))?;
    let dropped = match dropped {
        Ok(d) => d,
        Err(e) => {
            record_failure(store, source, &started, "rejected", &[], &e.to_string()).await?;
            return Err(e.into());
        }
    };
    let files: Vec<FileDigest> = dropped
        .iter()
        .map(|f| FileDigest {
            name: f.name.clone(),
            sha256: sha256_hex(&f.bytes),
            bytes: f.bytes.len() as u64,
        })
        .collect();
    let mut report = ImportReport {
        source: source.into(),
        outcome: "unchanged",
        files: files.clone(),
        records: 0,
        added: 0,
        changed: 0,
        removed: 0,
        unchanged: 0,
        flagged: 0,
        warnings: Vec::new(),
        indexed: 0,
        index_failures: 0,
        parse_ms: 0,
        apply_ms: 0,
        index_ms: 0,
    };
    if !options.force && last_applied_files(store, source).await?.as_ref() == Some(&files) {
        let n = sqlx::query("SELECT COUNT(*) AS n FROM import_records WHERE source = $1")
            .bind(source)
            .fetch_one(&store.pool)
            .await?
            .try_get::<i64, _>("n")?;
        report.records = usize::try_from(n).unwrap_or(0);
        report.unchanged = report.records;
        return Ok(report);
    }

    // Parse and hash off the runtime: a 100,000-pupil export is a few hundred milliseconds of CPU.
    let parsed = tokio::task::spawn_blocking(move || {
        // Only the canonical JSON is kept per record (the digest is over it, the store keeps
        // it); the parsed form is dropped at once, which halves the peak for a large census.
        file::parse(&dropped, &limits).map(|p| {
            let (mut flagged, mut unreadable) = (0, 0);
            let hashed: Vec<Hashed> = p
                .records
                .into_iter()
                .map(|r| {
                    flagged += usize::from(
                        r.record
                            .identifiers
                            .iter()
                            .any(|i| weft_ids::verify(&i.kind, &i.value).is_err()),
                    );
                    let json = serde_json::to_string(&r).unwrap_or_default();
                    let digest = sha256_hex(json.as_bytes());
                    let facts = Facts::of(&r).ok();
                    unreadable += usize::from(facts.is_none());
                    Hashed {
                        local_id: r.record.local_id,
                        json,
                        digest,
                        facts,
                    }
                })
                .collect();
            (hashed, p.warnings, flagged, unreadable)
        })
    })
    .await
    .map_err(|e| ImportFailure::Task(e.to_string()))?;
    report.parse_ms = elapsed_ms(clock);
    let clock = std::time::Instant::now();
    let (records, warnings, flagged, unreadable) = match parsed {
        Ok(p) => p,
        Err(e) => {
            record_failure(store, source, &started, "rejected", &files, &e.to_string()).await?;
            return Err(e.into());
        }
    };
    report.records = records.len();
    report.warnings = warnings;
    report.flagged = flagged;
    if unreadable > 0 {
        // Counts only: the records are children's.
        tracing::warn!(
            source,
            unreadable,
            "imported records the area report cannot read"
        );
    }

    let mut conn = store.bulk_connection().await?;
    let mut tx = store.begin_write_on(&mut conn).await?;
    // Another node (or this node's watcher) importing the same source waits here, then finds
    // the records it would have added already stored.
    store
        .lock_named(&mut tx, &format!("import:{source}"))
        .await?;
    let mut existing: HashMap<String, String> = HashMap::new();
    for row in sqlx::query("SELECT local_id, digest FROM import_records WHERE source = $1")
        .bind(source)
        .fetch_all(&mut *tx)
        .await?
    {
        existing.insert(row.try_get("local_id")?, row.try_get("digest")?);
    }
    let stored = existing.len();
    let incoming: std::collections::HashSet<&str> =
        records.iter().map(|r| r.local_id.as_str()).collect();
    let removed = existing
        .keys()
        .filter(|id| !incoming.contains(id.as_str()))
        .count();
    let share = usize::from(limits.removed_percent);
    if removed > 0
        && !options.allow_removals
        && (removed == stored || removed * 100 > stored * share)
    {
        drop(tx);
        let refused = ImportFailure::Removals {
            removed,
            stored,
            limit: limits.removed_percent,
        };
        record_failure(
            store,
            source,
            &started,
            "refused",
            &files,
            &refused.to_string(),
        )
        .await?;
        return Err(refused);
    }
    let at = now();
    let mut to_index = Vec::new();
    let mut added = Vec::new();
    // The area report's facts of every record added or changed, written after the records:
    // a changed record's old facts went with its old version (the `import_records_changed`
    // trigger), and a removed record's with it.
    let mut derived: Vec<(&str, &str, &Facts)> = Vec::new();
    for Hashed {
        local_id,
        json,
        digest,
        facts: counted,
    } in &records
    {
        let id = local_id.as_str();
        let old = existing.remove(id);
        if old.as_ref() != Some(digest) {
            if let Some(f) = counted {
                derived.push((id, digest.as_str(), f));
            }
        }
        match old {
            Some(old) if old == *digest => report.unchanged += 1,
            Some(_) => {
                sqlx::query(
                    "UPDATE import_records SET digest = $1, record = $2, imported_at = $3 \
                     WHERE source = $4 AND local_id = $5",
                )
                .bind(digest)
                .bind(json)
                .bind(&at)
                .bind(source)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                report.changed += 1;
                to_index.push(json);
            }
            None => {
                added.push([
                    Cell::from(source),
                    id.into(),
                    digest.as_str().into(),
                    json.as_str().into(),
                    at.as_str().into(),
                ]);
                report.added += 1;
                to_index.push(json);
            }
        }
    }
    // The index places the added and changed records while the import writes them: the
    // store's work on the one and the gateway's on the other overlap. Nothing of the index
    // commits before the import has ([`After`]), so an import that fails leaves the index as
    // it was. SQLite takes one writer at a time: there the index starts once the import has
    // committed.
    let (applied, after) = After::channel();
    let apply = async {
        let mut staging = store.staging();
        let written: Result<(), ImportFailure> = async {
            // A first import adds every record: COPY on PostgreSQL, multi-row statements on
            // SQLite, not one statement per record.
            staging
                .insert(
                    &mut tx,
                    "import_records (source, local_id, digest, record, imported_at)",
                    "",
                    added,
                )
                .await?;
            let gone: Vec<&String> = existing.keys().collect();
            for chunk in gone.chunks(500) {
                let mut sql =
                    String::from("DELETE FROM import_records WHERE source = $1 AND local_id IN (");
                sql.push_str(&placeholders(2, chunk.len()));
                sql.push(')');
                let mut q = sqlx::query(&sql).bind(source);
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                q.execute(&mut *tx).await?;
                report.removed += chunk.len();
            }
            facts::insert(&mut tx, &mut staging, source, &derived).await?;
            report.outcome = "applied";
            insert_run(
                &mut tx,
                source,
                &started,
                "applied",
                &files,
                &report,
                &report.warnings,
            )
            .await?;
            audited(&mut tx, source, &report, None).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if written.is_ok() {
            applied.send(true);
            staging.finish().await;
        }
        report.apply_ms = elapsed_ms(clock);
        written
    };
    let indexing = async {
        if store.backend == Backend::Sqlite && !after.applied().await {
            return None;
        }
        let clock = std::time::Instant::now();
        let mut recs = Vec::with_capacity(to_index.len());
        let mut unreadable = 0;
        for json in to_index {
            // Neither error is logged in full: serde's and the database's can quote the record.
            match serde_json::from_str::<Imported>(json) {
                Ok(r) => recs.push(r.record),
                Err(e) => {
                    tracing::warn!(source, category = ?e.classify(), "imported record unreadable");
                    unreadable += 1;
                }
            }
        }
        // A first or large import goes through the index's bulk path; a few changed records
        // are upserted one at a time (`resolve::bulk::BULK_FROM`).
        let done = index.upsert_many_after(source, &recs, &after).await;
        Some((done, unreadable, elapsed_ms(clock)))
    };
    let (written, indexed) = tokio::join!(apply, indexing);
    written?;
    if let Some((done, unreadable, index_ms)) = indexed {
        report.indexed += done.records;
        report.index_failures += unreadable + done.failed;
        report.index_ms = index_ms;
    }
    tracing::info!(
        source,
        records = report.records,
        added = report.added,
        changed = report.changed,
        removed = report.removed,
        flagged = report.flagged,
        "import applied"
    );
    Ok(report)
}

async fn last_applied_files(
    store: &Store,
    source: &str,
) -> Result<Option<Vec<FileDigest>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT files FROM import_runs WHERE source = $1 AND outcome = 'applied' \
         ORDER BY started_at DESC LIMIT 1",
    )
    .bind(source)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row
        .and_then(|r| r.try_get::<String, _>("files").ok())
        .and_then(|t| serde_json::from_str(&t).ok()))
}

#[allow(clippy::too_many_arguments)]
async fn insert_run(
    conn: &mut sqlx::AnyConnection,
    source: &str,
    started: &str,
    outcome: &str,
    files: &[FileDigest],
    report: &ImportReport,
    notes: &[String],
) -> Result<(), sqlx::Error> {
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, \
         changed, removed, unchanged, flagged, notes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(source)
    .bind(started)
    .bind(now())
    .bind(outcome)
    .bind(serde_json::to_string(files).unwrap_or_else(|_| "[]".into()))
    .bind(n(report.added))
    .bind(n(report.changed))
    .bind(n(report.removed))
    .bind(n(report.unchanged))
    .bind(n(report.flagged))
    .bind(serde_json::to_string(notes).unwrap_or_else(|_| "[]".into()))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an attempt that applied nothing: `rejected` (malformed) or `refused` (too many
/// removals), with the reason as its note.
async fn record_failure(
    store: &Store,
    source: &str,
    started: &str,
    outcome: &'static str,
    files: &[FileDigest],
    reason: &str,
) -> Result<(), ImportFailure> {
    tracing::warn!(source, reason, "import {outcome}");
    let empty = ImportReport {
        source: source.into(),
        outcome,
        files: Vec::new(),
        records: 0,
        added: 0,
        changed: 0,
        removed: 0,
        unchanged: 0,
        flagged: 0,
        warnings: Vec::new(),
        indexed: 0,
        index_failures: 0,
        parse_ms: 0,
        apply_ms: 0,
        index_ms: 0,
    };
    let mut tx = store.begin_write().await?;
    insert_run(
        &mut tx,
        source,
        started,
        outcome,
        files,
        &empty,
        &[reason.to_string()],
    )
    .await?;
    let report = ImportReport {
        files: files.to_vec(),
        ..empty
    };
    audited(&mut tx, source, &report, Some(reason)).await?;
    tx.commit().await?;
    Ok(())
}

/// Chains the import's audit entry onto the transaction that records it: an import, applied or
/// not, is in the audit log, or did not happen. Names files and counts, never a record.
async fn audited(
    tx: &mut sqlx::AnyConnection,
    source: &str,
    report: &ImportReport,
    reason: Option<&str>,
) -> Result<(), ImportFailure> {
    let entry = crate::foundation::audit::Entry {
        at: Utc::now(),
        user: "importer".into(),
        agency: "weft".into(),
        role: "system".into(),
        action: "import".into(),
        child: None,
        purpose: None,
        outcome: report.outcome.into(),
        detail: serde_json::json!({
            "source": source,
            "files": report.files,
            "added": report.added,
            "changed": report.changed,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "flagged": report.flagged,
            "reason": reason,
        }),
    };
    crate::foundation::audit::chain(tx, &[&entry])
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(source, error = %store_error(&e), "import not audited; nothing applied");
            crate::foundation::metrics::AUDIT_FAILURES.inc();
            ImportFailure::AuditUnavailable
        })
}

/// The last import attempt of a source, for `/v1/sources`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LastImport {
    pub outcome: String,
    pub finished_at: String,
    pub added: i64,
    pub changed: i64,
    pub removed: i64,
    pub flagged: i64,
    pub notes: Vec<String>,
}

pub async fn last_import(store: &Store, source: &str) -> Result<Option<LastImport>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT outcome, finished_at, added, changed, removed, flagged, notes FROM import_runs \
         WHERE source = $1 ORDER BY started_at DESC LIMIT 1",
    )
    .bind(source)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|r| {
        Ok(LastImport {
            outcome: r.try_get("outcome")?,
            finished_at: r.try_get("finished_at")?,
            added: r.try_get("added")?,
            changed: r.try_get("changed")?,
            removed: r.try_get("removed")?,
            flagged: r.try_get("flagged")?,
            notes: serde_json::from_str(&r.try_get::<String, _>("notes")?).unwrap_or_default(),
        })
    })
    .transpose()
}

/// Scans each watched `file` source's folder on its interval and imports what changed, for as
/// long as the gateway runs.
///
/// A drop that failed is not tried again until its files change (names, sizes or modification
/// times), so a bad drop costs one attempt and one `import_runs` row, not one every scan. A
/// malformed drop that is still unchanged at the next scan is at rest, not half-copied: it is
/// moved into `rejected/<time>/` beside a `REJECTED.txt` naming the fault (`file::set_aside`).
/// A refused drop (too many removals) is left where it is for an administrator to decide.
pub async fn watch(state: crate::gateway::Gateway) {
    let tasks: Vec<(String, FileConfig)> = state
        .config
        .sources
        .iter()
        .filter_map(|s| match &s.adapter {
            AdapterConfig::File(f) if f.watch_secs > 0 => Some((s.id.clone(), f.clone())),
            _ => None,
        })
        .collect();
    let mut handles = Vec::new();
    for (id, config) in tasks {
        let state = state.clone();
        handles.push(tokio::spawn(async move {
            let every = Duration::from_secs(config.watch_secs);
            let mut failed: Option<Failed> = None;
            loop {
                scan(&state, &id, &config, &mut failed).await;
                tokio::time::sleep(every).await;
            }
        }));
    }
    futures::future::join_all(handles).await;
}

/// A drop as a watcher saw it: the files' names, sizes and modification times, or why they could
/// not be listed.
type Listing = Result<Vec<Found>, String>;

/// The last drop a watcher failed to import, and why.
struct Failed {
    listing: Listing,
    reason: String,
    /// Whether the files themselves are at fault, so the drop is set aside once at rest.
    malformed: bool,
}

async fn scan(
    state: &crate::gateway::Gateway,
    source: &str,
    config: &FileConfig,
    failed: &mut Option<Failed>,
) {
    let folder = config.clone();
    let listing: Listing = match tokio::task::spawn_blocking(move || file::survey(&folder)).await {
        Ok(l) => l.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Some(f) = failed.as_ref().filter(|f| f.listing == listing) {
        if let (true, Ok(found)) = (f.malformed, &listing) {
            let names: Vec<String> = found.iter().map(|f| f.name.clone()).collect();
            let (folder, reason) = (config.clone(), f.reason.clone());
            match tokio::task::spawn_blocking(move || file::set_aside(&folder, &names, &reason))
                .await
            {
                Ok(Ok(dir)) => {
                    tracing::warn!(source, folder = %dir.display(), "rejected drop set aside");
                    *failed = None;
                }
                Ok(Err(e)) => tracing::warn!(source, error = %e, "rejected drop not set aside"),
                Err(e) => tracing::warn!(source, error = %e, "rejected drop not set aside"),
            }
        }
        return;
    }
    match import(
        &state.store,
        &state.index,
        source,
        config,
        Options::default(),
    )
    .await
    {
        Ok(r) => {
            if r.outcome == "applied" {
                tracing::info!(
                    source,
                    changed = r.added + r.changed + r.removed,
                    "watched import applied"
                );
            }
            *failed = None;
        }
        Err(e @ (ImportFailure::Rejected(_) | ImportFailure::Removals { .. })) => {
            // Logged and recorded by `import`.
            *failed = Some(Failed {
                listing,
                malformed: matches!(&e, ImportFailure::Rejected(r) if r.is_content()),
                reason: e.to_string(),
            });
        }
        Err(e) => {
            tracing::warn!(source, error = %e, "watched import failed");
            *failed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::test_count;
    use crate::sources::imported::DbImports;
    use weft_adapters::file::{FileFormat, FileSpec};

    const PUPILS: &str = "UPN,Surname,Forename,DOB,Sex\n\
        B801200005001,Khan,Sara,27/03/2012,F\n\
        A801200005001,Smith,Jo,02/01/2013,M\n\
        P207000016049,Patel,Ravi,05/06/2011,M\n";

    /// A drop folder under `dir`, and the census source's configuration reading it.
    fn drop_folder(dir: &std::path::Path) -> (std::path::PathBuf, FileConfig) {
        let drop = dir.join("drop");
        std::fs::create_dir(&drop).unwrap();
        let cfg = config(&drop);
        (drop, cfg)
    }

    fn config(dir: &std::path::Path) -> FileConfig {
        FileConfig {
            folder: dir.to_path_buf(),
            files: vec![FileSpec {
                format: FileFormat::CensusPupilsCsv,
                name: "pupils*.csv".into(),
            }],
            watch_secs: 0,
            limits: Default::default(),
        }
    }

    async fn digests(store: &Store) -> Vec<(String, String, String)> {
        sqlx::query("SELECT local_id, digest, imported_at FROM import_records ORDER BY local_id")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("local_id"), r.get("digest"), r.get("imported_at")))
            .collect()
    }

    /// The index places a large import's records while the import store is written (on
    /// PostgreSQL): an import that fails at its last step leaves the index as it was, and the
    /// same drop imported again indexes every record.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_import_that_fails_leaves_the_index_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let (drop, cfg) = drop_folder(dir.path());
        // Enough pupils for the index's bulk path.
        let pupils = 3 * crate::pipeline::resolve::bulk::BULK_FROM;
        std::fs::write(
            drop.join("pupils.csv"),
            weft_sim::census::pupils_csv(5, pupils),
        )
        .unwrap();
        let tables = [
            "import_records",
            "children",
            "source_records",
            "match_links",
            "match_keys",
        ];
        // The area facts, written after the records, cannot be: the import fails late.
        let rename = |from: &'static str, to: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query(&format!("ALTER TABLE {from} RENAME TO {to}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        };
        rename("area_facts", "area_facts_away").await;
        let failed = import(&store, &index, "school", &cfg, Options::default()).await;
        assert!(matches!(failed, Err(ImportFailure::Store(_))), "{failed:?}");
        for t in tables {
            assert_eq!(
                test_count(&store, t).await,
                0,
                "{t}: nothing of the import or its index applied"
            );
        }
        rename("area_facts_away", "area_facts").await;
        let done = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!(
            (done.added, done.indexed, done.index_failures),
            (pupils, pupils, 0)
        );
        let n = i64::try_from(pupils).unwrap();
        assert_eq!(test_count(&store, "import_records").await, n);
        assert_eq!(test_count(&store, "source_records").await, n);
        let verified = crate::foundation::audit::verify(&store).await.unwrap();
        assert_eq!(verified.problem, None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_imports_of_one_drop_at_once_apply_it_once_without_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let (drop, cfg) = drop_folder(dir.path());
        // Each round the drop gains three pupils, which both imports try to add at once.
        let mut text = String::from("UPN,Surname,Forename,DOB,Sex\n");
        let rounds = 6;
        for round in 0..rounds {
            for i in 0..3 {
                text.push_str(&format!(
                    "X{round:02}{i:010},Family{round}x{i},Pupil,0{}/01/2013,F\n",
                    1 + i
                ));
            }
            std::fs::write(drop.join("pupils.csv"), &text).unwrap();
            let (a, b) = tokio::join!(
                import(&store, &index, "school", &cfg, Options::default()),
                import(&store, &index, "school", &cfg, Options::default())
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.index_failures + b.index_failures, 0);
            assert_eq!(a.added + b.added, 3, "round {round}");
        }
        assert_eq!(digests(&store).await.len(), 3 * rounds);
        let indexed: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM source_records WHERE source = 'school' AND child_id IS NOT NULL",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .get("n");
        assert_eq!(indexed, 3 * rounds as i64);
    }

    #[tokio::test]
    async fn import_is_incremental_all_or_nothing_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let (drop, cfg) = drop_folder(dir.path());
        std::fs::write(drop.join("pupils.csv"), PUPILS).unwrap();

        let first = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!(
            (first.outcome, first.added, first.indexed),
            ("applied", 3, 3)
        );
        assert_eq!(first.flagged, 1, "A801200005001 fails its check letter");
        let before = digests(&store).await;

        // Unchanged files: recognised by digest, nothing parsed or written.
        let again = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!((again.outcome, again.unchanged), ("unchanged", 3));
        // Even a forced re-parse changes nothing.
        let forced = Options {
            force: true,
            ..Options::default()
        };
        let forced = import(&store, &index, "school", &cfg, forced)
            .await
            .unwrap();
        assert_eq!(
            (
                forced.added,
                forced.changed,
                forced.removed,
                forced.unchanged
            ),
            (0, 0, 0, 3)
        );
        assert_eq!(digests(&store).await, before);

        // One pupil changes: one record changes, one is re-indexed.
        std::fs::write(
            drop.join("pupils.csv"),
            PUPILS.replace("Smith,Jo", "Smith-Jones,Jo"),
        )
        .unwrap();
        let one = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!(
            (
                one.added,
                one.changed,
                one.removed,
                one.unchanged,
                one.indexed
            ),
            (0, 1, 0, 2, 1)
        );
        let after = digests(&store).await;
        let differing: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        assert_eq!(differing, ["A801200005001"]);

        // A truncated drop is rejected with its location; the previous data stays.
        std::fs::write(drop.join("pupils.csv"), &PUPILS[..PUPILS.len() - 20]).unwrap();
        let e = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("pupils.csv line 4"), "{e}");
        assert_eq!(digests(&store).await, after);
        let last = last_import(&store, "school").await.unwrap().unwrap();
        assert_eq!(last.outcome, "rejected");
        assert!(last.notes[0].contains("line 4"));

        // The adapter serves the last good import, and says no_record for anyone else.
        let adapter = weft_adapters::AdapterConfig::File(cfg.clone())
            .build_with(&weft_adapters::BuildContext {
                source: "school".into(),
                imports: Some(DbImports::new(store.clone())),
            })
            .unwrap();
        let listed = adapter.list().await.unwrap().unwrap();
        assert_eq!(listed.len(), 3);
        let items = adapter.fetch("A801200005001").await.unwrap().unwrap();
        assert!(items
            .iter()
            .any(|i| i.field == "family_name" && i.value == "Smith-Jones"));
        assert!(adapter.fetch("nobody").await.unwrap().is_none());
        // The invalid UPN reached the index, flagged, not dropped.
        let row = sqlx::query("SELECT identifiers FROM source_records WHERE source = 'school' AND local_id = 'A801200005001'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let ids: String = row.get("identifiers");
        assert!(ids.contains("\"valid\":false"), "{ids}");

        // A pupil who left is removed from the store.
        let changed = PUPILS.replace("Smith,Jo", "Smith-Jones,Jo");
        std::fs::write(
            drop.join("pupils.csv"),
            changed.lines().take(3).collect::<Vec<_>>().join("\n"),
        )
        .unwrap();
        let left = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!((left.removed, left.unchanged), (1, 2));
        assert!(adapter.fetch("P207000016049").await.unwrap().is_none());
    }

    /// The area report's facts on the store this run exercises (`WEFT_TEST_STORE`): written
    /// for every record an import adds or changes, gone with every record removed — by an
    /// import or by any other writer of the import store — and untouched by a drop that is
    /// rejected or refused. `facts::drift` derives them afresh from the stored records.
    #[tokio::test]
    async fn the_area_facts_follow_every_writer_of_imported_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let (drop, mut cfg) = drop_folder(dir.path());
        cfg.files = [
            (FileFormat::CensusPupilsCsv, "pupils.csv"),
            (FileFormat::CensusAttendanceCsv, "attendance.csv"),
            (FileFormat::CensusExclusionsCsv, "exclusions.csv"),
        ]
        .into_iter()
        .map(|(format, name)| FileSpec {
            format,
            name: name.into(),
        })
        .collect();
        let write = |pupils: &[&str], attendance: &[&str]| {
            let head = "UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode,URN\n";
            std::fs::write(
                drop.join("pupils.csv"),
                head.to_string() + pupils.join("\n").as_str(),
            )
            .unwrap();
            let head = "UPN,Term,Sessions Possible,Sessions Attended\n";
            std::fs::write(
                drop.join("attendance.csv"),
                head.to_string() + attendance.join("\n").as_str(),
            )
            .unwrap();
            std::fs::write(
                drop.join("exclusions.csv"),
                "UPN,Category,StartDate\nB801200005001,SUSP,2025-02-03\n",
            )
            .unwrap();
        };
        let (khan, smith, patel) = (
            "B801200005001,Khan,Sara,2012-03-27,F,WT3 5QP,100001",
            "A801200005001,Smith,Jo,2013-01-02,M,WT1 1AA,100002",
            "P207000016049,Patel,Ravi,2011-06-05,M,WT2 2BB,100002",
        );
        let attendance = [
            "B801200005001,Autumn 2024,100,85",
            "A801200005001,Autumn 2024,100,95",
            "P207000016049,Autumn 2024,100,99",
        ];
        write(&[khan, smith, patel], &attendance);
        let facts_of = |id: &'static str| {
            let store = store.clone();
            async move {
                sqlx::query("SELECT attendance FROM area_facts WHERE local_id = $1")
                    .bind(id)
                    .fetch_optional(&store.pool)
                    .await
                    .unwrap()
                    .map(|r| r.get::<String, _>("attendance"))
            }
        };
        let count = || {
            let store = store.clone();
            async move {
                sqlx::query("SELECT COUNT(*) AS n FROM area_facts")
                    .fetch_one(&store.pool)
                    .await
                    .unwrap()
                    .get::<i64, _>("n")
            }
        };

        import(&store, &index, "census", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!(facts::drift(&store).await, Vec::<String>::new());
        assert_eq!(count().await, 3);
        assert_eq!(
            facts_of("A801200005001").await.as_deref(),
            Some("[[2024,1,100,95]]")
        );

        // Smith's attendance changes, Patel leaves, Ahmed joins.
        let ahmed = "K801200005002,Ahmed,Zara,2012-09-09,F,WT4 4DD,100001";
        write(
            &[khan, smith, ahmed],
            &[
                attendance[0],
                "A801200005001,Autumn 2024,100,80",
                "K801200005002,Autumn 2024,100,90",
            ],
        );
        let r = import(&store, &index, "census", &cfg, Options::default())
            .await
            .unwrap();
        assert_eq!((r.added, r.changed, r.removed, r.unchanged), (1, 1, 1, 1));
        assert_eq!(facts::drift(&store).await, Vec::<String>::new());
        assert_eq!(count().await, 3);
        assert_eq!(
            facts_of("A801200005001").await.as_deref(),
            Some("[[2024,1,100,80]]")
        );
        assert_eq!(facts_of("P207000016049").await, None);

        // A drop refused (every pupil would go) or rejected (malformed) changes nothing.
        write(&[], &[]);
        import(&store, &index, "census", &cfg, Options::default())
            .await
            .unwrap_err();
        std::fs::write(drop.join("pupils.csv"), "UPN,Legal Surname\n\"x").unwrap();
        import(&store, &index, "census", &cfg, Options::default())
            .await
            .unwrap_err();
        assert_eq!(facts::drift(&store).await, Vec::<String>::new());
        assert_eq!(count().await, 3);

        // Any other writer: a record erased takes its facts with it; a record rewritten loses
        // them (missing until derived again, never stale).
        sqlx::query("DELETE FROM import_records WHERE local_id = 'K801200005002'")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(facts::drift(&store).await, Vec::<String>::new());
        assert_eq!(count().await, 2);
        sqlx::query(
            "UPDATE import_records SET record = REPLACE(record, '85', '15'), digest = 'rewritten' \
             WHERE local_id = 'B801200005001'",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let drift = facts::drift(&store).await;
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].ends_with("no facts"), "{drift:?}");
        sqlx::query("UPDATE import_records SET imported_at = 'later'")
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            count().await,
            1,
            "a record whose content is unchanged keeps its facts"
        );
    }

    #[tokio::test]
    async fn a_drop_that_would_empty_a_source_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let (drop, cfg) = drop_folder(dir.path());
        let pupils = drop.join("pupils.csv");
        std::fs::write(&pupils, PUPILS).unwrap();
        import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap();
        let before = digests(&store).await;

        // The header alone: every pupil would go.
        std::fs::write(&pupils, "UPN,Surname,Forename,DOB,Sex\n").unwrap();
        let e = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ImportFailure::Removals {
                    removed: 3,
                    stored: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("would remove all 3 records"), "{e}");
        assert_eq!(digests(&store).await, before, "nothing applied");
        let last = last_import(&store, "school").await.unwrap().unwrap();
        assert_eq!((last.outcome.as_str(), last.removed), ("refused", 0));
        assert!(
            last.notes[0].contains("--allow-removals"),
            "{:?}",
            last.notes
        );

        // Two of three (67 %) is over the default 50 %; one of three is not.
        let one: String = PUPILS.lines().take(2).map(|l| format!("{l}\n")).collect();
        std::fs::write(&pupils, &one).unwrap();
        let e = import(&store, &index, "school", &cfg, Options::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("remove 2 of the 3 records"), "{e}");
        assert!(
            e.to_string().contains("limits.removed_percent (50 %)"),
            "{e}"
        );
        let mut lenient = cfg.clone();
        lenient.limits.removed_percent = 70;
        let applied = import(&store, &index, "school", &lenient, Options::default())
            .await
            .unwrap();
        assert_eq!((applied.removed, applied.unchanged), (2, 1));

        // Emptying it needs the caller's say-so.
        std::fs::write(&pupils, "UPN,Surname,Forename,DOB,Sex\n").unwrap();
        let allowed = Options {
            allow_removals: true,
            ..Options::default()
        };
        let emptied = import(&store, &index, "school", &cfg, allowed)
            .await
            .unwrap();
        assert_eq!((emptied.outcome, emptied.removed), ("applied", 1));
        assert!(digests(&store).await.is_empty());
    }
}
