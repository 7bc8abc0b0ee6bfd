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

use std::collections::HashSet;

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

#[derive(Deserialize)]
struct StoredItem {
    category: String,
    field: String,
    value: serde_json::Value,
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
            let row = sqlx::query("SELECT MAX(updated_at) AS at FROM source_records WHERE source = $1")
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

    let known: HashSet<String> = if cat.social_care.is_empty() {
        HashSet::new()
    } else {
        let sql = format!(
            "SELECT DISTINCT child_id FROM source_records WHERE child_id IS NOT NULL AND source IN ({})",
            placeholders(1, cat.social_care.len())
        );
        let mut q = sqlx::query(&sql);
        for (s, _, _) in &cat.social_care {
            q = q.bind(s);
        }
        q.fetch_all(&store.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("child_id"))
            .collect::<Result<_, _>>()?
    };

    let sql = format!(
        "SELECT ir.source AS source, ir.record AS record, sr.child_id AS child_id \
         FROM import_records ir LEFT JOIN source_records sr \
           ON sr.source = ir.source AND sr.local_id = ir.local_id \
         WHERE ir.source IN ({})",
        placeholders(1, cat.education.len())
    );
    let mut q = sqlx::query(&sql);
    for (s, _) in &cat.education {
        q = q.bind(s);
    }
    let rows = q.fetch_all(&store.pool).await?;
    loaded.pupils.reserve(rows.len());
    for r in &rows {
        let source: String = r.try_get("source")?;
        let text: String = r.try_get("record")?;
        let child: Option<String> = r.try_get("child_id")?;
        let Some(index) = cat.education.iter().position(|(s, _)| *s == source) else {
            continue;
        };
        // A record the import wrote is well formed; one that is not is counted nowhere rather
        // than failing the whole report (and is not logged: it is a child's record).
        let Ok(stored) = serde_json::from_str::<Stored>(&text) else {
            tracing::warn!(source, "an imported record could not be read for the area report");
            continue;
        };
        let agency = &cat.education[index].1;
        let mut pupil = Pupil {
            source: index,
            school: agency.strip_prefix("urn-").unwrap_or(agency).to_string(),
            area: areas.area_of(stored.record.demographics.postcode.as_deref()),
            known_to_social_care: child.is_some_and(|c| known.contains(&c)),
            ..Pupil::default()
        };
        for item in &stored.items {
            match (item.category.as_str(), item.field.as_str()) {
                ("education.enrolment", "school_urn") => {
                    if let Some(urn) = item.value.as_str().filter(|u| !u.trim().is_empty()) {
                        pupil.school = urn.trim().to_string();
                    }
                }
                ("education.attendance", "terms") => {
                    for t in item.value.as_array().into_iter().flatten() {
                        let term = t.get("term").and_then(|v| v.as_str()).and_then(Term::parse);
                        let possible = t.get("possible_sessions").and_then(|v| v.as_i64());
                        let attended = t.get("attended_sessions").and_then(|v| v.as_i64());
                        match (term, possible, attended) {
                            (Some(term), Some(p), Some(a)) if p >= 0 && (0..=p).contains(&a) => {
                                pupil.attendance.push((term, p, a))
                            }
                            _ => loaded.unplaced_terms += 1,
                        }
                    }
                }
                ("education.exclusions", "exclusions") => {
                    for e in item.value.as_array().into_iter().flatten() {
                        let term = e
                            .get("start_date")
                            .and_then(|v| v.as_str())
                            .and_then(Term::of_date);
                        let permanent = match e.get("kind").and_then(|v| v.as_str()) {
                            Some("permanent") => true,
                            Some("suspension") => false,
                            // Lunchtime exclusions are not counted, as the DfE's tables do not.
                            _ => continue,
                        };
                        if let Some(term) = term {
                            pupil.exclusions.push((term, permanent));
                        }
                    }
                }
                _ => {}
            }
        }
        loaded.pupils.push(pupil);
    }
    Ok(loaded)
}
