//! Probabilistic linking in the master child index. When no verified identifier links a
//! record, the blocking keys kept in the store find the candidate records, the Fellegi–Sunter
//! model scores them, and two thresholds decide: at or above the upper, link automatically;
//! between, start a child of its own and put the match in the review queue; below, a new child.
//!
//! Every link is a row of `match_links` with its score, model version and per-comparison
//! explanation. Rows are never deleted: a link that ends keeps its row, so a child's link
//! history can always be shown. A person's decision (confirm, reject, split) is never undone by
//! the matcher: linked records are never moved automatically, and a rejected or split pairing
//! is never proposed again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use weft_adapters::{Demographics, Identifier};

use crate::config::MatchingConfig;
use crate::matching::block::{default_rules, Rule};
use crate::matching::link::{comparisons_for, usable_rules};
use crate::matching::model::ModelError;
use crate::matching::{Explained, Field, Model, Record, Score, Scorer, TermFrequencies};

/// The fields every source's demographics can give.
pub const FIELDS: [Field; 5] = [
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Sex,
    Field::Postcode,
];

/// The model used when the configuration names none: trained without labels by `weft bench
/// match --save-model` on its synthetic children. A model trained on the authority's own
/// records with `weft match train` should replace it.
const BUILTIN_MODEL: &str = include_str!("matching/default_model.json");

/// Below this probability a candidate is not worth showing at all.
pub const POSSIBLE: f64 = 0.05;

/// Candidates read from the store for one record, at most; blocking keeps it far below.
const MAX_CANDIDATES: i64 = 2000;

/// How sure a search is that a child is the one asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// A shared verified identifier, or a probability at or above the upper threshold.
    Certain,
    /// Between the thresholds: what a reviewer would be asked about.
    Probable,
    /// Below the lower threshold but not negligible.
    Possible,
}

/// The matcher the index uses: a model and its two thresholds.
pub struct Matcher {
    pub model: Model,
    pub upper: f64,
    pub lower: f64,
    rules: Vec<Rule>,
}

impl Matcher {
    pub fn from_config(cfg: &MatchingConfig) -> Result<Self, ModelError> {
        let model = match &cfg.model {
            Some(path) => Model::load(path)?,
            None => Model::from_json(BUILTIN_MODEL)?,
        };
        let kinds = comparisons_for(&FIELDS);
        let unknown: Vec<_> = model
            .comparison_kinds()
            .into_iter()
            .filter(|c| !kinds.contains(c))
            .collect();
        if !unknown.is_empty() {
            return Err(ModelError::Invalid(format!(
                "the index can compare only given_name, family_name, birth_date, sex and postcode; the model also has {unknown:?}"
            )));
        }
        Ok(Self {
            model,
            upper: cfg.upper,
            lower: cfg.lower,
            rules: usable_rules(&default_rules(), &FIELDS),
        })
    }

    /// The built-in model with the default thresholds.
    pub fn builtin() -> Self {
        match Self::from_config(&MatchingConfig::default()) {
            Ok(m) => m,
            // The built-in model is part of the build and checked by a unit test.
            Err(e) => panic!("built-in matching model: {e}"),
        }
    }

    pub fn grade(&self, probability: f64) -> Option<Grade> {
        if probability >= self.upper {
            Some(Grade::Certain)
        } else if probability >= self.lower {
            Some(Grade::Probable)
        } else if probability >= POSSIBLE {
            Some(Grade::Possible)
        } else {
            None
        }
    }

