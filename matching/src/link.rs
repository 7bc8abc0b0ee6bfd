//! Linking two sets of records and finding duplicates within one: block, train, score, and
//! for duplicates, cluster. Every step runs on all cores and scales with the number of
//! candidate pairs, not the square of the number of records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::block::{Candidates, Keys, Rule};
use crate::compare::Comparison;
use crate::guard::Guard;
use crate::model::{pattern, Model, Patterns, RuleReport, Score, Scorer, TermFrequencies};
use crate::record::{Field, Record};

/// Two files to link, or one to deduplicate.
#[derive(Clone, Copy)]
pub enum Task<'a> {
    Link(&'a [Record], &'a [Record]),
    Dedupe(&'a [Record]),
}

impl<'a> Task<'a> {
    fn left(&self) -> &'a [Record] {
        match self {
            Task::Link(l, _) | Task::Dedupe(l) => l,
        }
    }

    fn right(&self) -> &'a [Record] {
        match self {
            Task::Link(_, r) => r,
            Task::Dedupe(l) => l,
        }
    }

    fn is_dedupe(&self) -> bool {
        matches!(self, Task::Dedupe(_))
    }

    pub fn records(&self) -> usize {
        match self {
            Task::Link(l, r) => l.len() + r.len(),
            Task::Dedupe(l) => l.len(),
        }
    }

    /// How many records each left record is compared against, were every pair compared: what
    /// the per-pair prior is spread over.
    pub fn others(&self) -> f64 {
        match self {
            Task::Link(_, r) => r.len() as f64,
            Task::Dedupe(l) => l.len().saturating_sub(1) as f64,
        }
    }

    /// Every pair there is: the population the prior is a share of.
    pub fn all_pairs(&self) -> f64 {
        match self {
            Task::Link(l, r) => l.len() as f64 * r.len() as f64,
            Task::Dedupe(l) => {
                let n = l.len() as f64;
                n * (n - 1.0) / 2.0
            }
        }
    }

    /// The records a pair is counted from (the left file; each record of a deduplicated file
    /// is in about `2 × matches / n` pairs, hence half of them).
    fn prior_records(&self) -> f64 {
        match self {
            Task::Link(l, _) => l.len() as f64,
            Task::Dedupe(l) => l.len() as f64 / 2.0,
        }
    }
}

/// Record indices in order of their ids (then of their position, for ids that repeat): what
/// makes training and clustering give the same result whatever order the rows came in.
pub fn id_order(records: &[Record]) -> Vec<u32> {
    // Sorted as (id, position) pairs side by side rather than through the records, which are
    // large and would be fetched from all over memory for every comparison.
    let mut keyed: Vec<(&str, u32)> = (0..records.len() as u32)
        .map(|i| (records[i as usize].id.as_str(), i))
        .collect();
    keyed.par_sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Each record's rank in [`id_order`].
fn ranks(order: &[u32]) -> Vec<u32> {
    let mut rank = vec![0u32; order.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank
}

/// Knobs for training; the defaults are what the benchmarks use.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Random pairs counted for `u`.
    pub random_pairs: usize,
    /// Candidate pairs kept for EM; beyond this, a uniform sample.
    pub max_training_pairs: u64,
    pub max_iterations: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            random_pairs: 300_000,
            max_training_pairs: 5_000_000,
            max_iterations: 100,
            seed: 42,
        }
    }
}

/// A pair above the output floor.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pair {
    /// Index into the left records (the only records, when deduplicating).
    pub left: u32,
    /// Index into the right records.
    pub right: u32,
    pub weight: f32,
    pub probability: f32,
    /// A rule that holds the pair back from an automatic link (twins, identifiers).
    pub guard: Option<Guard>,
}

impl Pair {
    /// Whether the pair is a match at `threshold`: probable enough and not held back.
    pub fn matches(&self, threshold: f64) -> bool {
        self.guard.is_none() && f64::from(self.probability) >= threshold
    }
}

/// The comparisons a set of mapped fields supports, in a fixed order.
pub fn comparisons_for(fields: &[Field]) -> Vec<Comparison> {
    Comparison::ALL
        .into_iter()
        .filter(|c| fields.contains(&c.field()))
        .collect()
}

/// The rules whose fields are all mapped; the others are dropped (and reported by the caller).
pub fn usable_rules(rules: &[Rule], fields: &[Field]) -> Vec<Rule> {
    rules.iter().filter(|r| r.usable(fields)).cloned().collect()
}

/// Blocking done: the keys of every record under every rule, and the blocks.
pub struct Blocked<'a> {
    pub task: Task<'a>,
    pub comparisons: Vec<Comparison>,
    left: Keys,
    right: Option<Keys>,
    candidates: Candidates,
    /// A sample (or all) of the candidate pairs with their agreement patterns.
    sample: Vec<(u32, u32, u64)>,
    /// Whether `sample` holds every candidate pair, so scoring can reuse the patterns.
    complete: bool,
    /// The share of candidate pairs `sample` holds.
    sample_rate: f64,
    /// Candidate pairs per rule (each pair counted under the first rule that found it).
    pub compared_per_rule: Vec<u64>,
    pub blocking_time: Duration,
    /// Record indices in id order, per side, and each record's rank in it.
    left_order: Vec<u32>,
    right_order: Vec<u32>,
    left_rank: Vec<u32>,
    right_rank: Vec<u32>,
}

impl<'a> Blocked<'a> {
    pub fn rules(&self) -> &[Rule] {
        &self.left.rules
    }

    fn right_keys(&self) -> &Keys {
        self.right.as_ref().unwrap_or(&self.left)
    }

    pub fn compared(&self) -> u64 {
        self.compared_per_rule.iter().sum()
    }

    /// Every (rule, block) pair, the unit of parallel work.
    fn work(&self) -> Vec<(usize, usize)> {
        (0..self.candidates.rules())
            .flat_map(|r| (0..self.candidates.blocks_in(r)).map(move |b| (r, b)))
            .collect()
    }

    /// Calls `f` on every candidate pair of one unit of work (exclusive: each pair once).
    fn each(&self, (rule, block): (usize, usize), f: impl FnMut(usize, usize)) {
        self.candidates
            .for_each_in_block(&self.left, self.right_keys(), rule, block, true, f);
    }
}

