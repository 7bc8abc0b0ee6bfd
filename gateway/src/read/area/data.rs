//! Where the area report's data comes from, and how fresh it is:
//!
//! - attendance and exclusions: the records last imported from each `file` source of an
//!   education agency (the import store: school census and MIS exports, each record's counted
//!   items derived at import into `area_facts`, see [`facts`]), as of that source's last
//!   applied import (a rejected or refused drop changes nothing);
//! - "known to social care": whether the master child index links the pupil's record to a
//!   record in any source of a social-care agency, as of the newest data the index holds from
//!   each (an import's time for a `file` source; otherwise the newest record the index wrote
//!   from it, or this node's last index pass over it when that was later).
//!
//! Live sources (an MIS read over SQL) are not fanned out to for a report: a report over an
//! authority is a read of what the gateway holds, never 100,000 calls to partner systems.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::facts::{self, Facts, StoredExclusion, StoredTerm};
use super::places::Areas;
use super::table::Pupil;
use crate::foundation::store::{placeholders, Backend, Store};

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

/// When the source's data was last applied: a rejected or refused drop leaves the data of the
/// import before it.
async fn import_time(store: &Store, source: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT MAX(finished_at) AS at FROM import_runs WHERE source = $1 AND outcome = 'applied'",
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

    // Sources imported before the facts table existed are derived once, on first use.
    facts::backfill(store).await?;
    let rows = read(store, cat).await?;
    loaded.pupils.reserve(rows.len());
    for (index, school, postcode, attendance, exclusions, unplaced, known) in rows {
        let Some((_, agency)) = cat.education.get(index) else {
            return Err(facts::bad("a source the read did not ask for"));
        };
        let f = Facts::stored(school, postcode, attendance, exclusions, unplaced)?;
        loaded.unplaced_terms += f.unplaced;
        loaded.pupils.push(Pupil {
            source: index,
            school: f
                .school
                .unwrap_or_else(|| agency.strip_prefix("urn-").unwrap_or(agency).to_string()),
            area: areas.area_of(f.postcode.as_deref()),
            known_to_social_care: known != 0,
            attendance: f.attendance,
            exclusions: f.exclusions,
        });
    }
    Ok(loaded)
}

/// One pupil as [`read`] returns them: the index of their source in the catalogue's education
/// sources, then `area_facts`' school, postcode, attendance, exclusions and unplaced rows, and
/// whether social care knows them (1) or not (0).
type Packed = (
    usize,
    Option<String>,
    Option<String>,
    Vec<StoredTerm>,
    Vec<StoredExclusion>,
    i64,
    u8,
);

/// Whether the index links the pupil's record (`sr`) to a record of a social-care source,
/// decided in the database: the children social care knows are gathered once, hashed
/// (PostgreSQL's hashed subplan, SQLite's ephemeral index), and each pupil's child looked up in
/// them, rather than every linked child's id sent over. The social-care sources are bound from
/// `$first` on.
fn known(cat: &Catalogue, first: usize) -> String {
    if cat.social_care.is_empty() {
        "0".to_string()
    } else {
        format!(
            "CASE WHEN sr.child_id IN (SELECT child_id FROM source_records \
             WHERE source IN ({})) THEN 1 ELSE 0 END",
            placeholders(first, cat.social_care.len())
        )
    }
}

/// Every pupil of the catalogue's education sources.
async fn read(store: &Store, cat: &Catalogue) -> Result<Vec<Packed>, sqlx::Error> {
    match store.backend {
        Backend::Sqlite => read_packed(store, cat).await,
        Backend::Postgres => read_rows(store, cat).await,
    }
}

