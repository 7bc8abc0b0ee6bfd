//! `weft bench search`: the gateway's own identity search — [`Index::find`] over the store, the
//! path `POST /v1/children/search` takes — against an index of synthetic children (nobody real)
//! on SQLite or PostgreSQL. The children are the development cohort's
//! ([`weft_sim::cohort::search_split`]): the index holds one agency's record of each child, with
//! everything the adapters carry (middle and former names, address, household); a search is
//! another agency's record of the child, by the five fields the API takes; one in ten is for a
//! child held out of the index — a stranger, often the brother, sister or twin of one in it. `weft bench match` times the in-memory search index of the matching
//! library; this times what the API runs: candidates' matching forms read with their blocking
//! keys, name counts read from the store, candidates scored by the matcher.
//!
//! Loading a million children through [`Index::upsert`] would take the best part of an hour
//! (each record is matched against the index, linked and audited in a transaction of its own),
//! so the children are written in bulk with the rows upsert writes for a record that starts a
//! child of its own ([`load_new`]), and their matching rows derived afterwards by
//! `Matcher::rebuild`; a unit test checks that a search finds the same children, with the same
//! scores, in an index loaded either way. Timings belong here, never in tests.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, Row};
use weft_adapters::{Demographics, SourceRecord};
use weft_sim::cohort::{search_split, CohortRecord};

use crate::cli::bench::cpu::{cpu_time, peak_memory_mib, percentile};
use crate::cli::bench::ms;
use crate::foundation::store::{insert_rows, Backend, Store};
use crate::pipeline::resolve::linkage::{Grade, MAX_CANDIDATES};
use crate::pipeline::resolve::{Found, Index, Search, Stored};

#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// The gateway's store: a PostgreSQL server (`postgres://…`), on which a fresh database is
    /// created for the run and dropped at the end; or a temporary SQLite file when omitted (a
    /// `sqlite:` URL names a new file of your own, which is kept).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Children in the index.
    #[arg(long, default_value_t = 1_000_000)]
    pub children: usize,
    /// Searches to time (one in ten for a child who is not in the index).
    #[arg(long, default_value_t = 2_000)]
    pub searches: usize,
    /// Seed of the cohort and of the searches.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Searches in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Search the index already in the SQLite file `--database-url` names, loaded by an earlier
    /// run with the same `--children` and `--seed`, instead of loading one: to time searches
    /// again without the load.
    #[arg(long, requires = "database_url")]
    pub reuse: bool,
    /// Write `strangers.csv` into this folder: each search for a child not in the index that
    /// found a child graded `probable` or `certain`, beside the indexed record of that child
    /// and the comparison's explanation, to look at by hand (synthetic children only).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The source the synthetic children are recorded in.
const SOURCE: &str = "bench";

/// Children written per transaction while loading.
const LOAD_BATCH: usize = 5_000;

/// What one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    pub backend: Backend,
    /// The PostgreSQL database made for the run (dropped by the time the report is returned).
    pub database: Option<String>,
    pub children: usize,
    pub keys: usize,
    /// The index was loaded by an earlier run (`--reuse`): `load` and `derive` are zero.
    pub reused: bool,
    pub load: Duration,
    /// Deriving every record's blocking keys, matching form and name counts
    /// (`Matcher::rebuild`).
    pub derive: Duration,
    /// Settling the store after the load, as the database would soon do by itself: on
    /// PostgreSQL `VACUUM (ANALYZE)` (autovacuum), on SQLite a checkpoint that empties the
    /// write-ahead log the derivation's one large transaction filled (the automatic checkpoint
    /// on the gateway's next writes).
    pub settle: Option<Duration>,
    /// Sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    /// CPU time the benchmark's process used while searching, on all its threads: the gateway's
    /// code (building the query, decoding rows, scoring), and on SQLite the database too.
    pub cpu: Option<Duration>,
    pub known: usize,
    /// The right child came first.
    pub first: usize,
    /// The right child came first, graded certain.
    pub first_certain: usize,
    /// The right child was among the children returned.
    pub found: usize,
    pub strangers: usize,
    /// Strangers given a child graded certain.
    pub strangers_certain: usize,
    /// Strangers given a child graded probable or certain.
    pub strangers_probable: usize,
    /// Strangers whose twin is in the index.
    pub stranger_twins: usize,
    /// Children returned, over all searches.
    pub returned: usize,
    /// For each search, the records its blocking keys reach in the store (sorted): what the
    /// matcher reads and scores, up to its cap.
    pub blocked: Vec<usize>,
}

