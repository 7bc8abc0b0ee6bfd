//! The Fellegi–Sunter model. For each comparison and agreement level it holds `m`, the chance
//! of that level when two records are the same person, and `u`, the chance when they are not.
//! A pair's match weight is the log2 prior odds plus, for each comparison, log2(m/u) of the
//! level it reached; its probability follows from the weight.
//!
//! Nothing here needs labels: `u` is counted on random pairs (almost all of which are
//! different people), and `m` is estimated by expectation–maximisation on the candidate pairs
//! of each blocking rule, holding out the comparisons the rule blocks on (they agree on every
//! pair of that rule by construction, so they would teach the model nothing). Exact agreement
//! on a name is then weighted by how common the name is (term-frequency adjustment).
//!
//! The prior is a prior over *all* pairs, not over the pairs blocking happened to put
//! together: with `m` and `u` fixed, EM over every pair of the file, in which a pair blocking
//! never formed counts as a non-match (its posterior is negligible: it disagrees on every
//! blocking key). Because `u` comes from random pairs and the prior from all pairs, agreeing on
//! a blocked field counts once, through its weight, and not a second time through a prior
//! inflated by blocking. The model keeps the prior as expected matches per record, which does
//! not depend on the file's size; the per-pair prior is that over the number of records a
//! record is compared against, worked out when scoring ([`Scorer::new`]).
//!
//! A trained model is saved as JSON with a format number and a version derived from its
//! parameters; every link the index makes records the version it was scored with.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compare::Comparison;
use crate::guard::Guard;
use crate::record::Record;

/// The model file format this build reads and writes.
/// 2: the prior is expected matches per record, not a share of candidate pairs.
pub const FORMAT: u32 = 2;

/// Four bits per comparison; this value means "missing".
pub const MISSING: u8 = 0xF;