/// Cheap deterministic sampling of a pair, uniform over pairs.
fn keep(i: usize, j: usize, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    h ^= h >> 31;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^= h >> 29;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// Blocks the task: computes keys, forms blocks, and walks the candidate pairs once to count
/// them per rule and to keep their agreement patterns (all of them when they number at most
/// `max_training_pairs`, otherwise a uniform sample).
pub fn block<'a>(
    task: Task<'a>,
    rules: Vec<Rule>,
    comparisons: Vec<Comparison>,
    max_training_pairs: u64,
) -> Blocked<'a> {
    let started = Instant::now();
    let left = Keys::new(rules.clone(), task.left());
    let right = (!task.is_dedupe()).then(|| Keys::new(rules, task.right()));
    let candidates = match &right {
        Some(r) => Candidates::link(&left, r, task.left().len(), task.right().len()),
        None => Candidates::dedupe(&left, task.left().len()),
    };
    let left_order = id_order(task.left());
    let right_order = if task.is_dedupe() {
        left_order.clone()
    } else {
        id_order(task.right())
    };
    let (left_rank, right_rank) = (ranks(&left_order), ranks(&right_order));
    let raw: u64 = (0..candidates.rules())
        .map(|r| candidates.raw_pairs(r))
        .sum();
    let rate = if raw <= max_training_pairs {
        1.0
    } else {
        max_training_pairs as f64 / raw as f64
    };
    let mut blocked = Blocked {
        task,
        comparisons,
        left,
        right,
        candidates,
        sample: Vec::new(),
        complete: false,
        sample_rate: 1.0,
        compared_per_rule: Vec::new(),
        blocking_time: Duration::ZERO,
        left_order,
        right_order,
        left_rank,
        right_rank,
    };
    let work = blocked.work();
    let n_rules = blocked.candidates.rules();
    let (sample, counts) = work
        .par_iter()
        .fold(
            || (Vec::new(), vec![0u64; n_rules]),
            |(mut sample, mut counts), &unit| {
                let (l, r) = (task.left(), task.right());
                blocked.each(unit, |i, j| {
                    counts[unit.0] += 1;
                    let (ri, rj) = (
                        blocked.left_rank[i] as usize,
                        blocked.right_rank[j] as usize,
                    );
                    if keep(ri.min(rj), ri.max(rj), rate) {
                        sample.push((
                            i as u32,
                            j as u32,
                            pattern(&blocked.comparisons, &l[i], &r[j]),
                        ));
                    }
                });
                (sample, counts)
            },
        )
        .reduce(
            || (Vec::new(), vec![0u64; n_rules]),
            |(mut s1, mut c1), (s2, c2)| {
                s1.extend(s2);
                for (a, b) in c1.iter_mut().zip(c2) {
                    *a += b;
                }
                (s1, c1)
            },
        );
    let mut sample = sample;
    sample.par_sort_unstable_by_key(|&(i, j, _)| (i, j));
    blocked.sample = sample;
    blocked.sample_rate = rate;
    blocked.complete = rate >= 1.0;
    blocked.compared_per_rule = counts;
    blocked.blocking_time = started.elapsed();
    blocked
}

/// Trains a model on the task without labels: `u` from random pairs, `m` by EM on each
/// rule's candidate pairs, then the prior over all pairs (see [`crate::model`]).
pub fn train(blocked: &Blocked<'_>, options: &TrainOptions) -> Model {
    let comparisons = &blocked.comparisons;
    let mut model = Model::initial(comparisons);
    let (left, right) = (blocked.task.left(), blocked.task.right());

    // u: random pairs. Among n records almost every random pair is two different people.
    let chunks = 64usize;
    let per_chunk = options.random_pairs.div_ceil(chunks);
    let width: Vec<usize> = comparisons.iter().map(|c| c.levels().len()).collect();
    let counts = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut rng = StdRng::seed_from_u64(options.seed.wrapping_add(chunk as u64));
            let mut counts: Vec<Vec<f64>> = width.iter().map(|&w| vec![0.0; w]).collect();
            if left.is_empty() || right.is_empty() {
                return counts;
            }
            for _ in 0..per_chunk {
                // Drawn by rank in id order, so the same records in another order give the
                // same pairs.
                let i = blocked.left_order[rng.gen_range(0..left.len())] as usize;
                let j = blocked.right_order[rng.gen_range(0..right.len())] as usize;
                if blocked.task.is_dedupe() && i == j {
                    continue;
                }
                for (c, comparison) in comparisons.iter().enumerate() {
                    if let Some(l) = comparison.compare(&left[i], &right[j]) {
                        counts[c][l as usize] += 1.0;
                    }
                }
            }
            counts
        })
        .reduce(
            || width.iter().map(|&w| vec![0.0; w]).collect(),
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    for (p, q) in x.iter_mut().zip(y) {
                        *p += q;
                    }
                }
                a
            },
        );
    model.set_u(&counts);

    // m: EM per rule, on the candidate pairs that agree on the rule's key.
    let rules = blocked.rules();
    let right_keys = blocked.right_keys();
    // One pass over the sample for every rule: a pair's keys under all rules lie together.
    let empty = || vec![(Patterns::default(), 0u64); rules.len()];
    let per_rule: Vec<(Patterns, u64)> = blocked
        .sample
        .par_iter()
        .fold(empty, |mut per_rule, &(i, j, p)| {
            for (r, (patterns, n)) in per_rule.iter_mut().enumerate() {
                let (ki, kj) = (
                    blocked.left.get(i as usize, r),
                    right_keys.get(j as usize, r),
                );
                if ki.is_some() && ki == kj {
                    *patterns.entry(p).or_default() += 1.0;
                    *n += 1;
                }
            }
            per_rule
        })
        .reduce(empty, |mut a, b| {
            for ((pa, na), (pb, nb)) in a.iter_mut().zip(b) {
                for (p, c) in pb {
                    *pa.entry(p).or_default() += c;
                }
                *na += nb;
            }
            a
        });
    let uk = uk_postcodes(left.iter().chain(right));
    let mut estimates = Vec::new();
    let mut reports = Vec::new();
    for (rule, (patterns, n)) in rules.iter().zip(&per_rule) {
        let held_out = rule.blocked_comparisons();
        let (m, iterations) = if *n == 0 {
            (Vec::new(), 0)
        } else {
            model.em(patterns, &held_out, options.max_iterations, uk)
        };
        let discarded = model.implausible(&m);
        reports.push(RuleReport {
            rule: rule.to_string(),
            pairs: *n,
            iterations,
            held_out,
            discarded: discarded.clone(),
        });
        if !m.is_empty() && discarded.is_none() {
            estimates.push(m);
        }
    }
    model.set_m(&estimates);
    model.training.identifier_pairs = m_from_identifiers(&mut model, &blocked.sample);

    let mut all = Patterns::default();
    for &(_, _, p) in &blocked.sample {
        *all.entry(p).or_default() += 1.0;
    }
    model.estimate_prior(
        &all,
        1.0 / blocked.sample_rate,
        blocked.task.all_pairs(),
        blocked.task.prior_records(),
        options.max_iterations * 10,
        uk,
    );
    model.training.records = blocked.task.records();
    model.training.random_pairs = options.random_pairs;
    model.training.rules = reports;
    model.trained_at = chrono::Utc::now().to_rfc3339();
    model.seal();
    model
}