pub async fn run(args: SearchArgs) -> anyhow::Result<()> {
    let concurrency = args.concurrency.max(1);
    // Made before the load, so a folder that cannot be made fails in a second, not after it.
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    }
    let r = measure(&args).await?;
    let backend = match (&r.backend, &r.database) {
        (Backend::Postgres, Some(db)) => format!("PostgreSQL (database {db}, since dropped)"),
        (Backend::Postgres, None) => "PostgreSQL".into(),
        (Backend::Sqlite, _) => "SQLite".into(),
    };
    println!(
        "weft bench search: Index::find (the store-backed master child index the API searches) over {} synthetic children on {backend}; {} searches, concurrency {concurrency}, seed {}",
        r.children, r.latencies.len(), args.seed
    );
    if r.reused {
        println!(
            "load: none, the index of an earlier run searched again (--reuse); {} blocking keys",
            r.keys
        );
    } else {
        println!(
            "load: {} children in {:.1} s ({:.0} children/s); their {} blocking keys and name counts derived in {:.1} s{}; peak memory {}",
            r.children,
            r.load.as_secs_f64(),
            r.children as f64 / r.load.as_secs_f64().max(1e-9),
            r.keys,
            r.derive.as_secs_f64(),
            r.settle
                .map(|v| {
                    let how = match r.backend {
                        Backend::Postgres => "VACUUM (ANALYZE)",
                        Backend::Sqlite => "WAL checkpoint",
                    };
                    format!("; {how} {:.1} s", v.as_secs_f64())
                })
                .unwrap_or_default(),
            peak_memory_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
        );
    }
    println!(
        "{:<28} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "", "searches", "searches/s", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "{:<28} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
        "search by demographics",
        r.latencies.len(),
        r.latencies.len() as f64 / r.elapsed.as_secs_f64().max(1e-9),
        ms(percentile(&r.latencies, 0.5)),
        ms(percentile(&r.latencies, 0.99)),
        ms(r.latencies.last().copied().unwrap_or_default())
    );
    // SQLite runs inside this process, so there the split says nothing.
    if let (Some(cpu), Backend::Postgres) = (r.cpu, r.backend) {
        println!(
            "time: at most {:.2} ms of this process's CPU per search (building the query, decoding rows, scoring; any thread), against {:.2} ms of wall time per search: the rest is PostgreSQL",
            ms(cpu) / r.latencies.len().max(1) as f64,
            ms(r.elapsed) / r.latencies.len().max(1) as f64
        );
    }
    let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
    println!(
        "accuracy: right child first in {} of {} ({:.2} %; graded certain in {}), among the children returned in {} ({:.2} %); \
         strangers given a certain match {} of {} ({} of them with a twin in the index), probable or certain {}; {:.1} children returned per search",
        r.first,
        r.known,
        pct(r.first, r.known),
        r.first_certain,
        r.found,
        pct(r.found, r.known),
        r.strangers_certain,
        r.strangers,
        r.stranger_twins,
        r.strangers_probable,
        r.returned as f64 / r.latencies.len().max(1) as f64
    );
    let at = |q: f64| {
        r.blocked
            .get(((r.blocked.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "blocking: each search's keys reach p50 {} / p99 {} / max {} records in the store; {} searches reach more than the {} the matcher reads",
        at(0.5),
        at(0.99),
        r.blocked.last().copied().unwrap_or_default(),
        r.blocked.iter().filter(|&&n| n as i64 > MAX_CANDIDATES).count(),
        MAX_CANDIDATES
    );
    println!(
        "target: p99 under 10 ms against 1,000,000 children; no stranger graded certain ({})",
        if r.strangers_certain == 0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// Where the benchmark's index lives, and what to remove afterwards.
pub(crate) enum Target {
    /// A file in a temporary directory, removed with it.
    Sqlite(tempfile::TempDir),
    /// A SQLite file the caller named: used as it is, and kept.
    Named,
    /// A database made on the caller's PostgreSQL server for this run.
    Postgres { admin: String, name: String },
}

/// The store a benchmark runs in: a temporary SQLite file (no URL), the SQLite file a URL names,
/// or a new database named `<prefix>_<random>` on the PostgreSQL server a URL names.
pub(crate) async fn create(url: Option<&str>, prefix: &str) -> anyhow::Result<(String, Target)> {
    match url {
        None => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}",
                dir.path().join("weft-bench-search.db").display()
            );
            Ok((url, Target::Sqlite(dir)))
        }
        Some(u) if u.starts_with("sqlite:") => Ok((u.to_string(), Target::Named)),
        Some(admin) => {
            let name = format!("{prefix}_{:016x}", rand::random::<u64>());
            let mut url = url::Url::parse(admin).context("--database-url does not parse")?;
            anyhow::ensure!(
                matches!(url.scheme(), "postgres" | "postgresql"),
                "--database-url must be postgres://… (or sqlite:…)"
            );
            let mut c = PgConnection::connect(admin)
                .await
                .context("connecting to the PostgreSQL server")?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut c)
                .await
                .context("creating the benchmark's database")?;
            let _ = c.close().await;
            url.set_path(&format!("/{name}"));
            Ok((
                url.to_string(),
                Target::Postgres {
                    admin: admin.to_string(),
                    name,
                },
            ))
        }
    }
}

