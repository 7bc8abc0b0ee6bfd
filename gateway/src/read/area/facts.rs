//! What the area report counts of each imported record — the school it names, its postcode,
//! its termly attendance and its exclusions — derived once, when the import writes the record,
//! into `area_facts` (migration 0017), in the import's own transaction. A report then reads one
//! narrow row per pupil ([`super::data::load`]) instead of parsing every record's JSON, so the
//! first report after a start or after a census import costs what the later ones do.
//!
//! Kept true by three things: the import writes the facts of every record it adds or changes
//! (`write::imports`); triggers on `import_records` drop a record's facts whenever any writer
//! changes or removes the record, so facts are never stale, at worst missing; and sources
//! imported before the table existed are listed in `area_facts_pending` by the migration and
//! derived on first use ([`backfill`]).

use serde::Deserialize;
use sqlx::Row;
use weft_adapters::file::Imported;
use weft_adapters::Item;

use super::table::Term;
use crate::foundation::store::{Cell, Staging, Store};

/// What the report counts of one imported record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The URN of the school the record names; the report falls back on its source's agency.
    pub school: Option<String>,
    /// As imported: areas are drawn when a report is read, from the configuration's lookup.
    pub postcode: Option<String>,
    /// Possible and attended sessions per term.
    pub attendance: Vec<(Term, i64, i64)>,
    /// Suspensions (`false`) and permanent exclusions (`true`) by the term they started in.
    pub exclusions: Vec<(Term, bool)>,
    /// Attendance rows whose term could not be read (`Week 3`) or whose sessions do not add
    /// up, counted nowhere.
    pub unplaced: usize,
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

/// One stored attendance row: academic year, term, possible and attended sessions.
pub(super) type StoredTerm = (i32, u8, i64, i64);
/// One stored exclusion: academic year, term, permanent.
pub(super) type StoredExclusion = (i32, u8, bool);

