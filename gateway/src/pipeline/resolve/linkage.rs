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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, Row};
use weft_adapters::{Demographics, Identifier};

use crate::foundation::audit::{self, Entry};
use crate::foundation::config::MatchingConfig;
use crate::foundation::store::{insert_rows, Cell, Store};
use crate::pipeline::resolve::Link;
use weft_matching::block::{default_rules, KeyPart, Rule, MAX_BLOCK_PAIRS};
use weft_matching::compare::Comparison;
use weft_matching::link::{self, comparisons_for, usable_rules};
use weft_matching::model::ModelError;
use weft_matching::{Explained, Extra, Field, Model, Record, Score, Scorer, TermFrequencies};

/// The fields the index compares: what every source's demographics can give, the house
/// number and street read from its address lines (see [`Record::set_address_lines`]).
pub const FIELDS: [Field; 7] = [
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Sex,
    Field::Postcode,
    Field::HouseNumber,
    Field::Street,
];

/// The fields the index's blocking rules key records by: the five every source gives. Each
/// rule is a stored key per record, written on every import; the address lines count for and
/// against the pairs these rules find, and a pair sharing nothing but an address line is not
/// found.
pub const KEYED: [Field; 5] = [
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Sex,
    Field::Postcode,
];

/// The model used when the configuration names none: trained without labels by `weft bench
/// match --save-model` on its synthetic children. A model trained on the authority's own
/// records with `weft match train` should replace it.
const BUILTIN_MODEL: &str = include_str!("default_model.json");

/// The fewest records the per-pair prior is spread over. The index's own count (records with a
/// family name, kept in `match_terms`) is used when larger: an index that starts small must not
/// link more readily than the authority-sized one it grows into, whose records it will share.
pub const MIN_POPULATION: f64 = 10_000.0;

/// Below this probability a candidate is not worth showing at all.
pub const POSSIBLE: f64 = 0.05;

/// The least probability a demographic match is graded `certain` at, above the link
/// threshold when that is lower. `certain` tells a practitioner they have the child without
/// checking, so it must be wrong about once in a thousand answers at most: the calibration of
/// the development cohort's model (README, "Calibration") puts pairs at 0.95–0.99 and
/// 0.99–0.999 one child 96–98.5 % of the time and only those above 0.999 at 99.9 %. A
/// search for a child the index does not hold meets such namesakes — same name, same
/// birthday, another address — at the rates a large index makes likely; they stay `probable`.
pub const CERTAIN: f64 = 0.999;

/// The method of a proposal held for a person because the child already holds another record
/// from the record's own source, and the match is short of [`CERTAIN`]. A source rarely keeps
/// two records of one child (when it does, that is a duplicate for it to clean up), while two
/// children alike in every field the model compares — a common name, one birthday, two
/// addresses — are told apart by nothing else the records hold; the child holding one record
/// from that source already is evidence the new one is someone else. So a second record from
/// a source joins a child on its own only when certain.
pub const SECOND_RECORD: &str = "second_record";

/// The method of a proposal held for a person because another child matches the record
/// nearly as well as the proposed one ([`Matcher::rivalled`]). Two children alike in every
/// field the model compares — a common name, one birthday — and a record holding nothing that
/// tells them apart (no identifier, no postcode) would otherwise join whichever sorts first.
pub const AMBIGUOUS: &str = "ambiguous";

/// How a recheck of a link explains that [`SECOND_RECORD`]'s rule holds it.
pub(crate) const SECOND_RECORD_RULE: &str =
    "The child already has another record from this system, and the match is not certain";

/// How a recheck of a link explains that [`AMBIGUOUS`]'s rule holds it.
pub(crate) const AMBIGUOUS_RULE: &str = "Another child matches this record as well";

/// Candidates read from the store for one record, at most; blocking keeps it far below.
pub(crate) const MAX_CANDIDATES: i64 = 2000;

/// A block holding more records than this besides the record being placed is too large to
/// compare whole: only its records agreeing with the record on the rule's [`Split`] (or lacking
/// that part) are candidates. The number `weft match` splits its blocks at; without it a
/// census's common family names put thousands of strangers in one block, every one of them
/// scored for every pupil, so placing grew with the square of the index.
pub(crate) const SPLIT_OVER: usize = MAX_BLOCK_PAIRS as usize;

/// Scored records whose children are looked up in one statement.
const LOOKUP_CHUNK: usize = 200;

/// What splits a large block ([`Rule::refinement`]), read from a record's stored form
/// ([`Record::form`]) so the store can filter on it too: the given name's initial, the family
/// name's initial, or the birth year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Given,
    Family,
    Year,
}

impl Split {
    fn of(rule: &Rule) -> Option<Split> {
        match rule.refinement() {
            KeyPart::GivenInitial => Some(Split::Given),
            KeyPart::FamilyInitial => Some(Split::Family),
            KeyPart::BirthYear => Some(Split::Year),
            // A refinement the form cannot give: the block is never split.
            _ => None,
        }
    }

    /// The form's field and how many characters of it.
    fn field(self) -> (usize, usize) {
        match self {
            Split::Given => (0, 1),
            Split::Family => (1, 1),
            Split::Year => (2, 4),
        }
    }

    /// The part of a stored form, empty when the form lacks the field.
    pub(crate) fn part(self, form: &str) -> &str {
        let (field, chars) = self.field();
        let text = form.split('|').nth(field).unwrap_or_default();
        match text.char_indices().nth(chars) {
            Some((end, _)) => &text[..end],
            None => text,
        }
    }

    /// What `match_keys.part` holds for a key of a rule split by `split` (`None`: a rule
    /// whose blocks are never split): the part of the record's form, so that a split block is
    /// read as one or two ranges of the primary key rather than filtered row by row.
    pub(crate) fn stored(split: Option<Split>, form: &str) -> &str {
        split.map_or("", |s| s.part(form))
    }
}

/// Every part a record's form gives, as fixed characters (`'\0'` where absent), so the bulk
/// path compares them without allocating: the given initial, the family initial, the birth
/// year's four characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Parts([char; 6]);

impl Parts {
    pub(crate) fn of(form: &str) -> Parts {
        let mut out = ['\0'; 6];
        for (split, at) in [(Split::Given, 0), (Split::Family, 1), (Split::Year, 2)] {
            for (i, c) in split.part(form).chars().enumerate() {
                out[at + i] = c;
            }
        }
        Parts(out)
    }

    fn slots(self, split: Split) -> &'static [usize] {
        match split {
            Split::Given => &[0],
            Split::Family => &[1],
            Split::Year => &[2, 3, 4, 5],
        }
    }

    /// Whether the form has the part at all.
    pub(crate) fn has(self, split: Split) -> bool {
        self.0[self.slots(split)[0]] != '\0'
    }

    /// Whether a record with these parts is a candidate, in a split block, for a record with
    /// `other`'s: the same part, or no part to tell them apart by.
    pub(crate) fn reaches(self, other: Parts, split: Split) -> bool {
        !self.has(split) || self.slots(split).iter().all(|&i| self.0[i] == other.0[i])
    }
}

/// How sure a search is that a child is the one asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// A shared verified identifier, or a probability at or above the upper threshold and
    /// [`CERTAIN`].
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
    /// The comparisons adjusted for how common a name is, each with the model's `u` for exact
    /// agreement: worked out once, read on every search and upsert.
    tf: Vec<(Comparison, f64)>,
}

impl Matcher {
    pub fn from_config(cfg: &MatchingConfig) -> Result<Self, ModelError> {
        let model = match &cfg.model {
            Some(path) => Model::load(path)?,
            None => Model::from_json(BUILTIN_MODEL)?,
        };
        let kinds = comparisons_for(&FIELDS);
        let unknown: Vec<&str> = model
            .comparison_kinds()
            .into_iter()
            .filter(|c| !kinds.contains(c))
            .map(Comparison::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(ModelError::Invalid(format!(
                "the index can compare only {}; the model also compares {}",
                FIELDS.map(Field::as_str).join(", "),
                unknown.join(", ")
            )));
        }
        let tf = model
            .comparisons
            .iter()
            .filter(|m| m.comparison.term_frequency())
            .filter_map(|m| Some((m.comparison, m.levels.first()?.u)))
            .collect();
        Ok(Self {
            model,
            upper: cfg.upper,
            lower: cfg.lower,
            rules: usable_rules(&default_rules(), &KEYED),
            tf,
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

    /// Whether a probabilistic link at `probability` to a child holding another record from
    /// the record's own source waits for a person ([`SECOND_RECORD`]): unless the match is
    /// graded certain.
    pub(crate) fn holds_back(&self, probability: f64, another: bool) -> bool {
        another && self.grade(probability) != Some(Grade::Certain)
    }

    /// Whether `rival`, the score of another child's best record, leaves `best` short of
    /// linking. A
    /// record is one child at most, so two children matching it share the evidence: with odds
    /// o₁ for `best` and o₂ for the rival, the chance the record is `best`'s child is
    /// o₁ / (1 + o₁ + o₂), and a link needs that at the upper threshold. Namesakes born the
    /// same day and a record holding neither's identifier nor postcode score alike, and
    /// linking the better-weighted one would be a coin toss decided by a small difference in
    /// weight or, on a tie, by the order of local ids. A `best` sharing a verified identifier
    /// with the record is never rivalled; a rival a rule holds apart from it (a twin) is none.
    pub(crate) fn rivalled(&self, best: &Score, rival: Option<&Score>) -> bool {
        let Some(rival) = rival.filter(|r| !r.guard.is_some_and(|g| g.is_apart())) else {
            return false;
        };
        if best.deterministic || !best.links(self.upper) {
            return false;
        }
        if rival.deterministic {
            return true;
        }
        let (b, r) = (best.weight, rival.weight);
        let shared = 1.0 / (1.0 + (-b).exp2() + (r - b).exp2());
        shared < self.upper
    }

    /// The least probability graded [`Grade::Certain`]: [`CERTAIN`], or `upper` if higher.
    pub(crate) fn certain_from(&self) -> f64 {
        self.upper.max(CERTAIN)
    }

    pub fn grade(&self, probability: f64) -> Option<Grade> {
        if probability >= self.certain_from() {
            Some(Grade::Certain)
        } else if probability >= self.lower {
            Some(Grade::Probable)
        } else if probability >= POSSIBLE {
            Some(Grade::Possible)
        } else {
            None
        }
    }

    /// The grade of a demographic match: from its calibrated probability, but never `certain`
    /// when a rule holds the pair back (twins; given name and sex both different), and nothing
    /// at all when a rule says they are two children.
    pub fn grade_score(&self, score: &Score) -> Option<Grade> {
        match score.guard {
            Some(g) if g.is_apart() => None,
            Some(_) => match self.grade(score.probability) {
                Some(Grade::Certain) => Some(Grade::Probable),
                g => g,
            },
            None => self.grade(score.probability),
        }
    }

    /// Whether a record that matches `anchor`, one of a child's records, agrees with the
    /// child's records as a whole ([`weft_matching::link::agrees`], the rule `weft match`
    /// clusters by): none held apart from it by a rule (twins, another identifier), none
    /// confidently different from it unless that record is as different from `anchor` (a stale
    /// record of the child's). A record that matches one of a child's records well but is
    /// confidently not another of them is never linked automatically, so a chain of plausible
    /// links cannot join two children.
    async fn agrees_with_child(
        &self,
        conn: &mut AnyConnection,
        r: &Record,
        anchor: &Record,
        child: &str,
    ) -> Result<bool, sqlx::Error> {
        let members = self.records_of(conn, child, None).await?;
        let (tf, population) = self.terms(conn, r).await?;
        let scorer = Scorer::new(&self.model, &tf, population).with_twin_rule();
        Ok(link::agrees(&scorer, r, anchor, &members))
    }

    /// A child's records as the matcher reads them, in a fixed order, less the one `skip` names.
    async fn records_of(
        &self,
        conn: &mut AnyConnection,
        child: &str,
        skip: Option<(&str, &str)>,
    ) -> Result<Vec<Record>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT source, local_id, identifiers, demographics FROM source_records \
             WHERE child_id = $1 ORDER BY source, local_id",
        )
        .bind(child)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let (s, l): (String, String) = (row.try_get("source")?, row.try_get("local_id")?);
            if skip == Some((s.as_str(), l.as_str())) {
                continue;
            }
            out.push(stored_record(
                &l,
                &row.try_get::<String, _>("demographics")?,
                &row.try_get::<String, _>("identifiers")?,
            ));
        }
        Ok(out)
    }