    /// The blocking keys of a record, as the store keeps them.
    pub fn keys(&self, r: &Record) -> Vec<(String, String)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((rule.to_string(), rule.text_key(r)?)))
            .collect()
    }

    /// Replaces a source record's blocking keys.
    pub async fn write_keys(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        r: &Record,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM match_keys WHERE source = $1 AND local_id = $2")
            .bind(source)
            .bind(local_id)
            .execute(&mut *conn)
            .await?;
        for (rule, key) in self.keys(r) {
            sqlx::query(
                "INSERT INTO match_keys (rule, key, source, local_id) VALUES ($1, $2, $3, $4)",
            )
            .bind(rule)
            .bind(key)
            .bind(source)
            .bind(local_id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// The best-scoring record of each candidate child, best first. Children in `exclude` (a
    /// person said no) are left out, as is any child one of whose records holds a verified NHS
    /// number or UPN that differs from the record's own: two valid, different national
    /// identifiers are two children.
    pub async fn candidates(
        &self,
        conn: &mut AnyConnection,
        r: &Record,
        exclude: &[String],
        skip: Option<(&str, &str)>,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let keys = self.keys(r);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = String::from(
            "SELECT DISTINCT sr.source AS source, sr.local_id AS local_id, sr.child_id AS child_id, \
             sr.identifiers AS identifiers, sr.demographics AS demographics \
             FROM match_keys k JOIN source_records sr ON sr.source = k.source AND sr.local_id = k.local_id \
             WHERE sr.child_id IS NOT NULL AND (",
        );
        for i in 0..keys.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!(
                "(k.rule = ${} AND k.key = ${})",
                2 * i + 1,
                2 * i + 2
            ));
        }
        sql.push_str(&format!(") LIMIT {MAX_CANDIDATES}"));
        let mut q = sqlx::query(&sql);
        for (rule, key) in &keys {
            q = q.bind(rule).bind(key);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&self.model, &tf);
        let mut best: BTreeMap<String, Candidate> = BTreeMap::new();
        let mut conflicting: Vec<String> = Vec::new();
        for row in &rows {
            let source: String = row.try_get("source")?;
            let local_id: String = row.try_get("local_id")?;
            if skip == Some((source.as_str(), local_id.as_str())) {
                continue;
            }
            let child: String = row.try_get("child_id")?;
            if exclude.contains(&child) {
                continue;
            }
            let other = stored_record(
                &local_id,
                &row.try_get::<String, _>("demographics")?,
                &row.try_get::<String, _>("identifiers")?,
            );
            if identifiers_conflict(r, &other) {
                conflicting.push(child);
                continue;
            }
            let score = scorer.score(r, &other);
            if best
                .get(&child)
                .is_none_or(|b| score.weight > b.score.weight)
            {
                best.insert(
                    child.clone(),
                    Candidate {
                        child,
                        source,
                        local_id,
                        score,
                        explanation: scorer.explain(r, &other),
                    },
                );
            }
        }
        let mut out: Vec<Candidate> = best
            .into_values()
            .filter(|c| !conflicting.contains(&c.child))
            .collect();
        out.sort_by(|a, b| b.score.weight.total_cmp(&a.score.weight));
        Ok(out)
    }

    /// Children a person has ruled out for this record: rejected proposals and split links.
    pub async fn excluded(
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT DISTINCT child_id FROM match_links WHERE source = $1 AND local_id = $2 \
             AND status IN ('rejected', 'split')",
        )
        .bind(source)
        .bind(local_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|r| r.try_get("child_id")).collect()
    }
}

/// A candidate child, through its best-scoring record.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub child: String,
    pub source: String,
    pub local_id: String,
    pub score: Score,
    pub explanation: Vec<Explained>,
}

/// An identifier as the index stores it (see `resolve::Checked`).
#[derive(Deserialize)]
struct StoredIdentifier {
    kind: String,
    value: String,
    valid: bool,
}

/// A stored record as the matcher sees it: only verified identifiers.
pub fn stored_record(local_id: &str, demographics: &str, identifiers: &str) -> Record {
    let d: Demographics = serde_json::from_str(demographics).unwrap_or_default();
    let ids: Vec<StoredIdentifier> = serde_json::from_str(identifiers).unwrap_or_default();
    let ids: Vec<Identifier> = ids
        .into_iter()
        .filter(|i| i.valid)
        .map(|i| Identifier::new(i.kind, i.value))
        .collect();
    Record::from_demographics(local_id, &d, &ids)
}

fn identifiers_conflict(a: &Record, b: &Record) -> bool {
    let nhs = matches!((&a.nhs_number, &b.nhs_number), (Some(x), Some(y)) if x != y);
    let upn = matches!((&a.upn, &b.upn), (Some(x), Some(y)) if x != y);
    nhs || upn
}

/// One row of a child's link history, or of the review queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LinkRow {
    pub id: String,
    pub source: String,
    pub local_id: String,
    pub child_id: String,
    /// `active`, `review`, `rejected`, `superseded` or `split`.
    pub status: String,
    /// `identifier:<kind>`, `probabilistic`, `new` or `manual`.
    pub method: String,
    pub probability: Option<f64>,
    pub match_weight: Option<f64>,
    pub model_version: Option<String>,
    pub explanation: Vec<Explained>,
    pub decided_by: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub ended_at: Option<String>,
}

