//! Data quality, for cleaning at source: for each source, its records that disagree with
//! another system's record of the same child (names, date of birth, sex, postcode, address,
//! school), identifiers that fail their check, records waiting in the review queue, and records
//! of the one source that are likely the same child — with each source's counts, and the
//! counts of earlier days so a data team can watch them fall.
//!
//! - [`findings`]: what is wrong, worked out from the master child index.
//! - [`history`]: the counts by day (`quality_snapshots`), written by every report taken.
//!
//! Policy decides who reads which (`policies/policy.csv`, the `quality.*` categories, purpose
//! `audit`): `quality.all_sources` (a data administrator) every source with the other systems'
//! values side by side; `quality.own_sources` (an agency's data manager) only the sources of
//! their own agency, each record with the fields that disagree named but never another
//! agency's value, record or source. Every read is one audit entry, refusals included; if it
//! cannot be written nothing is returned.

pub mod findings;
pub mod history;

use std::collections::BTreeSet;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;

use crate::foundation::domain::Purpose;
use crate::foundation::error::Error;
use crate::gateway::Gateway;
use crate::pipeline::authenticate::Principal;
use crate::pipeline::authorise::{Effect, Question};
use findings::{Counts, Findings};
use history::Snapshot;

pub const ACTION: &str = "quality_report";

/// The categories of data-quality reports policy decides on.
pub const ALL_SOURCES: &str = "quality.all_sources";
pub const OWN_SOURCES: &str = "quality.own_sources";

/// Reports are read for the purpose of auditing the data the partnership holds.
pub const PURPOSE: Purpose = Purpose::Audit;

/// The response's JSON Schema, embedded in the OpenAPI document (`http::contract`).
pub const SCHEMA: &str = include_str!("../../../../schemas/quality-report.schema.json");

/// What a report is asked for: every source the reader may see, or one of them.
#[derive(Debug, Clone, Default)]
pub struct QualityQuery {
    pub source: Option<String>,
}

/// How far a reader sees, as policy decided, with the deciding rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The other systems' values and records beside each disagreement.
    pub values: bool,
    /// The sources the reader may see.
    pub sources: Vec<String>,
    pub rule: String,
}

impl Access {
    /// Policy's answer for `who`; `None` when it shows them no data-quality report.
    pub fn decide(gw: &Gateway, who: &Principal) -> Option<Access> {
        let policy = gw.policy();
        let permit = |category: &str| {
            let d = policy.decide(&Question {
                role: who.role,
                agency: &who.agency,
                kind: who.agency_kind,
                category,
                purpose: PURPOSE,
            });
            (d.effect == Effect::Permit).then_some(d.rule)
        };
        if let Some(rule) = permit(ALL_SOURCES) {
            let sources = gw.config.sources.iter().map(|s| s.id.clone()).collect();
            return Some(Access {
                values: true,
                sources,
                rule,
            });
        }
        let rule = permit(OWN_SOURCES)?;
        Some(Access {
            values: false,
            sources: gw.sources_of(&who.agency),
            rule,
        })
    }
}

/// One source's counts as published.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub source: String,
    pub records: u64,
    pub disagreeing_records: u64,
    /// Disagreements by field (each record and field once).
    pub disagreements: std::collections::BTreeMap<&'static str, u64>,
    pub disagreements_total: u64,
    pub invalid_identifiers: u64,
    pub in_review: u64,
    pub duplicate_pairs: u64,
}

impl SourceSummary {
    fn of(source: &str, c: &Counts) -> SourceSummary {
        SourceSummary {
            source: source.to_string(),
            records: c.records,
            disagreeing_records: c.disagreeing_records,
            disagreements: findings::FIELDS
                .iter()
                .map(|f| (*f, c.disagreements.get(f).copied().unwrap_or(0)))
                .collect(),
            disagreements_total: c.disagreements_total(),
            invalid_identifiers: c.invalid_identifiers,
            in_review: c.in_review,
            duplicate_pairs: c.duplicate_pairs,
        }
    }
}