    /// What the current model says about a record's link to its child: the best-scoring of the
    /// child's other records, and whether the record agrees with the child as a whole (as
    /// [`Matcher::agrees_with_child`] asks it, with that record the anchor). `None` when the
    /// child has no other record.
    async fn judge_link(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        r: &Record,
        child: &str,
    ) -> Result<Option<(Score, Vec<Explained>, bool)>, sqlx::Error> {
        let others = self
            .records_of(conn, child, Some((source, local_id)))
            .await?;
        let (tf, population) = self.terms(conn, r).await?;
        let scorer = Scorer::new(&self.model, &tf, population).with_twin_rule();
        let mut best: Option<(Score, &Record)> = None;
        for other in &others {
            let score = scorer.score(r, other);
            if best.as_ref().is_none_or(|(b, _)| score.weight > b.weight) {
                best = Some((score, other));
            }
        }
        Ok(best.map(|(score, anchor)| {
            (
                score,
                scorer.explain(r, anchor),
                link::agrees(&scorer, r, anchor, &others),
            )
        }))
    }

    /// The blocking keys of a record, as the store keeps them.
    pub fn keys(&self, r: &Record) -> Vec<(String, String)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((rule.to_string(), rule.text_key(r)?)))
            .collect()
    }

    /// The blocking rules the index keys its records by.
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// [`Matcher::keys`], each with what splits its rule's block when the block is large.
    pub(crate) fn split_keys(&self, r: &Record) -> Vec<(String, String, Option<Split>)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((rule.to_string(), rule.text_key(r)?, Split::of(rule))))
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
        let form = r.form();
        for (rule, key, split) in self.split_keys(r) {
            sqlx::query(
                "INSERT INTO match_keys (rule, key, part, source, local_id, form) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(rule)
            .bind(key)
            .bind(Split::stored(split, &form))
            .bind(source)
            .bind(local_id)
            .bind(&form)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// The best-scoring record of each candidate child, best first, down to the lower of the
    /// lower threshold and [`POSSIBLE`]. Children in `exclude` (a person said no) are left out,
    /// as is any child one of whose records holds a verified NHS number or UPN that differs
    /// from the record's own: two valid, different national identifiers are two children.
    ///
    /// Three short reads, whatever the index's size: the candidates' matching forms stored
    /// with the blocking keys (each key one index range), the name counts, and the children
    /// of the few records that score high enough to matter. No candidate's source record is
    /// fetched or normalised again.
    pub async fn candidates(
        &self,
        conn: &mut AnyConnection,
        r: &Record,
        exclude: &[String],
        skip: Option<(&str, &str)>,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let keys = self.split_keys(r);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let form = r.form();
        let split = Self::split_blocks(conn, &keys, &form, skip).await?;
        let mut sql = String::new();
        let mut binds: Vec<&str> = Vec::new();
        for ((rule, key, _), split) in keys.iter().zip(&split) {
            if !binds.is_empty() {
                sql.push_str(" UNION ALL ");
            }
            let _ = write!(
                sql,
                "SELECT source, local_id, form FROM match_keys WHERE rule = ${} AND key = ${}",
                binds.len() + 1,
                binds.len() + 2
            );
            binds.extend([rule.as_str(), key.as_str()]);
            if let Some(s) = split {
                let _ = write!(sql, " AND part IN (${}, '')", binds.len() + 1);
                binds.push(s.part(&form));
            }
        }
        let _ = write!(sql, " LIMIT {}", MAX_CANDIDATES * keys.len() as i64);
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        let (tf, population) = self.terms(conn, r).await?;
        let scorer = Scorer::new(&self.model, &tf, population).with_twin_rule();
        let floor = self.lower.min(POSSIBLE);
        let mut seen = HashSet::with_capacity(rows.len());
        let mut scored: Vec<Scored> = Vec::new();
        for row in &rows {
            if seen.len() as i64 >= MAX_CANDIDATES {
                break;
            }
            let key: (String, String) = (row.try_get("source")?, row.try_get("local_id")?);
            if skip == Some((key.0.as_str(), key.1.as_str())) || !seen.insert(key.clone()) {
                continue;
            }
            let (source, local_id) = key;
            let other = Record::from_form(local_id, &row.try_get::<String, _>("form")?);
            // Its child is left out below, whichever of its records blocking reached.
            if identifiers_conflict(r, &other) {
                continue;
            }
            let score = scorer.score(r, &other);
            if score.probability >= floor {
                scored.push(Scored {
                    source,
                    record: other,
                    score,
                });
            }
        }
        // Best first; equal weights in a fixed order, whatever order the rows came in.
        scored.sort_by(|a, b| {
            b.score
                .weight
                .total_cmp(&a.score.weight)
                .then_with(|| (&a.source, &a.record.id).cmp(&(&b.source, &b.record.id)))
        });
        let children = Self::children_of(conn, r, &scored).await?;
        let mut out: Vec<Candidate> = Vec::new();
        for s in scored {
            let key = (s.source, s.record.id.clone());
            let Some(child) = children.get(&key).cloned().flatten() else {
                continue;
            };
            if exclude.contains(&child) || out.iter().any(|c| c.child == child) {
                continue;
            }
            out.push(Candidate {
                explanation: scorer.explain(r, &s.record),
                child,
                source: key.0,
                local_id: key.1,
                score: s.score,
                record: s.record,
            });
        }
        Ok(out)
    }

    /// For each key, how its block is split: `Some` where the block holds more than
    /// [`SPLIT_OVER`] records besides `skip` and the record has the part that splits it. One
    /// statement, each block counted no further than the limit.
    async fn split_blocks(
        conn: &mut AnyConnection,
        keys: &[(String, String, Option<Split>)],
        form: &str,
        skip: Option<(&str, &str)>,
    ) -> Result<Vec<Option<Split>>, sqlx::Error> {
        let asked: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].2.is_some_and(|s| !s.part(form).is_empty()))
            .collect();
        let mut out = vec![None; keys.len()];
        if asked.is_empty() {
            return Ok(out);
        }
        let (source, local_id) = skip.unwrap_or(("", ""));
        let mut sql = String::new();
        for (n, &i) in asked.iter().enumerate() {
            if n > 0 {
                sql.push_str(" UNION ALL ");
            }
            let _ = write!(
                sql,
                "SELECT CAST({i} AS BIGINT) AS i, COUNT(*) AS n FROM (SELECT 1 AS one FROM match_keys \
                 WHERE rule = ${} AND key = ${} AND NOT (source = $1 AND local_id = $2) LIMIT {}) b{i}",
                2 * n + 3,
                2 * n + 4,
                SPLIT_OVER + 1
            );
        }
        let mut q = sqlx::query(&sql).bind(source).bind(local_id);
        for &i in &asked {
            q = q.bind(&keys[i].0).bind(&keys[i].1);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let i = usize::try_from(row.try_get::<i64, _>("i")?).unwrap_or(usize::MAX);
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = out.get_mut(i) {
                if usize::try_from(n).is_ok_and(|n| n > SPLIT_OVER) {
                    *slot = keys[i].2;
                }
            }
        }
        Ok(out)
    }

    /// The child of each scored record, `None` for a child whose records hold a verified NHS
    /// number or UPN other than `r`'s (any of its records, not only those blocking reached).
    async fn children_of(
        conn: &mut AnyConnection,
        r: &Record,
        scored: &[Scored],
    ) -> Result<HashMap<(String, String), Option<String>>, sqlx::Error> {
        let mut children = HashMap::with_capacity(scored.len());
        let mut conflicting = HashSet::new();
        // Without identifiers of its own, nothing a child holds can conflict with the record.
        let national = r.nhs_number.is_some() || r.upn.is_some();
        for chunk in scored.chunks(LOOKUP_CHUNK) {
            let mut sql = String::from(if national {
                "SELECT me.source AS source, me.local_id AS local_id, me.child_id AS child_id, \
                 kin.identifiers AS identifiers FROM source_records me \
                 JOIN source_records kin ON kin.child_id = me.child_id WHERE ("
            } else {
                "SELECT me.source AS source, me.local_id AS local_id, me.child_id AS child_id \
                 FROM source_records me WHERE me.child_id IS NOT NULL AND ("
            });
            for i in 0..chunk.len() {
                let or = if i == 0 { "" } else { " OR " };
                let _ = write!(
                    sql,
                    "{or}(me.source = ${} AND me.local_id = ${})",
                    2 * i + 1,
                    2 * i + 2
                );
            }
            sql.push(')');
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(&s.source).bind(&s.record.id);
            }
            for row in q.fetch_all(&mut *conn).await? {
                let key: (String, String) = (row.try_get("source")?, row.try_get("local_id")?);
                let child: String = row.try_get("child_id")?;
                if national {
                    let kin = stored_record("", "{}", &row.try_get::<String, _>("identifiers")?);
                    if identifiers_conflict(r, &kin) {
                        conflicting.insert(child.clone());
                    }
                }
                children.insert(key, Some(child));
            }
        }
        for child in children.values_mut() {
            if child.as_ref().is_some_and(|c| conflicting.contains(c)) {
                *child = None;
            }
        }
        Ok(children)
    }

    /// Children a person has ruled out for this record: those it was rejected for or split
    /// from, and, the other way round, those holding a record that was rejected for or split
    /// from this record's own child (a person said the two are different children).
    pub async fn excluded(
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT child_id FROM match_links WHERE source = $1 AND local_id = $2 \
             AND status IN ('rejected', 'split') \
             UNION \
             SELECT other.child_id AS child_id FROM source_records me \
             JOIN match_links ml ON ml.child_id = me.child_id AND ml.status IN ('rejected', 'split') \
             JOIN source_records other ON other.source = ml.source AND other.local_id = ml.local_id \
             WHERE me.source = $1 AND me.local_id = $2 AND other.child_id IS NOT NULL",
        )
        .bind(source)
        .bind(local_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|r| r.try_get("child_id")).collect()
    }

    /// Places a record that no link holds: a verified national identifier shared with a linked
    /// record links it; else the best candidate at or above the upper threshold; else a new
    /// child (created here), with the best candidate between the thresholds proposed for
    /// review. Children a person ruled out for this record are never chosen or proposed. When
    /// the record's NHS number and UPN point at two different children, the NHS number links
    /// it and the UPN's child is proposed: one of the two identifiers is wrong somewhere.
    /// `partners` are the records of the same pass the record is certain with
    /// ([`super::partners`]): their sources count as the record's own for the rule on a
    /// second record from one source.
    pub(crate) async fn place(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        record: &Record,
        partners: &[Link],
    ) -> Result<Placement, sqlx::Error> {
        let excluded = Self::excluded(conn, source, local_id).await?;
        let national = [
            ("nhs_number", record.nhs_number.as_ref().map(|n| n.as_str())),
            ("upn", record.upn.as_ref().map(|u| u.as_str())),
        ];
        let mut holders: Vec<(&'static str, String)> = Vec::new();
        for (kind, value) in national {
            let Some(value) = value else { continue };
            let rows = sqlx::query(
                "SELECT DISTINCT sr.child_id AS child_id FROM record_identifiers ri \
                 JOIN source_records sr ON sr.source = ri.source AND sr.local_id = ri.local_id \
                 WHERE ri.kind = $1 AND ri.value = $2 AND sr.child_id IS NOT NULL \
                 AND NOT (sr.source = $3 AND sr.local_id = $4) ORDER BY sr.child_id",
            )
            .bind(kind)
            .bind(value)
            .bind(source)
            .bind(local_id)
            .fetch_all(&mut *conn)
            .await?;
            for row in &rows {
                let child: String = row.try_get("child_id")?;
                if !excluded.contains(&child) {
                    holders.push((kind, child));
                    break;
                }
            }
        }
        let refused = match upn_only_holder(record, &holders) {
            Some(child) => {
                let kin = self.records_of(conn, child, None).await?;
                refused_upn(record, child, &kin)
            }
            None => None,
        };
        if refused.is_none() {
            if let Some(placed) = by_identifiers(holders) {
                return Ok(placed);
            }
        }
        let mut candidates = self
            .candidates(conn, record, &excluded, Some((source, local_id)))
            .await?
            .into_iter();
        let (best, rival) = (candidates.next(), candidates.next());
        let mut second = false;
        let ambiguous = best
            .as_ref()
            .is_some_and(|c| self.rivalled(&c.score, rival.as_ref().map(|r| &r.score)));
        if let Some(c) = best
            .as_ref()
            .filter(|c| c.score.links(self.upper) && !ambiguous)
        {
            if self
                .agrees_with_child(conn, record, &c.record, &c.child)
                .await?
            {
                let another =
                    Self::holds_another(conn, &c.child, source, local_id, partners).await?;
                second = self.holds_back(c.score.probability, another);
                if !second {
                    return Ok(Placement::probabilistic(c.child.clone(), best, refused));
                }
            }
        }
        let child = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO children (id, created_at) VALUES ($1, $2)")
            .bind(&child)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(&mut *conn)
            .await?;
        Ok(Placement {
            child,
            method: "new".into(),
            scored: None,
            review: self.proposals(best, rival, held(second, ambiguous), refused),
        })
    }

    /// What a record placed as a new child is proposed for: its best candidate at or above
    /// the lower threshold, marked with why it was held (`why`), and for an [`AMBIGUOUS`]
    /// record the other child too, so that a person sees both; failing those, the child of a
    /// UPN link that was refused. Twins and children a rule holds apart are not even proposed.
    pub(crate) fn proposals(
        &self,
        best: Option<Candidate>,
        rival: Option<Candidate>,
        why: Option<&'static str>,
        refused: Option<Proposal>,
    ) -> Vec<Proposal> {
        let rival = rival.filter(|_| why == Some(AMBIGUOUS));
        let out: Vec<Proposal> = best
            .into_iter()
            .chain(rival)
            .filter(|c| !c.score.guard.is_some_and(|g| g.is_apart()))
            .filter(|c| c.score.probability >= self.lower)
            .map(|c| Proposal::scored(c).held(why))
            .collect();
        if out.is_empty() {
            refused.into_iter().collect()
        } else {
            out
        }
    }

    /// The best record `r` matches of a child other than `child` (and other than those a person
    /// ruled out for it), as placing the record would find it.
    async fn rival_of(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        r: &Record,
        child: &str,
    ) -> Result<Option<Candidate>, sqlx::Error> {
        let mut exclude = Self::excluded(conn, source, local_id).await?;
        exclude.push(child.to_string());
        let candidates = self
            .candidates(conn, r, &exclude, Some((source, local_id)))
            .await?;
        Ok(candidates.into_iter().next())
    }

    /// Whether a child holds a record from `source` other than `local_id`, or from a
    /// partner's source other than the partners ([`second_from_a_source`]).
    async fn holds_another(
        conn: &mut AnyConnection,
        child: &str,
        source: &str,
        local_id: &str,
        partners: &[Link],
    ) -> Result<bool, sqlx::Error> {
        let rows = sqlx::query("SELECT source, local_id FROM source_records WHERE child_id = $1")
            .bind(child)
            .fetch_all(&mut *conn)
            .await?;
        let kin = rows
            .iter()
            .map(|r| Ok((r.try_get("source")?, r.try_get("local_id")?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
        Ok(second_from_a_source(
            kin.iter().map(|(s, id)| (s.as_str(), id.as_str())),
            source,
            local_id,
            partners,
        ))
    }

    /// Writes a placement's links (the record's link, and a proposal for review if there is
    /// one) and returns the audit entries that record them, for the caller to chain in the
    /// same transaction.
    pub(crate) async fn write_placement(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        p: &Placement,
    ) -> Result<Vec<Entry>, sqlx::Error> {
        let version = self.model.version.as_str();
        let link = NewLink::automatic(
            source,
            local_id,
            &p.child,
            &p.method,
            p.scored.as_ref(),
            version,
        );
        let id = link.insert(conn).await?;
        let mut entries = vec![link.entry(&id, None)];
        for review in &p.review {
            let proposal = NewLink::proposal(source, local_id, review, version);
            let id = proposal.insert(conn).await?;
            entries.push(proposal.entry(&id, Some(&p.child)));
        }
        Ok(entries)
    }

    /// Re-matches a linked record whose demographics changed (a school corrects a surname, a
    /// family moves): if it now matches another child better than its own, at or above the
    /// lower threshold, that child is proposed for review. The link itself is never moved; a
    /// proposal already open, or a child a person ruled out, is not proposed again.
    pub(crate) async fn propose(
        &self,
        conn: &mut AnyConnection,
        source: &str,
        local_id: &str,
        record: &Record,
        current: &str,
    ) -> Result<Option<Entry>, sqlx::Error> {
        let excluded = Self::excluded(conn, source, local_id).await?;
        let best = self
            .candidates(conn, record, &excluded, Some((source, local_id)))
            .await?
            .into_iter()
            .next();
        let Some(c) = best.filter(|c| {
            c.child != current
                && c.score.probability >= self.lower
                && !c.score.guard.is_some_and(|g| g.is_apart())
        }) else {
            return Ok(None);
        };
        let open = sqlx::query(
            "SELECT id FROM match_links WHERE source = $1 AND local_id = $2 AND child_id = $3 \
             AND status = 'review'",
        )
        .bind(source)
        .bind(local_id)
        .bind(&c.child)
        .fetch_optional(&mut *conn)
        .await?;
        if open.is_some() {
            return Ok(None);
        }
        let review = Proposal::scored(c);
        let proposal = NewLink::proposal(source, local_id, &review, &self.model.version);
        let id = proposal.insert(conn).await?;
        Ok(Some(proposal.entry(&id, Some(current))))
    }

    /// How common the query's names are among the index's records, read from the counts kept
    /// in `match_terms`: a few rows, whatever the index's size.
    async fn terms(
        &self,
        conn: &mut AnyConnection,
        r: &Record,
    ) -> Result<(TermFrequencies, f64), sqlx::Error> {
        let wanted: Vec<(Comparison, f64, &str)> = self
            .tf
            .iter()
            .filter_map(|&(c, u)| Some((c, u, counted(c, r)?)))
            .collect();
        if wanted.is_empty() {
            return Ok((TermFrequencies::default(), MIN_POPULATION));
        }
        let mut sql = String::from("SELECT comparison, value, n, sq FROM match_terms WHERE ");
        for i in 0..wanted.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!(
                "(comparison = ${} AND value IN (${}, ''))",
                2 * i + 1,
                2 * i + 2
            ));
        }
        let mut q = sqlx::query(&sql);
        for (c, _, value) in &wanted {
            q = q.bind(c.as_str()).bind(*value);
        }
        let rows = q.fetch_all(&mut *conn).await?;
        let mut counts: HashMap<(String, String), (i64, i64)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            counts.insert(
                (row.try_get("comparison")?, row.try_get("value")?),
                (row.try_get("n")?, row.try_get("sq")?),
            );
        }
        Ok(self.tf_from(r, |c, v| {
            counts
                .get(&(c.as_str().to_string(), v.to_string()))
                .copied()
                .unwrap_or((0, 0))
        }))
    }

    /// The name counts' adjustment for a record, from `count(comparison, value)` (`n`, `sq`;
    /// the empty value names a comparison's totals row): what [`Matcher::terms`] reads from
    /// the store, and what the bulk path keeps in memory, worked out by the one function so
    /// that both score alike.
    pub(crate) fn tf_from(
        &self,
        r: &Record,
        count: impl Fn(Comparison, &str) -> (i64, i64),
    ) -> (TermFrequencies, f64) {
        let mut tf = TermFrequencies::default();
        let mut population = MIN_POPULATION;
        for &(c, u) in &self.tf {
            let Some(value) = counted(c, r) else { continue };
            let (total, squares) = count(c, "");
            let (total, squares) = (total as f64, squares as f64);
            population = population.max(total);
            if total < 1.0 || squares < 1.0 {
                continue;
            }
            // The model's u for exact agreement is the chance two records agree by accident,
            // learnt on its training data; the index's counts say how much likelier that is
            // for this name than for the average one (sum of squared shares). Scaling keeps the
            // model's calibration whatever the index's size: a small index shifts weights
            // little, never to the coarse 1/N a handful of records would give.
            let share = (count(c, value).0 as f64).max(1.0) / total;
            let average = squares / (total * total);
            tf.set_share(c, value, share * u / average);
        }
        (tf, population)
    }

    /// Keeps `match_terms` in step as a record arrives or changes: its old names are counted
    /// out and its new ones in.
    pub(crate) async fn count_terms(
        &self,
        conn: &mut AnyConnection,
        old: Option<&Record>,
        new: &Record,
    ) -> Result<(), sqlx::Error> {
        for c in self.tf_comparisons() {
            let before = old.and_then(|o| counted(c, o));
            let after = counted(c, new);
            if before == after {
                continue;
            }
            for (value, delta) in [(before, -1i64), (after, 1)] {
                if let Some(value) = value {
                    add_term(conn, c, value, delta).await?;
                }
            }
        }
        Ok(())
    }

    /// Derives the index's matching rows from its records (each record's blocking keys with
    /// its matching form, and the name counts) when the store's were written by an older
    /// build, or never: a store upgraded past a change to those rows, or loaded in bulk.
    /// Upserts keep them in step after that. Runs in one transaction, so a store is never
    /// left half-derived; the marker row makes a second node that starts at the same moment
    /// wait for the first, then find the work done. Returns the records derived.
    pub async fn rebuild(&self, store: &Store) -> Result<Rebuilt, sqlx::Error> {
        let mut tx = store.begin_write().await?;
        store.lock_index(&mut tx).await?;
        sqlx::query(
            "INSERT INTO match_terms (comparison, value, n, sq) VALUES ($1, '', 0, 0) \
             ON CONFLICT (comparison, value) DO NOTHING",
        )
        .bind(DERIVED_MARKER)
        .execute(&mut *tx)
        .await?;
        let claimed = sqlx::query(
            "UPDATE match_terms SET n = $2 WHERE comparison = $1 AND value = '' AND n < $2",
        )
        .bind(DERIVED_MARKER)
        .bind(DERIVED_VERSION)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Rebuilt::default());
        }
        sqlx::query("DELETE FROM match_terms WHERE comparison <> $1")
            .bind(DERIVED_MARKER)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM match_keys")
            .execute(&mut *tx)
            .await?;
        let mut done = Rebuilt::default();
        let mut tf: BTreeMap<(Comparison, String), i64> = BTreeMap::new();
        let mut after: Option<(String, String)> = None;
        loop {
            // A page at a time in key order, so a million records are never all in memory.
            let page = match &after {
                None => sqlx::query(
                    "SELECT source, local_id, identifiers, demographics FROM source_records \
                     ORDER BY source, local_id LIMIT $1",
                )
                .bind(REBUILD_PAGE),
                Some((source, local_id)) => sqlx::query(
                    "SELECT source, local_id, identifiers, demographics FROM source_records \
                     WHERE (source, local_id) > ($2, $3) ORDER BY source, local_id LIMIT $1",
                )
                .bind(REBUILD_PAGE)
                .bind(source.clone())
                .bind(local_id.clone()),
            }
            .fetch_all(&mut *tx)
            .await?;
            let mut keys: Vec<[String; 6]> = Vec::new();
            for row in &page {
                let (source, local_id): (String, String) =
                    (row.try_get("source")?, row.try_get("local_id")?);
                let r = stored_record(
                    &local_id,
                    &row.try_get::<String, _>("demographics")?,
                    &row.try_get::<String, _>("identifiers")?,
                );
                for c in self.tf_comparisons() {
                    if let Some(v) = counted(c, &r) {
                        *tf.entry((c, v.to_string())).or_default() += 1;
                    }
                }
                let form = r.form();
                for (rule, key, split) in self.split_keys(&r) {
                    let part = Split::stored(split, &form).to_string();
                    keys.push([
                        rule,
                        key,
                        part,
                        source.clone(),
                        local_id.clone(),
                        form.clone(),
                    ]);
                }
                after = Some((source, local_id));
            }
            insert_rows(
                &mut tx,
                store.backend,
                "match_keys (rule, key, part, source, local_id, form)",
                keys.iter()
                    .map(|row| row.each_ref().map(|v| Cell::from(v.as_str()))),
            )
            .await?;
            done.records += page.len() as u64;
            done.keys += keys.len() as u64;
            if page.len() < REBUILD_PAGE as usize {
                break;
            }
        }
        let mut totals: BTreeMap<Comparison, (i64, i64)> = BTreeMap::new();
        for ((c, _), n) in &tf {
            let t = totals.entry(*c).or_default();
            t.0 += n;
            t.1 += n * n;
        }
        let names = tf.iter().map(|((c, v), n)| (c.as_str(), v.as_str(), *n, 0));
        let totals = totals.iter().map(|(c, (n, sq))| (c.as_str(), "", *n, *sq));
        insert_rows(
            &mut tx,
            store.backend,
            "match_terms (comparison, value, n, sq)",
            names
                .chain(totals)
                .map(|(c, v, n, sq)| [c.into(), v.into(), Cell::Int(n), Cell::Int(sq)]),
        )
        .await?;
        tx.commit().await?;
        Ok(done)
    }

    pub(crate) fn tf_comparisons(&self) -> impl Iterator<Item = Comparison> + '_ {
        self.tf.iter().map(|&(c, _)| c)
    }
}