/// Fewest candidate pairs sharing a verified identifier for `m` to be read from them.
const MIN_IDENTIFIER_PAIRS: u64 = 200;

/// Where records carry verified national identifiers (NHS number, UPN), pairs sharing one are
/// the same child with near certainty: a label the data gives for free. Their agreement on every
/// other comparison is `m` itself, with no latent class to mistake — EM on a file of children
/// can settle on "same household" (siblings agree on family name and address) instead of "same
/// child". Replaces EM's `m` for the comparisons those pairs inform; returns how many pairs.
/// Whether most of the records' postcodes are UK ones: training scores patterns, not
/// records, so it weighs an exact postcode as the file's postcodes mostly are (see
/// [`crate::model::Evidence`]).
fn uk_postcodes<'r>(records: impl Iterator<Item = &'r Record>) -> bool {
    let (mut uk, mut all) = (0usize, 0usize);
    for p in records.filter_map(|r| r.postcode.as_ref()) {
        all += 1;
        uk += usize::from(p.is_uk());
    }
    2 * uk > all
}

fn m_from_identifiers(model: &mut Model, sample: &[(u32, u32, u64)]) -> u64 {
    let kinds = model.comparison_kinds();
    let ids: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, Comparison::NhsNumber | Comparison::Upn))
        .map(|(i, _)| i)
        .collect();
    if ids.is_empty() {
        return 0;
    }
    let level = |p: u64, i: usize| ((p >> (4 * i)) & 0xF) as u8;
    let mut counts: Vec<Vec<f64>> = kinds.iter().map(|c| vec![0.0; c.levels().len()]).collect();
    let mut n = 0u64;
    for &(_, _, p) in sample {
        if !ids.iter().any(|&i| level(p, i) == 0) {
            continue;
        }
        n += 1;
        for (i, c) in counts.iter_mut().enumerate() {
            let l = level(p, i);
            if (l as usize) < c.len() {
                c[l as usize] += 1.0;
            }
        }
    }
    if n < MIN_IDENTIFIER_PAIRS {
        return n;
    }
    for (i, cm) in model.comparisons.iter_mut().enumerate() {
        if ids.contains(&i) {
            continue;
        }
        let total: f64 = counts[i].iter().sum();
        if total < MIN_IDENTIFIER_PAIRS as f64 {
            continue;
        }
        let k = cm.levels.len() as f64;
        for (lm, &c) in cm.levels.iter_mut().zip(&counts[i]) {
            lm.m = (c + 0.5) / (total + 0.5 * k);
        }
    }
    n
}

/// Term frequencies over all the task's records.
pub fn term_frequencies(task: Task<'_>, comparisons: &[Comparison]) -> TermFrequencies {
    match task {
        Task::Link(l, r) => TermFrequencies::count(comparisons, l.iter().chain(r)),
        Task::Dedupe(l) => TermFrequencies::count(comparisons, l.iter()),
    }
}

/// Scores every candidate pair and keeps those at or above `floor`.
pub fn predict(
    blocked: &Blocked<'_>,
    model: &Model,
    tf: &TermFrequencies,
    floor: f64,
) -> Vec<Pair> {
    let scorer = Scorer::new(model, tf, blocked.task.others());
    let (left, right) = (blocked.task.left(), blocked.task.right());
    let make = |i: usize, j: usize, s: crate::model::Score| Pair {
        left: i as u32,
        right: j as u32,
        weight: s.weight as f32,
        probability: s.probability as f32,
        guard: s.guard,
    };
    let mut pairs: Vec<Pair> = if blocked.complete {
        blocked
            .sample
            .par_iter()
            .filter_map(|&(i, j, p)| {
                scorer
                    .score_pattern_above(p, &left[i as usize], &right[j as usize], floor)
                    .map(|s| make(i as usize, j as usize, s))
            })
            .collect()
    } else {
        blocked
            .work()
            .par_iter()
            .flat_map_iter(|&unit| {
                let mut out = Vec::new();
                blocked.each(unit, |i, j| {
                    if let Some(s) = scorer.score_above(&left[i], &right[j], floor) {
                        out.push(make(i, j, s));
                    }
                });
                out
            })
            .collect()
    };
    pairs.par_sort_unstable_by_key(|p| (p.left, p.right));
    pairs
}

/// Below this probability two records are confidently different children: no cluster may
/// hold both, whatever links lie between them.
pub const DIFFERENT: f64 = 0.01;

/// Why two records may not be one child's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apart {
    /// A rule holds them apart (twins, another identifier, a pair only a person may join):
    /// nothing the rest of a child's records say changes that.
    Rule,
    /// Their score says they are confidently different children (below [`DIFFERENT`]).
    Score,
}

/// Whether a scored pair is held apart, and why.
fn apart(s: &Score) -> Option<Apart> {
    if s.guard.is_some() {
        Some(Apart::Rule)
    } else if !s.deterministic && s.probability < DIFFERENT {
        Some(Apart::Score)
    } else {
        None
    }
}

