//! Where the area report's data comes from, and how fresh it is:
//!
//! - attendance and exclusions: the records last imported from each `file` source of an
//!   education agency (the import store, `import_records`: school census and MIS exports), as of
//!   that source's last import that was not rejected;
//! - "known to social care": whether the master child index links the pupil's record to a
//!   record in any source of a social-care agency, as of the newest data the index holds from
//!   each (an import's time for a `file` source; otherwise the newest record the index wrote
//!   from it, or this node's last index pass over it when that was later).
//!
//! Live sources (an MIS read over SQL) are not fanned out to for a report: a report over an
//! authority is a read of what the gateway holds, never 100,000 calls to partner systems.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::Row;

use super::places::Areas;
use super::table::{Pupil, Term};
use crate::foundation::store::Store;

/// A source the report reads, and the time of the data it has from it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceUsed {
    pub source: String,
    pub agency: String,
    /// `education` (attendance, exclusions) or `social_care` (known to social care).
    pub kind: &'static str,
    /// When the data the report uses from this source was imported or read; `None` when the
    /// gateway holds nothing from it yet.
    pub data_as_of: Option<String>,
}

/// What the report reads: education file sources and social-care sources, by id and agency.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// `(source, agency, is a file source)`.
    pub education: Vec<(String, String)>,
    pub social_care: Vec<(String, String, bool)>,
    /// This node's last index pass: when it finished, and the sources it could not read.
    pub last_pass: Option<(DateTime<Utc>, Vec<String>)>,
}

/// The pupils and the sources they came from.
#[derive(Debug, Default)]
pub struct Loaded {
    pub pupils: Vec<Pupil>,
    pub sources: Vec<SourceUsed>,
    /// Attendance rows whose term could not be read (`Week 3`), left out of every count.
    pub unplaced_terms: usize,
}

#[derive(Deserialize)]
struct Stored {
    record: StoredRecord,
    #[serde(default)]
    items: Vec<StoredItem>,
}

#[derive(Deserialize)]
struct StoredRecord {
    #[serde(default)]
    demographics: StoredDemographics,
}

#[derive(Deserialize, Default)]
struct StoredDemographics {
    #[serde(default)]
    postcode: Option<String>,
}

/// An imported item, with its value read only when the report needs it: a census record's
/// items are mostly fields the report does not count, and building a JSON tree of each would
/// cost more than everything else the report does. The import store writes an item's
/// `category` and `field` before its `value` (the order of [`weft_adapters::Item`]'s fields),
/// so the value's type is known by the time it is met; in any other order it is skipped.
enum StoredItem {
    School(Option<String>),
    Terms(Vec<TermRow>),
    Exclusions(Vec<ExclusionRow>),
    Other,
}

#[derive(Deserialize)]
struct TermRow {
    #[serde(default)]
    term: Option<String>,
    #[serde(default)]
    possible_sessions: Option<i64>,
    #[serde(default)]
    attended_sessions: Option<i64>,
}

#[derive(Deserialize)]
struct ExclusionRow {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    start_date: Option<String>,
}

impl<'de> Deserialize<'de> for StoredItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = StoredItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an imported item")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StoredItem, A::Error> {
                use serde::de::IgnoredAny;
                let (mut category, mut field) = (None::<String>, None::<String>);
                let mut item = StoredItem::Other;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "category" => category = Some(map.next_value()?),
                        "field" => field = Some(map.next_value()?),
                        "value" => {
                            item = match (category.as_deref(), field.as_deref()) {
                                (Some("education.enrolment"), Some("school_urn")) => {
                                    StoredItem::School(
                                        map.next_value::<serde_json::Value>()?
                                            .as_str()
                                            .map(String::from),
                                    )
                                }
                                (Some("education.attendance"), Some("terms")) => {
                                    StoredItem::Terms(map.next_value()?)
                                }
                                (Some("education.exclusions"), Some("exclusions")) => {
                                    StoredItem::Exclusions(map.next_value()?)
                                }
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                    StoredItem::Other
                                }
                            }
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(item)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A record's digest: the SHA-256 of its canonical JSON (local id included), so its facts never
/// change under one digest.
type Key = String;

