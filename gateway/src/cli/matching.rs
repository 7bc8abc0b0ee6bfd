//! The `weft match` commands for data teams: link two CSV files, find duplicates in one, or
//! train and save a model. They read, block, train (or load a model), score and write; with a
//! truth column they also report how well that went, without ever letting the truth near
//! training or the threshold.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use weft_matching::block::{default_rules, Rule};
use weft_matching::input::{self, Entities, InputError, Mapping, MatchConfig, Truth};
use weft_matching::link::{self, Blocked, Evaluation, Pair, Task, TrainOptions};
use weft_matching::model::Model;
use weft_matching::record::{Field, Record};

/// The probability at or above which a pair is a match when no threshold is given: even odds,
/// fixed before any data is seen.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// What every `weft match` command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// A TOML file with `[columns]`, `[right_columns]`, `[truth]`, `blocking` and `threshold`;
    /// command-line options override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Column mapping, `field=column`, repeatable: fields are id, given_name, family_name,
    /// birth_date, sex, postcode, house_number, street, locality, town, region, nhs_number, upn,
    /// other_id; and, kept on the record for the name comparisons and the twin and sibling
    /// rules, middle_names, former_family_name, former_upn, former_postcode, household.
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    pub map: Vec<String>,
    /// Column mapping for the right-hand file of `link`, where it differs from `--map`.
    #[arg(long = "right-map", value_name = "FIELD=COLUMN")]
    pub right_map: Vec<String>,
    /// Blocking rule, repeatable, e.g. `dob` or `family_soundex+birth_year` (default: a built-in
    /// set; rules naming unmapped fields are skipped).
    #[arg(long = "block", value_name = "RULE")]
    pub block: Vec<String>,
    /// Column holding each record's true identity, for evaluation only.
    #[arg(long)]
    pub truth: Option<String>,
    /// Split the truth column on this character…
    #[arg(long, requires = "truth")]
    pub truth_delimiter: Option<char>,
    /// …and take this part (from 0); FEBRL's `rec-12-dup-0` is `--truth-delimiter - --truth-part 1`.
    #[arg(long, requires = "truth")]
    pub truth_part: Option<usize>,
    /// Keep records whose date of birth cannot be read (flagged, as if it were missing)
    /// instead of stopping at the first one.
    #[arg(long)]
    pub flag_bad_dates: bool,
    /// Random pairs used to estimate u.
    #[arg(long, default_value_t = 300_000)]
    pub random_pairs: usize,
    /// Seed for the random pairs, so runs repeat exactly.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct Scoring {
    /// Match probability at or above which a pair is a match (default 0.5).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Use this saved model instead of training one on the input.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the result (CSV); `-` for standard output.
    #[arg(long, short, default_value = "-")]
    pub out: PathBuf,
    /// Also write pairs at or above this probability, below the threshold (for review).
    #[arg(long)]
    pub min_probability: Option<f64>,
}

impl Scoring {
    /// The lowest probability written: `--min-probability`, never above the threshold.
    fn floor(&self, threshold: f64) -> f64 {
        self.min_probability.unwrap_or(threshold).min(threshold)
    }
}

#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    pub left: PathBuf,
    pub right: PathBuf,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub scoring: Scoring,
}

#[derive(Debug, Clone, Args)]
pub struct DedupeArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub scoring: Scoring,
    /// Also write the scored pairs here (CSV); `--out` gets the clusters.
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// One file (trained as for deduplication) or two (as for linking).
    #[arg(required = true, num_args = 1..=2)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    /// Where to save the model (JSON).
    #[arg(long)]
    pub save: PathBuf,
}

/// Everything settled from the config file and the command line.
struct Settings {
    left: Mapping,
    right: Mapping,
    truth: Option<Truth>,
    rules: Vec<Rule>,
    skipped_rules: Vec<Rule>,
    threshold: f64,
    options: TrainOptions,
}

