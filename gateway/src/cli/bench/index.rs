//! `weft bench index`: the master child index judged as a deployment's would be, on a cohort
//! its built-in model was not trained on. The development cohort ([`weft_sim::cohort`]) is
//! split by agency into four SQLite reporting databases, the gateway's index pass reads them
//! through the `sql` adapter ([`Index::sync`], as at start-up), and the index's export
//! ([`index_export`], what `weft index export` writes) is compared with the cohort's truth:
//! pairs of records of different children linked (the target is none), and the share of pairs
//! of one child's records that are linked (recall; the target is 0.99 or more).
//!
//! Truth only scores the result: the index never sees it, and nothing is tuned to it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use sqlx::{Connection, Row, SqliteConnection};
use weft_adapters::sql::{SqlAdapter, SqlConfig};
use weft_sim::cohort::{self, Cohort};

use crate::cli::bench::search::{create, remove};
use crate::foundation::config::{AgencyConfig, AgencyKind, MatchingConfig, Resilience};
use crate::foundation::store::{Backend, Store};
use crate::pipeline::resolve::linkage::Matcher;
use crate::pipeline::resolve::Index;
use crate::read::index_export::{index_export, Operator, Selection};
use crate::sources::{Source, Sources};

#[derive(Debug, Clone, Args)]
pub struct IndexArgs {
    /// Children in the cohort (about 2.15 records each).
    #[arg(long, default_value_t = 10_000)]
    pub children: usize,
    /// Seed of the cohort. The built-in model was trained on the cohort of seed 7 (`weft bench
    /// match --save-gateway-model`'s first); any other seed is one it has not seen.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// The gateway's store: a PostgreSQL server (`postgres://…`), on which a fresh database is
    /// created for the run and dropped at the end; or a temporary SQLite file when omitted.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Keep the four reporting databases, the cohort's truth (`truth.csv`) and the index's
    /// export (`index.csv`) in this folder, to look at the links by hand.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Match with this model file (`weft match train`, `weft bench match
    /// --save-gateway-model`) instead of the built-in one, as `matching.model` would: to judge
    /// a model on a cohort it was not trained on before a deployment takes it up.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

/// The agencies of the cohort, each a source of the kind that holds such records.
const AGENCIES: [(&str, AgencyKind); 4] = [
    ("health", AgencyKind::Health),
    ("school", AgencyKind::Education),
    ("social_care", AgencyKind::SocialCare),
    ("police", AgencyKind::Police),
];

/// The reporting table each database holds, and the `sql` adapter's list query over it: the
/// columns the adapter recognises (`nhs_number` and `upn` become identifiers, `family_id` a
/// household key).
const TABLE: &str = "CREATE TABLE people (local_id TEXT PRIMARY KEY, nhs_number TEXT, upn TEXT, \
     given_name TEXT, middle_names TEXT, family_name TEXT, former_family_names TEXT, \
     birth_date TEXT, sex TEXT, address_line1 TEXT, postcode TEXT, family_id TEXT)";
const LIST: &str = "SELECT local_id, nhs_number, upn, given_name, middle_names, family_name, \
     former_family_names, birth_date, sex, address_line1, postcode, family_id FROM people";

/// What one run found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub backend: Option<Backend>,
    /// The version of the model that matched.
    pub model: String,
    pub children: usize,
    pub records: usize,
    /// Records the index pass read and linked.
    pub indexed: usize,
    /// Children the index made.
    pub index_children: usize,
    pub pass: Duration,
    /// Pairs of records the index put in one child.
    pub linked_pairs: u64,
    /// Of those, pairs of records of different children.
    pub wrong_pairs: u64,
    /// Pairs of records of one child, and how many of them the index linked.
    pub true_pairs: u64,
    pub found_pairs: u64,
    /// Children of the index holding records of more than one child.
    pub mixed_children: usize,
    /// Twin pairs, and those with records in one child of the index.
    pub twins: usize,
    pub twins_linked: usize,
    /// Proposals in the review queue, and those whose record is truly the proposed child's.
    pub proposals: usize,
    pub proposals_right: usize,
    /// Wrong pairs by the link methods of their two records (`identifier:nhs_number`,
    /// `probabilistic`, …), most first.
    pub wrong_by_method: Vec<(String, u64)>,
}

impl Report {
    pub fn recall(&self) -> f64 {
        self.found_pairs as f64 / self.true_pairs.max(1) as f64
    }