/// The name a record is counted under in `match_terms` for a comparison: never empty, since
/// the empty value names the comparison's totals row.
pub(crate) fn counted(c: Comparison, r: &Record) -> Option<&str> {
    c.tf_value(r).filter(|v| !v.is_empty())
}

/// The `match_terms` row whose `n` says which [`DERIVED_VERSION`] derived the store's
/// matching rows.
const DERIVED_MARKER: &str = "_derived";

/// The shape of the matching rows this build derives: raised whenever blocking keys, matching
/// forms or name counts change, so that [`Matcher::rebuild`] derives a store's again once.
/// 1: blocking keys carry their record's matching form.
/// 2: the form also holds middle names, former family names, the house number, household
/// keys, the former UPN and former postcodes, so a search scores candidates with them.
/// 3: each key carries the part its rule's large blocks are split by (`match_keys.part`).
/// 4: the form also holds the street, which the model compares.
pub(crate) const DERIVED_VERSION: i64 = 4;

/// Source records read at a time by [`Matcher::rebuild`].
const REBUILD_PAGE: i64 = 5_000;

/// What [`Matcher::rebuild`] derived.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    pub records: u64,
    /// Rows of `match_keys`.
    pub keys: u64,
}

/// Adds `delta` to a name's count and to its comparison's total, keeping the total's sum of
/// squared counts (`sq`) in step: with it, how common the average name is needs no scan.
async fn add_term(
    conn: &mut AnyConnection,
    c: Comparison,
    value: &str,
    delta: i64,
) -> Result<(), sqlx::Error> {
    let after: i64 = sqlx::query(
        "INSERT INTO match_terms (comparison, value, n, sq) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (comparison, value) DO UPDATE SET n = match_terms.n + excluded.n RETURNING n",
    )
    .bind(c.as_str())
    .bind(value)
    .bind(delta)
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?;
    let before = after - delta;
    sqlx::query(
        "INSERT INTO match_terms (comparison, value, n, sq) VALUES ($1, '', $2, $3) \
         ON CONFLICT (comparison, value) DO UPDATE SET n = match_terms.n + excluded.n, \
         sq = match_terms.sq + excluded.sq",
    )
    .bind(c.as_str())
    .bind(delta)
    .bind(after * after - before * before)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Where the matcher puts a record no link holds yet.
/// Identifiers first: the child holding the record's verified NHS number (else UPN), each
/// `(kind, child)` in that order, excluded children already left out. Two identifiers held by
/// two children link by the first and propose the second for a person to decide. The
/// incremental and bulk paths both place through this, so they cannot disagree on it.
pub(crate) fn by_identifiers(holders: Vec<(&'static str, String)>) -> Option<Placement> {
    let mut holders = holders.into_iter();
    let (kind, child) = holders.next()?;
    let review = holders
        .find(|(_, other)| *other != child)
        .map(|(other_kind, other)| Proposal {
            child: other,
            method: format!("identifier:{other_kind}"),
            scored: None,
        })
        .into_iter()
        .collect();
    Some(Placement {
        child,
        method: format!("identifier:{kind}"),
        scored: None,
        review,
    })
}

/// The child a record's UPN would link it to when no child holds its NHS number, if the record
/// carries one: that child's records decide whether [`refused_upn`] refuses the link. `holders`
/// are as [`by_identifiers`] takes them, the NHS number's holder first. Both paths ask this
/// before they read the child's records, so they cannot disagree on when the check runs.
pub(crate) fn upn_only_holder<'h>(
    record: &Record,
    holders: &'h [(&'static str, String)],
) -> Option<&'h str> {
    match holders.first() {
        Some(("upn", child)) if record.nhs_number.is_some() => Some(child),
        _ => None,
    }
}