/// Whether `member`, a record a child already holds, says so little of the child that a record
/// disagreeing with it has told us nothing: by names, birth, sex and address it is confidently
/// different from `anchor`, another record of the same child. It is an agency's stale record
/// (from before a move and a change of family name), held with the child by an identifier or a
/// person's decision; a record confidently different from it as well is not thereby another
/// child.
fn stale(scorer: &Scorer<'_>, anchor: &Record, member: &Record) -> bool {
    scorer.demographic_probability(anchor, member) < DIFFERENT
}

/// Whether `member`'s being confidently different from `record` by score (no rule holds them
/// apart) says nothing against `record` being the child `anchor` is a record of: `member` is
/// [`stale`] against `anchor`, or `record`, read with what `anchor` records of the child's
/// names ([`Record::with_history_of`]), is no longer confidently different from it.
fn excused(scorer: &Scorer<'_>, record: &Record, anchor: &Record, member: &Record) -> bool {
    stale(scorer, anchor, member)
        || apart(&scorer.score(&record.with_history_of(anchor), member)).is_none()
}

/// Whether `record`, which matches `anchor` (one of a child's records), agrees with the child's
/// records as a whole: none of `members` is held apart from it by a rule, and none scores below
/// [`DIFFERENT`] against it unless that says nothing against it ([`stale`] against `anchor`, or
/// not confidently different once `record` is read with `anchor`'s record of the child's names).
/// The one rule for joining a child, in [`clustering`] and in the gateway's index alike: a
/// chain of individually plausible links cannot join two children, and a child's stale record
/// or a name history one agency kept does not keep the child's own records out.
pub fn agrees<'r>(
    scorer: &Scorer<'_>,
    record: &Record,
    anchor: &Record,
    members: impl IntoIterator<Item = &'r Record>,
) -> bool {
    // As `merge` asks it, with `record` a cluster of its own.
    members
        .into_iter()
        .all(|m| joins(scorer, (record, record), (m, anchor), false))
}

/// Whether `u` and `v` may share a child once a pair joins their two clusters: `x`, the pair's
/// record on `u`'s side, and `y` on `v`'s. A rule refuses; a low score refuses unless the pair
/// shares a verified identifier (`identified`) or the low score is [`excused`] on either side,
/// each side read against the pair's record on the other.
fn joins(
    scorer: &Scorer<'_>,
    (u, x): (&Record, &Record),
    (v, y): (&Record, &Record),
    identified: bool,
) -> bool {
    match apart(&scorer.score(u, v)) {
        None => true,
        Some(Apart::Rule) => false,
        Some(Apart::Score) => identified || excused(scorer, u, y, v) || excused(scorer, v, x, u),
    }
}

/// Clusters for deduplication. A record joins a cluster only when it agrees with the cluster
/// as a whole: the matching pairs (at or above `threshold`, no guard) are taken strongest
/// first, and two clusters merge only when no two of their records are held apart (a guard,
/// whether it says "two children" or "only a person may say", or a score below
/// [`DIFFERENT`]). So a chain of individually plausible links never joins two children: twins
/// Jack and Jake, held for review as a pair, are not joined through a record "Jak" that is a
/// close spelling of both.
///
/// That record is the other half of the danger: it could be either twin, and taking the
/// strongest link first would give it to whichever scored a shade higher. A record that
/// matches a cluster other than its own and agrees with every record of that cluster too,
/// while the two clusters are held apart, is one only a person can place: it is withheld (left
/// a cluster of its own, its links dropped) and the clustering runs again without it, until no
/// such record is left. Ties are broken by record id, so the same records in another order
/// give the same clusters. Returns each record's cluster number, numbered from 0 in order of
/// each cluster's first record by id.
pub fn cluster(
    records: &[Record],
    pairs: &[Pair],
    threshold: f64,
    scorer: &Scorer<'_>,
) -> Vec<u32> {
    clustering(records, pairs, threshold, scorer).clusters
}

/// What [`cluster`] did: the clusters, and the records it withheld because they matched two
/// children it may not join.
#[derive(Debug, Clone)]
pub struct Clustering {
    pub clusters: Vec<u32>,
    /// Record indices, in id order.
    pub withheld: Vec<u32>,
}

/// [`cluster`], saying which records were withheld as matching two children.
pub fn clustering(
    records: &[Record],
    pairs: &[Pair],
    threshold: f64,
    scorer: &Scorer<'_>,
) -> Clustering {
    let n = records.len();
    let rank = ranks(&id_order(records));
    let mut strong: Vec<&Pair> = pairs.iter().filter(|p| p.matches(threshold)).collect();
    strong.par_sort_unstable_by(|a, b| {
        let key = |p: &Pair| {
            let (x, y) = (rank[p.left as usize], rank[p.right as usize]);
            (x.min(y), x.max(y))
        };
        b.probability
            .total_cmp(&a.probability)
            .then(b.weight.total_cmp(&a.weight))
            .then_with(|| key(a).cmp(&key(b)))
    });
    let apart =
        |x: u32, y: u32| apart(&scorer.score(&records[x as usize], &records[y as usize])).is_some();
    // How many records carry each given name: what tells a slip from a name.
    let mut spelled: HashMap<&str, u32> = HashMap::new();
    for r in records {
        if let Some(g) = &r.given {
            *spelled.entry(g.joined.as_str()).or_default() += 1;
        }
    }
    let count = |i: u32| {
        records[i as usize]
            .given
            .as_ref()
            .map_or(0, |g| spelled[g.joined.as_str()])
    };
    let mut withheld = vec![false; n];
    let (of, members) = merge(records, scorer, &strong, &withheld);
    // A record linked to a cluster it was refused, and at one with all of that cluster: either
    // child could be its. One whose own records are held apart from the other cluster is where
    // it belongs, and stays. So does one whose given name is at least as common in the file as
    // a name it links to: it is the name the others were misspelt from ("Nancy" between
    // "Nanry" and "Nncy", which the twin rule cannot tell from two names), not a slip between
    // two children's names ("Jak" between Jack and Jake).
    let mut between: Vec<u32> = strong
        .iter()
        .filter(|p| of[p.left as usize] != of[p.right as usize])
        .flat_map(|p| [(p.left, p.right), (p.right, p.left)])
        .filter(|&(x, y)| {
            let (own, other) = (
                &members[of[x as usize] as usize],
                &members[of[y as usize] as usize],
            );
            // Held apart by a rule (twins, identifiers), not only by a low score: where no
            // rule runs, a record between two clusters is the model's to weigh.
            other.iter().all(|&z| !apart(x, z))
                && own.iter().any(|&a| {
                    other.iter().any(|&b| {
                        scorer
                            .score(&records[a as usize], &records[b as usize])
                            .guard
                            .is_some()
                    })
                })
        })
        .map(|(x, _)| x)
        .collect();
    between.sort_unstable();
    between.dedup();
    if !between.is_empty() {
        let mut rarest_partner: HashMap<u32, u32> =
            between.iter().map(|&x| (x, u32::MAX)).collect();
        for p in &strong {
            for (x, w) in [(p.left, p.right), (p.right, p.left)] {
                if let Some(m) = rarest_partner.get_mut(&x) {
                    *m = (*m).min(count(w));
                }
            }
        }
        for x in between {
            if count(x) < rarest_partner[&x] {
                withheld[x as usize] = true;
            }
        }
    }
    // One pass more without them: the clusters they joined are merged again as if they
    // were not there.
    let of = if withheld.iter().any(|&w| w) {
        merge(records, scorer, &strong, &withheld).0
    } else {
        of
    };
    // Number clusters by their first record in id order.
    let mut by_rank: Vec<u32> = (0..n as u32).collect();
    by_rank.sort_by_key(|&i| rank[i as usize]);
    let mut ids: HashMap<u32, u32> = HashMap::new();
    let mut out = vec![0u32; n];
    for &i in &by_rank {
        let next = ids.len() as u32;
        out[i as usize] = *ids.entry(of[i as usize]).or_insert(next);
    }
    Clustering {
        clusters: out,
        withheld: by_rank
            .into_iter()
            .filter(|&i| withheld[i as usize])
            .collect(),
    }
}