/// A trained model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Model {
    /// File format; a file of another format is refused rather than misread.
    pub format: u32,
    /// `fs-` and 12 hex digits of a hash over the parameters: two models with the same version
    /// score identically.
    pub version: String,
    /// When it was trained (RFC 3339).
    pub trained_at: String,
    /// How many other records of the same person a record has, on average, among the records
    /// it is compared with: the prior in a form that does not depend on the file's size. The
    /// chance that two records picked at random are one person is this over the number of
    /// records compared against.
    pub matches_per_record: f64,
    pub comparisons: Vec<ComparisonModel>,
    /// How it was trained, for whoever has to trust it.
    pub training: TrainingReport,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComparisonModel {
    pub comparison: Comparison,
    pub levels: Vec<LevelModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LevelModel {
    pub label: String,
    /// P(level | same person).
    pub m: f64,
    /// P(level | different people).
    pub u: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainingReport {
    pub records: usize,
    /// Random pairs counted for `u`.
    pub random_pairs: usize,
    pub rules: Vec<RuleReport>,
    /// Candidate pairs sharing a verified NHS number or UPN that `m` was read from (0 when
    /// there were too few and EM's estimates stand).
    #[serde(default)]
    pub identifier_pairs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleReport {
    pub rule: String,
    /// Candidate pairs the rule's EM saw (after sampling).
    pub pairs: u64,
    pub iterations: usize,
    /// Comparisons whose `m` this rule could not estimate because it blocks on them.
    pub held_out: Vec<Comparison>,
    /// Why the rule's estimates were set aside, if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read or write the model file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the model file is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("model file format {found} is not supported (this build reads format {FORMAT})")]
    Format { found: u32 },
    #[error("the model is not usable: {0}")]
    Invalid(String),
}

/// Counts of agreement patterns: a pattern packs each comparison's level into four bits.
/// Hashed with FxHash: training counts every candidate pair once per rule, and the keys are a
/// few thousand patterns, not values a file can choose to collide.
pub type Patterns = HashMap<u64, f64, rustc_hash::FxBuildHasher>;

/// The agreement pattern of a pair.
pub fn pattern(comparisons: &[Comparison], a: &Record, b: &Record) -> u64 {
    let mut p = 0u64;
    for (i, c) in comparisons.iter().enumerate() {
        let level = c.compare(a, b).unwrap_or(MISSING);
        p |= u64::from(level) << (4 * i);
    }
    p
}

fn level_of(p: u64, i: usize) -> u8 {
    ((p >> (4 * i)) & 0xF) as u8
}

impl Model {
    /// The model without some comparisons: each comparison's `m` and `u` are its own, so a
    /// model trained where identifiers helped (they give `m` for free) scores records that
    /// carry only the rest.
    pub fn without(&self, drop: &[Comparison]) -> Model {
        let mut m = self.clone();
        m.comparisons.retain(|c| !drop.contains(&c.comparison));
        m.seal();
        m
    }

    /// A model before training: `m` favours agreement, `u` favours disagreement. EM starts from
    /// here; these starting values are never used to score.
    pub fn initial(comparisons: &[Comparison]) -> Self {
        let comparisons = comparisons
            .iter()
            .map(|&c| {
                let labels = c.levels();
                let n = labels.len();
                let levels = labels
                    .iter()
                    .enumerate()
                    .map(|(l, label)| {
                        let m = if l == 0 { 0.8 } else { 0.2 / (n - 1) as f64 };
                        let u = if l == n - 1 {
                            0.9
                        } else {
                            0.1 / (n - 1) as f64
                        };
                        LevelModel {
                            label: (*label).to_string(),
                            m,
                            u,
                        }
                    })
                    .collect();
                ComparisonModel {
                    comparison: c,
                    levels,
                }
            })
            .collect();
        let mut model = Self {
            format: FORMAT,
            version: String::new(),
            trained_at: chrono::Utc::now().to_rfc3339(),
            matches_per_record: 1.0,
            comparisons,
            training: TrainingReport::default(),
        };
        model.seal();
        model
    }

    pub fn comparison_kinds(&self) -> Vec<Comparison> {
        self.comparisons.iter().map(|c| c.comparison).collect()
    }

    /// Sets `u` from level counts on random pairs, smoothed so that a level never seen among
    /// random pairs (two NHS numbers agreeing) gets a small chance rather than zero.
    pub fn set_u(&mut self, counts: &[Vec<f64>]) {
        for (cm, counts) in self.comparisons.iter_mut().zip(counts) {
            let total: f64 = counts.iter().sum();
            let k = cm.levels.len() as f64;
            for (lm, &n) in cm.levels.iter_mut().zip(counts) {
                lm.u = (n + 0.5) / (total + 0.5 * k);
            }
        }
    }

    /// Runs EM on one rule's pattern counts, with `u` fixed and the held-out comparisons left
    /// out of the likelihood. Returns the `m` it estimated for each comparison (`None` for those
    /// held out) and the number of iterations. `uk_postcodes`: whether the records' postcodes
    /// are UK ones (see [`Evidence`]).
    pub fn em(
        &self,
        patterns: &Patterns,
        held_out: &[Comparison],
        max_iterations: usize,
        uk_postcodes: bool,
    ) -> (Vec<Option<Vec<f64>>>, usize) {
        let active: Vec<bool> = self
            .comparisons
            .iter()
            .map(|c| !held_out.contains(&c.comparison))
            .collect();
        let mut m: Vec<Vec<f64>> = self
            .comparisons
            .iter()
            .map(|c| c.levels.iter().map(|l| l.m).collect())
            .collect();
        let u: Vec<Vec<f64>> = self
            .comparisons
            .iter()
            .map(|c| c.levels.iter().map(|l| l.u).collect())
            .collect();
        let kinds = self.comparison_kinds();
        let mut lambda = 0.3f64;
        let mut pats: Vec<(u64, f64)> = patterns.iter().map(|(&p, &n)| (p, n)).collect();
        // A fixed order: floating-point sums, and so the model, must not depend on how a hash
        // map happened to lay out the patterns.
        pats.sort_by_key(|&(p, _)| p);
        let mut iterations = 0;
        for _ in 0..max_iterations {
            iterations += 1;
            let mut mass: Vec<Vec<f64>> = m.iter().map(|l| vec![0.0; l.len()]).collect();
            let (mut matched, mut total) = (0.0, 0.0);
            for &(p, n) in &pats {
                let mut log_ratio = Evidence::new(uk_postcodes);
                for (i, on) in active.iter().enumerate() {
                    let l = level_of(p, i);
                    if *on && l != MISSING {
                        log_ratio.add(kinds[i], l, (m[i][l as usize] / u[i][l as usize]).ln());
                    }
                }
                let odds = lambda / (1.0 - lambda) * log_ratio.total().exp();
                let post = if odds.is_finite() {
                    odds / (1.0 + odds)
                } else {
                    1.0
                };
                matched += n * post;
                total += n;
                for (i, on) in active.iter().enumerate() {
                    let l = level_of(p, i);
                    if *on && l != MISSING {
                        mass[i][l as usize] += n * post;
                    }
                }
            }
            let new_lambda = (matched / total).clamp(1e-9, 1.0 - 1e-9);
            let mut change = (new_lambda - lambda).abs();
            lambda = new_lambda;
            for (i, on) in active.iter().enumerate() {
                if !on {
                    continue;
                }
                let sum: f64 = mass[i].iter().sum();
                let k = mass[i].len() as f64;
                for (l, v) in mass[i].iter().enumerate() {
                    // A small pseudo-count keeps a level EM never saw from becoming impossible.
                    let new = (v + 0.01) / (sum + 0.01 * k);
                    change = change.max((new - m[i][l]).abs());
                    m[i][l] = new;
                }
            }
            if change < 1e-5 {
                break;
            }
        }
        let out = m
            .into_iter()
            .zip(active)
            .map(|(m, on)| on.then_some(m))
            .collect();
        (out, iterations)
    }

    /// Why an EM result is implausible, if it is: a "match" class in which most pairs disagree
    /// outright on some field is a different latent class (people born on the same day, say)
    /// that EM has settled on instead of the matches.
    pub fn implausible(&self, m: &[Option<Vec<f64>>]) -> Option<String> {
        self.comparisons.iter().zip(m).find_map(|(c, m)| {
            let m = m.as_ref()?;
            let different = *m.last()?;
            (different > 0.5).then(|| {
                format!(
                    "EM found a class in which {:.0} % disagree on {}",
                    different * 100.0,
                    c.comparison.as_str()
                )
            })
        })
    }

    /// Averages each comparison's `m` over the rules that could estimate it.
    pub fn set_m(&mut self, estimates: &[Vec<Option<Vec<f64>>>]) {
        for (i, cm) in self.comparisons.iter_mut().enumerate() {
            let got: Vec<&Vec<f64>> = estimates
                .iter()
                .filter_map(|e| e.get(i)?.as_ref())
                .collect();
            if got.is_empty() {
                continue;
            }
            for (l, lm) in cm.levels.iter_mut().enumerate() {
                lm.m = got.iter().map(|m| m[l]).sum::<f64>() / got.len() as f64;
            }
        }
    }

    /// Estimates the prior over all pairs with `m` and `u` fixed, by EM: `patterns` are the
    /// candidate pairs (or a uniform sample of them, each standing for `scale` pairs), and every
    /// other of the `total_pairs` pairs counts as a non-match. Sets
    /// [`Model::matches_per_record`] from it: expected matches over `records` (the records on
    /// the side a pair is counted from). `uk_postcodes` as for [`Model::em`].
    pub fn estimate_prior(
        &mut self,
        patterns: &Patterns,
        scale: f64,
        total_pairs: f64,
        records: f64,
        max_iterations: usize,
        uk_postcodes: bool,
    ) {
        let weights = self.level_weights();
        let kinds = self.comparison_kinds();
        let mut pats: Vec<(f64, f64)> = patterns
            .iter()
            .map(|(&p, &n)| {
                let mut w = Evidence::new(uk_postcodes);
                for (i, ws) in weights.iter().enumerate() {
                    let l = level_of(p, i);
                    if l != MISSING {
                        w.add(kinds[i], l, ws[l as usize]);
                    }
                }
                (w.total(), n * scale)
            })
            .collect();
        // Summed in a fixed order, so the same pairs give the same prior to the last bit.
        pats.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let candidates: f64 = pats.iter().map(|(_, n)| n).sum();
        if total_pairs <= 0.0 || candidates <= 0.0 || records <= 0.0 {
            return;
        }
        let mut lambda = (0.1 * candidates / total_pairs).clamp(1e-15, 0.5);
        for _ in 0..max_iterations {
            let mut matched = 0.0;
            for &(w, n) in &pats {
                let odds = lambda / (1.0 - lambda) * w.exp2();
                matched += n * if odds.is_finite() {
                    odds / (1.0 + odds)
                } else {
                    1.0
                };
            }
            let new = (matched / total_pairs).clamp(1e-15, 0.5);
            let done = ((new - lambda) / lambda).abs() < 1e-9;
            lambda = new;
            if done {
                break;
            }
        }
        self.matches_per_record = lambda * total_pairs / records;
    }

    /// Whether, in the records this model was trained on, a different given name is more
    /// likely a twin than the same person written another way — the premise of the twin and
    /// sibling rules ([`crate::guard`]). Among pairs born the same day in one family, a record
    /// has about `TWIN_SHARE × (matches_per_record + 1)` twin pairs (its co-twin's records) and
    /// `matches_per_record × m(given name different)` pairs of its own child whose given name
    /// differs. In children's registers given names are reliable (`m` a fraction of a per
    /// cent) and the twins far outnumber the slips; in a register where people are written
    /// under titles, other names or initials (historical records, say), EM finds a different
    /// given name common among matches, and there the rule would hold back the same person
    /// far more often than it kept twins apart. Without a given-name comparison, false.
    pub fn given_names_tell_apart(&self) -> bool {
        let Some(differ) = self
            .comparisons
            .iter()
            .find(|c| c.comparison == Comparison::GivenName)
            .and_then(|c| c.levels.last())
            .map(|l| l.m)
        else {
            return false;
        };
        let per_record = self.matches_per_record;
        per_record * differ < TWIN_SHARE * (per_record + 1.0)
    }

    /// log2(m/u) per comparison and level. A part of an address agreeing only in part never
    /// counts for more than agreeing exactly: a level EM hardly ever saw among matches or
    /// strangers (a street spelt one letter apart) has its `m` and `u` set mostly by the
    /// pseudo-counts that keep it possible, and their ratio means nothing.
    pub fn level_weights(&self) -> Vec<Vec<f64>> {
        self.comparisons
            .iter()
            .map(|c| {
                let exact = c.levels.first().map_or(f64::MAX, |l| (l.m / l.u).log2());
                let cap = if c.comparison.is_address() {
                    exact
                } else {
                    f64::MAX
                };
                c.levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let w = (l.m / l.u).log2();
                        if i == 0 {
                            w
                        } else {
                            w.min(cap)
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Recomputes the version from the parameters. Call after any change.
    pub fn seal(&mut self) {
        let mut h = Sha256::new();
        h.update(format!("{}|{:.12}", self.format, self.matches_per_record));
        for c in &self.comparisons {
            h.update(c.comparison.as_str());
            for l in &c.levels {
                h.update(format!("|{:.12}|{:.12}", l.m, l.u));
            }
        }
        self.version = format!("fs-{}", &hex::encode(h.finalize())[..12]);
    }

    /// Checks a model read from outside: right format, probabilities in range, levels as this
    /// build defines them.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.format != FORMAT {
            return Err(ModelError::Format { found: self.format });
        }
        if !(self.matches_per_record > 0.0 && self.matches_per_record < 1e6) {
            return Err(ModelError::Invalid(
                "matches_per_record must be a positive number of records".into(),
            ));
        }
        for c in &self.comparisons {
            if c.levels.len() != c.comparison.levels().len() {
                return Err(ModelError::Invalid(format!(
                    "{} has {} levels; this build defines {}",
                    c.comparison.as_str(),
                    c.levels.len(),
                    c.comparison.levels().len()
                )));
            }
            for l in &c.levels {
                if !(l.m > 0.0 && l.m <= 1.0 && l.u > 0.0 && l.u <= 1.0) {
                    return Err(ModelError::Invalid(format!(
                        "{} level `{}`: m and u must be in (0, 1]",
                        c.comparison.as_str(),
                        l.label
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(found) = value.get("format").and_then(serde_json::Value::as_u64) {
            if found != u64::from(FORMAT) {
                return Err(ModelError::Format {
                    found: found as u32,
                });
            }
        }
        let model: Model = serde_json::from_value(value)?;
        model.check()?;
        Ok(model)
    }
}

/// How often each name occurs, for term-frequency adjustment.
#[derive(Debug, Clone, Default)]
pub struct TermFrequencies {
    counts: HashMap<Comparison, (HashMap<String, u32>, u32)>,
    shares: HashMap<Comparison, HashMap<String, f64>>,
}

impl TermFrequencies {
    pub fn count<'a>(
        comparisons: &[Comparison],
        records: impl Iterator<Item = &'a Record>,
    ) -> Self {
        let mut tf = Self::default();
        for r in records {
            tf.add(comparisons, r);
        }
        tf
    }

    /// Counts one more record: the index adds records one at a time.
    pub fn add(&mut self, comparisons: &[Comparison], r: &Record) {
        for c in comparisons.iter().filter(|c| c.term_frequency()) {
            if let Some(v) = c.tf_value(r) {
                let (map, total) = self.counts.entry(*c).or_default();
                *map.entry(v.to_string()).or_default() += 1;
                *total += 1;
            }
        }
    }

    /// Sets one value's share from counts kept elsewhere (the gateway's index keeps them in its
    /// store); it takes precedence over anything counted here.
    pub fn set_share(&mut self, c: Comparison, value: &str, share: f64) {
        self.shares
            .entry(c)
            .or_default()
            .insert(value.to_string(), share);
    }

    /// The share of records with this value; `None` when nothing has been counted.
    pub fn frequency(&self, c: Comparison, value: &str) -> Option<f64> {
        if let Some(share) = self.shares.get(&c).and_then(|m| m.get(value)) {
            return Some(*share);
        }
        let (map, total) = self.counts.get(&c)?;
        if *total == 0 {
            return None;
        }
        let n = map.get(value).copied().unwrap_or(1).max(1);
        Some(f64::from(n) / f64::from(*total))
    }
}

/// One comparison's part in a score: what a reviewer reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Explained {
    pub comparison: String,
    /// The level label, or `missing`.
    pub level: String,
    /// log2(m/u) for this level (after term-frequency adjustment); 0 when missing.
    pub weight: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub term_frequency_adjusted: bool,
}

impl Explained {
    /// A rule that holds the pair back, `reason` its words: comparison `rule`, which a
    /// reviewer's page lists apart from the fields.
    pub fn rule(reason: &str) -> Self {
        Explained {
            comparison: "rule".into(),
            level: reason.into(),
            weight: 0.0,
            term_frequency_adjusted: false,
        }
    }
}

/// A pair's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// log2 odds of a match: the prior plus every comparison's weight.
    pub weight: f64,
    pub probability: f64,
    /// A verified national identifier (NHS number, UPN) is shared: the pair links whatever the
    /// rest says.
    pub deterministic: bool,
    /// A rule the model's weights cannot outvote: the pair is never linked automatically
    /// (see [`crate::guard`]).
    pub guard: Option<Guard>,
}

impl Score {
    /// Whether the pair links without a person: deterministic, or at or above `threshold` with
    /// no guard against it.
    pub fn links(&self, threshold: f64) -> bool {
        self.guard.is_none() && (self.deterministic || self.probability >= threshold)
    }
}

/// A model made ready to score: weights precomputed, term frequencies at hand.
pub struct Scorer<'a> {
    pub model: &'a Model,
    kinds: Vec<Comparison>,
    weights: Vec<Vec<f64>>,
    prior_weight: f64,
    tf: &'a TermFrequencies,
    /// Whether the twin rule runs: the records carry sex and their given names tell people
    /// apart (see [`Model::given_names_tell_apart`] and [`crate::guard`]).
    twins: bool,
}

/// The share of children who have a twin: about 1.5 % of births in the UK are twin births, so
/// about 3 % of children have a twin brother or sister. A fact about births, not about any file.
pub const TWIN_SHARE: f64 = 0.03;

/// The per-pair prior for a record compared against `others` records: the model's expected
/// matches per record spread over them, and never above even odds (a handful of records says
/// nothing about how many of them are the same person).
pub fn pair_prior(model: &Model, others: f64) -> f64 {
    (model.matches_per_record / others.max(1.0)).clamp(1e-15, 0.5)
}

impl<'a> Scorer<'a> {
    /// A scorer for records compared against `others` records (the other file when linking;
    /// the rest of the file when deduplicating; the index's records when searching).
    pub fn new(model: &'a Model, tf: &'a TermFrequencies, others: f64) -> Self {
        let prior = pair_prior(model, others);
        let kinds = model.comparison_kinds();
        Self {
            twins: kinds.contains(&Comparison::Sex) && model.given_names_tell_apart(),
            kinds,
            weights: model.level_weights(),
            prior_weight: (prior / (1.0 - prior)).log2(),
            model,
            tf,
        }
    }

    /// Runs the twin rule whatever the model learned: the gateway's index holds children's
    /// records, where the rule is policy (a wrong link discloses one child's records to the
    /// people around another), not a reading of the data.
    pub fn with_twin_rule(mut self) -> Self {
        self.twins = true;
        self
    }

    /// The log2 prior odds this scorer starts every pair from.
    pub fn prior_weight(&self) -> f64 {
        self.prior_weight
    }

    pub fn comparisons(&self) -> &[Comparison] {
        &self.kinds
    }

    /// The weight of one comparison at one level, with exact agreement on a name adjusted by
    /// how common the name is (never below the weight of the next level down, so a common name
    /// spelt the same never counts for less than a close misspelling).
    fn weight(&self, i: usize, level: u8, a: &Record) -> (f64, bool) {
        let c = self.kinds[i];
        let base = self.weights[i][level as usize];
        if level != 0 || !c.term_frequency() {
            return (base, false);
        }
        let Some(f) = c.tf_value(a).and_then(|v| self.tf.frequency(c, v)) else {
            return (base, false);
        };
        let m = self.model.comparisons[i].levels[0].m;
        let floor = self.weights[i].get(1).copied().unwrap_or(f64::MIN);
        ((m / f).log2().max(floor), true)
    }

    pub fn score(&self, a: &Record, b: &Record) -> Score {
        let (e, deterministic) = self.evidence(a, b, true);
        self.finish(e, deterministic, a, b)
    }

    /// The pair's score when its probability reaches `floor`, else `None`. Most pairs blocking
    /// gives are strangers well under it, and the rules of [`crate::guard`] compare their names
    /// and dates again: they run only on the pairs kept.
    pub fn score_above(&self, a: &Record, b: &Record, floor: f64) -> Option<Score> {
        let (e, deterministic) = self.evidence(a, b, true);
        self.finish_above(e, deterministic, a, b, floor)
    }

    /// The probability that two records are one child by what they say of the child alone
    /// (names, birth, sex, address), the national identifiers left out: how far apart two
    /// records an identifier joined are in everything else.
    pub fn demographic_probability(&self, a: &Record, b: &Record) -> f64 {
        probability(self.prior_weight + self.evidence(a, b, false).0.total())
    }

    /// The pair's comparisons added up, the identifiers among them only with `identifiers`;
    /// and whether a verified identifier is shared.
    fn evidence(&self, a: &Record, b: &Record, identifiers: bool) -> (Evidence, bool) {
        let mut e = Evidence::for_pair(a);
        let mut deterministic = false;
        for (i, c) in self.kinds.iter().enumerate() {
            if !identifiers && c.is_identifier() {
                continue;
            }
            if let Some(level) = c.compare(a, b) {
                e.add(*c, level, self.weight(i, level, a).0);
                deterministic |= level == 0 && c.is_identifier();
            }
        }
        (e, deterministic)
    }

    /// [`Scorer::score_above`] for a pair whose pattern is already known (training counted
    /// it): skips comparing again.
    pub fn score_pattern_above(&self, p: u64, a: &Record, b: &Record, floor: f64) -> Option<Score> {
        let mut e = Evidence::for_pair(a);
        let mut deterministic = false;
        for (i, c) in self.kinds.iter().enumerate() {
            let level = level_of(p, i);
            if level != MISSING {
                e.add(*c, level, self.weight(i, level, a).0);
                deterministic |= level == 0 && c.is_identifier();
            }
        }
        self.finish_above(e, deterministic, a, b, floor)
    }

    /// A pair's score from its evidence: a shared verified identifier is probability 1.
    fn finish(&self, e: Evidence, deterministic: bool, a: &Record, b: &Record) -> Score {
        let weight = self.prior_weight + e.total();
        Score {
            weight,
            probability: if deterministic {
                1.0
            } else {
                probability(weight)
            },
            deterministic,
            guard: crate::guard::guard(a, b, self.twins),
        }
    }

    fn finish_above(
        &self,
        e: Evidence,
        deterministic: bool,
        a: &Record,
        b: &Record,
        floor: f64,
    ) -> Option<Score> {
        let reaches = deterministic || probability(self.prior_weight + e.total()) >= floor;
        reaches.then(|| self.finish(e, deterministic, a, b))
    }

    /// Each comparison's level and weight, and last, when a rule holds the pair back, the rule
    /// (as comparison `rule`, its reason as the level): what a reviewer reads.
    pub fn explain(&self, a: &Record, b: &Record) -> Vec<Explained> {
        let mut out = self.explain_comparisons(a, b);
        if let Some(g) = crate::guard::guard(a, b, self.twins) {
            out.push(Explained::rule(g.reason()));
        }
        out
    }

    fn explain_comparisons(&self, a: &Record, b: &Record) -> Vec<Explained> {
        self.kinds
            .iter()
            .enumerate()
            .map(|(i, c)| match c.compare(a, b) {
                None => Explained {
                    comparison: c.as_str().into(),
                    level: "missing".into(),
                    weight: 0.0,
                    term_frequency_adjusted: false,
                },
                Some(level) => {
                    let (weight, tf) = self.weight(i, level, a);
                    Explained {
                        comparison: c.as_str().into(),
                        level: c.levels()[level as usize].into(),
                        weight: (weight * 100.0).round() / 100.0,
                        term_frequency_adjusted: tf,
                    }
                }
            })
            .collect()
    }
}

/// The evidence of a pair's comparisons, added up. The parts of an address (postcode, house
/// number, street, locality, town, region) are not independent: a sibling shares all of them,
/// and so does a stranger next door. Adding their weights as if each were fresh evidence counts
/// one fact — the same home — three or four times. So the address counts as one piece of
/// evidence: its strongest agreement, a share of the others ([`ADDRESS_REST`]), and its
/// strongest disagreement.
///
/// Beside the same UK postcode the other parts add nothing: a UK postcode names a handful of
/// homes, usually on one street, so the street and house number agree for a twin, a sibling
/// and the family next door as readily as for the child. Counting them there made a twin whose
/// name differs by one letter from the co-twin's, one of them without an NHS number, `certain`.
/// Where postcodes are not UK ones (a four-digit postal code covers a town), the street still
/// says more than the code alone. Disagreement always counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Evidence {
    other: f64,
    address_for: f64,
    address_for_rest: f64,
    address_against: f64,
    uk_postcodes: bool,
    same_postcode: bool,
}

impl Evidence {
    /// Evidence for pairs whose postcodes are UK ones, or not.
    pub fn new(uk_postcodes: bool) -> Self {
        Self {
            uk_postcodes,
            ..Self::default()
        }
    }

    /// Evidence for a pair whose first record is `a`: its postcode says whether an exact
    /// agreement on postcode is a UK one.
    pub fn for_pair(a: &Record) -> Self {
        Self::new(a.postcode.as_ref().is_some_and(|p| p.is_uk()))
    }

    /// Adds comparison `c`, reached at `level`, with weight `w`.
    pub fn add(&mut self, c: Comparison, level: u8, w: f64) {
        if c.is_address() {
            if c == Comparison::Postcode && level == 0 && self.uk_postcodes {
                self.same_postcode = true;
            }
            if w > 0.0 {
                self.address_for_rest += self.address_for.min(w);
                self.address_for = self.address_for.max(w);
            } else {
                self.address_against = self.address_against.min(w);
            }
        } else {
            self.other += w;
        }
    }

    pub fn total(&self) -> f64 {
        let rest = if self.same_postcode {
            0.0
        } else {
            ADDRESS_REST * self.address_for_rest
        };
        self.other + self.address_for + rest + self.address_against
    }
}

/// How much the address parts after the strongest still count: agreeing on the street as well
/// as a postcode's sector or a foreign postal code says a little more than either alone, far
/// less than fresh evidence.
const ADDRESS_REST: f64 = 0.25;

/// Probability from a log2-odds match weight.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    fn rec(given: &str, family: &str, dob: &str) -> Record {
        let mut r = Record::default();
        r.set(Field::GivenName, given).unwrap();
        r.set(Field::FamilyName, family).unwrap();
        r.set(Field::BirthDate, dob).unwrap();
        r
    }

    fn kinds() -> Vec<Comparison> {
        vec![
            Comparison::GivenName,
            Comparison::FamilyName,
            Comparison::BirthDate,
        ]
    }

    #[test]
    fn patterns_pack_levels_and_missing() {
        let a = rec("amy", "khan", "2012-01-01");
        let mut b = rec("amy", "kahn", "2012-01-01");
        b.dob = None;
        let p = pattern(&kinds(), &a, &b);
        assert_eq!(level_of(p, 0), 0);
        assert_eq!(level_of(p, 1), 1);
        assert_eq!(level_of(p, 2), MISSING);
    }

    #[test]
    fn em_recovers_a_planted_model() {
        // Two comparisons with two levels; 1,000 matches (agree 90 %) and 9,000 non-matches
        // (agree 10 %), independent: EM with the true u should find m near 0.9 and λ near 0.1.
        let kinds = vec![Comparison::Sex, Comparison::NhsNumber, Comparison::Upn];
        let mut model = Model::initial(&kinds);
        model.set_u(&[vec![10.0, 90.0], vec![10.0, 90.0], vec![10.0, 90.0]]);
        let mut patterns = Patterns::default();
        let combos = [
            (0u64, 0u64, 0u64),
            (0, 0, 1),
            (0, 1, 0),
            (0, 1, 1),
            (1, 0, 0),
            (1, 0, 1),
            (1, 1, 0),
            (1, 1, 1),
        ];
        for (a, b, c) in combos {
            let k = |l: u64, q: f64| if l == 0 { q } else { 1.0 - q };
            let n = 1000.0 * k(a, 0.9) * k(b, 0.9) * k(c, 0.9)
                + 9000.0 * k(a, 0.1) * k(b, 0.1) * k(c, 0.1);
            patterns.insert(a | (b << 4) | (c << 8), n);
        }
        let (m, _) = model.em(&patterns, &[], 200, true);
        for mi in m.iter().flatten() {
            assert!((mi[0] - 0.9).abs() < 0.02, "{mi:?}");
        }
        model.set_m(&[m]);
        // Every pair a candidate: the prior over all pairs is the planted 0.1.
        model.estimate_prior(&patterns, 1.0, 10_000.0, 10_000.0, 200, true);
        assert!(
            (model.matches_per_record - 0.1).abs() < 0.02,
            "{}",
            model.matches_per_record
        );
        // Counted per record of a file half the size: twice as many matches per record.
        model.estimate_prior(&patterns, 1.0, 10_000.0, 5_000.0, 200, true);
        assert!(
            (model.matches_per_record - 0.2).abs() < 0.04,
            "{}",
            model.matches_per_record
        );
    }

    #[test]
    fn rare_surnames_count_for_more() {
        let mut model = Model::initial(&kinds());
        model.set_u(&[
            vec![1.0, 1.0, 1.0, 1.0, 0.1, 96.0],
            vec![1.0, 1.0, 1.0, 0.1, 97.0],
            vec![1.0, 1.0, 1.0, 1.0, 96.0],
        ]);
        let mut records: Vec<Record> = (0..50).map(|_| rec("x", "smith", "2000-01-01")).collect();
        records.push(rec("x", "featherstonehaugh", "2000-01-01"));
        let tf = TermFrequencies::count(&kinds(), records.iter());
        let s = Scorer::new(&model, &tf, 100.0);
        let smith = s.score(
            &rec("amy", "smith", "2012-01-01"),
            &rec("amy", "smith", "2012-01-01"),
        );
        let rare = s.score(
            &rec("amy", "featherstonehaugh", "2012-01-01"),
            &rec("amy", "featherstonehaugh", "2012-01-01"),
        );
        assert!(rare.weight > smith.weight + 3.0, "{rare:?} {smith:?}");
        let why = s.explain(&rec("amy", "smith", "2012-01-01"), &rec("amy", "smiht", ""));
        assert_eq!(why[1].level, "close spelling, or a former family name");
        assert_eq!(why[2].level, "missing");
    }

    #[test]
    fn save_and_load_round_trip_and_check_format() {
        let mut model = Model::initial(&kinds());
        model.matches_per_record = 2.5;
        model.seal();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        model.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(back, model);
        assert!(back.version.starts_with("fs-"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"format\": 2", "\"format\": 99");
        assert!(matches!(
            Model::from_json(&text),
            Err(ModelError::Format { found: 99 })
        ));
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "\"matches_per_record\": 2.5",
            "\"matches_per_record\": -1.0",
        );
        assert!(matches!(
            Model::from_json(&text),
            Err(ModelError::Invalid(_))
        ));
    }

    #[test]
    fn the_twin_rule_runs_where_given_names_tell_people_apart() {
        let kinds = vec![Comparison::GivenName, Comparison::Sex];
        let mut model = Model::initial(&kinds);
        let set_differ = |model: &mut Model, m: f64| {
            let levels = &mut model.comparisons[0].levels;
            let n = levels.len();
            levels[0].m = 1.0 - m;
            for l in &mut levels[1..n - 1] {
                l.m = 0.0;
            }
            levels[n - 1].m = m;
        };
        // A children's register: about one record in a thousand of the same child has another
        // given name; a twin is far likelier.
        model.matches_per_record = 1.3;
        set_differ(&mut model, 0.004);
        assert!(model.given_names_tell_apart());
        // A register where one person in seven is written under another name or a title.
        model.matches_per_record = 9.5;
        set_differ(&mut model, 0.14);
        assert!(!model.given_names_tell_apart());
        let tf = TermFrequencies::default();
        let twin_a = {
            let mut r = rec("ruby", "calder", "2014-03-02");
            r.set(Field::Sex, "F").unwrap();
            r
        };
        let twin_b = {
            let mut r = rec("oliver", "calder", "2014-03-02");
            r.set(Field::Sex, "M").unwrap();
            r
        };
        let scorer = Scorer::new(&model, &tf, 100.0);
        assert_eq!(scorer.score(&twin_a, &twin_b).guard, None);
        // The gateway runs it whatever the data says.
        let scorer = scorer.with_twin_rule();
        assert!(scorer.score(&twin_a, &twin_b).guard.is_some());
        // No given name compared: nothing for the rule to read.
        assert!(!Model::initial(&[Comparison::Sex]).given_names_tell_apart());
    }

    #[test]
    fn shared_nhs_number_is_deterministic() {
        let kinds = vec![Comparison::NhsNumber, Comparison::FamilyName];
        let model = Model::initial(&kinds);
        let tf = TermFrequencies::default();
        let s = Scorer::new(&model, &tf, 100.0);
        let mut a = rec("amy", "khan", "");
        let mut b = rec("zoe", "calder", "");
        a.set(Field::NhsNumber, "9000000009").unwrap();
        b.set(Field::NhsNumber, "900 000 0009").unwrap();
        let score = s.score(&a, &b);
        assert!(score.deterministic);
        assert_eq!(score.probability, 1.0);
    }

    #[test]
    fn beside_the_same_uk_postcode_the_rest_of_the_address_adds_nothing() {
        let kinds = vec![
            Comparison::Postcode,
            Comparison::HouseNumber,
            Comparison::Street,
        ];
        let model = Model::initial(&kinds);
        let tf = TermFrequencies::default();
        let s = Scorer::new(&model, &tf, 100.0);
        let home = |postcode: &str, line: &str| {
            let mut r = Record::default();
            if !postcode.is_empty() {
                r.set(Field::Postcode, postcode).unwrap();
            }
            r.set_address_lines([line]);
            r
        };
        let weight = |a: &Record, b: &Record| s.score(a, b).weight;
        let postcode_alone = weight(&home("LS1 6AE", ""), &home("ls16ae", ""));
        let same_home = weight(
            &home("LS1 6AE", "12 High Street"),
            &home("LS16AE", "12 High St"),
        );
        assert_eq!(same_home, postcode_alone);
        let next_door = weight(
            &home("LS1 6AE", "12 High Street"),
            &home("LS16AE", "14 High Street"),
        );
        assert!(next_door < postcode_alone, "disagreement still counts");
        // A foreign postal code covers a town: the street says more than the code alone.
        let code_alone = weight(&home("4223", ""), &home("4223", ""));
        let code_and_street = weight(
            &home("4223", "12 High Street"),
            &home("4223", "12 High Street"),
        );
        assert!(code_and_street > code_alone);
        // Without a postcode, the address line is the evidence.
        let line_only = weight(&home("", "12 High Street"), &home("", "12 High St"));
        assert!(line_only > s.prior_weight() + 3.0);
    }

    #[test]
    fn a_misspelt_street_never_counts_for_more_than_the_same_street() {
        let mut model = Model::initial(&[Comparison::Street, Comparison::GivenName]);
        // A level EM hardly saw, where the pseudo-counts set both m and u.
        for c in &mut model.comparisons {
            c.levels[1].m = 0.0002;
            c.levels[1].u = 2e-6;
        }
        let w = model.level_weights();
        assert_eq!(w[0][1], w[0][0]);
        assert!(w[1][1] > w[1][0], "only the parts of an address are capped");
    }
}
