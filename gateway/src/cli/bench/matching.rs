//! `weft bench match`: identity matching at the scale of a large authority's child
//! population, on synthetic children (nobody real). Three measurements:
//!
//! 1. Deduplicate the development cohort ([`weft_sim::cohort`]: four agencies' records of each
//!    child, twins, siblings, name changes, moves) at each size asked for: wall time, peak
//!    memory, pairwise and cluster precision, recall and F1, twin pairs linked automatically,
//!    and a calibration table (predicted probability against the share truly one child).
//! 2. The FEBRL benchmarks beside the repository, when they are there.
//! 3. Search an index of N children of the cohort with other agencies' records of indexed
//!    children (and strangers), split as `weft bench search` splits it
//!    ([`weft_sim::cohort::search_split`]): latency per search at p50/p99/max, and how often
//!    the right child comes first.
//!
//! The threshold is fixed before any truth is looked at; truth only scores the result.
//!
//! Timings belong here, never in tests.

use std::time::Instant;

use clap::Args;

use weft_matching::block::default_rules;
use weft_matching::link::{self, Task, TrainOptions};
use weft_matching::record::{Field, Record};
use weft_matching::search::SearchIndex;

use crate::pipeline::resolve::linkage;

use super::cpu::{peak_memory_mib, percentile};

#[derive(Debug, Clone, Args)]
pub struct MatchBenchArgs {
    /// Sizes of the development cohort to deduplicate, in records (about 2.15 a child).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub cohort_records: Vec<usize>,
    /// Where the FEBRL files are (`dataset3.csv`, `dataset4a.csv`, `dataset4b.csv`); skipped
    /// when absent.
    #[arg(long, default_value = "../shared/data/linkage")]
    pub febrl: std::path::PathBuf,
    /// Write the first cohort here (`cohort.csv` and `cohort-truth.csv`) to run `weft match`
    /// on it.
    #[arg(long)]
    pub write_cohort: Option<std::path::PathBuf>,
    /// Children in the search index.
    #[arg(long, default_value_t = 1_000_000)]
    pub index_children: usize,
    /// Searches to time.
    #[arg(long, default_value_t = 10_000)]
    pub searches: usize,
    /// Worker threads (the target is for 2 cores).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Save the model trained in the deduplication step here (JSON), to inspect it.
    #[arg(long)]
    pub save_model: Option<std::path::PathBuf>,
    /// Train the gateway's built-in model on the first cohort (without labels: the fields the
    /// index compares, with the NHS number and UPN to learn `m` from) and save it here.
    #[arg(long)]
    pub save_gateway_model: Option<std::path::PathBuf>,
    /// Match probability at or above which a pair is a match.
    #[arg(long, default_value_t = crate::cli::matching::DEFAULT_THRESHOLD)]
    pub threshold: f64,
}

/// The fields of the development cohort the matcher compares.
const COHORT_FIELDS: [Field; 9] = [
    Field::GivenName,
    Field::FamilyName,
    Field::BirthDate,
    Field::Sex,
    Field::Postcode,
    Field::HouseNumber,
    Field::Street,
    Field::NhsNumber,
    Field::Upn,
];

/// A cohort record as the matcher reads it.
pub(crate) fn cohort_record(r: &weft_sim::cohort::CohortRecord) -> Record {
    use weft_matching::record::Extra;
    let mut rec = Record::lenient(
        r.record_id.clone(),
        [
            (Field::GivenName, r.given_name.as_str()),
            (Field::FamilyName, r.family_name.as_str()),
            (Field::BirthDate, r.birth_date.as_str()),
            (Field::Sex, r.sex),
            (Field::Postcode, r.postcode.as_str()),
            (Field::HouseNumber, r.house_number.as_str()),
            (Field::Street, r.street.as_str()),
            (Field::NhsNumber, r.nhs_number.as_str()),
            (Field::Upn, r.upn.as_str()),
        ],
    );
    for (extra, value) in [
        (Extra::MiddleNames, r.middle_names.as_str()),
        (Extra::FormerFamilyName, r.former_family_name.as_str()),
        (Extra::Household, r.household.as_str()),
    ] {
        if !value.is_empty() {
            rec.add_extra(extra, value);
        }
    }
    rec
}