/// What the report needs of one imported record, read once per digest.
#[derive(Debug, Default)]
struct Facts {
    school: Option<String>,
    postcode: Option<String>,
    attendance: Vec<(Term, i64, i64)>,
    exclusions: Vec<(Term, bool)>,
    unplaced: usize,
}

/// Facts of the records reports have read, by digest: content-addressed,
/// so one process serving several stores (the tests) cannot mix them up, and a changed record
/// (a new digest) is read again. Parsing every record's JSON is most of a report's cost.
fn facts_cache() -> &'static Mutex<HashMap<Key, Arc<Facts>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Facts>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn facts_of(stored: Stored) -> Facts {
    let mut f = Facts {
        postcode: stored.record.demographics.postcode,
        ..Facts::default()
    };
    for item in stored.items {
        match item {
            StoredItem::School(urn) => {
                if let Some(urn) = urn.filter(|u| !u.trim().is_empty()) {
                    f.school = Some(urn.trim().to_string());
                }
            }
            StoredItem::Terms(terms) => {
                for t in terms {
                    let term = t.term.as_deref().and_then(Term::parse);
                    match (term, t.possible_sessions, t.attended_sessions) {
                        (Some(term), Some(p), Some(a)) if p >= 0 && (0..=p).contains(&a) => {
                            f.attendance.push((term, p, a))
                        }
                        _ => f.unplaced += 1,
                    }
                }
            }
            StoredItem::Exclusions(rows) => {
                for e in rows {
                    let permanent = match e.kind.as_deref() {
                        Some("permanent") => true,
                        Some("suspension") => false,
                        // Lunchtime exclusions are not counted, as the DfE's tables do not.
                        _ => continue,
                    };
                    if let Some(term) = e.start_date.as_deref().and_then(Term::of_date) {
                        f.exclusions.push((term, permanent));
                    }
                }
            }
            StoredItem::Other => {}
        }
    }
    f
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn import_time(store: &Store, source: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT MAX(finished_at) AS at FROM import_runs WHERE source = $1 AND outcome <> 'rejected'",
    )
    .bind(source)
    .fetch_one(&store.pool)
    .await?;
    row.try_get("at")
}