/// A field on which a record disagrees with another system's record of the child. A source's
/// own data manager sees the field only.
#[derive(Debug, Clone, Serialize)]
pub struct DisagreementRow {
    pub field: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_local_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_value: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentifierRow {
    pub kind: String,
    /// The source's own value, as it wrote it.
    pub value: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateRow {
    /// The other record of the same source.
    pub local_id: String,
    /// Both are linked to one child already.
    pub same_child: bool,
    pub probability: f64,
}

/// One record with something to correct.
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    pub source: String,
    pub local_id: String,
    /// The Weft child it is linked to (data administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_id: Option<String>,
    pub disagreements: Vec<DisagreementRow>,
    pub invalid_identifiers: Vec<IdentifierRow>,
    pub in_review: bool,
    pub likely_duplicates: Vec<DuplicateRow>,
}

/// The report (`schemas/quality-report.schema.json`).
#[derive(Debug, Clone, Serialize)]
pub struct QualityReport {
    pub generated_at: String,
    /// `all_sources` or `own_sources`.
    pub scope: &'static str,
    /// Whether other systems' values and records are shown beside each disagreement.
    pub values_shown: bool,
    pub sources: Vec<SourceSummary>,
    /// Each source's counts by day, oldest first.
    pub history: Vec<Snapshot>,
    pub records: Vec<RecordRow>,
}

/// Everything worked out for every source, the same for every reader: what a report filters.
pub async fn compute(gw: &Gateway) -> Result<Findings, Error> {
    let loaded = findings::load(&gw.store).await.map_err(|e| {
        tracing::error!(error = %e, "data-quality report: the index cannot be read");
        Error::Unavailable("the master child index cannot be read (see the gateway's log)")
    })?;
    let sources: Vec<String> = gw.config.sources.iter().map(|s| s.id.clone()).collect();
    let gw2 = gw.clone();
    // Scoring pairs within a source is CPU work: off the request threads.
    tokio::task::spawn_blocking(move || findings::find(&loaded, gw2.index.matcher(), &sources))
        .await
        .map_err(|e| Error::Internal(format!("data-quality report: {e}")))
}

/// Works out every source's counts and writes them as today's snapshot: what a report does
/// before it filters, and what `weft quality snapshot` does on a schedule.
pub async fn snapshot(gw: &Gateway) -> Result<Findings, Error> {
    let found = compute(gw).await?;
    history::record(&gw.store, &found.counts, Utc::now())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "data-quality counts not recorded");
            Error::Unavailable("the data-quality counts cannot be recorded (see the gateway's log)")
        })?;
    Ok(found)
}

/// The data-quality report as `who` may see it. `q` is `Err` when the interface could not
/// read the query; that refusal is audited too.
pub async fn report(
    gw: &Gateway,
    who: &Principal,
    q: Result<QualityQuery, Error>,
) -> Result<QualityReport, Error> {
    let source = match q.and_then(|q| {
        if q.source.as_deref().is_some_and(|s| s.len() > 128) {
            return Err(Error::field("/source", "at most 128 characters"));
        }
        Ok(q.source)
    }) {
        Ok(s) => s,
        Err(e) => return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await),
    };
    let Some(access) = Access::decide(gw, who) else {
        let e = Error::Forbidden("data-quality reports are not open to this role");
        return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await);
    };
    let wanted: Vec<String> = match &source {
        None => access.sources.clone(),
        Some(s) if access.sources.contains(s) => vec![s.clone()],
        Some(s) if gw.config.sources.iter().any(|c| &c.id == s) => {
            let e = Error::Forbidden("this source's data-quality report is open to its own agency and data administrators");
            return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await);
        }
        // A well-formed id that names nothing: not found, as an unknown child is.
        Some(_) => {
            let e = Error::NotFound("no source of that id is configured");
            return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await);
        }
    };
    let found = match snapshot(gw).await {
        Ok(f) => f,
        Err(e) => return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await),
    };
    let history = match history::read(&gw.store, Some(access.sources.as_slice())).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "data-quality history unreadable");
            let e = Error::Unavailable("the data-quality counts cannot be read");
            return Err(gw.refuse(who, ACTION, None, Some(PURPOSE), e).await);
        }
    };
    let report = publish(&found, &access, &wanted, history);
    gw.record(
        who,
        ACTION,
        None,
        Some(PURPOSE),
        "shown",
        json!({
            "report": "quality",
            "scope": report.scope,
            "values_shown": report.values_shown,
            "sources": wanted,
            "counted_sources": access.sources,
            "rules": [access.rule],
            "records": report.records.len(),
        }),
    )
    .await?;
    Ok(report)
}