/// SQLite: every pupil in one statement that returns one value, the pupils as a JSON array
/// built by SQLite (`json_group_array`) and read by serde. Fetched as rows, 100,000 pupils were
/// 100,000 trips through the `Any` driver, each row handed over from the connection's worker
/// thread (a futex wake-up every few rows) with every column copied twice — more CPU than
/// SQLite spent finding them.
async fn read_packed(store: &Store, cat: &Catalogue) -> Result<Vec<Packed>, sqlx::Error> {
    let education = cat.education.len();
    // The pupil's source as its index in the list: `CASE f.source WHEN $1 THEN 0 …`.
    let index = (0..education)
        .map(|i| format!(" WHEN ${} THEN {i}", i + 1))
        .collect::<String>();
    let known = known(cat, education + 1);
    let sources = placeholders(1, education);
    // The facts are read in the table's own order (`NOT INDEXED`): through the primary key's
    // index each pupil's row is a jump elsewhere in the table, a page read from the file for
    // nearly every pupil once the table outgrows SQLite's page cache. Each pupil's child is
    // then one look-up in `source_records_child_of` (migration 0020), which holds it, rather
    // than the key's index and then the table. The stored lists travel as JSON strings and
    // serde reads them: SQLite's `json()` would embed them as JSON, but it spent a sixth of
    // the report's CPU parsing and printing them again.
    let sql = format!(
        "SELECT json_group_array(json_array(CASE f.source{index} END, f.school, f.postcode, \
         f.attendance, f.exclusions, f.unplaced, {known})) AS pupils \
         FROM area_facts f NOT INDEXED \
         LEFT JOIN source_records sr INDEXED BY source_records_child_of \
           ON sr.source = f.source AND sr.local_id = f.local_id \
         WHERE f.source IN ({sources})"
    );
    let mut q = sqlx::query(&sql);
    for (s, _) in &cat.education {
        q = q.bind(s);
    }
    for (s, _, _) in &cat.social_care {
        q = q.bind(s);
    }
    let json: String = q.fetch_one(&store.pool).await?.try_get("pupils")?;
    // Reading 100,000 pupils' JSON is a tenth of a second of CPU: off the runtime's threads.
    tokio::task::spawn_blocking(move || unpack(&json))
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("reading area facts: {e}")))?
}

/// A pupil as [`read_packed`]'s statement writes them: attendance and exclusions as the JSON
/// text `area_facts` holds, borrowed from the document where it has no escapes (it never has).
#[derive(serde::Deserialize)]
struct Unpacked<'a>(
    usize,
    Option<String>,
    Option<String>,
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    u8,
);

fn unpack(json: &str) -> Result<Vec<Packed>, sqlx::Error> {
    let rows: Vec<Unpacked> =
        serde_json::from_str(json).map_err(|_| facts::bad("the pupils' JSON"))?;
    rows.into_iter()
        .map(
            |Unpacked(index, school, postcode, att, exc, unplaced, known)| {
                Ok((
                    index,
                    school,
                    postcode,
                    serde_json::from_str(&att).map_err(|_| facts::bad("attendance"))?,
                    serde_json::from_str(&exc).map_err(|_| facts::bad("exclusions"))?,
                    unplaced,
                    known,
                ))
            },
        )
        .collect()
}