/// A UPN that would link a record to a child holding a verified NHS number other than the
/// record's: one of the two numbers is wrong somewhere (a UPN keyed against another pupil, a
/// pupil's record joined to another child's), and the NHS number, not the UPN, says which
/// child the record is. It is not linked by the UPN; the UPN's child is proposed for a person
/// to decide, and the record is placed as if it had no UPN holder. `kin` are the child's records.
pub(crate) fn refused_upn<'a>(
    r: &Record,
    child: &str,
    kin: impl IntoIterator<Item = &'a Record>,
) -> Option<Proposal> {
    let nhs = r.nhs_number.as_ref()?;
    kin.into_iter()
        .any(|k| k.nhs_number.as_ref().is_some_and(|n| n != nhs))
        .then(|| Proposal {
            child: child.to_string(),
            method: "identifier:upn".into(),
            scored: None,
        })
}

#[derive(Debug)]
pub(crate) struct Placement {
    pub child: String,
    /// `identifier:<kind>`, `probabilistic` or `new`.
    pub method: String,
    /// The candidate a probabilistic link was made through.
    pub scored: Option<Candidate>,
    /// Children the record may belong to instead, for a person to decide: one, or for a
    /// record two children match alike ([`AMBIGUOUS`]) both.
    pub review: Vec<Proposal>,
}

impl Placement {
    /// A link on demographics, through `scored`, the best candidate, whose child is `child`.
    pub(crate) fn probabilistic(
        child: String,
        scored: Option<Candidate>,
        review: Option<Proposal>,
    ) -> Self {
        Placement {
            child,
            method: "probabilistic".into(),
            scored,
            review: review.into_iter().collect(),
        }
    }
}

/// A child a record may belong to, proposed for review.
#[derive(Debug)]
pub(crate) struct Proposal {
    pub child: String,
    /// `probabilistic`, or `identifier:<kind>` when the record's identifiers point at two
    /// children.
    pub method: String,
    /// The candidate a probabilistic proposal was scored through.
    pub scored: Option<Candidate>,
}

impl Proposal {
    pub(crate) fn scored(c: Candidate) -> Self {
        Proposal {
            child: c.child.clone(),
            method: "probabilistic".into(),
            scored: Some(c),
        }
    }

    /// A proposal for a record a rule held back from linking: its method says which
    /// ([`SECOND_RECORD`], [`AMBIGUOUS`]).
    pub(crate) fn held(mut self, why: Option<&'static str>) -> Self {
        if let Some(why) = why {
            self.method = why.into();
        }
        self
    }
}

/// Which rule, if any, held a record back from the child it matched best: [`AMBIGUOUS`]
/// (checked first, so the other never is) or [`SECOND_RECORD`].
pub(crate) fn held(second: bool, ambiguous: bool) -> Option<&'static str> {
    if ambiguous {
        Some(AMBIGUOUS)
    } else if second {
        Some(SECOND_RECORD)
    } else {
        None
    }
}

/// A candidate record, scored, before its child is known.
struct Scored {
    source: String,
    /// Its `id` is the record's local id.
    record: Record,
    score: Score,
}

/// A candidate child, through its best-scoring record.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub child: String,
    pub source: String,
    pub local_id: String,
    pub score: Score,
    pub explanation: Vec<Explained>,
    /// That record as the matcher read it: what the rest of the child is weighed against.
    pub record: Record,
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
    record_of(local_id, &d, &ids)
}

/// The matching library's record of a source's demographics and identifiers: the one place
/// the adapters' shape meets the matcher's, so the matching crate knows neither.
pub fn record_of(id: impl Into<String>, d: &Demographics, identifiers: &[Identifier]) -> Record {
    let fields = [
        (Field::GivenName, &d.given_name),
        (Field::FamilyName, &d.family_name),
        (Field::BirthDate, &d.birth_date),
        (Field::Sex, &d.sex),
        (Field::Postcode, &d.postcode),
    ];
    let national = identifiers.iter().filter_map(|i| match i.kind.as_str() {
        "nhs_number" => Some((Field::NhsNumber, i.value.as_str())),
        "upn" => Some((Field::Upn, i.value.as_str())),
        _ => None,
    });
    let mut r = Record::lenient(
        id,
        fields
            .into_iter()
            .filter_map(|(f, v)| Some((f, v.as_deref()?)))
            .chain(national),
    );
    // The house number and street are compared (`FIELDS`); the rest is kept on the record for
    // the rules that tell a child from a twin or sibling and moves no score by itself.
    r.set_address_lines(d.address_lines.iter().map(String::as_str));
    if let Some(m) = &d.middle_names {
        r.add_extra(Extra::MiddleNames, m);
    }
    for n in &d.former_family_names {
        r.add_extra(Extra::FormerFamilyName, n);
    }
    for a in &d.former_addresses {
        if let Some(p) = &a.postcode {
            r.add_extra(Extra::FormerPostcode, p);
        }
    }
    for h in &d.household {
        r.add_extra(Extra::Household, h);
    }
    for i in identifiers.iter().filter(|i| i.kind == "former_upn") {
        r.add_extra(Extra::FormerUpn, &i.value);
    }
    r
}

pub(crate) fn identifiers_conflict(a: &Record, b: &Record) -> bool {
    let nhs = matches!((&a.nhs_number, &b.nhs_number), (Some(x), Some(y)) if x != y);
    let upn = matches!((&a.upn, &b.upn), (Some(x), Some(y)) if x != y);
    nhs || upn
}