/// Removes what [`create`] made (a file the caller named is kept).
pub(crate) async fn remove(target: Target) -> anyhow::Result<()> {
    match target {
        Target::Sqlite(dir) => dir
            .close()
            .context("removing the benchmark's SQLite file")?,
        Target::Named => {}
        Target::Postgres { admin, name } => {
            let mut c = PgConnection::connect(&admin).await?;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut c)
                .await
                .with_context(|| format!("dropping the benchmark's database {name}"))?;
            let _ = c.close().await;
        }
    }
    Ok(())
}

/// Makes the store, runs the benchmark in it, and removes it whatever happened.
pub(crate) async fn measure(args: &SearchArgs) -> anyhow::Result<Report> {
    let (url, target) = create(args.database_url.as_deref(), "weft_bench_search").await?;
    let database = match &target {
        Target::Postgres { name, .. } => Some(name.clone()),
        _ => None,
    };
    let outcome = async {
        let store = Store::open(
            &SecretString::from(url),
            u32::try_from(args.concurrency.max(1) + 1)?,
        )
        .await?;
        let outcome = bench(args, &store).await;
        store.pool.close().await;
        outcome
    }
    .await;
    let removed = remove(target).await;
    let mut report = outcome?;
    removed?;
    report.database = database;
    Ok(report)
}

/// A search to time, and the child it should find (`None`: a stranger).
struct Query {
    search: Search,
    want: Option<usize>,
}