pub(crate) const LINK_COLUMNS: &str = "id, source, local_id, child_id, status, method, probability, \
    match_weight, model_version, explanation, decided_by, decision, reason, created_at, decided_at, ended_at";

impl LinkRow {
    pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let explanation: String = r.try_get("explanation")?;
        Ok(Self {
            id: r.try_get("id")?,
            source: r.try_get("source")?,
            local_id: r.try_get("local_id")?,
            child_id: r.try_get("child_id")?,
            status: r.try_get("status")?,
            method: r.try_get("method")?,
            probability: r.try_get("probability")?,
            match_weight: r.try_get("match_weight")?,
            model_version: r.try_get("model_version")?,
            explanation: serde_json::from_str(&explanation).unwrap_or_default(),
            decided_by: r.try_get("decided_by")?,
            decision: r.try_get("decision")?,
            reason: r.try_get("reason")?,
            created_at: r.try_get("created_at")?,
            decided_at: r.try_get("decided_at")?,
            ended_at: r.try_get("ended_at")?,
        })
    }
}

/// A new row of `match_links`.
pub(crate) struct NewLink<'a> {
    pub source: &'a str,
    pub local_id: &'a str,
    pub child: &'a str,
    pub status: &'a str,
    pub method: &'a str,
    pub score: Option<(&'a Score, &'a [Explained])>,
    pub model_version: Option<&'a str>,
    pub decided_by: Option<&'a str>,
    pub decision: Option<&'a str>,
    pub reason: Option<&'a str>,
}

impl<'a> NewLink<'a> {
    /// A link the matcher made on its own: active, with the candidate's score and explanation
    /// when it was scored, and no person's decision.
    pub(crate) fn automatic(
        source: &'a str,
        local_id: &'a str,
        child: &'a str,
        method: &'a str,
        scored: Option<&'a Candidate>,
        model_version: &'a str,
    ) -> Self {
        NewLink {
            source,
            local_id,
            child,
            status: "active",
            method,
            score: scored.map(|c| (&c.score, c.explanation.as_slice())),
            model_version: scored.map(|_| model_version),
            decided_by: None,
            decision: None,
            reason: None,
        }
    }