/// One pass of merging: the strong pairs in order (those of withheld records left out), two
/// clusters joined by a pair only when each record of one agrees with the other as a whole, as
/// [`agrees`] has it, each side's record of the pair the other side's anchor ([`joins`]).
/// Returns each record's cluster and each cluster's members (kept at the cluster's own number).
fn merge(
    records: &[Record],
    scorer: &Scorer<'_>,
    strong: &[&Pair],
    withheld: &[bool],
) -> (Vec<u32>, Vec<Vec<u32>>) {
    let n = records.len();
    let r = |i: u32| &records[i as usize];
    let mut of: Vec<u32> = (0..n as u32).collect();
    let mut members: Vec<Vec<u32>> = (0..n as u32).map(|i| vec![i]).collect();
    for p in strong {
        if withheld[p.left as usize] || withheld[p.right as usize] {
            continue;
        }
        let (a, b) = (of[p.left as usize], of[p.right as usize]);
        if a == b {
            continue;
        }
        // The pair's own records, on the side of `a` and of `b`.
        let (x, y) = if of[p.left as usize] == a {
            (p.left, p.right)
        } else {
            (p.right, p.left)
        };
        // A shared verified identifier says the two are one child whatever else disagrees, as
        // the gateway's index links by identifier before it scores: only a rule refuses it.
        let identified = scorer.score(r(x), r(y)).deterministic;
        let compatible = members[a as usize].iter().all(|&u| {
            members[b as usize]
                .iter()
                .all(|&v| joins(scorer, (r(u), r(x)), (r(v), r(y)), identified))
        });
        if !compatible {
            continue;
        }
        let (keep, gone) = if members[a as usize].len() >= members[b as usize].len() {
            (a, b)
        } else {
            (b, a)
        };
        let moved = std::mem::take(&mut members[gone as usize]);
        for &x in &moved {
            of[x as usize] = keep;
        }
        members[keep as usize].extend(moved);
    }
    (of, members)
}

/// One bin of a calibration table: pairs given a probability in `[low, high)`, and how many
/// of them were truly one person.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBin {
    pub low: f64,
    pub high: f64,
    pub pairs: u64,
    pub mean_probability: f64,
    pub observed: f64,
}

/// Calibration of scored pairs against truth: among pairs given probability p, about a
/// fraction p should be true. Deterministic (shared identifier) pairs are left out, and so
/// are pairs below the lowest edge.
pub fn calibration(
    pairs: &[Pair],
    edges: &[f64],
    truth_left: &[u32],
    truth_right: &[u32],
) -> Vec<CalibrationBin> {
    let mut bins: Vec<(u64, f64, u64)> = vec![(0, 0.0, 0); edges.len().saturating_sub(1)];
    for p in pairs {
        let prob = f64::from(p.probability);
        let Some(b) = edges
            .windows(2)
            .position(|w| prob >= w[0] && (prob < w[1] || (w[1] >= 1.0 && prob <= 1.0)))
        else {
            continue;
        };
        let same = truth_left.get(p.left as usize) == truth_right.get(p.right as usize);
        bins[b].0 += 1;
        bins[b].1 += prob;
        bins[b].2 += u64::from(same);
    }
    edges
        .windows(2)
        .zip(bins)
        .map(|(w, (n, sum, t))| CalibrationBin {
            low: w[0],
            high: w[1],
            pairs: n,
            mean_probability: if n == 0 { 0.0 } else { sum / n as f64 },
            observed: if n == 0 { 0.0 } else { t as f64 / n as f64 },
        })
        .collect()
}

/// Precision, recall and F1 against known truth, and how much blocking lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evaluation {
    pub true_pairs: u64,
    pub compared: u64,
    pub true_pairs_compared: u64,
    pub blocking_recall: f64,
    pub predicted: u64,
    pub true_positives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Evaluation {
    fn finish(mut self) -> Self {
        let div = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.blocking_recall = div(self.true_pairs_compared, self.true_pairs);
        self.precision = div(self.true_positives, self.predicted);
        self.recall = div(self.true_positives, self.true_pairs);
        self.f1 = if self.precision + self.recall == 0.0 {
            0.0
        } else {
            2.0 * self.precision * self.recall / (self.precision + self.recall)
        };
        self
    }
}