fn settings(common: &Common, threshold: Option<f64>) -> anyhow::Result<Settings> {
    let config: MatchConfig = match &common.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text)
                .map_err(|e| InputError::Config(format!("{}: {e}", path.display())))?
        }
        None => MatchConfig::default(),
    };
    let cli: Vec<(String, String)> = common
        .map
        .iter()
        .map(|m| input::parse_map_arg(m))
        .collect::<Result<_, _>>()?;
    let cli_right: Vec<(String, String)> = common
        .right_map
        .iter()
        .map(|m| input::parse_map_arg(m))
        .collect::<Result<_, _>>()?;
    let mut left = Mapping::parse(config.columns.iter().map(|(f, c)| (f.as_str(), c.as_str())))?;
    let over = Mapping::parse(cli.iter().map(|(f, c)| (f.as_str(), c.as_str())))?;
    left.merge(over);
    if left.columns.is_empty() {
        return Err(InputError::Config(
            "no column mapping: give --map field=column or a [columns] table".into(),
        )
        .into());
    }
    left.flag_bad_dates = common.flag_bad_dates;
    let mut right = left.clone();
    right.merge(Mapping::parse(
        config
            .right_columns
            .iter()
            .map(|(f, c)| (f.as_str(), c.as_str())),
    )?);
    right.merge(Mapping::parse(
        cli_right.iter().map(|(f, c)| (f.as_str(), c.as_str())),
    )?);
    let truth = match &common.truth {
        Some(column) => Some(Truth {
            column: column.clone(),
            delimiter: common.truth_delimiter,
            part: common.truth_part,
        }),
        None => config.truth,
    };
    let all_rules = if !common.block.is_empty() {
        input::parse_rules(&common.block)?
    } else if let Some(r) = &config.blocking {
        input::parse_rules(r)?
    } else {
        default_rules()
    };
    let fields: Vec<Field> = left
        .fields()
        .into_iter()
        .filter(|f| right.columns.contains_key(f))
        .collect();
    let (rules, skipped_rules): (Vec<Rule>, Vec<Rule>) =
        all_rules.into_iter().partition(|r| r.usable(&fields));
    if rules.is_empty() {
        let needs: Vec<String> = skipped_rules
            .iter()
            .map(|r| {
                let missing: Vec<&str> = r
                    .fields()
                    .filter(|f| !fields.contains(f))
                    .map(|f| f.as_str())
                    .collect();
                format!("{r} (needs {})", missing.join(", "))
            })
            .collect();
        return Err(InputError::Config(format!(
            "no blocking rule can run on the mapped fields; map the fields a rule needs: {}",
            needs.join("; ")
        ))
        .into());
    }
    let threshold = threshold.or(config.threshold).unwrap_or(DEFAULT_THRESHOLD);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(
            InputError::Config("threshold must be a probability between 0 and 1".into()).into(),
        );
    }
    Ok(Settings {
        left,
        right,
        truth,
        rules,
        skipped_rules,
        threshold,
        options: TrainOptions {
            random_pairs: common.random_pairs,
            seed: common.seed,
            ..TrainOptions::default()
        },
    })
}

/// Stage timings, printed with the report.
#[derive(Default)]
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    fn lap(&mut self, name: &'static str, since: &mut Instant) {
        self.0.push((name, since.elapsed()));
        *since = Instant::now();
    }

    fn line(&self) -> String {
        let total: Duration = self.0.iter().map(|(_, d)| *d).sum();
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, d)| format!("{n} {:.3}s", d.as_secs_f64()))
            .collect();
        format!("time: {:.3}s ({})", total.as_secs_f64(), parts.join(", "))
    }
}

fn comparisons(s: &Settings) -> Vec<weft_matching::compare::Comparison> {
    let fields: Vec<Field> = s
        .left
        .fields()
        .into_iter()
        .filter(|f| s.right.columns.contains_key(f))
        .collect();
    link::comparisons_for(&fields)
}

/// The candidate pairs of `task` under the settings' blocking rules, the same for linking,
/// deduplicating and training.
fn block<'a>(
    task: Task<'a>,
    s: &Settings,
    comparisons: Vec<weft_matching::compare::Comparison>,
) -> Blocked<'a> {
    link::block(
        task,
        s.rules.clone(),
        comparisons,
        TrainOptions::default().max_training_pairs,
    )
}

fn model_for(blocked: &Blocked<'_>, s: &Settings, path: Option<&Path>) -> anyhow::Result<Model> {
    match path {
        Some(p) => {
            let m = Model::load(p).with_context(|| format!("loading model {}", p.display()))?;
            if m.comparison_kinds() != blocked.comparisons {
                anyhow::bail!(
                    "the model compares {:?} but the mapping gives {:?}; map the same fields",
                    m.comparison_kinds(),
                    blocked.comparisons
                );
            }
            Ok(m)
        }
        None => Ok(link::train(blocked, &s.options)),
    }
}

fn writer(path: &Path) -> anyhow::Result<Box<dyn Write>> {
    if path == Path::new("-") {
        Ok(Box::new(std::io::BufWriter::new(std::io::stdout().lock())))
    } else {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Box::new(std::io::BufWriter::new(f)))
    }
}