    pub(crate) async fn insert(&self, conn: &mut AnyConnection) -> Result<String, sqlx::Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().to_rfc3339();
        let explanation = self
            .score
            .map(|(_, e)| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()))
            .unwrap_or_else(|| "[]".into());
        sqlx::query(
            "INSERT INTO match_links (id, source, local_id, child_id, status, method, probability, \
             match_weight, model_version, explanation, decided_by, decision, reason, created_at, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS DOUBLE PRECISION), CAST($8 AS DOUBLE PRECISION), \
             $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&id)
        .bind(self.source)
        .bind(self.local_id)
        .bind(self.child)
        .bind(self.status)
        .bind(self.method)
        // As text, cast in SQL: sqlx's Any driver cannot bind a float (or a null of one) that
        // PostgreSQL accepts for a DOUBLE PRECISION column.
        .bind(self.score.map(|(s, _)| s.probability.to_string()))
        .bind(self.score.map(|(s, _)| s.weight.to_string()))
        .bind(self.model_version)
        .bind(explanation)
        .bind(self.decided_by)
        .bind(self.decision)
        .bind(self.reason)
        .bind(&now)
        .bind(self.decided_by.map(|_| now.clone()))
        .execute(&mut *conn)
        .await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::{Index, Search};
    use weft_adapters::SourceRecord;

    fn rec(id: &str, nhs: Option<&str>, given: &str, family: &str) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: nhs
                .map(|n| Identifier::new("nhs_number", n))
                .into_iter()
                .collect(),
            demographics: Demographics {
                given_name: Some(given.into()),
                family_name: Some(family.into()),
                birth_date: Some("2016-06-21".into()),
                sex: Some("female".into()),
                postcode: Some("WT3 5QP".into()),
            },
            score: None,
        }
    }

    async fn index(dir: &std::path::Path, upper: f64) -> (Index, weft_adapters::testkit::FreshDb) {
        let (store, db) = crate::store::test_store(dir).await;
        let cfg = MatchingConfig {
            upper,
            lower: 0.5,
            model: None,
        };
        (
            Index::with_matcher(store, Matcher::from_config(&cfg).unwrap()),
            db,
        )
    }

    #[tokio::test]
    async fn misspelt_record_without_identifier_links_with_its_score_and_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let (a, _) = index
            .upsert(
                "health",
                &rec("p1", Some("9000000009"), "Eleanor", "Thompson"),
            )
            .await
            .unwrap();
        let (b, _) = index
            .upsert("police", &rec("x1", None, "Eleanor", "Thomson"))
            .await
            .unwrap();
        assert_eq!(a, b);
        let history = link_history(&index, &a).await.unwrap().unwrap();
        let police = history.iter().find(|l| l.source == "police").unwrap();
        assert_eq!(
            (police.status.as_str(), police.method.as_str()),
            ("active", "probabilistic")
        );
        assert!(police.probability.unwrap() >= 0.95, "{police:?}");
        assert!(police.match_weight.is_some());
        assert_eq!(
            police.model_version.as_deref(),
            Some(index.matcher().model.version.as_str())
        );
        let family = police
            .explanation
            .iter()
            .find(|e| e.comparison == "family_name")
            .unwrap();
        assert_eq!(family.level, "close spelling");
        let health = history.iter().find(|l| l.source == "health").unwrap();
        assert_eq!(health.method, "new");
        // A stranger is a new child; a search by demographics grades the child.
        let (c, _) = index
            .upsert("police", &rec("x2", None, "Ruby", "Calder"))
            .await
            .unwrap();
        assert_ne!(c, a);
        let found = index
            .find(&Search {
                demographics: Some(rec("q", None, "Ellie", "Thompson").demographics),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found[0].id, a);
        assert_eq!(found[0].grade, Grade::Certain);
        assert!(!found[0].explanation.is_empty());
        let certain = index
            .find(&Search {
                demographics: Some(rec("q", None, "Eleanor", "Tomkins").demographics),
                certain_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(certain.iter().all(|f| f.grade == Grade::Certain));
    }

    #[tokio::test]
    async fn review_queue_decisions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // An upper threshold of 1 sends every probabilistic match to review.
        let (index, _db) = index(dir.path(), 1.0).await;
        let (a, _) = index
            .upsert(
                "health",
                &rec("p1", Some("9000000009"), "Eleanor", "Thompson"),
            )
            .await
            .unwrap();
        let (b, _) = index
            .upsert("police", &rec("x1", None, "Eleanor", "Thomson"))
            .await
            .unwrap();
        assert_ne!(a, b);
        let queue = review_queue(&index).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(
            (queue[0].child_id.as_str(), queue[0].local_id.as_str()),
            (a.as_str(), "x1")
        );

        // Rejected: never proposed again, however often the record changes.
        let d = decide(
            &index,
            &queue[0].id,
            Decision::Reject,
            "admin1",
            Some("different child"),
        )
        .await
        .unwrap();
        assert_eq!(d.child_id, b);
        assert!(review_queue(&index).await.unwrap().is_empty());
        index
            .upsert("police", &rec("x1", None, "Eleanor", "Thomsen"))
            .await
            .unwrap();
        assert!(review_queue(&index).await.unwrap().is_empty());
        assert!(matches!(
            decide(&index, &queue[0].id, Decision::Confirm, "admin1", None).await,
            Err(DecisionError::NotApplicable(_))
        ));

        // Confirmed: the record moves to the child, and its old link is superseded.
        let (c, _) = index
            .upsert("school", &rec("s1", None, "Eleanor", "Thompson"))
            .await
            .unwrap();
        let proposal = review_queue(&index)
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.local_id == "s1")
            .unwrap();
        assert_eq!(proposal.child_id, a);
        let d = decide(&index, &proposal.id, Decision::Confirm, "admin1", None)
            .await
            .unwrap();
        assert_eq!(
            (d.child_id.as_str(), d.previous_child_id.as_deref()),
            (a.as_str(), Some(c.as_str()))
        );
        assert_eq!(index.links(&a).await.unwrap().unwrap().len(), 2);
        let history = link_history(&index, &c).await.unwrap().unwrap();
        assert_eq!(history[0].status, "superseded");
        // A re-read of the record never moves it back.
        let (again, _) = index
            .upsert("school", &rec("s1", None, "Eleanor", "Thompson"))
            .await
            .unwrap();
        assert_eq!(again, a);

        // Split: the record leaves the child and is matched again without it.
        let d = decide(
            &index,
            &proposal.id,
            Decision::Split,
            "admin2",
            Some("twin"),
        )
        .await
        .unwrap();
        assert_ne!(d.child_id, a);
        assert_eq!(index.links(&a).await.unwrap().unwrap().len(), 1);
        let history = link_history(&index, &a).await.unwrap().unwrap();
        let split = history.iter().find(|l| l.id == proposal.id).unwrap();
        assert_eq!(
            (split.status.as_str(), split.decided_by.as_deref()),
            ("split", Some("admin2"))
        );
        assert!(split.ended_at.is_some());
        assert!(matches!(
            decide(&index, "no-such-id", Decision::Confirm, "admin1", None).await,
            Err(DecisionError::NotFound)
        ));
    }

    #[test]
    fn builtin_model_loads_and_grades() {
        let m = Matcher::builtin();
        assert_eq!(m.model.comparison_kinds(), comparisons_for(&FIELDS));
        assert_eq!(m.grade(0.99), Some(Grade::Certain));
        assert_eq!(m.grade(0.7), Some(Grade::Probable));
        assert_eq!(m.grade(0.1), Some(Grade::Possible));
        assert_eq!(m.grade(0.01), None);
        assert!(m.keys(&Record::default()).is_empty());
    }

    #[test]
    fn different_national_identifiers_conflict() {
        let with = |nhs: &str| {
            let mut r = Record::default();
            r.set(Field::NhsNumber, nhs).unwrap();
            r
        };
        assert!(identifiers_conflict(
            &with("9000000009"),
            &with("9912003888")
        ));
        assert!(!identifiers_conflict(
            &with("9000000009"),
            &with("9000000009")
        ));
        assert!(!identifiers_conflict(
            &with("9000000009"),
            &Record::default()
        ));
    }
}

