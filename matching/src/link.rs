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
use crate::model::{pattern, Model, Patterns, RuleReport, Scorer, TermFrequencies};
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
    /// Candidate pairs per rule (each pair counted under the first rule that found it).
    pub compared_per_rule: Vec<u64>,
    pub blocking_time: Duration,
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
        compared_per_rule: Vec::new(),
        blocking_time: Duration::ZERO,
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
                    if keep(i, j, rate) {
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
    blocked.sample = sample;
    blocked.complete = rate >= 1.0;
    blocked.compared_per_rule = counts;
    blocked.blocking_time = started.elapsed();
    blocked
}

/// Trains a model on the task without labels: `u` from random pairs, `m` by EM on each
/// rule's candidate pairs, then the prior on all candidates.
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
                let i = rng.gen_range(0..left.len());
                let j = rng.gen_range(0..right.len());
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
    let per_rule: Vec<(Patterns, u64)> = (0..rules.len())
        .into_par_iter()
        .map(|r| {
            let mut patterns = Patterns::new();
            let mut n = 0u64;
            for &(i, j, p) in &blocked.sample {
                let (ki, kj) = (
                    blocked.left.get(i as usize, r),
                    right_keys.get(j as usize, r),
                );
                if ki.is_some() && ki == kj {
                    *patterns.entry(p).or_default() += 1.0;
                    n += 1;
                }
            }
            (patterns, n)
        })
        .collect();
    let mut estimates = Vec::new();
    let mut reports = Vec::new();
    for (rule, (patterns, n)) in rules.iter().zip(&per_rule) {
        let held_out = rule.blocked_comparisons();
        let (m, iterations) = if *n == 0 {
            (Vec::new(), 0)
        } else {
            model.em(patterns, &held_out, options.max_iterations)
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

    let mut all = Patterns::new();
    for &(_, _, p) in &blocked.sample {
        *all.entry(p).or_default() += 1.0;
    }
    model.estimate_prior(&all, options.max_iterations * 10);
    model.training.records = blocked.task.records();
    model.training.random_pairs = options.random_pairs;
    model.training.rules = reports;
    model.trained_at = chrono::Utc::now().to_rfc3339();
    model.seal();
    model
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
    let scorer = Scorer::new(model, tf);
    let (left, right) = (blocked.task.left(), blocked.task.right());
    let make = |i: usize, j: usize, s: crate::model::Score| Pair {
        left: i as u32,
        right: j as u32,
        weight: s.weight as f32,
        probability: s.probability as f32,
    };
    let mut pairs: Vec<Pair> = if blocked.complete {
        blocked
            .sample
            .par_iter()
            .filter_map(|&(i, j, p)| {
                let s = scorer.score_pattern(p, &left[i as usize]);
                (s.probability >= floor).then(|| make(i as usize, j as usize, s))
            })
            .collect()
    } else {
        blocked
            .work()
            .par_iter()
            .flat_map_iter(|&unit| {
                let mut out = Vec::new();
                blocked.each(unit, |i, j| {
                    let s = scorer.score(&left[i], &right[j]);
                    if s.probability >= floor {
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

/// Clusters for deduplication: records joined by a pair at or above the threshold are one
/// person (connected components). Returns each record's cluster number, numbered from 0 in
/// order of first record.
pub fn cluster(n: usize, pairs: &[Pair], threshold: f64) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let up = parent[parent[x as usize] as usize];
            parent[x as usize] = up;
            x = up;
        }
        x
    }
    for p in pairs
        .iter()
        .filter(|p| f64::from(p.probability) >= threshold)
    {
        let (a, b) = (find(&mut parent, p.left), find(&mut parent, p.right));
        if a != b {
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    let mut ids: HashMap<u32, u32> = HashMap::new();
    (0..n as u32)
        .map(|i| {
            let root = find(&mut parent, i);
            let next = ids.len() as u32;
            *ids.entry(root).or_insert(next)
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
    for p in pairs
        .iter()
        .filter(|p| f64::from(p.probability) >= threshold)
    {
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

    #[test]
    fn clusters_are_connected_components() {
        let p = |l, r, probability| Pair {
            left: l,
            right: r,
            weight: 0.0,
            probability,
        };
        let c = cluster(5, &[p(0, 2, 0.9), p(2, 4, 0.8), p(1, 3, 0.2)], 0.5);
        assert_eq!(c, vec![0, 1, 0, 2, 0]);
        let ev = evaluate_clusters(&c, &[7, 8, 7, 8, 9]);
        assert_eq!((ev.true_pairs, ev.predicted, ev.true_positives), (2, 3, 1));
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
        for (with_id, floor) in [(true, 0.997), (false, 0.993)] {
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
        assert_eq!(ev.true_pairs, 6538);
        assert!(ev.f1 >= 0.993, "FEBRL3: {ev:?}");
    }
}