struct Deduped {
    clusters: Vec<u32>,
}

/// Deduplicates `records` as `weft match dedupe` does, and reports against `truth`.
fn dedupe(
    records: &[Record],
    truth: &[u32],
    fields: &[Field],
    args: &MatchBenchArgs,
    calibrate: bool,
) -> anyhow::Result<Deduped> {
    let label = records.len();
    let comparisons = link::comparisons_for(fields);
    let rules = link::usable_rules(&default_rules(), fields);
    let started = Instant::now();
    let task = Task::Dedupe(records);
    let options = TrainOptions::default();
    let blocked = link::block(task, rules, comparisons.clone(), options.max_training_pairs);
    let t_block = started.elapsed();
    let model = link::train(&blocked, &options);
    let t_train = started.elapsed() - t_block;
    if let Some(path) = &args.save_model {
        model.save(path)?;
    }
    let tf = link::term_frequencies(task, &comparisons);
    let floor = if calibrate { 0.001 } else { args.threshold };
    let pairs = link::predict(&blocked, &model, &tf, floor);
    let scorer = weft_matching::Scorer::new(&model, &tf, task.others());
    let clustering = link::clustering(records, &pairs, args.threshold, &scorer);
    let clusters = clustering.clusters;
    let total = started.elapsed();
    println!(
        "cohort {label}: model {}, {:.3} matches per record; {} pairs compared, {} clusters; {:.2}s (block {:.2}s, train {:.2}s, score and cluster {:.2}s); peak memory {}",
        model.version,
        model.matches_per_record,
        blocked.compared(),
        clusters.iter().max().map_or(0, |m| m + 1),
        total.as_secs_f64(),
        t_block.as_secs_f64(),
        t_train.as_secs_f64(),
        (total - t_block - t_train).as_secs_f64(),
        peak_memory_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
    let ev = link::evaluate(&blocked, &pairs, args.threshold, truth, truth);
    let cl = link::evaluate_clusters(&clusters, truth);
    // Withheld records whose own child has other records: each is a link a person must make.
    let alone = |i: u32| truth.iter().filter(|&&t| t == truth[i as usize]).count() == 1;
    println!(
        "cohort {label}: {} records matched two children held apart and were left for a person ({} of them had no other record of their own child)",
        clustering.withheld.len(),
        clustering.withheld.iter().filter(|&&i| alone(i)).count()
    );
    println!(
        "cohort {label}: blocking recall {:.4}; pairs precision {:.4} recall {:.4} F1 {:.4}; clusters precision {:.4} recall {:.4} F1 {:.4}",
        ev.blocking_recall, ev.precision, ev.recall, ev.f1, cl.precision, cl.recall, cl.f1
    );
    if calibrate {
        let edges = [0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999, 1.0];
        let probabilistic: Vec<link::Pair> = pairs
            .iter()
            .filter(|p| p.probability < 1.0 && p.guard.is_none())
            .copied()
            .collect();
        println!(
            "cohort {label}: calibration (pairs scored; shared identifiers and pairs a rule holds apart aside):"
        );
        println!("  predicted p      pairs   mean p   share truly one child");
        for b in link::calibration(&probabilistic, &edges, truth, truth) {
            println!(
                "  [{:.3}, {:.3}) {:>8}   {:.4}   {:.4}",
                b.low, b.high, b.pairs, b.mean_probability, b.observed
            );
        }
    }
    Ok(Deduped { clusters })
}

/// FEBRL4 (link, all fields and demographics only) and FEBRL3 (dedupe, both), as the README's
/// `weft match` commands run them.
fn febrl(args: &MatchBenchArgs) -> anyhow::Result<()> {
    use weft_matching::input::{self, Entities, Mapping, Truth};
    let dir = &args.febrl;
    if !dir.join("dataset4a.csv").exists() {
        println!("febrl: not found at {}; skipped", dir.display());
        return Ok(());
    }
    let truth = Truth {
        column: "rec_id".into(),
        delimiter: Some('-'),
        part: Some(1),
    };
    for with_id in [true, false] {
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
        let mapping = Mapping::parse(m)?;
        let fields = mapping.fields();
        let label = if with_id {
            "all fields"
        } else {
            "demographics only"
        };
        let mut e = Entities::default();
        let a = input::read(&dir.join("dataset4a.csv"), &mapping, Some(&truth), &mut e)?;
        let b = input::read(&dir.join("dataset4b.csv"), &mapping, Some(&truth), &mut e)?;
        let started = Instant::now();
        let task = Task::Link(&a.records, &b.records);
        let comparisons = link::comparisons_for(&fields);
        let options = TrainOptions::default();
        let blocked = link::block(
            task,
            link::usable_rules(&default_rules(), &fields),
            comparisons.clone(),
            options.max_training_pairs,
        );
        let model = link::train(&blocked, &options);
        let tf = link::term_frequencies(task, &comparisons);
        let pairs = link::predict(&blocked, &model, &tf, args.threshold);
        let t = started.elapsed();
        let (ta, tb) = (a.truth.unwrap_or_default(), b.truth.unwrap_or_default());
        let ev = link::evaluate(&blocked, &pairs, args.threshold, &ta, &tb);
        println!(
            "febrl4 ({label}): precision {:.4} recall {:.4} F1 {:.4}; {:.2}s",
            ev.precision,
            ev.recall,
            ev.f1,
            t.as_secs_f64()
        );
        let mut e = Entities::default();
        let t3 = input::read(&dir.join("dataset3.csv"), &mapping, Some(&truth), &mut e)?;
        let started = Instant::now();
        let task = Task::Dedupe(&t3.records);
        let blocked = link::block(
            task,
            link::usable_rules(&default_rules(), &fields),
            comparisons.clone(),
            options.max_training_pairs,
        );
        let model = link::train(&blocked, &options);
        let tf = link::term_frequencies(task, &comparisons);
        let pairs = link::predict(&blocked, &model, &tf, args.threshold);
        let scorer = weft_matching::Scorer::new(&model, &tf, task.others());
        let clusters = link::cluster(&t3.records, &pairs, args.threshold, &scorer);
        let t = started.elapsed();
        let truth3 = t3.truth.unwrap_or_default();
        let ev = link::evaluate(&blocked, &pairs, args.threshold, &truth3, &truth3);
        let cl = link::evaluate_clusters(&clusters, &truth3);
        println!(
            "febrl3 ({label}): pairs precision {:.4} recall {:.4} F1 {:.4}; clusters F1 {:.4}; {:.2}s",
            ev.precision,
            ev.recall,
            ev.f1,
            cl.f1,
            t.as_secs_f64()
        );
    }
    Ok(())
}

pub fn run(args: &MatchBenchArgs) -> anyhow::Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    pool.install(|| bench(args))
}