async fn bench(args: &SearchArgs, store: &Store) -> anyhow::Result<Report> {
    let index = Index::new(store.clone());
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM children")
        .fetch_one(&store.pool)
        .await?;
    let reused = args.reuse && existing > 0;
    if reused {
        anyhow::ensure!(
            usize::try_from(existing)? == args.children,
            "--reuse: the store holds {existing} children, not the {} of --children",
            args.children
        );
    } else {
        anyhow::ensure!(
            existing == 0,
            "the benchmark needs an empty store (or --reuse); this one has {existing} children"
        );
    }
    let split = search_split(args.seed, args.children, args.searches);
    anyhow::ensure!(
        split.index.len() == args.children,
        "the cohort gave {} children, not {}",
        split.index.len(),
        args.children
    );

    let started = Instant::now();
    let mut children: Vec<String> = Vec::with_capacity(args.children);
    if !reused {
        for (b, batch) in split.index.chunks(LOAD_BATCH).enumerate() {
            let records: Vec<SourceRecord> = batch
                .iter()
                .enumerate()
                .map(|(j, r)| indexed(r, b * LOAD_BATCH + j))
                .collect();
            children.extend(load_new(&index, SOURCE, &records).await?);
            if children.len() % 100_000 == 0 {
                tracing::info!(
                    children = children.len(),
                    seconds = started.elapsed().as_secs(),
                    "bench search: loading"
                );
            }
        }
    }
    let load = started.elapsed();
    let started = Instant::now();
    let keys = if reused {
        children = loaded_children(store, split.index.len()).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM match_keys")
            .fetch_one(&store.pool)
            .await?;
        usize::try_from(n)?
    } else {
        usize::try_from(index.matcher().rebuild(store).await?.keys)?
    };
    let derive = started.elapsed();
    let settle = if reused {
        None
    } else {
        let started = Instant::now();
        sqlx::raw_sql(match store.backend {
            Backend::Postgres => {
                "VACUUM (ANALYZE) children, source_records, record_identifiers, match_keys, match_terms"
            }
            Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
        })
        .execute(&store.pool)
        .await?;
        Some(started.elapsed())
    };

    let queries: Vec<Query> = split
        .searches
        .iter()
        .map(|(r, want)| Query {
            search: Search {
                demographics: Some(searched(r)),
                ..Default::default()
            },
            want: *want,
        })
        .collect();
    let stranger_twins = split.stranger_twins;
    // Only `--out` looks at the indexed records again.
    let held = args.out.is_some().then_some(split.index);

    let index = Arc::new(index);
    let queries = Arc::new(queries);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (index, queries, next) = (index.clone(), queries.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(q) = queries.get(i) else { break };
                    let t = Instant::now();
                    let found = index.find(&q.search).await?;
                    out.push((i, t.elapsed(), found));
                }
                Ok::<_, sqlx::Error>(out)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(queries.len());
    for w in workers {
        results.extend(w.await??);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before
        .zip(cpu_time())
        .map(|(before, after)| after.saturating_sub(before));
    let mut blocked = Vec::with_capacity(queries.len());
    for q in queries.iter() {
        blocked.push(reached(&index, &q.search).await?);
    }
    blocked.sort_unstable();

    let mut report = Report {
        backend: store.backend,
        database: None,
        children: children.len(),
        keys,
        reused,
        load,
        derive,
        settle,
        latencies: Vec::with_capacity(results.len()),
        elapsed,
        cpu,
        known: 0,
        first: 0,
        first_certain: 0,
        found: 0,
        strangers: 0,
        strangers_certain: 0,
        strangers_probable: 0,
        stranger_twins,
        returned: 0,
        blocked,
    };
    let mut strangers_found: Vec<(usize, Vec<Found>)> = Vec::new();
    for (i, latency, found) in results {
        report.latencies.push(latency);
        report.returned += found.len();
        match queries[i].want {
            Some(w) => {
                let child = &children[w];
                report.known += 1;
                report.found += usize::from(found.iter().any(|f| &f.id == child));
                if found.first().is_some_and(|f| &f.id == child) {
                    report.first += 1;
                    report.first_certain += usize::from(found[0].grade == Grade::Certain);
                }
            }
            None => {
                report.strangers += 1;
                report.strangers_certain +=
                    usize::from(found.iter().any(|f| f.grade == Grade::Certain));
                let shown: Vec<Found> = found
                    .into_iter()
                    .filter(|f| matches!(f.grade, Grade::Certain | Grade::Probable))
                    .collect();
                if !shown.is_empty() {
                    report.strangers_probable += 1;
                    strangers_found.push((i, shown));
                }
            }
        }
    }
    report.latencies.sort_unstable();
    if let (Some(dir), Some(held)) = (&args.out, &held) {
        let position: HashMap<&str, usize> = children
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let mut out = csv::Writer::from_path(dir.join("strangers.csv"))?;
        out.write_record(["search", "found", "grade", "probability", "explanation"])?;
        let show = |d: &Demographics| {
            [
                &d.given_name,
                &d.family_name,
                &d.birth_date,
                &d.sex,
                &d.postcode,
            ]
            .map(|v| v.as_deref().unwrap_or("-"))
            .join(" ")
        };
        for (i, found) in &strangers_found {
            let search = queries[*i].search.demographics.as_ref().map(show);
            for f in found {
                let record = position
                    .get(f.id.as_str())
                    .and_then(|&p| held.get(p))
                    .map(|r| show(&r.source_record().demographics));
                let explanation: Vec<String> = f
                    .explanation
                    .iter()
                    .map(|e| format!("{}={}", e.comparison, e.level))
                    .collect();
                out.write_record([
                    search.as_deref().unwrap_or("-"),
                    record.as_deref().unwrap_or("-"),
                    &format!("{:?}", f.grade),
                    &format!("{:.6}", f.probability),
                    &explanation.join(" "),
                ])?;
            }
        }
        out.flush()?;
    }
    Ok(report)
}

/// A cohort record as the index holds it, under the benchmark's local id `c<i>` (the `i`th child
/// of the index), so that an earlier run's index can be searched again.
pub(crate) fn indexed(r: &CohortRecord, i: usize) -> SourceRecord {
    SourceRecord {
        local_id: format!("c{i}"),
        ..r.source_record()
    }
}

/// What a practitioner types into a search for the child a record describes: the five fields
/// the API's search takes.
pub(crate) fn searched(r: &CohortRecord) -> Demographics {
    let d = r.source_record().demographics;
    Demographics {
        given_name: d.given_name,
        family_name: d.family_name,
        birth_date: d.birth_date,
        sex: d.sex,
        postcode: d.postcode,
        ..Demographics::default()
    }
}

/// The child of each synthetic child an earlier run loaded (`c0`, `c1`, …), in order.
async fn loaded_children(store: &Store, n: usize) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query("SELECT local_id, child_id FROM source_records WHERE source = $1")
        .bind(SOURCE)
        .fetch_all(&store.pool)
        .await?;
    let mut children = vec![String::new(); n];
    for row in &rows {
        let local_id: String = row.try_get("local_id")?;
        let i: usize = local_id
            .strip_prefix('c')
            .and_then(|i| i.parse().ok())
            .filter(|&i| i < n)
            .with_context(|| format!("--reuse: a record {local_id} this benchmark did not load"))?;
        children[i] = row.try_get("child_id")?;
    }
    anyhow::ensure!(
        children.iter().all(|c| !c.is_empty()),
        "--reuse: the store lacks some of the {n} children"
    );
    Ok(children)
}