impl Facts {
    /// The facts of one record. An error when an item the report counts does not have the
    /// shape adapters give it (attendance rows or exclusions that are not lists of objects
    /// with those fields): such a record is counted nowhere rather than half.
    pub fn of(imported: &Imported) -> Result<Facts, serde_json::Error> {
        let mut f = Facts {
            postcode: imported.record.demographics.postcode.clone(),
            ..Facts::default()
        };
        for Item {
            category,
            field,
            value,
        } in &imported.items
        {
            match (category.as_str(), field.as_str()) {
                ("education.enrolment", "school_urn") => {
                    if let Some(urn) = value.as_str().map(str::trim).filter(|u| !u.is_empty()) {
                        f.school = Some(urn.to_string());
                    }
                }
                ("education.attendance", "terms") => {
                    for t in Vec::<TermRow>::deserialize(value)? {
                        let term = t.term.as_deref().and_then(Term::parse);
                        match (term, t.possible_sessions, t.attended_sessions) {
                            (Some(term), Some(p), Some(a)) if p >= 0 && (0..=p).contains(&a) => {
                                f.attendance.push((term, p, a))
                            }
                            _ => f.unplaced += 1,
                        }
                    }
                }
                ("education.exclusions", "exclusions") => {
                    for e in Vec::<ExclusionRow>::deserialize(value)? {
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
                _ => {}
            }
        }
        Ok(f)
    }

    /// The `attendance` and `exclusions` columns.
    fn encode(&self) -> (String, String) {
        let attendance: Vec<StoredTerm> = self
            .attendance
            .iter()
            .map(|&(t, p, a)| (t.year, t.term, p, a))
            .collect();
        let exclusions: Vec<StoredExclusion> = self
            .exclusions
            .iter()
            .map(|&(t, permanent)| (t.year, t.term, permanent))
            .collect();
        // Lists of numbers and booleans always serialise.
        (
            serde_json::to_string(&attendance).unwrap_or_else(|_| "[]".into()),
            serde_json::to_string(&exclusions).unwrap_or_else(|_| "[]".into()),
        )
    }

    /// Facts as [`Facts::encode`] stored them. An error, never a guess, for anything else: a
    /// report counts what was derived or fails. The report reads the columns with the rest
    /// of its pupils ([`Facts::stored`]); this is the one-record form, for tests.
    #[cfg(test)]
    pub(super) fn decode(
        school: Option<String>,
        postcode: Option<String>,
        attendance: &str,
        exclusions: &str,
        unplaced: i64,
    ) -> Result<Facts, sqlx::Error> {
        let attendance: Vec<StoredTerm> =
            serde_json::from_str(attendance).map_err(|_| bad("attendance"))?;
        let exclusions: Vec<StoredExclusion> =
            serde_json::from_str(exclusions).map_err(|_| bad("exclusions"))?;
        Facts::stored(school, postcode, attendance, exclusions, unplaced)
    }

    /// Facts from their stored columns once the JSON is read, which the report's read does for
    /// all of a source's pupils in one document ([`super::data::load`]).
    pub(super) fn stored(
        school: Option<String>,
        postcode: Option<String>,
        attendance: Vec<StoredTerm>,
        exclusions: Vec<StoredExclusion>,
        unplaced: i64,
    ) -> Result<Facts, sqlx::Error> {
        let term = |year: i32, term: u8| {
            (1..=3)
                .contains(&term)
                .then_some(Term { year, term })
                .ok_or_else(|| bad("a term outside 1–3"))
        };
        Ok(Facts {
            school,
            postcode,
            unplaced: usize::try_from(unplaced).map_err(|_| bad("unplaced"))?,
            attendance: attendance
                .into_iter()
                .map(|(year, t, possible, attended)| Ok((term(year, t)?, possible, attended)))
                .collect::<Result<_, sqlx::Error>>()?,
            exclusions: exclusions
                .into_iter()
                .map(|(year, t, permanent)| Ok((term(year, t)?, permanent)))
                .collect::<Result<_, sqlx::Error>>()?,
        })
    }
}

/// What a store's `area_facts` holds that [`Facts::decode`] refuses.
pub(super) fn bad(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("area_facts: {what}").into())
}

/// Writes the facts of `records` (local id, digest, facts) of `source` on `tx`, through
/// `staging` (COPY on PostgreSQL): the import's transaction, after it has written the records
/// themselves, so that the triggers have already dropped any facts of their old versions.
pub(crate) async fn insert(
    tx: &mut sqlx::AnyConnection,
    staging: &mut Staging,
    source: &str,
    records: &[(&str, &str, &Facts)],
) -> Result<(), sqlx::Error> {
    let encoded: Vec<(String, String, i64)> = records
        .iter()
        .map(|(_, _, f)| {
            let (attendance, exclusions) = f.encode();
            (
                attendance,
                exclusions,
                i64::try_from(f.unplaced).unwrap_or(i64::MAX),
            )
        })
        .collect();
    let rows = records
        .iter()
        .zip(&encoded)
        .map(|((id, digest, f), (att, exc, unplaced))| {
            [
                Cell::from(source),
                Cell::from(*id),
                Cell::from(*digest),
                Cell::Text(f.school.as_deref()),
                Cell::Text(f.postcode.as_deref()),
                Cell::from(att.as_str()),
                Cell::from(exc.as_str()),
                Cell::Int(*unplaced),
            ]
        });
    staging
        .insert(
            tx,
            "area_facts (source, local_id, digest, school, postcode, attendance, exclusions, unplaced)",
            "",
            rows,
        )
        .await
}

/// Derives the facts of every source the migration listed as imported before `area_facts`
/// existed, one source per transaction under the import's lock for that source (an import of
/// it waits, and so does another node's backfill, which then finds it done). Returns the
/// records derived. A record that cannot be read is counted nowhere, as at import.
pub async fn backfill(store: &Store) -> Result<usize, sqlx::Error> {
    let pending: Vec<String> = sqlx::query("SELECT source FROM area_facts_pending")
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(|r| r.try_get("source"))
        .collect::<Result<_, _>>()?;
    let mut derived = 0;
    for source in pending {
        let mut tx = store.begin_write().await?;
        store
            .lock_named(&mut tx, &format!("import:{source}"))
            .await?;
        let still = sqlx::query("SELECT source FROM area_facts_pending WHERE source = $1")
            .bind(&source)
            .fetch_optional(&mut *tx)
            .await?;
        if still.is_none() {
            continue;
        }
        let rows =
            sqlx::query("SELECT local_id, digest, record FROM import_records WHERE source = $1")
                .bind(&source)
                .fetch_all(&mut *tx)
                .await?;
        let mut records: Vec<(String, String, String)> = Vec::with_capacity(rows.len());
        for r in &rows {
            records.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?));
        }
        drop(rows);
        // Parsing a census is a second or more of CPU: off the runtime's threads.
        let derive = tokio::task::spawn_blocking(move || {
            let mut unreadable = 0;
            let facts: Vec<(String, String, Facts)> = records
                .into_iter()
                .filter_map(|(id, digest, json)| {
                    let f = serde_json::from_str::<Imported>(&json).and_then(|r| Facts::of(&r));
                    unreadable += usize::from(f.is_err());
                    Some((id, digest, f.ok()?))
                })
                .collect();
            (facts, unreadable)
        });
        let (facts, unreadable) = derive
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("deriving area facts: {e}")))?;
        if unreadable > 0 {
            // Counts only: the record is a child's.
            tracing::warn!(
                source,
                unreadable,
                "imported records the area report cannot read"
            );
        }
        sqlx::query("DELETE FROM area_facts WHERE source = $1")
            .bind(&source)
            .execute(&mut *tx)
            .await?;
        let refs: Vec<(&str, &str, &Facts)> = facts
            .iter()
            .map(|(id, digest, f)| (id.as_str(), digest.as_str(), f))
            .collect();
        let mut staging = store.staging();
        insert(&mut tx, &mut staging, &source, &refs).await?;
        sqlx::query("DELETE FROM area_facts_pending WHERE source = $1")
            .bind(&source)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        staging.finish().await;
        derived += facts.len();
        tracing::info!(source, records = facts.len(), "area facts derived");
    }
    Ok(derived)
}