/// Reads every pupil of the catalogue's education sources, with their areas drawn by `areas`.
pub async fn load(store: &Store, cat: &Catalogue, areas: &Areas) -> Result<Loaded, sqlx::Error> {
    let mut loaded = Loaded::default();
    for (source, agency) in &cat.education {
        loaded.sources.push(SourceUsed {
            source: source.clone(),
            agency: agency.clone(),
            kind: "education",
            data_as_of: import_time(store, source).await?,
        });
    }
    for (source, agency, file) in &cat.social_care {
        let at = if *file {
            import_time(store, source).await?
        } else {
            let row =
                sqlx::query("SELECT MAX(updated_at) AS at FROM source_records WHERE source = $1")
                    .bind(source)
                    .fetch_one(&store.pool)
                    .await?;
            let written: Option<String> = row.try_get("at")?;
            let pass = cat.last_pass.as_ref().and_then(|(at, failed)| {
                (!failed.contains(source))
                    .then(|| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            });
            // Both are RFC 3339 in UTC, so they compare as text.
            match (written, pass) {
                (Some(w), Some(p)) => Some(w.max(p)),
                (w, p) => w.or(p),
            }
        };
        loaded.sources.push(SourceUsed {
            source: source.clone(),
            agency: agency.clone(),
            kind: "social_care",
            data_as_of: at,
        });
    }
    if cat.education.is_empty() {
        return Ok(loaded);
    }

    // Each record's digest (the import's SHA-256 of it) and whether the index links it to a
    // record of a social-care source, decided in the database (an index lookup per record,
    // rather than every linked child's id sent over); the records themselves are read and
    // parsed only where the digest is new to this process (`facts_cache`).
    let education = placeholders(1, cat.education.len());
    let known = if cat.social_care.is_empty() {
        "CAST(0 AS BIGINT)".to_string()
    } else {
        format!(
            "CAST(CASE WHEN sr.child_id IS NOT NULL AND EXISTS (SELECT 1 FROM source_records k \
             WHERE k.child_id = sr.child_id AND k.source IN ({})) THEN 1 ELSE 0 END AS BIGINT)",
            placeholders(1 + cat.education.len(), cat.social_care.len())
        )
    };
    let sql = format!(
        "SELECT ir.source AS source, ir.digest AS digest, {known} AS known \
         FROM import_records ir LEFT JOIN source_records sr \
           ON sr.source = ir.source AND sr.local_id = ir.local_id \
         WHERE ir.source IN ({education})"
    );
    let mut q = sqlx::query(&sql);
    for (s, _) in &cat.education {
        q = q.bind(s);
    }
    for (s, _, _) in &cat.social_care {
        q = q.bind(s);
    }
    let rows = q.fetch_all(&store.pool).await?;
    let mut current: Vec<(usize, String, bool)> = Vec::with_capacity(rows.len());
    for r in &rows {
        let source: String = r.try_get(0)?;
        let Some(index) = cat.education.iter().position(|(s, _)| *s == source) else {
            continue;
        };
        let known: i64 = r.try_get(2)?;
        current.push((index, r.try_get(1)?, known != 0));
    }
    drop(rows);
    let missing: HashSet<usize> = {
        let cache = facts_cache().lock().unwrap_or_else(|p| p.into_inner());
        current
            .iter()
            .filter(|(_, digest, _)| !cache.contains_key(digest.as_str()))
            .map(|(i, _, _)| *i)
            .collect()
    };
    // Sources with records new to this process are read whole: most of a source is new on a
    // first report, and a changed census changes many records at a time.
    let mut fresh: Vec<(String, Facts)> = Vec::new();
    for &i in &missing {
        let source = &cat.education[i].0;
        let records = sqlx::query("SELECT digest, record FROM import_records WHERE source = $1")
            .bind(source)
            .fetch_all(&store.pool)
            .await?;
        for r in &records {
            let digest: String = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            // A record the import wrote is well formed; one that is not is counted nowhere
            // rather than failing the whole report (and is not logged: it is a child's).
            match serde_json::from_str::<Stored>(&text) {
                Ok(stored) => fresh.push((digest, facts_of(stored))),
                Err(_) => tracing::warn!(
                    source,
                    "an imported record could not be read for the area report"
                ),
            }
        }
    }
    let mut cache = facts_cache().lock().unwrap_or_else(|p| p.into_inner());
    for (digest, f) in fresh {
        cache.insert(digest, Arc::new(f));
    }
    loaded.pupils.reserve(current.len());
    for (index, digest, known) in &current {
        let Some(f) = cache.get(digest.as_str()) else {
            continue;
        };
        let agency = &cat.education[*index].1;
        loaded.unplaced_terms += f.unplaced;
        loaded.pupils.push(Pupil {
            source: *index,
            school: f
                .school
                .clone()
                .unwrap_or_else(|| agency.strip_prefix("urn-").unwrap_or(agency).to_string()),
            area: areas.area_of(f.postcode.as_deref()),
            known_to_social_care: *known,
            attendance: f.attendance.clone(),
            exclusions: f.exclusions.clone(),
        });
    }
    // Records re-imported or removed leave the cache once it holds twice what is in use.
    if cache.len() > 2 * current.len().max(1_000) {
        let live: HashSet<&str> = current.iter().map(|(_, d, _)| d.as_str()).collect();
        cache.retain(|d, _| live.contains(d.as_str()));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn exec(store: &Store, sql: &str, binds: &[&str]) {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(&store.pool).await.unwrap();
    }

    /// The loader on the store this run exercises (`WEFT_TEST_STORE`): items read, the school
    /// from the record or its agency, areas, links to social care, freshness.
    #[tokio::test]
    async fn reads_imported_pupils_their_links_and_freshness() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let record = |id: &str, urn: Option<&str>, postcode: &str| {
            let mut items = vec![
                json!({"category": "identity.core", "field": "family_name", "value": "Khan"}),
                json!({"category": "education.attendance", "field": "terms", "value": [
                    {"term": "Autumn 2024", "possible_sessions": 100, "attended_sessions": 85, "attendance_percent": 85.0},
                    {"term": "Week 3", "possible_sessions": 10, "attended_sessions": 10}
                ]}),
                json!({"category": "education.exclusions", "field": "exclusions", "value": [
                    {"kind": "suspension", "start_date": "2025-02-03", "reasons": ["PP"]},
                    {"kind": "lunchtime", "start_date": "2025-02-04", "reasons": []}
                ]}),
            ];
            if let Some(u) = urn {
                items.insert(
                    0,
                    json!({"category": "education.enrolment", "field": "school_urn", "value": u}),
                );
            }
            json!({"record": {"local_id": id, "identifiers": [], "demographics": {"postcode": postcode}}, "items": items})
                .to_string()
        };
        for (id, urn, pc) in [
            ("p1", Some("100002"), "WT3 5QP"),
            ("p2", None, "nowhere"),
            ("p3", Some("100002"), "WT1 1AA"),
        ] {
            let r = record(id, urn, pc);
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(r.as_bytes()));
            exec(
                &store,
                "INSERT INTO import_records (source, local_id, digest, record, imported_at) VALUES ('census', $1, $2, $3, '2026-01-05T10:00:00Z')",
                &[id, &digest, &r],
            )
            .await;
        }
        exec(&store, "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, changed, removed, unchanged, flagged, notes) VALUES ('r1', 'census', '2026-01-05T10:00:00Z', '2026-01-05T10:00:01Z', 'applied', '[]', 3, 0, 0, 0, 0, '[]')", &[]).await;
        exec(&store, "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, changed, removed, unchanged, flagged, notes) VALUES ('r2', 'census', '2026-01-06T10:00:00Z', '2026-01-06T10:00:01Z', 'rejected', '[]', 0, 0, 0, 0, 0, '[]')", &[]).await;
        for c in ["c1", "c2"] {
            exec(
                &store,
                "INSERT INTO children (id, created_at) VALUES ($1, '2026-01-01')",
                &[c],
            )
            .await;
        }
        for (source, local, child) in [
            ("census", "p1", "c1"),
            ("census", "p3", "c2"),
            ("csc", "s1", "c1"),
        ] {
            exec(
                &store,
                "INSERT INTO source_records (source, local_id, child_id, identifiers, demographics, updated_at) VALUES ($1, $2, $3, '[]', '{}', '2026-01-04T09:00:00Z')",
                &[source, local, child],
            )
            .await;
        }
        let cat = Catalogue {
            education: vec![("census".into(), "urn-100001".into())],
            social_care: vec![("csc".into(), "la".into(), false)],
            last_pass: None,
        };
        for _ in 0..2 {
            // The second time from the cache of parsed records.
            let loaded = load(&store, &cat, &Areas::Districts).await.unwrap();
            let mut pupils = loaded.pupils.clone();
            pupils.sort_by(|a, b| a.area.cmp(&b.area));
            let summary: Vec<(&str, &str, bool)> = pupils
                .iter()
                .map(|p| (p.school.as_str(), p.area.as_str(), p.known_to_social_care))
                .collect();
            assert_eq!(
                summary,
                [
                    ("100002", "WT1", false),
                    ("100002", "WT3", true),
                    ("100001", "unknown", false)
                ]
            );
            let autumn = Term::parse("Autumn 2024").unwrap();
            assert!(pupils.iter().all(|p| p.attendance == [(autumn, 100, 85)]));
            let spring = Term::parse("Spring 2025").unwrap();
            assert!(pupils.iter().all(|p| p.exclusions == [(spring, false)]));
            assert_eq!(loaded.unplaced_terms, 3, "Week 3, once per pupil");
            let at = |s: &str| {
                loaded
                    .sources
                    .iter()
                    .find(|u| u.source == s)
                    .and_then(|u| u.data_as_of.clone())
            };
            assert_eq!(
                at("census").as_deref(),
                Some("2026-01-05T10:00:01Z"),
                "the last import not rejected"
            );
            assert_eq!(at("csc").as_deref(), Some("2026-01-04T09:00:00Z"));
        }
    }
}