fn write_pairs(
    path: &Path,
    pairs: &[Pair],
    left: &[Record],
    right: &[Record],
    floor: f64,
    names: [&str; 2],
) -> anyhow::Result<usize> {
    let mut w = csv::Writer::from_writer(writer(path)?);
    w.write_record([names[0], names[1], "match_weight", "probability", "held"])?;
    let mut n = 0;
    for p in pairs.iter().filter(|p| f64::from(p.probability) >= floor) {
        w.write_record([
            left[p.left as usize].id.as_str(),
            right[p.right as usize].id.as_str(),
            &format!("{:.3}", p.weight),
            &format!("{:.6}", p.probability),
            p.guard.map_or("", |g| g.reason()),
        ])?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

/// The report: to standard output, unless the results went there.
fn report(out: &Path, lines: &[String]) {
    if out == Path::new("-") {
        for l in lines {
            eprintln!("{l}");
        }
    } else {
        for l in lines {
            println!("{l}");
        }
    }
}

fn describe(blocked: &Blocked<'_>, model: &Model, s: &Settings) -> Vec<String> {
    let mut lines = vec![format!(
        "model {} (expected matches per record {:.3}; prior per pair {:.3e}); threshold {}",
        model.version,
        model.matches_per_record,
        weft_matching::model::pair_prior(model, blocked.task.others()),
        s.threshold
    )];
    if blocked
        .comparisons
        .contains(&weft_matching::Comparison::Sex)
    {
        // Says why twins are (or are not) held apart, so a data team can see it in the output.
        lines.push(if model.given_names_tell_apart() {
            "twin and sibling rules: on (a different given name is rarely the same person here)"
                .to_string()
        } else {
            "twin and sibling rules: off (a different given name is often the same person here)"
                .to_string()
        });
    }
    let per_rule: Vec<String> = blocked
        .rules()
        .iter()
        .zip(&blocked.compared_per_rule)
        .map(|(r, n)| format!("{r}: {n}"))
        .collect();
    lines.push(format!(
        "pairs compared: {} ({})",
        blocked.compared(),
        per_rule.join(", ")
    ));
    for r in &model.training.rules {
        if let Some(why) = &r.discarded {
            lines.push(format!("training: rule {} set aside: {why}", r.rule));
        }
    }
    if !s.skipped_rules.is_empty() {
        let names: Vec<String> = s.skipped_rules.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "blocking rules skipped (fields not mapped): {}",
            names.join(", ")
        ));
    }
    lines
}

fn describe_eval(label: &str, ev: &Evaluation) -> String {
    format!(
        "{label}: true pairs {}, predicted {}, true positives {}, precision {:.4}, recall {:.4}, F1 {:.4}",
        ev.true_pairs, ev.predicted, ev.true_positives, ev.precision, ev.recall, ev.f1
    )
}

fn flagged(records: &[Record]) -> usize {
    records.iter().filter(|r| !r.flags.is_empty()).count()
}

pub fn run_link(args: &LinkArgs) -> anyhow::Result<()> {
    let s = settings(&args.common, args.scoring.threshold)?;
    let mut t = Timings::default();
    let mut since = Instant::now();
    let mut entities = Entities::default();
    let left = input::read(&args.left, &s.left, s.truth.as_ref(), &mut entities)?;
    let right = input::read(&args.right, &s.right, s.truth.as_ref(), &mut entities)?;
    t.lap("load", &mut since);
    let comparisons = comparisons(&s);
    let task = Task::Link(&left.records, &right.records);
    let blocked = block(task, &s, comparisons.clone());
    t.lap("block", &mut since);
    let model = model_for(&blocked, &s, args.scoring.model.as_deref())?;
    t.lap("train", &mut since);
    let floor = args.scoring.floor(s.threshold);
    let tf = link::term_frequencies(task, &comparisons);
    let pairs = link::predict(&blocked, &model, &tf, floor);
    t.lap("score", &mut since);
    let written = write_pairs(
        &args.scoring.out,
        &pairs,
        &left.records,
        &right.records,
        floor,
        ["left_id", "right_id"],
    )?;
    t.lap("write", &mut since);
    let mut lines = vec![format!(
        "records: {} left, {} right ({} with a flagged value)",
        left.records.len(),
        right.records.len(),
        flagged(&left.records) + flagged(&right.records)
    )];
    lines.extend(describe(&blocked, &model, &s));
    let matches = pairs.iter().filter(|p| p.matches(s.threshold)).count();
    lines.push(format!(
        "matches at threshold: {matches}; pairs written: {written}"
    ));
    if let (Some(tl), Some(tr)) = (&left.truth, &right.truth) {
        let ev = link::evaluate(&blocked, &pairs, s.threshold, tl, tr);
        lines.push(format!(
            "blocking recall: {:.4} ({} of {} true pairs compared)",
            ev.blocking_recall, ev.true_pairs_compared, ev.true_pairs
        ));
        lines.push(describe_eval("pairs", &ev));
    }
    lines.push(t.line());
    report(&args.scoring.out, &lines);
    Ok(())
}