/// Whether a child whose records are `kin` (each its source and local id) already holds a
/// record the rule for a second record from one source counts against `local_id` of `source`:
/// another record of its own source, or of a partner's source other than its partners.
pub(crate) fn second_from_a_source<'a>(
    kin: impl IntoIterator<Item = (&'a str, &'a str)>,
    source: &str,
    local_id: &str,
    partners: &[Link],
) -> bool {
    kin.into_iter().any(|(s, id)| {
        if s == source {
            return id != local_id;
        }
        partners.iter().any(|p| p.source == s)
            && !partners.iter().any(|p| p.source == s && p.local_id == id)
    })
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
    /// `identifier:<kind>`, `probabilistic`, `new` or `manual`; a proposal may also be a
    /// [`RECHECK`], a [`SECOND_RECORD`] or [`AMBIGUOUS`].
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

/// Why an identifier link was made, for the reviewer: which identifier, and how it was
/// verified. Empty for any other unscored method.
pub fn identifier_explanation(method: &str) -> Vec<Explained> {
    let how = match method.strip_prefix("identifier:") {
        Some("nhs_number") => "same NHS number in both records, its modulus-11 check digit valid",
        Some("upn") => "same UPN in both records, its check letter valid",
        _ => return Vec::new(),
    };
    vec![Explained {
        comparison: method["identifier:".len()..].to_string(),
        level: how.into(),
        weight: 0.0,
        term_frequency_adjusted: false,
    }]
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

    /// A proposal for review: the record may be this child's.
    pub(crate) fn proposal(
        source: &'a str,
        local_id: &'a str,
        p: &'a Proposal,
        model_version: &'a str,
    ) -> Self {
        NewLink {
            status: "review",
            ..Self::automatic(
                source,
                local_id,
                &p.child,
                &p.method,
                p.scored.as_ref(),
                model_version,
            )
        }
    }

    /// The audit entry recording a link the matcher made (`linked`) or proposed (`proposed`;
    /// `current` is the child the record is linked to meanwhile).
    pub(crate) fn entry(&self, id: &str, current: Option<&str>) -> Entry {
        let outcome = if self.status == "review" {
            "proposed"
        } else {
            "linked"
        };
        let mut detail = json!({
            "link": id,
            "source": self.source,
            "local_id": self.local_id,
            "method": self.method,
        });
        if let Some((score, _)) = self.score {
            detail["probability"] = json!(score.probability);
            detail["match_weight"] = json!(score.weight);
            detail["model_version"] = json!(self.model_version);
        }
        if let Some(current) = current {
            detail["current_child"] = json!(current);
        }
        Entry::system("match_link", Some(self.child), outcome, detail)
    }

    fn explanation(&self) -> String {
        match self.score {
            Some((_, e)) => serde_json::to_string(e).unwrap_or_else(|_| "[]".into()),
            None => serde_json::to_string(&identifier_explanation(self.method))
                .unwrap_or_else(|_| "[]".into()),
        }
    }

    pub(crate) async fn insert(&self, conn: &mut AnyConnection) -> Result<String, sqlx::Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().to_rfc3339();
        let explanation = self.explanation();
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

/// The table and columns of [`LinkRows::rows`].
pub(crate) const NEW_LINKS: &str = "match_links (id, source, local_id, child_id, status, \
     method, probability, match_weight, model_version, explanation, decided_by, decision, \
     reason, created_at, decided_at)";

/// Many new links as the bulk path writes them, the same rows [`NewLink::insert`] writes one
/// at a time: their ids, explanations and time made once, for the rows to borrow.
pub(crate) struct LinkRows {
    pub ids: Vec<String>,
    explanations: Vec<String>,
    now: String,
}

impl LinkRows {
    pub(crate) fn of(links: &[NewLink<'_>]) -> Self {
        Self {
            ids: links
                .iter()
                .map(|_| uuid::Uuid::new_v4().to_string())
                .collect(),
            explanations: links.iter().map(NewLink::explanation).collect(),
            now: chrono::Utc::now().to_rfc3339(),
        }
    }

    /// The rows of `links` (those this was made of, in order), columns as [`NEW_LINKS`].
    pub(crate) fn rows<'a>(
        &'a self,
        links: &'a [NewLink<'a>],
    ) -> impl Iterator<Item = [Cell<'a>; 15]> + 'a {
        let now = self.now.as_str();
        links
            .iter()
            .zip(&self.ids)
            .zip(&self.explanations)
            .map(move |((l, id), explanation)| {
                [
                    Cell::from(id.as_str()),
                    l.source.into(),
                    l.local_id.into(),
                    l.child.into(),
                    l.status.into(),
                    l.method.into(),
                    Cell::Real(l.score.map(|(s, _)| s.probability)),
                    Cell::Real(l.score.map(|(s, _)| s.weight)),
                    Cell::Text(l.model_version),
                    explanation.as_str().into(),
                    Cell::Text(l.decided_by),
                    Cell::Text(l.decision),
                    Cell::Text(l.reason),
                    now.into(),
                    Cell::Text(l.decided_by.map(|_| now)),
                ]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::test_count;
    use crate::pipeline::resolve::{Index, Search};
    use sqlx::Row;
    use weft_adapters::SourceRecord;

    fn link(source: &str, id: &str) -> Link {
        Link {
            source: source.into(),
            local_id: id.into(),
        }
    }

    #[test]
    fn a_second_from_a_source_counts_the_partners_sources_but_not_the_partners() {
        let none: &[Link] = &[];
        let school = [link("school", "s2")];
        // Its own source: any record but itself.
        assert!(second_from_a_source(
            [("health", "h1")],
            "health",
            "h2",
            none
        ));
        assert!(!second_from_a_source(
            [("health", "h2")],
            "health",
            "h2",
            none
        ));
        assert!(!second_from_a_source(
            [("school", "s1")],
            "health",
            "h2",
            none
        ));
        // A partner's source: any record but the partners.
        assert!(second_from_a_source(
            [("school", "s1")],
            "health",
            "h2",
            &school
        ));
        assert!(!second_from_a_source(
            [("school", "s2")],
            "health",
            "h2",
            &school
        ));
        assert!(!second_from_a_source(
            [("police", "p1")],
            "health",
            "h2",
            &school
        ));
    }

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
                ..Demographics::default()
            },
            score: None,
            restricted: false,
        }
    }

    /// The part stored with a key (`match_keys.part`) is the one the bulk path reads in
    /// memory (`Parts`), empty exactly where the form lacks the field, for forms missing fields
    /// and with letters outside ASCII.
    #[test]
    fn a_split_reads_the_part_of_the_stored_form() {
        let forms = [
            "katie|zed|20160621|f|wt35qp||",
            "|zed|20160621|f|||",
            "katie||20160621|f|||",
            "katie|zed||f|||",
            "éva marie|ödön|19991231||||",
            "k|z|2016|||",
        ];
        for split in [Split::Given, Split::Family, Split::Year] {
            for form in forms {
                let part = Split::stored(Some(split), form);
                assert_eq!(part, split.part(form));
                assert_eq!(
                    Parts::of(form).has(split),
                    !part.is_empty(),
                    "{split:?} of {form}"
                );
            }
        }
        assert_eq!(Split::stored(None, forms[0]), "", "a rule never split");
        assert_eq!(Split::Year.part(forms[0]), "2016");
        assert_eq!(Split::Given.part(forms[4]), "é");
        assert_eq!(Split::Family.part(forms[1]), "z");
        assert_eq!(Split::Given.part(forms[1]), "");
        // A record without the part is reached whatever the other's; one with it only by
        // the same part.
        let (katie, catie, blank) = (
            Parts::of(forms[0]),
            Parts::of("catie|zed|20160612|f|||"),
            Parts::of(forms[1]),
        );
        assert!(katie.reaches(katie, Split::Given));
        assert!(!katie.reaches(catie, Split::Given));
        assert!(katie.reaches(catie, Split::Family));
        assert!(katie.reaches(catie, Split::Year));
        assert!(blank.reaches(catie, Split::Given));
    }

    /// In a block split by birth year (`names_soundex`, grown past [`SPLIT_OVER`] by a crowd
    /// whose names sound like Katie Zed's), a record stored without a birth date (part `''`)
    /// is still reached by a search born in any year. Nothing else joins them: no postcodes,
    /// no date.
    #[tokio::test]
    async fn a_record_without_the_part_is_reached_from_every_part_of_a_split_block() {
        let given = [
            "Kate", "Katy", "Kati", "Kady", "Kit", "Kitty", "Kat", "Kody", "Katia", "Kadie",
        ];
        let family = ["Zedd", "Zad", "Zod", "Zade", "Zeta", "Zit", "Zadie"];
        let at = |id: &str, given: &str, family: &str, dob: Option<String>| {
            let mut r = rec(id, None, given, family);
            r.demographics.birth_date = dob;
            r.demographics.postcode = None;
            r
        };
        for (n, split) in [(10, None), (SPLIT_OVER + 10, Some(Split::Year))] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path(), 0.95).await;
            for i in 0..n {
                let r = at(
                    &format!("z{i}"),
                    given[i % given.len()],
                    family[(i / given.len()) % family.len()],
                    Some(format!(
                        "{}-{:02}-{:02}",
                        2005 + i % 16,
                        1 + i % 12,
                        1 + i % 28
                    )),
                );
                index.upsert("school", &r).await.unwrap();
            }
            let undated = index
                .upsert("health", &at("undated", "Katie", "Zed", None))
                .await
                .unwrap()
                .0;
            let search = at("q", "Katie", "Zed", Some("2016-06-21".into()));
            // The block is split for the search exactly when it is large.
            let query = record_of("q", &search.demographics, &[]);
            let keys = index.matcher().split_keys(&query);
            let mut conn = index.store().pool.acquire().await.unwrap();
            let splits = Matcher::split_blocks(&mut conn, &keys, &query.form(), None)
                .await
                .unwrap();
            drop(conn);
            let names = keys
                .iter()
                .position(|(rule, _, _)| rule == "names_soundex")
                .expect("a names_soundex key");
            assert_eq!(splits[names], split, "{n} in the crowd");
            let found = index
                .find(&Search {
                    demographics: Some(search.demographics),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(
                found.iter().any(|f| f.id == undated),
                "{n} in the crowd: {found:?}"
            );
        }
    }

    fn child(id: &str, given: &str, family: &str, sex: &str, postcode: &str) -> SourceRecord {
        let mut r = rec(id, None, given, family);
        r.demographics.sex = Some(sex.into());
        r.demographics.postcode = Some(postcode.into());
        r
    }

    #[tokio::test]
    async fn twins_in_two_systems_are_two_children_and_a_stranger_born_the_same_day_is_a_third() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let (ruby, _) = index
            .upsert(
                "health",
                &child("h1", "Ruby", "Calder", "female", "WT3 5QP"),
            )
            .await
            .unwrap();
        // Her twin brother, at the same address, in the school's system.
        let (oliver, _) = index
            .upsert(
                "school",
                &child("s1", "Oliver", "Calder", "male", "WT3 5QP"),
            )
            .await
            .unwrap();
        assert_ne!(ruby, oliver, "twins are two children");
        // A twin sister: same sex, same everything but the given name.
        let (rosie, _) = index
            .upsert(
                "school",
                &child("s2", "Rosie", "Calder", "female", "WT3 5QP"),
            )
            .await
            .unwrap();
        assert_ne!(rosie, ruby);
        // An unrelated girl born the same day.
        let (amira, _) = index
            .upsert(
                "police",
                &child("p1", "Amira", "Hussain", "female", "WT9 1AB"),
            )
            .await
            .unwrap();
        assert!(![&ruby, &oliver, &rosie].contains(&&amira));
        // Nothing a person should be asked about: twins are not proposed.
        assert!(review_queue(&index).await.unwrap().is_empty());
        // Ruby's own record in the police system still links to her.
        let (again, _) = index
            .upsert(
                "police",
                &child("p2", "Ruby", "Calder", "female", "WT3 5QP"),
            )
            .await
            .unwrap();
        assert_eq!(again, ruby);
        // A search for the twin brother never grades his sister certain.
        let found = index
            .find(&Search {
                demographics: Some(child("q", "Oliver", "Calder", "male", "WT3 5QP").demographics),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            found
                .iter()
                .all(|f| f.id == oliver || f.grade != Grade::Certain),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_near_miss_goes_to_the_review_queue_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let (ella, _) = index
            .upsert("health", &child("h1", "Ella", "Khan", "female", "WT3 5QP"))
            .await
            .unwrap();
        // Only an initial, same date of birth and address: could be her, could be a twin.
        let (e, _) = index
            .upsert("school", &child("s1", "E", "Khan", "female", "WT3 5QP"))
            .await
            .unwrap();
        assert_ne!(e, ella, "never linked without a person");
        let queue = review_queue(&index).await.unwrap();
        assert_eq!(queue.len(), 1, "{queue:?}");
        assert_eq!(queue[0].child_id, ella);
        let rule = queue[0]
            .explanation
            .iter()
            .find(|x| x.comparison == "rule")
            .expect("the explanation names the rule");
        assert!(rule.level.contains("twins"), "{rule:?}");
    }

    #[tokio::test]
    async fn an_upgrade_asks_about_links_the_new_model_would_not_make_and_moves_none() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _db) = index(dir.path(), 0.5).await;
        let ella = old
            .upsert(
                "health",
                &child("h1", "Eleanor", "Thompson", "female", "WT3 5QP"),
            )
            .await
            .unwrap()
            .0;
        let mut moved = child("s1", "Eleanor", "Thomson", "female", "WT3 5QP");
        moved.demographics.birth_date = Some("2016-06-12".into());
        let linked = old.upsert("school", &moved).await.unwrap().0;
        assert_eq!(linked, ella, "the lenient old thresholds link it");
        let p = probability(&old, &ella, "s1").await;
        assert!(p < 1.0, "{p}");
        // The links were made by an older model; the new one is stricter.
        made_by_an_older_model(&old).await;
        let cfg = MatchingConfig {
            upper: (p + 1.0) / 2.0,
            lower: 0.5,
            model: None,
        };
        let new = Index::with_matcher(old.store().clone(), Matcher::from_config(&cfg).unwrap());
        assert_eq!(reexamine(&new).await.unwrap(), 1);
        assert_eq!(reexamine(&new).await.unwrap(), 0, "asked once");
        let queue = review_queue(&new).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(
            (queue[0].method.as_str(), queue[0].child_id.as_str()),
            (RECHECK, ella.as_str())
        );
        // Nothing moved by itself, and a pass over the same record moves nothing either.
        assert_eq!(new.upsert("school", &moved).await.unwrap().0, ella);
        // A person splits it: the record becomes a child of its own and stays one.
        let decided = decide(&new, &queue[0].id, Decision::Reject, "dsl", None, by_admin)
            .await
            .unwrap();
        assert_ne!(decided.child_id, ella);
        assert_eq!(
            new.upsert("school", &moved).await.unwrap().0,
            decided.child_id
        );
        assert_eq!(reexamine(&new).await.unwrap(), 0);
        assert!(review_queue(&new).await.unwrap().is_empty());
    }

    /// A link made before the rule for a record matching two children alike: police's record
    /// of a girl, without identifier or postcode, joined the only Olivia Wood born that day the
    /// index then held; the other, at another address, arrived later. An upgrade asks about
    /// the link, saying why; nothing moves.
    #[tokio::test]
    async fn an_upgrade_asks_about_a_record_another_child_matches_as_well() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _db) = index(dir.path(), 0.95).await;
        let girl = |id: &str, nhs: Option<&str>, postcode: Option<&str>| {
            let mut r = rec(id, nhs, "Olivia", "Wood");
            r.demographics.postcode = postcode.map(String::from);
            r
        };
        let her = old
            .upsert("health", &girl("h1", Some("9434765919"), Some("WD3 1AA")))
            .await
            .unwrap()
            .0;
        let police = girl("p1", None, None);
        assert_eq!(old.upsert("police", &police).await.unwrap().0, her);
        let other = girl("h2", Some("9990000018"), Some("WD9 7QT"));
        assert_ne!(old.upsert("health", &other).await.unwrap().0, her);
        let new = upgraded_asks(&old, "p1", AMBIGUOUS_RULE).await;
        assert_eq!(new.upsert("police", &police).await.unwrap().0, her);
    }

    /// A link made before the second-record rule: the health record without identifiers joined
    /// the child through the school's record (probable, not certain), and the child's own
    /// health record then arrived with its NHS number. An upgrade asks about the first one,
    /// as the rule would have held it for a person; the identifier link stands.
    #[tokio::test]
    async fn an_upgrade_asks_about_a_second_record_from_one_source_short_of_certain() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _db) = index(dir.path(), 0.95).await;
        let nhs = Some("9434765919");
        let girl = old
            .upsert("school", &rec("s1", nhs, "Eleanor", "Thompson"))
            .await
            .unwrap()
            .0;
        let mut moved = child("h2", "Eleanor", "Thompson", "female", "WT9 9ZZ");
        moved.demographics.given_name = Some("Elenor".into());
        assert_eq!(old.upsert("health", &moved).await.unwrap().0, girl);
        let own = rec("h1", nhs, "Eleanor", "Thompson");
        assert_eq!(old.upsert("health", &own).await.unwrap().0, girl);
        let p = probability(&old, &girl, "h2").await;
        assert!((0.95..CERTAIN).contains(&p), "probable, not certain: {p}");
        let new = upgraded_asks(&old, "h2", SECOND_RECORD_RULE).await;
        // Nothing moved.
        assert_eq!(new.upsert("health", &moved).await.unwrap().0, girl);
    }

    #[tokio::test]
    async fn an_identifier_link_says_which_identifier_and_how_it_was_verified() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let a = index
            .upsert(
                "health",
                &rec("h1", Some("9434765919"), "Eleanor", "Thompson"),
            )
            .await
            .unwrap()
            .0;
        let b = index
            .upsert("school", &rec("s1", Some("943 476 5919"), "Nell", "Smith"))
            .await
            .unwrap()
            .0;
        assert_eq!(a, b);
        let history = link_history(&index, &a).await.unwrap().unwrap();
        let school = history.iter().find(|l| l.source == "school").unwrap();
        assert_eq!(school.method, "identifier:nhs_number");
        assert_eq!(school.explanation.len(), 1);
        assert_eq!(school.explanation[0].comparison, "nhs_number");
        assert!(school.explanation[0].level.contains("check digit"));
    }

    /// The probability a child's link to one record was made at.
    async fn probability(index: &Index, child: &str, local_id: &str) -> f64 {
        link_history(index, child)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .find(|l| l.local_id == local_id)
            .and_then(|l| l.probability)
            .expect("a probabilistic link to the record")
    }

    /// Marks every link as made by a model version no build has, as after an upgrade.
    /// The index with the built-in model after `old`'s links are made older: its
    /// re-examination asks one recheck, about `local_id`, naming `rule`.
    async fn upgraded_asks(old: &Index, local_id: &str, rule: &str) -> Index {
        made_by_an_older_model(old).await;
        let new = Index::with_matcher(old.store().clone(), Matcher::builtin());
        assert_eq!(reexamine(&new).await.unwrap(), 1);
        let queue = review_queue(&new).await.unwrap();
        assert_eq!(
            (queue[0].method.as_str(), queue[0].local_id.as_str()),
            (RECHECK, local_id)
        );
        assert!(
            queue[0]
                .explanation
                .iter()
                .any(|e| e.comparison == "rule" && e.level == rule),
            "{:?}",
            queue[0].explanation
        );
        new
    }

    async fn made_by_an_older_model(index: &Index) {
        sqlx::query("UPDATE match_links SET model_version = 'fs-000000000000'")
            .execute(&index.store().pool)
            .await
            .unwrap();
    }

    fn by_admin(d: &Decided) -> Entry {
        Entry {
            user: "admin1".into(),
            role: "data_admin".into(),
            ..Entry::system("match_decision", Some(&d.child_id), "changed", json!({}))
        }
    }

    /// The health record every test starts from: it has an NHS number. Returns its child.
    async fn eleanor(index: &Index) -> String {
        let p1 = rec("p1", Some("9000000009"), "Eleanor", "Thompson");
        index.upsert("health", &p1).await.unwrap().0
    }

    #[tokio::test]
    async fn the_queue_puts_a_records_proposals_together() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let mut children = Vec::new();
        for i in 0..3 {
            let r = rec(&format!("h{i}"), None, &format!("Child{i}"), "Queue");
            children.push(index.upsert("health", &r).await.unwrap().0);
        }
        // One batch's proposals, as the bulk path writes them: one time for all, random ids.
        // Each of twelve records is proposed to two children, as a record matching two
        // children alike is.
        let locals: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
        let proposals: Vec<(String, Proposal)> = locals
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [0, 1 + i % 2].map(|c| {
                    (
                        l.clone(),
                        Proposal {
                            child: children[c].clone(),
                            method: "probabilistic".into(),
                            scored: None,
                        },
                    )
                })
            })
            .collect();
        let links: Vec<NewLink> = proposals
            .iter()
            .map(|(l, p)| NewLink::proposal("police", l, p, "v"))
            .collect();
        let rows = LinkRows::of(&links);
        let mut conn = index.store().pool.acquire().await.unwrap();
        crate::foundation::store::insert_rows(
            &mut conn,
            index.store().backend,
            NEW_LINKS,
            rows.rows(&links),
        )
        .await
        .unwrap();
        drop(conn);
        let queue = review_queue(&index).await.unwrap();
        let order: Vec<&str> = queue.iter().map(|l| l.local_id.as_str()).collect();
        let together: Vec<&str> = locals.iter().flat_map(|l| [l.as_str(); 2]).collect();
        assert_eq!(order, together);
    }

    async fn index(dir: &std::path::Path, upper: f64) -> (Index, weft_adapters::testkit::FreshDb) {
        let (store, db) = crate::foundation::store::test_store(dir).await;
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
        let a = eleanor(&index).await;
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
        assert_eq!(family.level, "close spelling, or a former family name");
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
        let a = eleanor(&index).await;
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
            by_admin,
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
            decide(
                &index,
                &queue[0].id,
                Decision::Confirm,
                "admin1",
                None,
                by_admin
            )
            .await,
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
        let d = decide(
            &index,
            &proposal.id,
            Decision::Confirm,
            "admin1",
            None,
            by_admin,
        )
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
            by_admin,
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
            decide(
                &index,
                "no-such-id",
                Decision::Confirm,
                "admin1",
                None,
                by_admin
            )
            .await,
            Err(DecisionError::NotFound)
        ));
    }

    async fn by_matcher(index: &Index) -> Vec<audit::Recorded> {
        let q = audit::Query {
            user: Some("matcher".into()),
            limit: Some(1000),
            ..Default::default()
        };
        let mut entries = audit::search(index.store(), &q, None).await.unwrap();
        entries.reverse();
        entries
    }

    #[tokio::test]
    async fn every_automatic_link_and_proposal_is_in_the_audit_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 1.0).await;
        let p1 = rec("p1", Some("9000000009"), "Eleanor", "Thompson");
        let (a, _) = index.upsert("health", &p1).await.unwrap();
        let mut s1 = rec("s1", Some("9000000009"), "Ellie", "Thompson");
        s1.demographics.birth_date = Some("2016-06-12".into());
        index.upsert("school", &s1).await.unwrap();
        let (b, _) = index
            .upsert("police", &rec("x1", None, "Eleanor", "Thomson"))
            .await
            .unwrap();
        let seen: Vec<(String, String, String, String)> = by_matcher(&index)
            .await
            .into_iter()
            .map(|r| {
                let d = &r.entry.detail;
                (
                    r.entry.outcome.clone(),
                    d["local_id"].as_str().unwrap().to_string(),
                    d["method"].as_str().unwrap().to_string(),
                    r.entry.child.clone().unwrap(),
                )
            })
            .collect();
        let row = |o: &str, l: &str, m: &str, c: &str| (o.into(), l.into(), m.into(), c.into());
        assert_eq!(
            seen,
            vec![
                row("linked", "p1", "new", &a),
                row("linked", "s1", "identifier:nhs_number", &a),
                row("linked", "x1", "new", &b),
                row("proposed", "x1", "probabilistic", &a),
            ]
        );
        let proposal = by_matcher(&index).await.pop().unwrap();
        assert_eq!(proposal.entry.detail["current_child"], b.as_str());
        assert_eq!(proposal.entry.role, "system");
        assert!(proposal.entry.detail["probability"].as_f64().unwrap() >= 0.5);
        // A record read again keeps its link: nothing new to record.
        index.upsert("health", &p1).await.unwrap();
        assert_eq!(by_matcher(&index).await.len(), 4);

        // A split records the person's decision and the matcher's new placement together.
        let link = link_history(&index, &a)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .find(|l| l.local_id == "s1")
            .unwrap();
        let d = decide(&index, &link.id, Decision::Split, "admin1", None, by_admin)
            .await
            .unwrap();
        assert_ne!(d.child_id, a, "the shared NHS number does not link it back");
        let mut all = audit::search(index.store(), &audit::Query::default(), None)
            .await
            .unwrap();
        all.reverse();
        assert_eq!(
            (all[4].entry.action.as_str(), all[4].entry.user.as_str()),
            ("match_decision", "admin1")
        );
        assert_eq!(
            (
                all[5].entry.outcome.as_str(),
                all[5].entry.detail["local_id"].as_str()
            ),
            ("linked", Some("s1"))
        );
        assert_eq!(all[5].entry.child.as_deref(), Some(d.child_id.as_str()));
        let verified = audit::verify(index.store()).await.unwrap();
        assert_eq!(
            (verified.entries, verified.problem),
            (all.len() as i64, None)
        );
    }

    #[tokio::test]
    async fn a_changed_record_that_now_matches_another_child_is_proposed_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let a = eleanor(&index).await;
        let (b, _) = index
            .upsert("school", &rec("s1", None, "Ruby", "Calder"))
            .await
            .unwrap();
        assert_ne!(a, b);
        assert!(review_queue(&index).await.unwrap().is_empty());

        // The school corrects the record: it is the same child as p1.
        let corrected = rec("s1", None, "Eleanor", "Thompson");
        let (still, _) = index.upsert("school", &corrected).await.unwrap();
        assert_eq!(still, b, "a link is never moved automatically");
        let queue = review_queue(&index).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(
            (queue[0].local_id.as_str(), queue[0].child_id.as_str()),
            ("s1", a.as_str())
        );
        let proposed = by_matcher(&index).await.pop().unwrap();
        assert_eq!(
            (
                proposed.entry.outcome.as_str(),
                &proposed.entry.detail["current_child"]
            ),
            ("proposed", &json!(b))
        );
        // Read again, changed again or not: the open proposal is not repeated.
        index.upsert("school", &corrected).await.unwrap();
        let mut again = corrected.clone();
        again.demographics.postcode = Some("WT3 5QQ".into());
        index.upsert("school", &again).await.unwrap();
        assert_eq!(review_queue(&index).await.unwrap().len(), 1);
        // Rejected: never proposed again.
        decide(
            &index,
            &queue[0].id,
            Decision::Reject,
            "admin1",
            None,
            by_admin,
        )
        .await
        .unwrap();
        index.upsert("school", &corrected).await.unwrap();
        assert!(review_queue(&index).await.unwrap().is_empty());
        // A record that changes but still matches its own child best proposes nothing.
        let mut moved = rec("p1", Some("9000000009"), "Eleanor", "Thompson");
        moved.demographics.postcode = Some("WT9 1AA".into());
        index.upsert("health", &moved).await.unwrap();
        assert!(review_queue(&index).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn identifiers_pointing_at_two_children_link_by_nhs_number_and_ask_about_the_upn() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let a = eleanor(&index).await;
        let mut ruby = rec("s1", None, "Ruby", "Calder");
        ruby.identifiers = vec![Identifier::new("upn", "B801200005001")];
        let (b, _) = index.upsert("school", &ruby).await.unwrap();
        assert_ne!(a, b);

        // A police record carrying Eleanor's NHS number and Ruby's UPN.
        let mut x1 = rec("x1", Some("9000000009"), "Eleanor", "Thompson");
        x1.identifiers.push(Identifier::new("upn", "B801200005001"));
        let (linked, _) = index.upsert("police", &x1).await.unwrap();
        assert_eq!(linked, a, "the NHS number links");
        let queue = review_queue(&index).await.unwrap();
        assert_eq!(queue.len(), 1);
        assert_eq!(
            (
                queue[0].child_id.as_str(),
                queue[0].method.as_str(),
                queue[0].probability
            ),
            (b.as_str(), "identifier:upn", None)
        );
        let proposed = by_matcher(&index).await.pop().unwrap();
        assert_eq!(
            (
                proposed.entry.outcome.as_str(),
                &proposed.entry.detail["current_child"]
            ),
            ("proposed", &json!(a))
        );
    }

    #[tokio::test]
    async fn nothing_is_linked_or_decided_when_the_audit_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 1.0).await;
        eleanor(&index).await;
        let (b, _) = index
            .upsert("police", &rec("x1", None, "Eleanor", "Thomson"))
            .await
            .unwrap();
        let proposal = review_queue(&index).await.unwrap().remove(0);
        let tables = ["children", "source_records", "match_links", "match_keys"];
        let mut before = Vec::new();
        for t in tables {
            before.push(test_count(index.store(), t).await);
        }
        sqlx::query("DROP TABLE audit_head")
            .execute(&index.store().pool)
            .await
            .unwrap();

        assert!(index
            .upsert("school", &rec("s9", None, "Ruby", "Calder"))
            .await
            .is_err());
        assert!(matches!(
            decide(
                &index,
                &proposal.id,
                Decision::Confirm,
                "admin1",
                None,
                by_admin
            )
            .await,
            Err(DecisionError::Audit(_))
        ));
        let mut after = Vec::new();
        for t in tables {
            after.push(test_count(index.store(), t).await);
        }
        assert_eq!(before, after, "nothing half-applied");
        let still = review_queue(&index).await.unwrap();
        assert_eq!(still[0].id, proposal.id);
        let found = index
            .find(&Search {
                local_id: Some(("police".into(), "x1".into())),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found[0].id, b, "the record has not moved");
    }

    fn person(id: &str, given: &str, family: &str, dob: &str) -> SourceRecord {
        let mut r = rec(id, None, given, family);
        r.demographics.birth_date = Some(dob.into());
        r
    }

    async fn family_weight(index: &Index, r: &SourceRecord) -> Explained {
        let q = record_of("q", &r.demographics, &[]);
        let mut conn = index.store().pool.acquire().await.unwrap();
        let found = index
            .matcher()
            .candidates(&mut conn, &q, &[], None)
            .await
            .unwrap();
        found[0]
            .explanation
            .iter()
            .find(|e| e.comparison == "family_name")
            .unwrap()
            .clone()
    }

    async fn terms(index: &Index) -> Vec<(String, String, i64, i64)> {
        sqlx::query(
            "SELECT comparison, value, n, sq FROM match_terms WHERE n <> 0 AND comparison <> '_derived' \
             ORDER BY comparison, value",
        )
        .fetch_all(&index.store().pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("comparison").unwrap(),
                r.try_get("value").unwrap(),
                r.try_get("n").unwrap(),
                r.try_get("sq").unwrap(),
            )
        })
        .collect()
    }

    #[tokio::test]
    async fn a_rare_family_name_counts_for_more_than_a_common_one() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let given = ["Amy", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana"];
        for (i, g) in given.iter().cycle().take(24).enumerate() {
            let dob = format!("201{}-0{}-{:02}", i % 8, 1 + i % 9, 1 + i);
            index
                .upsert("school", &person(&format!("s{i}"), g, "Smith", &dob))
                .await
                .unwrap();
        }
        let rare = person("r1", "Isla", "Featherstonehaugh", "2013-04-30");
        index.upsert("school", &rare).await.unwrap();
        let common = person("s3", "Dev", "Smith", "2013-04-04");

        let (c, r) = (
            family_weight(&index, &common).await,
            family_weight(&index, &rare).await,
        );
        assert_eq!((c.level.as_str(), r.level.as_str()), ("exact", "exact"));
        assert!(c.term_frequency_adjusted && r.term_frequency_adjusted);
        assert!(r.weight > c.weight + 3.0, "rare {r:?}, common {c:?}");

        // A changed name moves its count; counting everything again agrees.
        let mut renamed = rare.clone();
        renamed.demographics.family_name = Some("Smith".into());
        index.upsert("school", &renamed).await.unwrap();
        let kept = terms(&index).await;
        assert!(
            kept.contains(&("family_name".into(), "smith".into(), 25, 0)),
            "{kept:?}"
        );
        assert!(kept.contains(&("family_name".into(), String::new(), 25, 625)));
        assert!(!kept.iter().any(|t| t.1 == "featherstonehaugh"));
        let keys = || async {
            let rows = sqlx::query(
                "SELECT rule, key, source, local_id, form FROM match_keys \
                 ORDER BY rule, key, source, local_id",
            )
            .fetch_all(&index.store().pool)
            .await
            .unwrap();
            rows.iter()
                .map(|r| (0..5).map(|i| r.try_get::<String, _>(i).unwrap()).collect())
                .collect::<Vec<Vec<String>>>()
        };
        let upserted = keys().await;
        assert!(upserted.len() >= 25 * 3, "{} blocking keys", upserted.len());
        // As a store written by an older build looks after its migration: no marker, no keys.
        sqlx::query("DELETE FROM match_terms")
            .execute(&index.store().pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM match_keys")
            .execute(&index.store().pool)
            .await
            .unwrap();
        assert_eq!(
            index.matcher().rebuild(index.store()).await.unwrap(),
            Rebuilt {
                records: 25,
                keys: upserted.len() as u64
            }
        );
        assert_eq!(keys().await, upserted, "derived as upsert wrote them");
        assert_eq!(terms(&index).await, kept);
        assert_eq!(
            index.matcher().rebuild(index.store()).await.unwrap(),
            Rebuilt::default(),
            "derived once"
        );
    }

    /// A search for a child by the middle name they go by and the family name they had before
    /// finds them scored with both; a store whose forms an older build wrote (without the
    /// extras) is derived again once, and then finds them the same way.
    #[tokio::test]
    async fn a_search_scores_a_candidate_with_its_middle_and_former_names_after_deriving_again() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let mut amy = rec("h1", None, "Amy", "Bloggs");
        amy.demographics.middle_names = Some("Rose".into());
        amy.demographics.former_family_names = vec!["Smith".into()];
        let (child, _) = index.upsert("health", &amy).await.unwrap();
        let search = Search {
            demographics: Some(child_("Rose", "Smith").demographics),
            ..Default::default()
        };
        let level = |f: &crate::pipeline::resolve::Found, c: &str| {
            f.explanation
                .iter()
                .find(|e| e.comparison == c)
                .map(|e| e.level.clone())
                .unwrap_or_default()
        };
        let check = |hits: Vec<crate::pipeline::resolve::Found>| {
            let hit = hits.iter().find(|f| f.id == child).cloned();
            let hit = hit.unwrap_or_else(|| panic!("not found: {hits:?}"));
            assert_eq!(
                level(&hit, "given_name"),
                "same first name, other name or nickname"
            );
            assert_eq!(
                level(&hit, "family_name"),
                "close spelling, or a former family name"
            );
            hit.probability
        };
        let p = check(index.find(&search).await.unwrap());
        assert!(p >= 0.5, "scored with her other names: {p}");

        // As a store written by the build before looks: forms of the five fields and the
        // identifiers only, the marker at 1.
        let rows = sqlx::query("SELECT rule, key, form FROM match_keys")
            .fetch_all(&index.store().pool)
            .await
            .unwrap();
        for row in &rows {
            let form: String = row.try_get("form").unwrap();
            let old: Vec<&str> = form.split('|').take(7).collect();
            sqlx::query("UPDATE match_keys SET form = $1 WHERE rule = $2 AND key = $3")
                .bind(old.join("|"))
                .bind(row.try_get::<String, _>("rule").unwrap())
                .bind(row.try_get::<String, _>("key").unwrap())
                .execute(&index.store().pool)
                .await
                .unwrap();
        }
        sqlx::query("UPDATE match_terms SET n = 1 WHERE comparison = '_derived'")
            .execute(&index.store().pool)
            .await
            .unwrap();
        let before = index.find(&search).await.unwrap();
        assert!(
            before.iter().all(|f| f.id != child || f.probability < p),
            "the old form lacks her other names: {before:?}"
        );
        let rebuilt = index.matcher().rebuild(index.store()).await.unwrap();
        assert_eq!(rebuilt.records, 1);
        assert_eq!(rebuilt.keys, rows.len() as u64);
        assert_eq!(check(index.find(&search).await.unwrap()), p);
        let marker: i64 = sqlx::query("SELECT n FROM match_terms WHERE comparison = '_derived'")
            .fetch_one(&index.store().pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(marker, DERIVED_VERSION);
        assert_eq!(
            index.matcher().rebuild(index.store()).await.unwrap(),
            Rebuilt::default(),
            "derived once"
        );
    }

    fn child_(given: &str, family: &str) -> SourceRecord {
        child("q", given, family, "female", "WT3 5QP")
    }

    #[tokio::test]
    async fn the_address_line_links_a_record_without_a_postcode_and_adds_nothing_beside_one() {
        let at = |id: &str, postcode: Option<&str>, line: Option<&str>| {
            let mut r = rec(id, None, "Amy", "Bloggs");
            r.demographics.postcode = postcode.map(String::from);
            r.demographics.address_lines = line.into_iter().map(String::from).collect();
            r
        };
        // The police's record has no postcode, and its date of birth has the day's digits
        // the wrong way round.
        let police = |line: Option<&str>| {
            let mut r = at("p1", None, line);
            r.demographics.birth_date = Some("2016-06-12".into());
            r
        };
        let school = at("s1", Some("WT3 5QP"), Some("12 High Street"));
        let m = Matcher::builtin();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&m.model, &tf, MIN_POPULATION);
        let p = |a: &SourceRecord, b: &SourceRecord| {
            let r = |s: &SourceRecord| record_of(&s.local_id, &s.demographics, &s.identifiers);
            scorer.score(&r(a), &r(b)).probability
        };
        let same_home = p(&school, &police(Some("12 High St")));
        let unknown_home = p(&school, &police(None));
        let next_door = p(&school, &police(Some("14 High Street")));
        assert!(same_home >= m.upper && unknown_home < m.upper);
        assert!(next_door < same_home);
        // Beside the same postcode, the house number and street add nothing.
        assert_eq!(
            p(&school, &at("p1", Some("WT3 5QP"), Some("12 High St"))),
            p(&school, &at("p1", Some("WT3 5QP"), None))
        );

        // In the index: the address line links the police's record to the child; without it
        // the record waits for a person.
        for (line, linked) in [(Some("12 High St"), true), (None, false)] {
            let dir = tempfile::tempdir().unwrap();
            let (index, _db) = index(dir.path(), m.upper).await;
            let (child, _) = index.upsert("school", &school).await.unwrap();
            let (placed, _) = index.upsert("police", &police(line)).await.unwrap();
            assert_eq!(placed == child, linked, "{line:?}");
        }
    }

    #[tokio::test]
    async fn what_records_carry_beyond_the_compared_fields_is_kept() {
        let mut full = rec("f1", None, "Amy", "Bloggs");
        full.identifiers
            .push(Identifier::new("former_upn", "B801200005001"));
        full.demographics.middle_names = Some("Rose".into());
        full.demographics.former_family_names = vec!["Smith".into()];
        full.demographics.address_lines = vec!["12 High Street".into(), "Leeds".into()];
        full.demographics.former_addresses =
            vec![weft_adapters::Address::new(["1 Old Road"], Some("LS2 9JT")).unwrap()];
        full.demographics.household = vec!["uprn:100023336956".into()];
        let r = record_of("f1", &full.demographics, &full.identifiers);
        assert_eq!(r.middle.as_ref().map(|n| n.joined.as_str()), Some("rose"));
        assert_eq!(r.former_family.len(), 1);
        assert!(r.former_upn.is_some());
        assert_eq!(r.former_postcodes.len(), 1);
        assert_eq!(r.house_number.as_deref(), Some("12"));
        assert_eq!(
            r.households(),
            ["uprn:100023336956", "address:WT35QP:12"].map(String::from)
        );
        // The extra fields count only where they agree (a middle name for a given name, a former
        // family name for a family name), and the address line only against a record that has
        // one: here none moves the score.
        let bare = rec("f1", None, "Amy", "Bloggs");
        let plain = record_of("f1", &bare.demographics, &bare.identifiers);
        // The index's matching form keeps them, so a search judges a candidate as its record.
        let back = Record::from_form("f1", &r.form());
        assert_eq!(back.households(), r.households());
        assert_eq!(
            (&back.middle, &back.former_family),
            (&r.middle, &r.former_family)
        );
        assert_ne!(r.form(), plain.form());
        let m = Matcher::builtin();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&m.model, &tf, MIN_POPULATION);
        let other = record_of("o", &rec("o", None, "Amy", "Blogs").demographics, &[]);
        assert_eq!(
            scorer.score(&r, &other).probability,
            scorer.score(&plain, &other).probability
        );

        // And the index keeps them with the record, as the source gave them.
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        index.upsert("school", &full).await.unwrap();
        let stored: String = sqlx::query(
            "SELECT demographics FROM source_records WHERE source = 'school' AND local_id = 'f1'",
        )
        .fetch_one(&index.store().pool)
        .await
        .unwrap()
        .try_get("demographics")
        .unwrap();
        let back: Demographics = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, full.demographics);
    }

    #[test]
    fn a_model_comparing_what_the_index_does_not_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let mut fields = FIELDS.to_vec();
        Model::initial(&comparisons_for(&fields))
            .save(&path)
            .unwrap();
        let cfg = |model: &std::path::Path| MatchingConfig {
            model: Some(model.to_path_buf()),
            ..MatchingConfig::default()
        };
        assert!(Matcher::from_config(&cfg(&path)).is_ok());
        fields.push(Field::Town);
        Model::initial(&comparisons_for(&fields))
            .save(&path)
            .unwrap();
        let Err(ModelError::Invalid(why)) = Matcher::from_config(&cfg(&path)) else {
            panic!("a model comparing the town is taken");
        };
        assert!(
            why.ends_with("also compares town") && why.contains("house_number, street"),
            "{why}"
        );
    }

    #[test]
    fn builtin_model_loads_and_grades() {
        let m = Matcher::builtin();
        assert_eq!(m.model.comparison_kinds(), comparisons_for(&FIELDS));
        assert_eq!(m.grade(0.9995), Some(Grade::Certain));
        // Linked automatically by the index (at or above `upper`), yet wrong too often to be
        // called certain.
        assert!(0.99 >= m.upper);
        assert_eq!(m.grade(0.99), Some(Grade::Probable));
        assert_eq!(m.grade(0.7), Some(Grade::Probable));
        assert_eq!(m.grade(0.1), Some(Grade::Possible));
        assert_eq!(m.grade(0.01), None);
        assert!(m.keys(&Record::default()).is_empty());
    }

    #[tokio::test]
    async fn a_child_holding_another_nhs_number_is_no_candidate_even_where_blocking_misses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _db) = index(dir.path(), 0.95).await;
        let child = eleanor(&index).await;
        let police = rec("x1", None, "Eleanor", "Thomson");
        assert_eq!(index.upsert("police", &police).await.unwrap().0, child);
        // The health record changes beyond the reach of every blocking key; it keeps its link,
        // and with it the child keeps its NHS number.
        let mut moved = rec("p1", Some("9000000009"), "Zara", "Okonkwo");
        moved.demographics.birth_date = Some("2009-01-02".into());
        moved.demographics.postcode = Some("ZZ1 1ZZ".into());
        assert_eq!(index.upsert("health", &moved).await.unwrap().0, child);

        // The police record's twin, under another valid NHS number, is another child.
        let twin = rec("s9", Some("9912003888"), "Eleanor", "Thomson");
        let (other, _) = index.upsert("school", &twin).await.unwrap();
        assert_ne!(other, child);
        let found = index
            .find(&Search {
                nhs_number: weft_ids::NhsNumber::parse("9912003888").ok(),
                demographics: Some(twin.demographics.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.first().map(|f| f.id.as_str()), Some(other.as_str()));
        assert!(found.iter().all(|f| f.id != child), "{found:?}");
        // Without an NHS number, the police record's child is the best match.
        let found = index
            .find(&Search {
                demographics: Some(police.demographics.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(found.iter().any(|f| f.id == child), "{found:?}");
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
    /// The audit entries could not be written, so nothing was changed.
    #[error("audit store unavailable: {0}")]
    Audit(sqlx::Error),
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

/// The method of a review row that asks whether a link the matcher made under an older model
/// should stand: confirming keeps (and pins) the link, rejecting splits it.
pub const RECHECK: &str = "recheck";

/// After an upgrade, re-examines the links the matcher made on its own under another model
/// version: where the current model would not have made the link — the record no longer
/// reaches the upper threshold against the child's other records, a rule or a confidently
/// different record now stands against it, it is a second record from its source short of
/// certain ([`SECOND_RECORD`]), or another child matches it as well ([`AMBIGUOUS`]) — a person
/// is asked (a `recheck` row in the review
/// queue, with the new score and explanation). Nothing is moved: the link stays until a person
/// splits it. Links a person decided, links by identifier, and links already awaiting a recheck
/// are left alone. Runs in one transaction with its audit entries; returns the rechecks asked.
pub async fn reexamine(index: &crate::pipeline::resolve::Index) -> Result<usize, sqlx::Error> {
    let matcher = index.matcher();
    let version = matcher.model.version.clone();
    let mut tx = index.store().begin_write().await?;
    index.store().lock_index(&mut tx).await?;
    let rows = sqlx::query(
        "SELECT ml.source AS source, ml.local_id AS local_id, ml.child_id AS child_id, \
         sr.identifiers AS identifiers, sr.demographics AS demographics \
         FROM match_links ml JOIN source_records sr ON sr.source = ml.source AND sr.local_id = ml.local_id \
         WHERE ml.status = 'active' AND ml.method = 'probabilistic' AND ml.decided_by IS NULL \
         AND ml.model_version IS NOT NULL AND ml.model_version <> $1 AND sr.child_id = ml.child_id \
         AND NOT EXISTS (SELECT 1 FROM match_links r WHERE r.source = ml.source AND r.local_id = ml.local_id \
           AND r.method = $2 AND (r.status = 'review' OR r.model_version = $1)) \
         ORDER BY ml.source, ml.local_id",
    )
    .bind(&version)
    .bind(RECHECK)
    .fetch_all(&mut *tx)
    .await?;
    let mut entries = Vec::new();
    for row in &rows {
        let (source, local_id, child): (String, String, String) = (
            row.try_get("source")?,
            row.try_get("local_id")?,
            row.try_get("child_id")?,
        );
        let record = stored_record(
            &local_id,
            &row.try_get::<String, _>("demographics")?,
            &row.try_get::<String, _>("identifiers")?,
        );
        let judged = matcher
            .judge_link(&mut tx, &source, &local_id, &record, &child)
            .await?;
        let Some((score, mut explanation, agrees)) = judged else {
            continue;
        };
        if agrees && score.links(matcher.upper) {
            // The link stands unless the new model's placement would hold it for a person too:
            // a second record from its source short of certain, or another child matching the
            // record as well.
            let another = Matcher::holds_another(&mut tx, &child, &source, &local_id, &[]).await?;
            let rule = if matcher.holds_back(score.probability, another) {
                SECOND_RECORD_RULE
            } else if matcher
                .rival_of(&mut tx, &source, &local_id, &record, &child)
                .await?
                .is_some_and(|r| matcher.rivalled(&score, Some(&r.score)))
            {
                AMBIGUOUS_RULE
            } else {
                continue;
            };
            explanation.push(Explained::rule(rule));
        }
        let candidate = Candidate {
            child: child.clone(),
            source: source.clone(),
            local_id: local_id.clone(),
            score,
            explanation,
            record,
        };
        let proposal = Proposal {
            child: child.clone(),
            method: RECHECK.into(),
            scored: Some(candidate),
        };
        let link = NewLink::proposal(&source, &local_id, &proposal, &version);
        let id = link.insert(&mut tx).await?;
        entries.push(link.entry(&id, Some(&child)));
    }
    let refs: Vec<&Entry> = entries.iter().collect();
    audit::chain(&mut tx, &refs).await?;
    tx.commit().await?;
    Ok(entries.len())
}

/// Open proposals, oldest first, each record's together: a record matching two children
/// alike ([`AMBIGUOUS`]) has a proposal for each, and the person deciding compares them side by
/// side. A bulk placement writes a batch's proposals with one time, so without the record in
/// the order they would fall wherever their random ids put them.
pub async fn review_queue(
    index: &crate::pipeline::resolve::Index,
) -> Result<Vec<LinkRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {LINK_COLUMNS} FROM match_links WHERE status = 'review' \
         ORDER BY MIN(created_at) OVER (PARTITION BY source, local_id), source, local_id, \
         created_at, id"
    ))
    .fetch_all(&index.store().pool)
    .await?;
    rows.iter().map(LinkRow::from_row).collect()
}

/// Every link a child has or had, and every proposal involving it, oldest first; `None` when
/// there is no such child.
pub async fn link_history(
    index: &crate::pipeline::resolve::Index,
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

/// Applies a person's decision in one transaction with the audit entries that record it: the
/// decision, and for a split the matcher's new placement of the record, commit together with
/// their entries or not at all. `entry` builds the person's entry from what the decision did.
pub async fn decide(
    index: &crate::pipeline::resolve::Index,
    id: &str,
    decision: Decision,
    user: &str,
    reason: Option<&str>,
    entry: impl FnOnce(&Decided) -> Entry,
) -> Result<Decided, DecisionError> {
    let matcher = index.matcher();
    let mut tx = index.store().begin_write().await?;
    index.store().lock_index(&mut tx).await?;
    let row = sqlx::query(&format!(
        "SELECT {LINK_COLUMNS} FROM match_links WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DecisionError::NotFound)?;
    let mut link = LinkRow::from_row(&row)?;
    let now = chrono::Utc::now().to_rfc3339();
    let mut decision = decision;
    let mut id = id.to_string();
    if link.status == "review" && link.method == RECHECK {
        // A recheck is a question about the active link: confirming keeps it (pinned by the
        // person), rejecting or splitting splits it. The recheck row ends either way.
        decision = match decision {
            Decision::Confirm => Decision::Confirm,
            Decision::Reject | Decision::Split => Decision::Split,
        };
        let word = if decision == Decision::Confirm {
            "confirmed"
        } else {
            "split"
        };
        sqlx::query(
            "UPDATE match_links SET status = 'superseded', decision = $1, decided_by = $2, \
             decided_at = $3, reason = $4, ended_at = $3 WHERE id = $5",
        )
        .bind(word)
        .bind(user)
        .bind(&now)
        .bind(reason)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let active = sqlx::query(&format!(
            "SELECT {LINK_COLUMNS} FROM match_links WHERE source = $1 AND local_id = $2 \
             AND status = 'active' AND child_id = $3"
        ))
        .bind(&link.source)
        .bind(&link.local_id)
        .bind(&link.child_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| DecisionError::NotApplicable("recheck of a link that has ended".into()))?;
        link = LinkRow::from_row(&active)?;
        id = link.id.clone();
    }
    let id = id.as_str();
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
    let mut placed = Vec::new();
    match (link.status.as_str(), decision) {
        ("review", Decision::Confirm) => {
            // The record moves to the proposed child; its previous link ends, and so does any
            // other proposal still open for it (the other child an `ambiguous` record
            // matched): a person has placed it.
            sqlx::query(
                "UPDATE match_links SET status = 'superseded', ended_at = $1 \
                 WHERE source = $2 AND local_id = $3 AND status IN ('active', 'review') \
                 AND id <> $4",
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
            // Placed again, without the child a person has just ruled out (nor any other they
            // ruled out before).
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
            let placement = matcher
                .place(&mut tx, &link.source, &link.local_id, &record, &[])
                .await?;
            move_record(
                &mut tx,
                &link.source,
                &link.local_id,
                &placement.child,
                &placement.method,
            )
            .await?;
            placed = matcher
                .write_placement(&mut tx, &link.source, &link.local_id, &placement)
                .await?;
            child = placement.child;
        }
        _ => {}
    }
    let decided = Decided {
        id: id.to_string(),
        decision,
        source: link.source,
        local_id: link.local_id,
        previous_child_id: current.filter(|c| *c != child),
        child_id: child,
    };
    let person = entry(&decided);
    let entries: Vec<&Entry> = std::iter::once(&person).chain(&placed).collect();
    audit::chain(&mut tx, &entries)
        .await
        .map_err(DecisionError::Audit)?;
    tx.commit().await.map_err(DecisionError::Audit)?;
    Ok(decided)
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