/// Scores pairs at a threshold against entity ids (`truth_left[i]` is the true person of left
/// record i). Used only to report; nothing here feeds back into training or the threshold.
pub fn evaluate(
    blocked: &Blocked<'_>,
    pairs: &[Pair],
    threshold: f64,
    truth_left: &[u32],
    truth_right: &[u32],
) -> Evaluation {
    let mut ev = Evaluation {
        compared: blocked.compared(),
        ..Default::default()
    };
    let mut left_counts: HashMap<u32, u64> = HashMap::new();
    for &t in truth_left {
        *left_counts.entry(t).or_default() += 1;
    }
    ev.true_pairs = if blocked.task.is_dedupe() {
        left_counts.values().map(|n| n * (n - 1) / 2).sum()
    } else {
        let mut right_counts: HashMap<u32, u64> = HashMap::new();
        for &t in truth_right {
            *right_counts.entry(t).or_default() += 1;
        }
        left_counts
            .iter()
            .map(|(t, n)| n * right_counts.get(t).copied().unwrap_or(0))
            .sum()
    };
    let same = |i: usize, j: usize| truth_left.get(i) == truth_right.get(j);
    ev.true_pairs_compared = blocked
        .work()
        .par_iter()
        .map(|&unit| {
            let mut n = 0u64;
            blocked.each(unit, |i, j| n += u64::from(same(i, j)));
            n
        })
        .sum();
    for p in pairs.iter().filter(|p| p.matches(threshold)) {
        ev.predicted += 1;
        ev.true_positives += u64::from(same(p.left as usize, p.right as usize));
    }
    ev.finish()
}