/// The findings of `sources` as `access` may see them, beside the counts of every source it
/// may see (so a reader looking at one source still sees where the others stand).
pub fn publish(
    found: &Findings,
    access: &Access,
    sources: &[String],
    history: Vec<Snapshot>,
) -> QualityReport {
    let records = found
        .records
        .iter()
        .filter(|f| sources.contains(&f.source))
        .map(|f| {
            let disagreements = if access.values {
                f.disagreements
                    .iter()
                    .map(|d| DisagreementRow {
                        field: d.field,
                        other_source: Some(d.other_source.clone()),
                        other_local_id: Some(d.other_local_id.clone()),
                        value: Some(d.value.clone()),
                        other_value: Some(d.other_value.clone()),
                    })
                    .collect()
            } else {
                // Each field once: how many other systems disagree would say how many hold
                // the child.
                let fields: BTreeSet<usize> = f
                    .disagreements
                    .iter()
                    .filter_map(|d| findings::FIELDS.iter().position(|x| *x == d.field))
                    .collect();
                fields
                    .into_iter()
                    .map(|i| DisagreementRow {
                        field: findings::FIELDS[i],
                        other_source: None,
                        other_local_id: None,
                        value: None,
                        other_value: None,
                    })
                    .collect()
            };
            RecordRow {
                source: f.source.clone(),
                local_id: f.local_id.clone(),
                child_id: f.child.clone().filter(|_| access.values),
                disagreements,
                invalid_identifiers: f
                    .invalid_identifiers
                    .iter()
                    .map(|i| IdentifierRow {
                        kind: i.kind.clone(),
                        value: i.value.clone(),
                        problem: i.problem.clone(),
                    })
                    .collect(),
                in_review: f.in_review,
                likely_duplicates: f
                    .duplicates
                    .iter()
                    .map(|d| DuplicateRow {
                        local_id: d.local_id.clone(),
                        same_child: d.same_child,
                        probability: (d.probability * 1000.0).round() / 1000.0,
                    })
                    .collect(),
            }
        })
        .collect();
    let empty = Counts::default();
    QualityReport {
        generated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        scope: if access.values {
            "all_sources"
        } else {
            "own_sources"
        },
        values_shown: access.values,
        sources: access
            .sources
            .iter()
            .map(|s| SourceSummary::of(s, found.counts.get(s).unwrap_or(&empty)))
            .collect(),
        history,
        records,
    }
}

/// The CSV columns: a data administrator's, then a source's own data manager's (no child, no
/// other system's record or value).
const ADMIN_COLUMNS: [&str; 10] = [
    "source",
    "local_id",
    "child_id",
    "problem",
    "field",
    "other_source",
    "other_local_id",
    "value",
    "other_value",
    "note",
];
const OWNER_COLUMNS: [&str; 6] = ["source", "local_id", "problem", "field", "value", "note"];

/// The report as CSV, one row per problem: `disagreement` (one per field, and for a data
/// administrator per other record), `invalid_identifier`, `in_review`, `likely_duplicate`.
pub fn to_csv(report: &QualityReport) -> Result<Vec<u8>, Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    let admin = report.values_shown;
    if admin {
        out.write_record(ADMIN_COLUMNS).map_err(fail)?;
    } else {
        out.write_record(OWNER_COLUMNS).map_err(fail)?;
    }
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    for r in &report.records {
        let mut rows: Vec<[String; 10]> = Vec::new();
        let row = |problem: &str,
                   field: &str,
                   other_source: String,
                   other_local_id: String,
                   value: String,
                   other_value: String,
                   note: String| {
            [
                r.source.clone(),
                r.local_id.clone(),
                s(&r.child_id),
                problem.to_string(),
                field.to_string(),
                other_source,
                other_local_id,
                value,
                other_value,
                note,
            ]
        };
        for d in &r.disagreements {
            rows.push(row(
                "disagreement",
                d.field,
                s(&d.other_source),
                s(&d.other_local_id),
                s(&d.value),
                s(&d.other_value),
                String::new(),
            ));
        }
        for i in &r.invalid_identifiers {
            rows.push(row(
                "invalid_identifier",
                &i.kind,
                String::new(),
                String::new(),
                i.value.clone(),
                String::new(),
                i.problem.clone(),
            ));
        }
        if r.in_review {
            rows.push(row(
                "in_review",
                "",
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                "a proposed link awaits a person's decision".into(),
            ));
        }
        for d in &r.likely_duplicates {
            rows.push(row(
                "likely_duplicate",
                "",
                r.source.clone(),
                d.local_id.clone(),
                String::new(),
                String::new(),
                if d.same_child {
                    "linked to the same child".into()
                } else {
                    format!("probability {}", d.probability)
                },
            ));
        }
        for mut x in rows {
            if admin {
                out.write_record(&x).map_err(fail)?;
            } else {
                // A duplicate's other record is the source's own: named in the value column.
                if x[3] == "likely_duplicate" {
                    x[7] = x[6].clone();
                }
                out.write_record([&x[0], &x[1], &x[3], &x[4], &x[7], &x[9]])
                    .map_err(fail)?;
            }
        }
    }
    out.into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))
}