    pub fn precision(&self) -> f64 {
        (self.linked_pairs - self.wrong_pairs) as f64 / self.linked_pairs.max(1) as f64
    }
}

pub async fn run(args: IndexArgs) -> anyhow::Result<()> {
    let r = measure(&args).await?;
    let backend = match r.backend {
        Some(Backend::Postgres) => "PostgreSQL",
        _ => "SQLite",
    };
    println!(
        "weft bench index: the cohort of seed {} ({} children, {} records) in four SQLite reporting databases read through the sql adapter; the index on {backend}",
        args.seed, r.children, r.records
    );
    println!(
        "model: {} ({})",
        r.model,
        args.model
            .as_ref()
            .map_or("built-in".to_string(), |p| p.display().to_string())
    );
    println!(
        "index pass: {} records into {} children in {:.1} s",
        r.indexed,
        r.index_children,
        r.pass.as_secs_f64()
    );
    println!(
        "pairs of records of different children linked: {} (in {} children of the index){}",
        r.wrong_pairs,
        r.mixed_children,
        if r.wrong_by_method.is_empty() {
            String::new()
        } else {
            format!(
                "; by the records' link methods: {}",
                r.wrong_by_method
                    .iter()
                    .map(|(m, n)| format!("{m} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    println!(
        "pairs of one child's records linked: {} of {} (recall {:.4}); pairwise precision {:.5}",
        r.found_pairs,
        r.true_pairs,
        r.recall(),
        r.precision()
    );
    println!(
        "twin pairs linked: {} of {}; review queue: {} proposals, {} of them the right child",
        r.twins_linked, r.twins, r.proposals, r.proposals_right
    );
    println!(
        "target: 0 pairs of different children linked ({}), recall at least 0.99 ({})",
        if r.wrong_pairs == 0 { "met" } else { "NOT met" },
        if r.recall() >= 0.99 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Makes the store, runs the benchmark in it, and removes it whatever happened.
pub(crate) async fn measure(args: &IndexArgs) -> anyhow::Result<Report> {
    let scratch = tempfile::tempdir()?;
    let dir = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    let (url, target) = create(args.database_url.as_deref(), "weft_bench_index").await?;
    let outcome = async {
        let store = Store::open(&SecretString::from(url), 4).await?;
        let outcome = bench(args, &store, &dir).await;
        store.pool.close().await;
        outcome
    }
    .await;
    let removed = remove(target).await;
    let report = outcome?;
    removed?;
    Ok(report)
}

async fn bench(args: &IndexArgs, store: &Store, dir: &Path) -> anyhow::Result<Report> {
    let cohort = cohort::generate(args.seed, args.children);
    let mut all = Vec::new();
    for (agency, kind) in AGENCIES {
        let path = dir.join(format!("{agency}.db"));
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        let url = weft_sim::sqlseed::sqlite_url(&path);
        write_reporting(&url, &cohort, agency).await?;
        let config = SqlConfig {
            url,
            preset: None,
            schema: None,
            list: LIST.into(),
            queries: Vec::new(),
            max_connections: 2,
        };
        let adapter = SqlAdapter::new(config).with_context(|| format!("the {agency} source"))?;
        all.push(Arc::new(Source::new(
            agency.to_string(),
            AgencyConfig {
                id: agency.to_string(),
                name: agency.to_string(),
                kind,
                local_authority: None,
            },
            Duration::from_secs(30),
            "sql",
            Arc::new(adapter),
            &Resilience::default(),
        )));
    }
    let sources = Sources { all };

    let matcher = Matcher::from_config(&MatchingConfig {
        model: args.model.clone(),
        ..MatchingConfig::default()
    })
    .context("--model")?;
    let index = Index::with_matcher(store.clone(), matcher);
    // As the gateway does on a new store before its first pass.
    index.matcher().rebuild(store).await?;
    let started = Instant::now();
    let pass = index.sync(&sources).await;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        pass.failed.is_empty(),
        "the index pass failed for {:?}",
        pass.failed
    );

    let export = index_export(
        store,
        &Operator {
            user: "weft-bench".into(),
            reason: Some("weft bench index: links against the cohort's truth".into()),
        },
        &Selection::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("exporting the index: {e}"))?;
    if args.out.is_some() {
        std::fs::write(dir.join("index.csv"), &export.csv)?;
        let mut truth = String::from("local_id,child\n");
        for (r, c) in cohort.records.iter().zip(&cohort.truth) {
            truth.push_str(&format!("{},c{c}\n", r.record_id));
        }
        std::fs::write(dir.join("truth.csv"), truth)?;
    }
    let links = read_export(&export.csv)?;
    let review = sqlx::query("SELECT local_id, child_id FROM match_links WHERE status = 'review'")
        .fetch_all(&store.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("local_id")?, r.try_get("child_id")?)))
        .collect::<Result<Vec<(String, String)>, sqlx::Error>>()?;
    let mut report = score(&cohort, &links, &review);
    report.backend = Some(store.backend);
    report.model = index.matcher().model.version.clone();
    report.pass = elapsed;
    report.index_children = usize::try_from(pass.children).unwrap_or_default();
    Ok(report)
}

/// Writes one agency's records of the cohort into a new reporting database.
async fn write_reporting(url: &str, cohort: &Cohort, agency: &str) -> anyhow::Result<()> {
    let mut c = SqliteConnection::connect(url).await?;
    sqlx::raw_sql(TABLE).execute(&mut c).await?;
    let mut tx = c.begin().await?;
    for r in cohort.records.iter().filter(|r| r.agency == agency) {
        sqlx::query("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&r.record_id)
            .bind(&r.nhs_number)
            .bind(&r.upn)
            .bind(&r.given_name)
            .bind(&r.middle_names)
            .bind(&r.family_name)
            .bind(&r.former_family_name)
            .bind(&r.birth_date)
            .bind(r.sex)
            .bind(
                format!("{} {}", r.house_number, r.street)
                    .trim()
                    .to_string(),
            )
            .bind(&r.postcode)
            .bind(&r.household)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    c.close().await?;
    Ok(())
}

/// Each record's child and link method, by local id, from an export's CSV.
fn read_export(csv: &[u8]) -> anyhow::Result<HashMap<String, (String, String)>> {
    let mut reader = csv::Reader::from_reader(csv);
    let mut out = HashMap::new();
    for row in reader.records() {
        let row = row?;
        let (Some(local_id), Some(child), Some(method)) = (row.get(1), row.get(2), row.get(3))
        else {
            anyhow::bail!("an export row without its columns");
        };
        out.insert(
            local_id.to_string(),
            (child.to_string(), method.to_string()),
        );
    }
    Ok(out)
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Scores the index's children (`links`: local id → child, method) and its review proposals
/// (local id, proposed child) against the cohort's truth.
pub(crate) fn score(
    cohort: &Cohort,
    links: &HashMap<String, (String, String)>,
    review: &[(String, String)],
) -> Report {
    let truth: HashMap<&str, u32> = cohort
        .records
        .iter()
        .zip(&cohort.truth)
        .map(|(r, &c)| (r.record_id.as_str(), c))
        .collect();
    // The index's children: the true child of each record in it.
    let mut members: HashMap<&str, Vec<(u32, &str)>> = HashMap::new();
    for (local_id, (child, method)) in links {
        if let Some(&t) = truth.get(local_id.as_str()) {
            members
                .entry(child.as_str())
                .or_default()
                .push((t, method.as_str()));
        }
    }
    let mut report = Report {
        children: cohort.children,
        records: cohort.records.len(),
        indexed: links.len(),
        twins: cohort.twins.len(),
        ..Report::default()
    };
    let mut per_child: HashMap<u32, u64> = HashMap::new();
    for &t in &cohort.truth {
        *per_child.entry(t).or_default() += 1;
    }
    report.true_pairs = per_child.values().map(|&n| pairs(n)).sum();
    let mut wrong_by_method: HashMap<String, u64> = HashMap::new();
    let mut index_children_of: HashMap<u32, Vec<&str>> = HashMap::new();
    for (child, records) in &members {
        let mut by_truth: HashMap<u32, u64> = HashMap::new();
        for (t, _) in records {
            *by_truth.entry(*t).or_default() += 1;
            index_children_of.entry(*t).or_default().push(child);
        }
        let all = pairs(records.len() as u64);
        let right: u64 = by_truth.values().map(|&n| pairs(n)).sum();
        report.linked_pairs += all;
        report.found_pairs += right;
        report.wrong_pairs += all - right;
        if by_truth.len() > 1 {
            report.mixed_children += 1;
            for (i, (a, ma)) in records.iter().enumerate() {
                for (b, mb) in &records[i + 1..] {
                    if a != b {
                        let (x, y) = if ma <= mb { (ma, mb) } else { (mb, ma) };
                        *wrong_by_method.entry(format!("{x}+{y}")).or_default() += 1;
                    }
                }
            }
        }
    }
    let mut wrong: Vec<(String, u64)> = wrong_by_method.into_iter().collect();
    wrong.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    report.wrong_by_method = wrong;
    report.twins_linked = cohort
        .twins
        .iter()
        .filter(|(a, b)| {
            let (x, y) = (index_children_of.get(a), index_children_of.get(b));
            x.zip(y)
                .is_some_and(|(x, y)| x.iter().any(|c| y.contains(c)))
        })
        .count();
    report.proposals = review.len();
    report.proposals_right = review
        .iter()
        .filter(|(local_id, child)| {
            let t = truth.get(local_id.as_str());
            members
                .get(child.as_str())
                .is_some_and(|m| m.iter().any(|(x, _)| Some(x) == t))
        })
        .count();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_counts_pairs_against_the_truth() {
        let cohort = cohort::generate(3, 40);
        let ids: Vec<&str> = cohort
            .records
            .iter()
            .map(|r| r.record_id.as_str())
            .collect();
        // The index got everything right: one child of the index per true child.
        let perfect: HashMap<String, (String, String)> = ids
            .iter()
            .zip(&cohort.truth)
            .map(|(id, t)| (id.to_string(), (format!("k{t}"), "probabilistic".into())))
            .collect();
        let r = score(&cohort, &perfect, &[]);
        assert_eq!((r.wrong_pairs, r.found_pairs), (0, r.true_pairs));
        assert!(r.true_pairs > 0 && r.recall() == 1.0 && r.precision() == 1.0);
        // Every record a child of its own: nothing wrong, nothing found.
        let apart: HashMap<String, (String, String)> = ids
            .iter()
            .map(|id| (id.to_string(), (id.to_string(), "new".into())))
            .collect();
        let r = score(&cohort, &apart, &[]);
        assert_eq!((r.linked_pairs, r.found_pairs), (0, 0));
        // One record of another child moved into the first record's child: one wrong pair
        // for each record of that child.
        let mut one_wrong = perfect.clone();
        let first = cohort.truth[0];
        let other = cohort.truth.iter().position(|&t| t != first).unwrap();
        let into = format!("k{first}");
        one_wrong.insert(
            ids[other].to_string(),
            (into.clone(), "probabilistic".into()),
        );
        let r = score(&cohort, &one_wrong, &[]);
        let of_first = cohort.truth.iter().filter(|&&t| t == first).count() as u64;
        assert_eq!(r.wrong_pairs, of_first);
        assert_eq!(r.mixed_children, 1);
        // A proposal is right when the proposed child holds the record's own child.
        let proposals = [
            (ids[other].to_string(), into),
            (ids[0].to_string(), format!("k{first}")),
        ];
        let p = score(&cohort, &perfect, &proposals);
        assert_eq!((p.proposals, p.proposals_right), (2, 1));
        assert_eq!(
            r.wrong_by_method,
            vec![("probabilistic+probabilistic".to_string(), of_first)]
        );
    }

    #[tokio::test]
    async fn reads_the_cohort_through_four_sql_sources_and_scores_the_export() {
        let postgres = std::env::var("WEFT_TEST_STORE").as_deref() == Ok("postgres");
        let args = IndexArgs {
            children: 150,
            seed: 2026,
            database_url: postgres.then(|| {
                std::env::var(weft_adapters::testkit::POSTGRES_ENV)
                    .expect("WEFT_TEST_STORE=postgres needs WEFT_TEST_POSTGRES_URL")
            }),
            out: None,
            model: None,
        };
        let r = measure(&args).await.unwrap();
        assert_eq!(r.indexed, r.records, "every record was read and linked");
        assert_eq!(r.children, 150);
        assert!(r.true_pairs > 100, "{r:?}");
        assert_eq!(r.wrong_pairs, 0, "{r:?}");
        assert!(r.recall() >= 0.95, "{r:?}");
        assert!(r.index_children >= 150, "{r:?}");
        assert_eq!(
            r.backend,
            Some(if postgres {
                Backend::Postgres
            } else {
                Backend::Sqlite
            })
        );
    }
}