/// Pairwise scores of the clusters (every two records in one cluster count as a predicted
/// pair), for deduplication: what a user of the clusters actually gets.
pub fn evaluate_clusters(clusters: &[u32], truth: &[u32]) -> Evaluation {
    let mut by_cluster: HashMap<u32, u64> = HashMap::new();
    let mut by_truth: HashMap<u32, u64> = HashMap::new();
    let mut by_both: HashMap<(u32, u32), u64> = HashMap::new();
    for (&c, &t) in clusters.iter().zip(truth) {
        *by_cluster.entry(c).or_default() += 1;
        *by_truth.entry(t).or_default() += 1;
        *by_both.entry((c, t)).or_default() += 1;
    }
    let pairs =
        |m: &dyn Fn() -> Vec<u64>| m().iter().map(|n| n * n.saturating_sub(1) / 2).sum::<u64>();
    Evaluation {
        true_pairs: pairs(&|| by_truth.values().copied().collect()),
        predicted: pairs(&|| by_cluster.values().copied().collect()),
        true_positives: pairs(&|| by_both.values().copied().collect()),
        ..Default::default()
    }
    .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::default_rules;

    fn rec(id: &str, given: &str, family: &str, dob: &str, postcode: &str) -> Record {
        let mut r = Record::default();
        r.set(Field::Id, id).unwrap();
        r.set(Field::GivenName, given).unwrap();
        r.set(Field::FamilyName, family).unwrap();
        r.set(Field::BirthDate, dob).unwrap();
        r.set(Field::Postcode, postcode).unwrap();
        r
    }

    fn pair(l: u32, r: u32, probability: f32) -> Pair {
        Pair {
            left: l,
            right: r,
            weight: 0.0,
            probability,
            guard: None,
        }
    }

    fn toy_model() -> Model {
        toy_model_and(&[])
    }

    /// The toy model with more comparisons, each with its `u` counts by level.
    fn toy_model_and(more: &[(Field, &[f64])]) -> Model {
        let mut fields = vec![
            Field::GivenName,
            Field::FamilyName,
            Field::BirthDate,
            Field::Postcode,
        ];
        let mut u = vec![
            vec![1.0, 1.0, 2.0, 6.0, 0.1, 90.0],
            vec![1.0, 2.0, 7.0, 0.1, 90.0],
            vec![1.0, 0.1, 0.5, 8.4, 90.0],
            vec![1.0, 1.0, 2.0, 6.0, 90.0],
        ];
        for (field, counts) in more {
            fields.push(*field);
            u.push(counts.to_vec());
        }
        let mut model = Model::initial(&comparisons_for(&fields));
        model.set_u(&u);
        model.seal();
        model
    }

    #[test]
    fn clusters_join_agreeing_records_and_never_chain() {
        let records = vec![
            rec("a", "Ruby", "Calder", "2014-03-02", "WT1 1AA"),
            rec("b", "Oliver", "Baker", "2009-05-06", "LS1 4AB"),
            rec("c", "Rubi", "Calder", "2014-03-02", "WT1 1AA"),
            rec("d", "Olly", "Baker", "2009-05-06", "LS1 4AB"),
            rec("e", "Ruby", "Calder", "2014-03-02", ""),
        ];
        let model = toy_model();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&model, &tf, 4.0);
        let c = cluster(
            &records,
            &[
                pair(0, 2, 0.9),
                pair(2, 4, 0.8),
                pair(1, 3, 0.7),
                pair(0, 1, 0.2),
            ],
            0.5,
            &scorer,
        );
        assert_eq!(c, vec![0, 1, 0, 1, 0]);
        let ev = evaluate_clusters(&c, &[7, 8, 7, 8, 9]);
        assert_eq!((ev.true_pairs, ev.predicted, ev.true_positives), (2, 4, 2));

        // A wrong link from a Calder to a Baker does not pull the two families together: the
        // other Baker is confidently a different child from both Calders.
        let c = cluster(
            &records,
            &[pair(0, 2, 0.9), pair(1, 3, 0.9), pair(2, 3, 0.6)],
            0.5,
            &scorer,
        );
        assert_ne!(c[0], c[1]);
        assert_eq!(c[0], c[2]);
        assert_eq!(c[1], c[3]);
    }

    /// A child's stale record (an agency's from before a move and a parent's remarriage, joined
    /// to her by her NHS number) is confidently not her current record by everything but the
    /// number, and so confidently not a third agency's record of her now either. It must not
    /// keep that record out of her cluster; a rule still does.
    #[test]
    fn a_stale_record_does_not_keep_out_its_own_child() {
        let model = toy_model_and(&[(Field::NhsNumber, &[0.01, 99.99])]);
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&model, &tf, 10_000.0).with_twin_rule();
        let mut old = rec("a", "Tlaia", "Williams", "2014-12-02", "WT17 7DG");
        old.set(Field::NhsNumber, "9434765919").unwrap();
        let mut current = rec("b", "Talia", "White", "2014-12-02", "WT20 7LX");
        current.set(Field::NhsNumber, "9434765919").unwrap();
        let school = rec("c", "Talia", "White", "2014-12-02", "WT20 7LX");
        let records = vec![old, current, school];
        let [s, c, x] = [0, 1, 2].map(|i| scorer.score(&records[2], &records[i]));
        assert_eq!(apart(&s), Some(Apart::Score), "{s:?}");
        assert!(c.probability > 0.99 && x.probability > 0.99);
        assert!(scorer.score(&records[0], &records[1]).deterministic);
        assert!(stale(&scorer, &records[1], &records[0]));
        assert!(agrees(&scorer, &records[2], &records[1], &records[..2]));

        // Whichever pair comes first, the three are one child.
        for pairs in [
            vec![pair(0, 1, 1.0), pair(1, 2, 0.99)],
            vec![pair(1, 2, 1.0), pair(0, 1, 0.99)],
        ] {
            let c = clustering(&records, &pairs, 0.5, &scorer);
            assert_eq!(c.clusters, vec![0, 0, 0], "{pairs:?}");
        }

        // Her twin brother at the new address is held apart by a rule: her stale record's
        // disagreeing with him as well changes nothing.
        let mut brother = rec("d", "Tom", "White", "2014-12-02", "WT20 7LX");
        brother.set(Field::Sex, "M").unwrap();
        let mut her = records.clone();
        for r in &mut her {
            r.set(Field::Sex, "F").unwrap();
        }
        assert!(!agrees(&scorer, &brother, &her[1], &her[..2]));
    }

    /// Twins Jack and Jake (same date of birth, home and sex; names only similar, so a person
    /// decides about the pair) and a police record keyed "Jak", a close spelling of both: the
    /// chain Jack ~ Jak ~ Jake must not join the twins, and "Jak" must not be given to
    /// whichever twin it scored a shade closer to.
    #[test]
    fn a_record_close_to_both_twins_joins_neither() {
        let twin = |id: &str, given: &str| {
            let mut r = rec(id, given, "Smith", "2014-03-02", "WT1 1AA");
            r.set(Field::Sex, "M").unwrap();
            r
        };
        let records = vec![
            twin("a", "Jack"),
            twin("b", "Jak"),
            twin("c", "Jake"),
            twin("d", "Jack"),
            twin("e", "Jake"),
        ];
        let model = toy_model();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&model, &tf, 4.0).with_twin_rule();
        let held = scorer.score(&records[0], &records[2]).guard;
        assert!(
            held.is_some(),
            "Jack and Jake are held for a person: {held:?}"
        );
        for pairs in [
            // Jak a shade closer to Jack, then to Jake: the order of strength must not decide.
            vec![
                pair(0, 1, 0.99),
                pair(1, 2, 0.98),
                pair(0, 3, 0.97),
                pair(2, 4, 0.97),
            ],
            vec![
                pair(0, 1, 0.98),
                pair(1, 2, 0.99),
                pair(0, 3, 0.97),
                pair(2, 4, 0.97),
            ],
        ] {
            let c = clustering(&records, &pairs, 0.5, &scorer);
            assert_ne!(c.clusters[0], c.clusters[2], "the twins share a cluster");
            assert_eq!(c.clusters[0], c.clusters[3]);
            assert_eq!(c.clusters[2], c.clusters[4]);
            let alone = c.clusters.iter().filter(|&&x| x == c.clusters[1]).count();
            assert_eq!(alone, 1, "Jak joined a twin: {:?}", c.clusters);
            assert_eq!(c.withheld, vec![1]);
        }
        // Without the other twin, Jak is Jack's.
        let c = clustering(&records[..2], &[pair(0, 1, 0.99)], 0.5, &scorer);
        assert_eq!(c.clusters, vec![0, 0]);
        assert!(c.withheld.is_empty());
    }

    /// The other way round: "Nancy" between two slips of it ("Nanry", "Nncy") that the twin
    /// rule cannot tell from two names is the name they were misspelt from, and is not withheld.
    #[test]
    fn the_usual_spelling_between_two_slips_is_not_withheld() {
        let girl = |id: &str, given: &str| {
            let mut r = rec(id, given, "Talley", "2011-06-06", "WT18 5DR");
            r.set(Field::Sex, "F").unwrap();
            r
        };
        let records = vec![girl("a", "Nanry"), girl("b", "Nancy"), girl("c", "Nncy")];
        let model = toy_model();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&model, &tf, 4.0).with_twin_rule();
        let held = scorer.score(&records[0], &records[2]).guard;
        assert!(held.is_some(), "the two slips are held apart: {held:?}");
        let c = clustering(
            &records,
            &[pair(0, 1, 0.99), pair(1, 2, 0.98)],
            0.5,
            &scorer,
        );
        assert!(c.withheld.is_empty());
        assert_eq!(c.clusters[0], c.clusters[1]);
        assert_ne!(c.clusters[0], c.clusters[2]);
    }

    #[test]
    fn clusters_do_not_depend_on_row_order() {
        let records = vec![
            rec("a", "Ruby", "Calder", "2014-03-02", "WT1 1AA"),
            rec("b", "Rubi", "Calder", "2014-03-02", "WT1 1AA"),
            rec("c", "Ruby", "Calder", "2014-03-02", "WT2 2BB"),
        ];
        let model = toy_model();
        let tf = TermFrequencies::default();
        let scorer = Scorer::new(&model, &tf, 2.0);
        let pairs = [pair(0, 1, 0.9), pair(1, 2, 0.9), pair(0, 2, 0.9)];
        let c = cluster(&records, &pairs, 0.5, &scorer);
        let reversed: Vec<Record> = records.iter().rev().cloned().collect();
        let flip = |i: u32| 2 - i;
        let rpairs: Vec<Pair> = pairs
            .iter()
            .map(|p| pair(flip(p.right), flip(p.left), p.probability))
            .collect();
        let r = cluster(&reversed, &rpairs, 0.5, &scorer);
        let back: Vec<u32> = (0..3).map(|i| r[flip(i) as usize]).collect();
        assert_eq!(c, back);
    }

    #[test]
    fn sampling_is_roughly_uniform() {
        let kept = (0..100_000).filter(|&i| keep(i, i * 7 + 1, 0.1)).count();
        assert!((9_000..11_000).contains(&kept), "{kept}");
    }

    #[test]
    fn links_a_small_synthetic_pair_of_files() {
        let givens = [
            "amy", "ben", "cara", "dan", "eve", "finn", "gus", "hana", "ivy", "joe",
        ];
        let families = [
            "khan", "smith", "jones", "calder", "oneill", "patel", "wright", "hughes", "baker",
            "evans",
        ];
        let mut left = Vec::new();
        let mut right = Vec::new();
        let mut n = 0;
        for (gi, g) in givens.iter().enumerate() {
            for (fi, f) in families.iter().enumerate() {
                let dob = format!(
                    "20{:02}-{:02}-{:02}",
                    5 + (gi + fi) % 10,
                    1 + gi,
                    1 + fi * 2
                );
                let pc = format!("WT{} {}AB", gi, fi);
                left.push(rec(&format!("l{n}"), g, f, &dob, &pc));
                // The right file has a typo in every third family name.
                let f2 = if n % 3 == 0 {
                    format!("{f}e")
                } else {
                    f.to_string()
                };
                right.push(rec(&format!("r{n}"), g, &f2, &dob, &pc));
                n += 1;
            }
        }
        let fields = [
            Field::GivenName,
            Field::FamilyName,
            Field::BirthDate,
            Field::Postcode,
        ];
        let comparisons = comparisons_for(&fields);
        let rules = usable_rules(&default_rules(), &fields);
        let task = Task::Link(&left, &right);
        let blocked = block(task, rules, comparisons.clone(), 1_000_000);
        let model = train(&blocked, &TrainOptions::default());
        let tf = term_frequencies(task, &comparisons);
        let pairs = predict(&blocked, &model, &tf, 0.5);
        let truth: Vec<u32> = (0..n as u32).collect();
        assert!(
            model.matches_per_record > 0.5 && model.matches_per_record < 1.5,
            "{}",
            model.matches_per_record
        );
        let ev = evaluate(&blocked, &pairs, 0.5, &truth, &truth);
        assert_eq!(ev.true_pairs, 100);
        assert!(ev.f1 > 0.95, "{ev:?}");
    }
}