/// A person's decision on a row of `match_links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// On a proposal: link the record to the proposed child. On a link: keep it, pinned.
    Confirm,
    /// On a proposal: the record is not that child; it is never proposed again.
    Reject,
    /// On a link: the record is not that child. The record is matched again without it.
    Split,
}

#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no match with that id")]
    NotFound,
    #[error("that decision does not apply to a {0} match")]
    NotApplicable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a decision did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Decided {
    pub id: String,
    pub decision: Decision,
    pub source: String,
    pub local_id: String,
    /// The child the record is linked to now.
    pub child_id: String,
    /// The child it was linked to before, when that changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_child_id: Option<String>,
}

/// Open proposals, oldest first.
pub async fn review_queue(index: &crate::resolve::Index) -> Result<Vec<LinkRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LINK_COLUMNS} FROM match_links WHERE status = 'review' ORDER BY created_at, id"
    ))
    .fetch_all(&index.store().pool)
    .await?;
    rows.iter().map(LinkRow::from_row).collect()
}

/// Every link a child has or had, and every proposal involving it, oldest first; `None` when
/// there is no such child.
pub async fn link_history(
    index: &crate::resolve::Index,
    child: &str,
) -> Result<Option<Vec<LinkRow>>, sqlx::Error> {
    let pool = &index.store().pool;
    let exists = sqlx::query("SELECT id FROM children WHERE id = $1")
        .bind(child)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query(&format!(
        "SELECT {LINK_COLUMNS} FROM match_links WHERE child_id = $1 ORDER BY created_at, id"
    ))
    .bind(child)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(LinkRow::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Applies a person's decision, in one transaction.
pub async fn decide(
    index: &crate::resolve::Index,
    id: &str,
    decision: Decision,
    user: &str,
    reason: Option<&str>,
) -> Result<Decided, DecisionError> {
    let matcher = index.matcher();
    let mut tx = index.store().pool.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {LINK_COLUMNS} FROM match_links WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DecisionError::NotFound)?;
    let link = LinkRow::from_row(&row)?;
    let now = chrono::Utc::now().to_rfc3339();
    let (word, new_status) = match (link.status.as_str(), decision) {
        ("review", Decision::Confirm) => ("confirmed", "active"),
        ("review", Decision::Reject) => ("rejected", "rejected"),
        ("active", Decision::Confirm) => ("confirmed", "active"),
        ("active", Decision::Split) => ("split", "split"),
        (status, _) => return Err(DecisionError::NotApplicable(status.to_string())),
    };
    let ended = matches!(new_status, "split").then_some(now.as_str());
    sqlx::query(
        "UPDATE match_links SET status = $1, decision = $2, decided_by = $3, decided_at = $4, \
         reason = $5, ended_at = $6 WHERE id = $7",
    )
    .bind(new_status)
    .bind(word)
    .bind(user)
    .bind(&now)
    .bind(reason)
    .bind(ended)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let current: Option<String> =
        sqlx::query("SELECT child_id FROM source_records WHERE source = $1 AND local_id = $2")
            .bind(&link.source)
            .bind(&link.local_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.try_get("child_id"))
            .transpose()?
            .flatten();
    let mut child = current.clone().unwrap_or_else(|| link.child_id.clone());
    match (link.status.as_str(), decision) {
        ("review", Decision::Confirm) => {
            // The record moves to the proposed child; its previous link ends.
            sqlx::query(
                "UPDATE match_links SET status = 'superseded', ended_at = $1 \
                 WHERE source = $2 AND local_id = $3 AND status = 'active' AND id <> $4",
            )
            .bind(&now)
            .bind(&link.source)
            .bind(&link.local_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            move_record(
                &mut tx,
                &link.source,
                &link.local_id,
                &link.child_id,
                "manual",
            )
            .await?;
            child = link.child_id.clone();
        }
        ("active", Decision::Split) => {
            // Matched again, without the child a person has just ruled out (and any other
            // they ruled out before).
            let stored = sqlx::query(
                "SELECT identifiers, demographics FROM source_records WHERE source = $1 AND local_id = $2",
            )
            .bind(&link.source)
            .bind(&link.local_id)
            .fetch_one(&mut *tx)
            .await?;
            let record = stored_record(
                &link.local_id,
                &stored.try_get::<String, _>("demographics")?,
                &stored.try_get::<String, _>("identifiers")?,
            );
            let excluded = Matcher::excluded(&mut tx, &link.source, &link.local_id).await?;
            let candidates = matcher
                .candidates(
                    &mut tx,
                    &record,
                    &excluded,
                    Some((&link.source, &link.local_id)),
                )
                .await?;
            let best = candidates.into_iter().next();
            let version = matcher.model.version.clone();
            let (target, method, scored, review) = match best {
                Some(c) if c.score.probability >= matcher.upper => {
                    (c.child.clone(), "probabilistic", Some(c), None)
                }
                other => {
                    let fresh = uuid::Uuid::new_v4().to_string();
                    sqlx::query("INSERT INTO children (id, created_at) VALUES ($1, $2)")
                        .bind(&fresh)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await?;
                    let review = other.filter(|c| c.score.probability >= matcher.lower);
                    (fresh, "new", None, review)
                }
            };
            move_record(&mut tx, &link.source, &link.local_id, &target, method).await?;
            NewLink::automatic(
                &link.source,
                &link.local_id,
                &target,
                method,
                scored.as_ref(),
                &version,
            )
            .insert(&mut tx)
            .await?;
            if let Some(c) = &review {
                NewLink {
                    source: &link.source,
                    local_id: &link.local_id,
                    child: &c.child,
                    status: "review",
                    method: "probabilistic",
                    score: Some((&c.score, c.explanation.as_slice())),
                    model_version: Some(&version),
                    decided_by: None,
                    decision: None,
                    reason: None,
                }
                .insert(&mut tx)
                .await?;
            }
            child = target;
        }
        _ => {}
    }
    tx.commit().await?;
    Ok(Decided {
        id: id.to_string(),
        decision,
        source: link.source,
        local_id: link.local_id,
        previous_child_id: current.filter(|c| *c != child),
        child_id: child,
    })
}

async fn move_record(
    conn: &mut AnyConnection,
    source: &str,
    local_id: &str,
    child: &str,
    method: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE source_records SET child_id = $1, link_method = $2 WHERE source = $3 AND local_id = $4",
    )
    .bind(child)
    .bind(method)
    .bind(source)
    .bind(local_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