/// The counts over time as CSV: one row per source and day.
pub fn history_csv(report: &QualityReport) -> Result<Vec<u8>, Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| Error::Internal(format!("writing CSV: {e}"));
    out.write_record([
        "day",
        "source",
        "records",
        "disagreeing_records",
        "disagreements",
        "invalid_identifiers",
        "in_review",
        "duplicate_pairs",
    ])
    .map_err(fail)?;
    for h in &report.history {
        out.write_record([
            h.day.clone(),
            h.source.clone(),
            h.records.to_string(),
            h.disagreeing_records.to_string(),
            h.disagreements.to_string(),
            h.invalid_identifiers.to_string(),
            h.in_review.to_string(),
            h.duplicate_pairs.to_string(),
        ])
        .map_err(fail)?;
    }
    out.into_inner()
        .map_err(|e| Error::Internal(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::findings::tests::{person, planted, upn};
    use super::*;
    use crate::pipeline::resolve::linkage::Matcher;
    use crate::pipeline::resolve::Index;
    use weft_adapters::{Identifier, SourceRecord};

    fn found() -> Findings {
        let sources = ["census", "health", "social-care"].map(String::from);
        findings::find(&planted(), &Matcher::builtin(), &sources)
    }

    fn owner() -> Access {
        Access {
            values: false,
            sources: vec!["census".into()],
            rule: "DM-AUDIT-QUALITY-OWN-SOURCES".into(),
        }
    }

    /// What the other systems hold about the school's children, none of which its data
    /// manager may see.
    const OTHERS: &[&str] = &[
        "Eva",
        "02/03/2014",
        "2014-02-03",
        "female",
        "wt11aa",
        "WT1 1AB",
        "1 High St",
        "3 High Street",
        "100002",
        "9434765910",
        "9434765919",
        "health",
        "social-care",
        "sc1",
        "h1",
        "h2",
        "sc7",
        "Leo",
        "Ruby",
    ];

    #[test]
    fn a_source_owner_sees_its_own_records_fields_never_another_agencys_values() {
        let found = found();
        let report = publish(&found, &owner(), &["census".into()], Vec::new());
        assert_eq!(report.scope, "own_sources");
        assert!(!report.values_shown);
        let json = serde_json::to_string(&report).unwrap();
        let csv = String::from_utf8(to_csv(&report).unwrap()).unwrap();
        for text in [&json, &csv] {
            for other in OTHERS {
                assert!(!text.contains(other), "{other} in {text}");
            }
        }
        assert!(!json.contains("child_id"), "{json}");
        assert!(!json.contains("other_"), "{json}");
        // Which of its records disagree, and on which fields, each once.
        let s1 = report.records.iter().find(|r| r.local_id == "s1").unwrap();
        let fields: Vec<&str> = s1.disagreements.iter().map(|d| d.field).collect();
        assert_eq!(
            fields,
            [
                "given_name",
                "birth_date",
                "sex",
                "postcode",
                "address",
                "school"
            ]
        );
        // Its own problems in full: the failing UPN as it wrote it, the duplicate pupil.
        let s2 = report.records.iter().find(|r| r.local_id == "s2").unwrap();
        assert_eq!(s2.invalid_identifiers[0].value, upn(17).1);
        assert!(csv.contains("s3,likely_duplicate,,s4,"), "{csv}");
        assert!(csv.contains("s1,disagreement,given_name,,"), "{csv}");
        assert!(csv.starts_with("source,local_id,problem,field,value,note\n"));
        // Only its own sources, counts included.
        assert!(report.records.iter().all(|r| r.source == "census"));
        assert_eq!(report.sources.len(), 1);
        assert_eq!(report.sources[0].disagreements["given_name"], 1);
    }

    #[test]
    fn a_data_administrator_sees_both_values_and_the_other_record() {
        let found = found();
        let admin = Access {
            values: true,
            sources: ["census", "health", "social-care"]
                .map(String::from)
                .to_vec(),
            rule: "DA-AUDIT-QUALITY-ALL-SOURCES".into(),
        };
        let report = publish(&found, &admin, &admin.sources.clone(), Vec::new());
        let csv = String::from_utf8(to_csv(&report).unwrap()).unwrap();
        assert!(
            csv.contains("census,s1,c1,disagreement,given_name,health,h1,Ava,Eva,"),
            "{csv}"
        );
        assert!(
            csv.contains(
                "social-care,sc1,c1,disagreement,birth_date,census,s1,2014-02-03,2014-03-02,"
            ),
            "{csv}"
        );
        assert!(csv.contains("social-care,sc7,c7,in_review,"), "{csv}");
        assert!(csv.contains("health,h8,c8,likely_duplicate,,health,h9,,,linked to the same child"));
        let json = serde_json::to_value(&report).unwrap();
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let problems: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }

    fn rec(id: &str, d: weft_adapters::Demographics, ids: &[(&str, &str)]) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: ids.iter().map(|(k, v)| Identifier::new(*k, *v)).collect(),
            demographics: d,
            score: None,
            restricted: false,
        }
    }

    /// The report reads the index as the index writes it, on the store this run exercises
    /// (`WEFT_TEST_STORE`): links, flagged identifiers, the school of an imported record, the
    /// review queue; and each day's counts are kept, the day's last replacing the first.
    #[tokio::test]
    async fn reads_the_index_and_keeps_counts_by_day() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::with_matcher(store.clone(), Matcher::builtin());
        let (good, bad) = upn(3);
        let ava = || person("Ava", "Khan", "2014-03-02", "F", "WT1 1AA", "1 High Street");
        let (child, _) = index
            .upsert("census", &rec("s1", ava(), &[("upn", &good)]))
            .await
            .unwrap();
        let mut eva = ava();
        eva.given_name = Some("Eva".into());
        index
            .upsert("social-care", &rec("sc1", eva, &[("upn", &good)]))
            .await
            .unwrap();
        let noah = person("Noah", "Smith", "2013-05-06", "M", "WT2 3BB", "5 Mill Lane");
        index
            .upsert("census", &rec("s2", noah, &[("upn", &bad)]))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO import_records (source, local_id, digest, record, imported_at) \
             VALUES ('census', 's1', 'd', $1, '2025-01-01T00:00:00Z')",
        )
        .bind(
            serde_json::json!({"record": {}, "items": [
                {"category": "education.enrolment", "field": "school_urn", "value": "100001"}
            ]})
            .to_string(),
        )
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO match_links (id, source, local_id, child_id, status, method, \
             explanation, created_at) VALUES ('l-review', 'census', 's2', $1, 'review', \
             'probabilistic', '[]', '2025-01-01T00:00:00Z')",
        )
        .bind(&child)
        .execute(&store.pool)
        .await
        .unwrap();

        let loaded = findings::load(&store).await.unwrap();
        let school = loaded
            .records
            .iter()
            .find(|h| h.local_id == "s1")
            .and_then(|h| h.school.clone());
        assert_eq!(school.as_deref(), Some("100001"));
        let sources = ["census", "social-care"].map(String::from);
        let f = findings::find(&loaded, &Matcher::builtin(), &sources);
        let s1 = f.records.iter().find(|r| r.local_id == "s1").unwrap();
        assert_eq!(s1.child.as_deref(), Some(child.as_str()));
        assert_eq!(s1.disagreements.len(), 1);
        assert_eq!(s1.disagreements[0].field, "given_name");
        let s2 = f.records.iter().find(|r| r.local_id == "s2").unwrap();
        assert_eq!(s2.invalid_identifiers.len(), 1);
        assert!(s2.in_review);

        // Counts by day: the day's last report replaces its first; other days stay.
        let day = |d: &str| {
            chrono::DateTime::parse_from_rfc3339(d)
                .unwrap()
                .with_timezone(&Utc)
        };
        history::record(&store, &f.counts, day("2025-01-01T09:00:00Z"))
            .await
            .unwrap();
        let mut fewer = f.counts.clone();
        fewer.get_mut("census").unwrap().invalid_identifiers = 0;
        history::record(&store, &fewer, day("2025-01-01T17:00:00Z"))
            .await
            .unwrap();
        history::record(&store, &fewer, day("2025-01-02T09:00:00Z"))
            .await
            .unwrap();
        let census = vec!["census".to_string()];
        let rows = history::read(&store, Some(census.as_slice()))
            .await
            .unwrap();
        let days: Vec<(&str, i64, i64)> = rows
            .iter()
            .map(|r| (r.day.as_str(), r.invalid_identifiers, r.disagreements))
            .collect();
        assert_eq!(days, [("2025-01-01", 0, 1), ("2025-01-02", 0, 1)]);
        assert_eq!(history::read(&store, None).await.unwrap().len(), 4);
    }
}