/// The FEBRL data sets beside the repository (`../shared/data/linkage`), with their truth:
/// a correctness floor, not a timing. `WEFT_LINKAGE_DATA` points elsewhere.
#[cfg(test)]
mod febrl {
    use std::path::PathBuf;

    use super::*;
    use crate::block::default_rules;
    use crate::input::{self, Entities, Mapping, Truth};

    fn data() -> PathBuf {
        std::env::var_os("WEFT_LINKAGE_DATA").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/linkage"),
            PathBuf::from,
        )
    }

    fn mapping(with_id: bool) -> Mapping {
        let mut m = vec![
            ("id", "rec_id"),
            ("given_name", "given_name"),
            ("family_name", "surname"),
            ("house_number", "street_number"),
            ("street", "address_1"),
            ("locality", "address_2"),
            ("town", "suburb"),
            ("postcode", "postcode"),
            ("region", "state"),
            ("birth_date", "date_of_birth"),
        ];
        if with_id {
            m.push(("other_id", "soc_sec_id"));
        }
        Mapping::parse(m).unwrap()
    }

    fn truth() -> Truth {
        Truth {
            column: "rec_id".into(),
            delimiter: Some('-'),
            part: Some(1),
        }
    }

    fn options() -> TrainOptions {
        TrainOptions {
            random_pairs: 100_000,
            ..TrainOptions::default()
        }
    }

    fn run(
        task: Task<'_>,
        fields: &[Field],
        truth_left: &[u32],
        truth_right: &[u32],
    ) -> Evaluation {
        let comparisons = comparisons_for(fields);
        let blocked = block(
            task,
            usable_rules(&default_rules(), fields),
            comparisons.clone(),
            5_000_000,
        );
        let model = train(&blocked, &options());
        let tf = term_frequencies(task, &comparisons);
        let pairs = predict(&blocked, &model, &tf, 0.5);
        evaluate(&blocked, &pairs, 0.5, truth_left, truth_right)
    }

    #[test]
    fn febrl4_link_and_febrl3_dedupe_score_above_a_floor() {
        let dir = data();
        assert!(
            dir.join("dataset4a.csv").exists(),
            "FEBRL data not found at {}; set WEFT_LINKAGE_DATA",
            dir.display()
        );
        for (with_id, floor) in [(true, 0.999), (false, 0.995)] {
            let m = mapping(with_id);
            let mut e = Entities::default();
            let a = input::read(&dir.join("dataset4a.csv"), &m, Some(&truth()), &mut e).unwrap();
            let b = input::read(&dir.join("dataset4b.csv"), &m, Some(&truth()), &mut e).unwrap();
            let ev = run(
                Task::Link(&a.records, &b.records),
                &m.fields(),
                a.truth.as_deref().unwrap(),
                b.truth.as_deref().unwrap(),
            );
            assert_eq!(ev.true_pairs, 5000);
            assert!(ev.f1 >= floor, "FEBRL4 (other id: {with_id}): {ev:?}");
        }
        let m = mapping(true);
        let t = input::read(
            &dir.join("dataset3.csv"),
            &m,
            Some(&truth()),
            &mut Entities::default(),
        )
        .unwrap();
        let truth = t.truth.as_deref().unwrap();
        let ev = run(Task::Dedupe(&t.records), &m.fields(), truth, truth);
        // Demographics only: names written in each other's field and whole addresses copied
        // are what carry the pairs whose names and dates were corrupted.
        let m2 = mapping(false);
        let t2 = input::read(
            &dir.join("dataset3.csv"),
            &m2,
            Some(&self::truth()),
            &mut Entities::default(),
        )
        .unwrap();
        let tr2 = t2.truth.as_deref().unwrap();
        let ev2 = run(Task::Dedupe(&t2.records), &m2.fields(), tr2, tr2);
        assert!(ev2.f1 >= 0.995, "FEBRL3 demographics only: {ev2:?}");
        assert_eq!(ev.true_pairs, 6538);
        assert!(ev.f1 >= 0.995, "FEBRL3: {ev:?}");
    }
}