/// How many records a search's blocking keys reach in the store, counted apart from the timed
/// search: how much the matcher reads and scores (it stops at `MAX_CANDIDATES`).
async fn reached(index: &Index, search: &Search) -> Result<usize, sqlx::Error> {
    let Some(d) = &search.demographics else {
        return Ok(0);
    };
    let keys = index
        .matcher()
        .keys(&crate::pipeline::resolve::linkage::record_of(
            "search",
            d,
            &[],
        ));
    if keys.is_empty() {
        return Ok(0);
    }
    let mut sql = String::from(
        "SELECT COUNT(*) AS n FROM (SELECT DISTINCT source, local_id FROM match_keys WHERE ",
    );
    for i in 0..keys.len() {
        let or = if i == 0 { "" } else { " OR " };
        let _ = write!(sql, "{or}(rule = ${} AND key = ${})", 2 * i + 1, 2 * i + 2);
    }
    sql.push_str(") reached");
    let mut q = sqlx::query(&sql);
    for (rule, key) in &keys {
        q = q.bind(rule).bind(key);
    }
    let n: i64 = q.fetch_one(&index.store().pool).await?.try_get("n")?;
    Ok(usize::try_from(n).unwrap_or_default())
}

/// Writes new source records of one source into the index in one transaction, each the only
/// record of a new child: the rows [`Index::upsert`] writes for a record that no identifier
/// links and no candidate reaches the upper threshold for (`children`, `source_records`,
/// `record_identifiers`), many rows to a statement. Returns each record's new child, in order.
/// Left out, because no search reads them: the `match_links` row and the audit entry upsert
/// writes for each link. The matching rows (blocking keys with their forms, name counts) are
/// derived afterwards by `Matcher::rebuild`, as a gateway does when it starts on a store
/// whose matching rows are missing or out of date.
pub(crate) async fn load_new(
    index: &Index,
    source: &str,
    records: &[SourceRecord],
) -> Result<Vec<String>, sqlx::Error> {
    let backend = index.store().backend;
    let now = chrono::Utc::now().to_rfc3339();
    let stored: Vec<Stored> = records.iter().map(Stored::new).collect();
    let children: Vec<String> = records
        .iter()
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let now = now.as_str();
    let mut tx = index.store().pool.begin().await?;
    insert_rows(
        &mut tx,
        backend,
        "children (id, created_at)",
        children.iter().map(|c| [c.as_str().into(), now.into()]),
    )
    .await?;
    insert_rows(
        &mut tx,
        backend,
        "source_records (source, local_id, child_id, identifiers, demographics, link_method, updated_at)",
        records.iter().zip(&stored).zip(&children).map(|((r, s), c)| {
            [
                source.into(),
                r.local_id.as_str().into(),
                c.as_str().into(),
                s.identifiers.as_str().into(),
                s.demographics.as_str().into(),
                "new".into(),
                now.into(),
            ]
        }),
    )
    .await?;
    insert_rows(
        &mut tx,
        backend,
        "record_identifiers (kind, value, source, local_id)",
        records.iter().zip(&stored).flat_map(|(r, s)| {
            s.verified().into_iter().map(|(kind, value)| {
                [
                    kind.into(),
                    value.into(),
                    source.into(),
                    r.local_id.as_str().into(),
                ]
            })
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(children)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_adapters::Identifier;

    use super::*;
    use crate::foundation::store::test_store;

    /// Children of the cohort as a source lists them, one record each; identifiers only on
    /// the first four, valid and not, so the rows they make can be counted.
    fn people(n: usize, searches: usize) -> (Vec<SourceRecord>, Vec<(Search, Option<usize>)>) {
        let split = search_split(11, n, searches);
        let mut records: Vec<SourceRecord> = split
            .index
            .iter()
            .enumerate()
            .map(|(i, r)| SourceRecord {
                identifiers: Vec::new(),
                ..indexed(r, i)
            })
            .collect();
        let ids: [&[(&str, &str)]; 4] = [
            &[("nhs_number", "9000000009")],
            &[("nhs_number", "9912003888"), ("upn", "A801200005001")],
            &[("upn", "B801200005001"), ("upn", "B801200005001")],
            &[("nhs_number", "9000000015")],
        ];
        for (r, ids) in records.iter_mut().zip(ids) {
            r.identifiers = ids.iter().map(|(k, v)| Identifier::new(*k, *v)).collect();
        }
        let searches = split
            .searches
            .iter()
            .map(|(r, want)| {
                let search = Search {
                    demographics: Some(searched(r)),
                    ..Default::default()
                };
                (search, *want)
            })
            .collect();
        (records, searches)
    }

    /// Every row of a query, as text, sorted.
    async fn table(store: &Store, sql: &str) -> Vec<Vec<Option<String>>> {
        let rows = sqlx::query(sql).fetch_all(&store.pool).await.unwrap();
        let mut out: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                    .collect()
            })
            .collect();
        out.sort();
        out
    }

    /// A search's answer with each child named by its one record, since child ids are random.
    async fn found(index: &Index, search: &Search) -> serde_json::Value {
        let names: BTreeMap<String, String> = table(
            index.store(),
            "SELECT child_id, local_id FROM source_records",
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
        let mut found = index.find(search).await.unwrap();
        for f in &mut found {
            f.id = names[&f.id].clone();
        }
        serde_json::to_value(found).unwrap()
    }

    #[tokio::test]
    async fn a_bulk_load_writes_what_upsert_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (records, searches) = people(150, 50);

        let (upserted, _a) = test_store(dir.path()).await;
        let upserted = Index::new(upserted);
        // As the gateway does when it starts on a new store, before its first pass.
        upserted.matcher().rebuild(upserted.store()).await.unwrap();
        for r in &records {
            upserted.upsert(SOURCE, r).await.unwrap();
        }
        let (loaded, _b) = test_store(dir.path()).await;
        let loaded = Index::new(loaded);
        let (first, rest) = records.split_at(40);
        load_new(&loaded, SOURCE, first).await.unwrap();
        load_new(&loaded, SOURCE, rest).await.unwrap();
        let rebuilt = loaded.matcher().rebuild(loaded.store()).await.unwrap();
        assert_eq!(rebuilt.records, 150);

        let count = "SELECT CAST(COUNT(DISTINCT child_id) AS TEXT) FROM source_records";
        for index in [&upserted, &loaded] {
            assert_eq!(
                table(index.store(), count).await,
                [[Some("150".to_string())]],
                "every synthetic child is a child of its own"
            );
        }
        for sql in [
            "SELECT source, local_id, identifiers, demographics, link_method FROM source_records",
            "SELECT rule, key, source, local_id, form FROM match_keys",
            "SELECT kind, value, source, local_id FROM record_identifiers",
            "SELECT comparison, value, CAST(n AS TEXT), CAST(sq AS TEXT) FROM match_terms",
        ] {
            let (a, b) = (
                table(upserted.store(), sql).await,
                table(loaded.store(), sql).await,
            );
            assert!(!a.is_empty(), "{sql}");
            assert_eq!(a, b, "{sql}");
        }
        assert_eq!(
            table(loaded.store(), "SELECT rule FROM match_keys")
                .await
                .len() as u64,
            rebuilt.keys
        );
        assert_eq!(
            table(loaded.store(), "SELECT kind FROM record_identifiers")
                .await
                .len(),
            3,
            "verified identifiers only, each once"
        );

        // Other agencies' records and strangers find the same children, with the same scores.
        let mut matched = 0;
        for (s, (search, want)) in searches.iter().enumerate() {
            let a = found(&upserted, search).await;
            matched += usize::from(want.is_some() && a.as_array().is_some_and(|a| !a.is_empty()));
            assert_eq!(a, found(&loaded, search).await, "{s}");
        }
        assert_eq!(searches.iter().filter(|(_, w)| w.is_none()).count(), 5);
        assert!(matched >= 35, "the searches find children: {matched}");
    }

    #[tokio::test]
    async fn reuse_searches_the_file_an_earlier_run_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kept.db");
        let mut args = SearchArgs {
            database_url: Some(format!("sqlite://{}", file.display())),
            children: 800,
            searches: 40,
            seed: 5,
            concurrency: 1,
            reuse: false,
            out: None,
        };
        let first = measure(&args).await.unwrap();
        assert!(!first.reused && first.settle.is_some());
        assert!(file.exists(), "a named file is kept");

        args.reuse = true;
        let again = measure(&args).await.unwrap();
        assert!(again.reused && again.settle.is_none());
        let figures = |r: &Report| (r.keys, r.known, r.first, r.found, r.returned);
        assert_eq!(
            figures(&again),
            figures(&first),
            "the same searches find the same children"
        );
        assert!(again.first >= 30, "{}", again.first);

        args.children = 700;
        let e = measure(&args).await.unwrap_err().to_string();
        assert!(e.contains("not the 700 of --children"), "{e}");
        args.reuse = false;
        let e = measure(&args).await.unwrap_err().to_string();
        assert!(e.contains("needs an empty store"), "{e}");
    }

    #[tokio::test]
    async fn runs_end_to_end_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let postgres = std::env::var("WEFT_TEST_STORE").as_deref() == Ok("postgres");
        let database_url = if postgres {
            Some(
                std::env::var(weft_adapters::testkit::POSTGRES_ENV)
                    .expect("WEFT_TEST_STORE=postgres needs WEFT_TEST_POSTGRES_URL"),
            )
        } else {
            None
        };
        let args = SearchArgs {
            database_url: database_url.clone(),
            children: 2_500,
            searches: 60,
            seed: 3,
            concurrency: 2,
            reuse: false,
            out: Some(dir.path().to_path_buf()),
        };
        let r = measure(&args).await.unwrap();
        // One row per child found for a stranger graded probable or certain.
        let rows = csv::Reader::from_path(dir.path().join("strangers.csv"))
            .unwrap()
            .records()
            .count();
        assert!(rows >= r.strangers_probable, "{rows} rows");
        assert_eq!(r.children, 2_500);
        assert_eq!((r.known, r.strangers), (54, 6));
        assert_eq!(r.latencies.len(), 60);
        assert!(r.keys >= 5 * 2_500, "{} blocking keys", r.keys);
        assert!(r.first <= r.found && r.first_certain <= r.first);
        assert!(r.first >= 50, "right child first in {} of 54", r.first);
        assert!(r.strangers_certain <= r.strangers_probable);
        assert_eq!(r.strangers_certain, 0, "no stranger is graded certain");
        assert_eq!(r.blocked.len(), 60);
        assert!(r.blocked[30] > 0 && r.blocked.windows(2).all(|w| w[0] <= w[1]));
        match database_url {
            Some(admin) => {
                let name = r.database.expect("a database of its own");
                assert!(name.starts_with("weft_bench_search_"));
                let mut c = PgConnection::connect(&admin).await.unwrap();
                let left: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                        .bind(&name)
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                assert_eq!(left, 0, "the benchmark's database is dropped");
                assert_eq!(r.backend, Backend::Postgres);
            }
            None => assert_eq!(r.backend, Backend::Sqlite),
        }
    }
}