pub fn run_dedupe(args: &DedupeArgs) -> anyhow::Result<()> {
    let s = settings(&args.common, args.scoring.threshold)?;
    let mut t = Timings::default();
    let mut since = Instant::now();
    let mut entities = Entities::default();
    let table = input::read(&args.file, &s.left, s.truth.as_ref(), &mut entities)?;
    t.lap("load", &mut since);
    let comparisons = comparisons(&s);
    let task = Task::Dedupe(&table.records);
    let blocked = block(task, &s, comparisons.clone());
    t.lap("block", &mut since);
    let model = model_for(&blocked, &s, args.scoring.model.as_deref())?;
    t.lap("train", &mut since);
    let floor = args.scoring.floor(s.threshold);
    let tf = link::term_frequencies(task, &comparisons);
    let pairs = link::predict(&blocked, &model, &tf, floor);
    let scorer = weft_matching::Scorer::new(&model, &tf, task.others());
    let clustering = link::clustering(&table.records, &pairs, s.threshold, &scorer);
    let clusters = clustering.clusters;
    t.lap("score and cluster", &mut since);
    {
        let mut w = csv::Writer::from_writer(writer(&args.scoring.out)?);
        w.write_record(["cluster_id", "record_id"])?;
        for (r, c) in table.records.iter().zip(&clusters) {
            w.write_record([c.to_string().as_str(), r.id.as_str()])?;
        }
        w.flush()?;
    }
    if let Some(p) = &args.pairs_out {
        write_pairs(
            p,
            &pairs,
            &table.records,
            &table.records,
            floor,
            ["id_1", "id_2"],
        )?;
    }
    t.lap("write", &mut since);
    let n_clusters = clusters.iter().max().map_or(0, |m| m + 1);
    let mut lines = vec![format!(
        "records: {} ({} with a flagged value); clusters: {n_clusters}; {} left in a cluster of their own because they match two children held apart (for a person to place)",
        table.records.len(),
        flagged(&table.records),
        clustering.withheld.len()
    )];
    lines.extend(describe(&blocked, &model, &s));
    if let Some(truth) = &table.truth {
        let ev = link::evaluate(&blocked, &pairs, s.threshold, truth, truth);
        lines.push(format!(
            "blocking recall: {:.4} ({} of {} true pairs compared)",
            ev.blocking_recall, ev.true_pairs_compared, ev.true_pairs
        ));
        lines.push(describe_eval("pairs", &ev));
        lines.push(describe_eval(
            "clusters",
            &link::evaluate_clusters(&clusters, truth),
        ));
    }
    lines.push(t.line());
    report(&args.scoring.out, &lines);
    Ok(())
}

pub fn run_train(args: &TrainArgs) -> anyhow::Result<()> {
    let s = settings(&args.common, None)?;
    let mut entities = Entities::default();
    let started = Instant::now();
    let left = input::read(&args.files[0], &s.left, None, &mut entities)?;
    let right = match args.files.get(1) {
        Some(p) => Some(input::read(p, &s.right, None, &mut entities)?),
        None => None,
    };
    let task = match &right {
        Some(r) => Task::Link(&left.records, &r.records),
        None => Task::Dedupe(&left.records),
    };
    let blocked = block(task, &s, comparisons(&s));
    let model = link::train(&blocked, &s.options);
    model
        .save(&args.save)
        .with_context(|| format!("saving {}", args.save.display()))?;
    println!("model {} saved to {}", model.version, args.save.display());
    for line in describe(&blocked, &model, &s) {
        println!("{line}");
    }
    for c in &model.comparisons {
        let levels: Vec<String> = c
            .levels
            .iter()
            .map(|l| {
                format!(
                    "{} m={:.4} u={:.6} w={:+.2}",
                    l.label,
                    l.m,
                    l.u,
                    (l.m / l.u).log2()
                )
            })
            .collect();
        println!("  {}: {}", c.comparison.as_str(), levels.join("; "));
    }
    println!("time: {:.3}s", started.elapsed().as_secs_f64());
    Ok(())
}
