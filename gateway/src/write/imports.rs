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
//! - A rejected drop writes nothing but its own `import_runs` row: the previous data stays.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use weft_adapters::file::{self, FileConfig, ImportError, Imported};
use weft_adapters::AdapterConfig;

use crate::foundation::config::SourceConfig;
use crate::foundation::store::Store;
use crate::pipeline::resolve::Index;

/// A parsed record as the store keeps it.
struct Hashed {
    local_id: String,
    json: String,
    digest: String,
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
    /// Milliseconds spent reading and parsing, writing the import store, and indexing.
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
    #[error("import store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("import task failed: {0}")]
    Task(String),
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

/// Imports a source's folder. `force` parses and diffs even when the files are unchanged.
pub async fn import(
    store: &Store,
    index: &Index,
    source: &str,
    config: &FileConfig,
    force: bool,
) -> Result<ImportReport, ImportFailure> {
    let started = now();
    let clock = std::time::Instant::now();
    let ms = |t: std::time::Instant| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    let config = config.clone();
    let dropped = tokio::task::spawn_blocking(move || file::collect(&config))
        .await
        .map_err(|e| ImportFailure::Task(e.to_string()))?;
    let dropped = match dropped {
        Ok(d) => d,
        Err(e) => {
            record_rejection(store, source, &started, &[], &e).await?;
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
    if !force && last_applied_files(store, source).await?.as_ref() == Some(&files) {
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
        file::parse(&dropped).map(|p| {
            let mut flagged = 0;
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
                    Hashed {
                        local_id: r.record.local_id,
                        json,
                        digest,
                    }
                })
                .collect();
            (hashed, p.warnings, flagged)
        })
    })
    .await
    .map_err(|e| ImportFailure::Task(e.to_string()))?;
    report.parse_ms = ms(clock);
    let clock = std::time::Instant::now();
    let (records, warnings, flagged) = match parsed {
        Ok(p) => p,
        Err(e) => {
            record_rejection(store, source, &started, &files, &e).await?;
            return Err(e.into());
        }
    };
    report.records = records.len();
    report.warnings = warnings;
    report.flagged = flagged;

    let mut tx = store.begin_write().await?;
    let mut existing: HashMap<String, String> = HashMap::new();
    for row in sqlx::query("SELECT local_id, digest FROM import_records WHERE source = $1")
        .bind(source)
        .fetch_all(&mut *tx)
        .await?
    {
        existing.insert(row.try_get("local_id")?, row.try_get("digest")?);
    }
    let at = now();
    let mut to_index = Vec::new();
    for Hashed {
        local_id,
        json,
        digest,
    } in &records
    {
        let id = local_id.as_str();
        match existing.remove(id) {
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
                sqlx::query(
                    "INSERT INTO import_records (source, local_id, digest, record, imported_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(source)
                .bind(id)
                .bind(digest)
                .bind(json)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                report.added += 1;
                to_index.push(json);
            }
        }
    }
    for gone in existing.keys() {
        sqlx::query("DELETE FROM import_records WHERE source = $1 AND local_id = $2")
            .bind(source)
            .bind(gone)
            .execute(&mut *tx)
            .await?;
        report.removed += 1;
    }
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
    tx.commit().await?;
    report.apply_ms = ms(clock);
    let clock = std::time::Instant::now();
    for json in to_index {
        let rec = match serde_json::from_str::<Imported>(json) {
            Ok(r) => r.record,
            Err(e) => {
                tracing::warn!(source, error = %e, "imported record unreadable");
                report.index_failures += 1;
                continue;
            }
        };
        match index.upsert(source, &rec).await {
            Ok(_) => report.indexed += 1,
            Err(e) => {
                tracing::warn!(source, error = %e, "index upsert after import failed");
                report.index_failures += 1;
            }
        }
    }
    report.index_ms = ms(clock);
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

async fn record_rejection(
    store: &Store,
    source: &str,
    started: &str,
    files: &[FileDigest],
    error: &ImportError,
) -> Result<(), sqlx::Error> {
    tracing::warn!(source, error = %error, "import rejected");
    let empty = ImportReport {
        source: source.into(),
        outcome: "rejected",
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
    let mut conn = store.pool.acquire().await?;
    insert_run(
        &mut conn,
        source,
        started,
        "rejected",
        files,
        &empty,
        &[error.to_string()],
    )
    .await
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
/// long as the gateway runs. A rejected drop is logged and recorded; the next scan tries again.
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
            let (store, index) = (&state.store, &state.index);
            let every = Duration::from_secs(config.watch_secs);
            loop {
                match import(store, index, &id, &config, false).await {
                    Ok(r) if r.outcome == "applied" => {
                        tracing::info!(source = %id, changed = r.added + r.changed + r.removed, "watched import applied")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(source = %id, error = %e, "watched import failed"),
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    futures::future::join_all(handles).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::imported::DbImports;
    use weft_adapters::file::{FileFormat, FileSpec};

    const PUPILS: &str = "UPN,Surname,Forename,DOB,Sex\n\
        B801200005001,Khan,Sara,27/03/2012,F\n\
        A801200005001,Smith,Jo,02/01/2013,M\n\
        P207000016049,Patel,Ravi,05/06/2011,M\n";

    fn config(dir: &std::path::Path) -> FileConfig {
        FileConfig {
            folder: dir.to_path_buf(),
            files: vec![FileSpec {
                format: FileFormat::CensusPupilsCsv,
                name: "pupils*.csv".into(),
            }],
            watch_secs: 0,
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

    #[tokio::test]
    async fn import_is_incremental_all_or_nothing_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let drop = dir.path().join("drop");
        std::fs::create_dir(&drop).unwrap();
        let cfg = config(&drop);
        std::fs::write(drop.join("pupils.csv"), PUPILS).unwrap();

        let first = import(&store, &index, "school", &cfg, false).await.unwrap();
        assert_eq!(
            (first.outcome, first.added, first.indexed),
            ("applied", 3, 3)
        );
        assert_eq!(first.flagged, 1, "A801200005001 fails its check letter");
        let before = digests(&store).await;

        // Unchanged files: recognised by digest, nothing parsed or written.
        let again = import(&store, &index, "school", &cfg, false).await.unwrap();
        assert_eq!((again.outcome, again.unchanged), ("unchanged", 3));
        // Even a forced re-parse changes nothing.
        let forced = import(&store, &index, "school", &cfg, true).await.unwrap();
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
        let one = import(&store, &index, "school", &cfg, false).await.unwrap();
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
        let e = import(&store, &index, "school", &cfg, false)
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
        let left = import(&store, &index, "school", &cfg, false).await.unwrap();
        assert_eq!((left.removed, left.unchanged), (1, 2));
        assert!(adapter.fetch("P207000016049").await.unwrap().is_none());
    }
}