/// PostgreSQL: one row a pupil, one statement a source. The aggregated form was slower there
/// (NOTES.md): PostgreSQL sends rows as it finds them, so the client reads them while the
/// server works, and building one JSON value (`json_agg`) tripled the server's time.
async fn read_rows(store: &Store, cat: &Catalogue) -> Result<Vec<Packed>, sqlx::Error> {
    let sql = format!(
        "SELECT f.school AS school, f.postcode AS postcode, f.attendance AS attendance, \
         f.exclusions AS exclusions, f.unplaced AS unplaced, CAST({} AS BIGINT) AS known \
         FROM area_facts f LEFT JOIN source_records sr \
           ON sr.source = f.source AND sr.local_id = f.local_id \
         WHERE f.source = $1",
        known(cat, 2)
    );
    let mut pupils = Vec::new();
    for (index, (source, _)) in cat.education.iter().enumerate() {
        let mut q = sqlx::query(&sql).bind(source);
        for (s, _, _) in &cat.social_care {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&store.pool).await?;
        pupils.reserve(rows.len());
        for r in &rows {
            let attendance: &str = r.try_get(2)?;
            let exclusions: &str = r.try_get(3)?;
            let known: i64 = r.try_get(5)?;
            pupils.push((
                index,
                r.try_get(0)?,
                r.try_get(1)?,
                serde_json::from_str(attendance).map_err(|_| facts::bad("attendance"))?,
                serde_json::from_str(exclusions).map_err(|_| facts::bad("exclusions"))?,
                r.try_get(4)?,
                u8::from(known != 0),
            ));
        }
    }
    Ok(pupils)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::area::table::Term;
    use serde_json::json;

    /// SQLite's one document of pupils: the stored lists read as `area_facts` holds them,
    /// escaped or not, and anything else refused rather than guessed at.
    #[test]
    fn the_packed_pupils_are_read_or_refused_whole() {
        let autumn = (2024, 1, 100, 85);
        let doc = r#"[[1,"100002","WT3 5QP","[[2024,1,100,85]]","[[2024,2,false]]",2,1],
                      [0,null,null,"\u005b[2024,1,100,85]]","[]",0,0]]"#;
        let got = unpack(doc).unwrap();
        assert_eq!(
            got,
            [
                (
                    1,
                    Some("100002".into()),
                    Some("WT3 5QP".into()),
                    vec![autumn],
                    vec![(2024, 2, false)],
                    2,
                    1
                ),
                (0, None, None, vec![autumn], vec![], 0, 0),
            ]
        );
        for bad in [
            r#"[[0,null,null,"{}","[]",0,0]]"#,
            r#"[[0,null,null,"[]","[[2024,2]]",0,0]]"#,
            r#"[[0,null,null,[],"[]",0,0]]"#,
            r#"[[-1,null,null,"[]","[]",0,0]]"#,
            r#"[[0,null,null,"[]","[]",0]]"#,
        ] {
            assert!(unpack(bad).is_err(), "{bad}");
        }
    }

    async fn exec(store: &Store, sql: &str, binds: &[&str]) {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        q.execute(&store.pool).await.unwrap();
    }

    /// The loader on the store this run exercises (`WEFT_TEST_STORE`): records imported before
    /// the facts table existed derived on first use, items read, the school from the record or
    /// its agency, areas, links to social care, freshness.
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
        // A second school's export, and a source the report does not read (a health file).
        for (source, id, urn, pc) in [
            ("census", "p1", Some("100002"), "WT3 5QP"),
            ("census", "p2", None, "nowhere"),
            ("census", "p3", Some("100002"), "WT1 1AA"),
            ("mis", "p1", None, "WT9 1AA"),
            ("health", "h1", Some("100002"), "WT1 1AA"),
        ] {
            let r = record(id, urn, pc);
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(r.as_bytes()));
            exec(
                &store,
                "INSERT INTO import_records (source, local_id, digest, record, imported_at) VALUES ($1, $2, $3, $4, '2026-01-05T10:00:00Z')",
                &[source, id, &digest, &r],
            )
            .await;
        }
        exec(&store, "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, changed, removed, unchanged, flagged, notes) VALUES ('r1', 'census', '2026-01-05T10:00:00Z', '2026-01-05T10:00:01Z', 'applied', '[]', 3, 0, 0, 0, 0, '[]')", &[]).await;
        exec(&store, "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, changed, removed, unchanged, flagged, notes) VALUES ('r2', 'census', '2026-01-06T10:00:00Z', '2026-01-06T10:00:01Z', 'rejected', '[]', 0, 0, 0, 0, 0, '[]')", &[]).await;
        exec(&store, "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, changed, removed, unchanged, flagged, notes) VALUES ('r3', 'census', '2026-01-07T10:00:00Z', '2026-01-07T10:00:01Z', 'refused', '[]', 0, 0, 0, 0, 0, '[]')", &[]).await;
        // As the migration leaves records imported before it: listed, no facts yet.
        exec(
            &store,
            "INSERT INTO area_facts_pending (source) VALUES ('census'), ('mis'), ('health')",
            &[],
        )
        .await;
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
            education: vec![
                ("census".into(), "urn-100001".into()),
                ("mis".into(), "urn-100009".into()),
            ],
            social_care: vec![("csc".into(), "la".into(), false)],
            last_pass: None,
        };
        for _ in 0..2 {
            // The first time derives the facts; the second reads them.
            let loaded = load(&store, &cat, &Areas::Districts).await.unwrap();
            assert!(facts::drift(&store).await.is_empty());
            let pending = sqlx::query("SELECT source FROM area_facts_pending")
                .fetch_all(&store.pool)
                .await
                .unwrap();
            assert!(pending.is_empty(), "the source is off the list");
            let mut pupils = loaded.pupils.clone();
            pupils.sort_by(|a, b| a.area.cmp(&b.area));
            let summary: Vec<(usize, &str, &str, bool)> = pupils
                .iter()
                .map(|p| {
                    let (school, area) = (p.school.as_str(), p.area.as_str());
                    (p.source, school, area, p.known_to_social_care)
                })
                .collect();
            assert_eq!(
                summary,
                [
                    (0, "100002", "WT1", false),
                    (0, "100002", "WT3", true),
                    (1, "100009", "WT9", false),
                    (0, "100001", "unknown", false)
                ]
            );
            let autumn = Term::parse("Autumn 2024").unwrap();
            assert!(pupils.iter().all(|p| p.attendance == [(autumn, 100, 85)]));
            let spring = Term::parse("Spring 2025").unwrap();
            assert!(pupils.iter().all(|p| p.exclusions == [(spring, false)]));
            assert_eq!(loaded.unplaced_terms, 4, "Week 3, once per pupil");
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
                "the last import applied, not the rejected or refused ones"
            );
            assert_eq!(at("csc").as_deref(), Some("2026-01-04T09:00:00Z"));
        }
        // A source with nothing imported yet: no pupils.
        let cat = Catalogue {
            education: vec![("new-school".into(), "urn-100010".into())],
            ..cat
        };
        let loaded = load(&store, &cat, &Areas::Districts).await.unwrap();
        assert!(loaded.pupils.is_empty());
        assert_eq!(loaded.unplaced_terms, 0);
    }
}