fn bench(args: &MatchBenchArgs) -> anyhow::Result<()> {
    let comparisons = link::comparisons_for(&linkage::FIELDS);
    let rules = link::usable_rules(&default_rules(), &linkage::KEYED);
    println!("weft bench match: {} threads", args.threads);

    // 1. The development cohort.
    for (k, &size) in args.cohort_records.iter().enumerate() {
        let children = (size as f64 / 2.15).round() as usize;
        let started = Instant::now();
        let cohort = weft_sim::cohort::generate(args.seed + k as u64, children);
        if k == 0 {
            if let Some(dir) = &args.write_cohort {
                std::fs::create_dir_all(dir)?;
                cohort.write(&dir.join("cohort.csv"), &dir.join("cohort-truth.csv"))?;
                println!("cohort: written to {}", dir.display());
            }
        }
        let records: Vec<Record> = cohort.records.iter().map(cohort_record).collect();
        println!(
            "cohort: {} children, {} records, {} twin pairs; generated in {:.1}s",
            cohort.children,
            records.len(),
            cohort.twins.len(),
            started.elapsed().as_secs_f64()
        );
        if let (0, Some(path)) = (k, &args.save_gateway_model) {
            // The index compares its fields and keys records by fewer (see `linkage::KEYED`);
            // training blocks as the index does.
            let ids = [Field::NhsNumber, Field::Upn];
            let compared: Vec<Field> = linkage::FIELDS.iter().chain(&ids).copied().collect();
            let keyed: Vec<Field> = linkage::KEYED.iter().chain(&ids).copied().collect();
            let options = TrainOptions::default();
            let blocked = link::block(
                Task::Dedupe(&records),
                link::usable_rules(&default_rules(), &keyed),
                link::comparisons_for(&compared),
                options.max_training_pairs,
            );
            let model = link::train(&blocked, &options).without(&[
                weft_matching::Comparison::NhsNumber,
                weft_matching::Comparison::Upn,
            ]);
            model.save(path)?;
            println!(
                "gateway model {} saved to {}",
                model.version,
                path.display()
            );
        }
        let out = dedupe(&records, &cohort.truth, &COHORT_FIELDS, args, k == 0)?;
        let twins_linked = cohort
            .twins
            .iter()
            .filter(|(a, b)| {
                // A twin pair is linked when any record of one twin shares a cluster with any
                // record of the other.
                let of = |c: u32| {
                    cohort
                        .truth
                        .iter()
                        .enumerate()
                        .filter(move |(_, &t)| t == c)
                        .map(|(i, _)| out.clusters[i])
                };
                of(*a).any(|x| of(*b).any(|y| x == y))
            })
            .count();
        println!(
            "cohort {}: twin pairs linked automatically: {twins_linked} of {}",
            records.len(),
            cohort.twins.len()
        );
    }

    // 2. FEBRL.
    febrl(args)?;

    // 3. Search, scored by the gateway's built-in model (the fields the index compares), over
    // the cohort split as `weft bench search` splits it.
    let model = linkage::Matcher::builtin().model;
    let started = Instant::now();
    let split = weft_sim::cohort::search_split(args.seed, args.index_children, args.searches);
    let mut index = SearchIndex::new(rules, comparisons);
    for (i, r) in split.index.iter().enumerate() {
        let r = crate::cli::bench::search::indexed(r, i);
        index.insert(linkage::record_of(
            r.local_id,
            &r.demographics,
            &r.identifiers,
        ));
    }
    println!(
        "search: index of {} children built in {:.1}s; peak memory {}",
        index.len(),
        started.elapsed().as_secs_f64(),
        peak_memory_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
    let mut latencies = Vec::with_capacity(split.searches.len());
    let (mut first, mut found_any, mut strangers_matched, mut strangers) =
        (0usize, 0usize, 0usize, 0usize);
    let mut candidates = 0usize;
    for (r, want) in &split.searches {
        let query = linkage::record_of("q", &crate::cli::bench::search::searched(r), &[]);
        let t = Instant::now();
        let hits = index.search(&model, &query, args.threshold, 10);
        latencies.push(t.elapsed());
        candidates += index.candidates(&query).len();
        match want {
            Some(w) => {
                let w = *w as u32;
                found_any += usize::from(hits.iter().any(|h| h.index == w));
                first += usize::from(hits.first().is_some_and(|h| h.index == w));
            }
            None => {
                strangers += 1;
                strangers_matched += usize::from(!hits.is_empty());
            }
        }
    }
    latencies.sort();
    let known = split.searches.len() - strangers;
    println!(
        "search: {} searches, mean {:.0} candidates each; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        split.searches.len(),
        candidates as f64 / split.searches.len().max(1) as f64,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "search: right child first in {first} of {known} ({:.2} %), among matches in {found_any}; strangers given a match: {strangers_matched} of {strangers}",
        100.0 * first as f64 / known.max(1) as f64
    );
    Ok(())
}