/// Every way `area_facts` differs from the facts derived afresh from `import_records`: a
/// record's facts missing, stale or left behind. Empty when the table is true. For tests of
/// every writer of imported records, on both stores.
#[cfg(test)]
pub(crate) async fn drift(store: &Store) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut want: BTreeMap<(String, String), (String, Facts)> = BTreeMap::new();
    for r in sqlx::query("SELECT source, local_id, digest, record FROM import_records")
        .fetch_all(&store.pool)
        .await
        .unwrap()
    {
        let json: String = r.get("record");
        let parsed = serde_json::from_str::<Imported>(&json).and_then(|i| Facts::of(&i));
        if let Ok(f) = parsed {
            want.insert((r.get("source"), r.get("local_id")), (r.get("digest"), f));
        }
    }
    let mut drift = Vec::new();
    for r in sqlx::query(
        "SELECT source, local_id, digest, school, postcode, attendance, exclusions, unplaced \
         FROM area_facts",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap()
    {
        let key: (String, String) = (r.get("source"), r.get("local_id"));
        let digest: String = r.get("digest");
        let att: String = r.get("attendance");
        let exc: String = r.get("exclusions");
        let got = Facts::decode(
            r.get("school"),
            r.get("postcode"),
            &att,
            &exc,
            r.get("unplaced"),
        )
        .unwrap();
        match want.remove(&key) {
            None => drift.push(format!("{key:?}: facts of no readable record")),
            Some((d, f)) if d != digest || f != got => {
                drift.push(format!("{key:?}: stale ({got:?}, derived afresh {f:?})"))
            }
            Some(_) => {}
        }
    }
    drift.extend(want.keys().map(|k| format!("{k:?}: no facts")));
    drift
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn imported(items: serde_json::Value) -> Imported {
        serde_json::from_value(json!({
            "record": {"local_id": "p1", "identifiers": [], "demographics": {"postcode": "WT3 5QP"}},
            "items": items,
        }))
        .unwrap()
    }

    #[test]
    fn a_records_facts_are_what_the_report_counts_and_survive_storage() {
        let r = imported(json!([
            {"category": "education.enrolment", "field": "school_urn", "value": " 100002 "},
            {"category": "education.enrolment", "field": "school_urn", "value": ""},
            {"category": "education.attendance", "field": "terms", "value": [
                {"term": "Autumn 2024", "possible_sessions": 100, "attended_sessions": 85},
                {"term": "Week 3", "possible_sessions": 10, "attended_sessions": 10},
                {"term": "Spring 2025", "possible_sessions": 10, "attended_sessions": 11}
            ]},
            {"category": "education.exclusions", "field": "exclusions", "value": [
                {"kind": "suspension", "start_date": "2025-02-03"},
                {"kind": "lunchtime", "start_date": "2025-02-04"},
                {"kind": "permanent", "start_date": "2025-05-01"}
            ]},
            {"category": "identity.core", "field": "family_name", "value": "Khan"}
        ]));
        let f = Facts::of(&r).unwrap();
        let autumn = Term::parse("Autumn 2024").unwrap();
        let (spring, summer) = (Term { term: 2, ..autumn }, Term { term: 3, ..autumn });
        assert_eq!(
            f,
            Facts {
                school: Some("100002".into()),
                postcode: Some("WT3 5QP".into()),
                attendance: vec![(autumn, 100, 85)],
                exclusions: vec![(spring, false), (summer, true)],
                unplaced: 2,
            }
        );
        let (att, exc) = f.encode();
        assert_eq!(att, "[[2024,1,100,85]]");
        assert_eq!(exc, "[[2024,2,false],[2024,3,true]]");
        let back = Facts::decode(f.school.clone(), f.postcode.clone(), &att, &exc, 2).unwrap();
        assert_eq!(back, f);
        // Anything but what was stored is refused, not guessed at.
        assert!(Facts::decode(None, None, "[[2024,4,1,1]]", "[]", 0).is_err());
        assert!(Facts::decode(None, None, "{}", "[]", 0).is_err());
        assert!(Facts::decode(None, None, "[]", "[]", -1).is_err());
    }

    #[test]
    fn a_record_whose_counted_items_are_misshapen_is_refused_whole() {
        let r = imported(json!([
            {"category": "education.attendance", "field": "terms", "value": [
                {"term": "Autumn 2024", "possible_sessions": "100", "attended_sessions": 85}
            ]}
        ]));
        assert!(Facts::of(&r).is_err());
        let r = imported(json!([
            {"category": "education.exclusions", "field": "exclusions", "value": "none"}
        ]));
        assert!(Facts::of(&r).is_err());
        // A school that is not text is no school; the record is still counted.
        let r = imported(json!([
            {"category": "education.enrolment", "field": "school_urn", "value": 100002}
        ]));
        assert_eq!(Facts::of(&r).unwrap().school, None);
    }
}
