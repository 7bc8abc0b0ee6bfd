//! `weft bench import`: imports of the 259 KB CIN census sample and of a generated census CSV
//! (100,000 pupils by default, drawn from the development cohort by `weft_sim::census`: real
//! names, valid UPNs, brothers and sisters, twins) into a fresh store, then re-imports of the
//! unchanged file, a forced re-parse, and a file with one changed pupil. Reports records per
//! second, the time split (parse, import store, index) and peak memory (the process's peak
//! resident set, reset before each phase).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;
use weft_adapters::file::{FileConfig, FileFormat, FileSpec};

use crate::foundation::store::Store;
use crate::pipeline::resolve::Index;
use crate::write::imports::{import, ImportReport, Options};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Pupils in the generated census CSV.
    #[arg(long, default_value_t = 100_000)]
    pub pupils: usize,
    /// The CIN census file to import first.
    #[arg(
        long,
        default_value = "../shared/data/samples/cin_census_d2i_fake_CIN_data.xml"
    )]
    pub cin: PathBuf,
    /// The gateway's store: a PostgreSQL URL (its database is used as it is), or a temporary
    /// SQLite file when omitted.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Peak resident set of this process in MiB, from `/proc` (Linux); 0 elsewhere.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time of this process so far, in seconds (utime + stime from `/proc/self/stat`); 0
/// elsewhere. On a shared machine wall time says little; this says what the import cost.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resets the peak so each phase reports its own (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The cohort whose pupils the generated census holds: the same for every run, so that runs
/// compare.
const CENSUS_SEED: u64 = 15;

fn line(name: &str, r: &ImportReport, secs: f64, peak: f64) -> String {
    let touched = r.added + r.changed + r.removed;
    format!(
        "{name:<34} {:>8} {:>8} {:>9.3} {:>11.0} {:>9.1}   parse {} ms, store {} ms, index {} ms",
        r.records,
        touched,
        secs,
        r.records as f64 / secs,
        peak,
        r.parse_ms,
        r.apply_ms,
        r.index_ms
    )
}

async fn fresh_store(
    args: &ImportArgs,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<Store> {
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
    };
    Ok(Store::open(&SecretString::from(url), 4).await?)
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    println!(
        "{:<34} {:>8} {:>8} {:>9} {:>11} {:>9}",
        "phase", "records", "touched", "seconds", "records/s", "peak MiB"
    );

    // The CIN census sample.
    let cin_dir = dir.path().join("cin");
    std::fs::create_dir(&cin_dir)?;
    std::fs::copy(&args.cin, cin_dir.join("cin.xml"))
        .with_context(|| format!("reading {}", args.cin.display()))?;
    let cin = FileConfig {
        folder: cin_dir,
        files: vec![FileSpec {
            format: FileFormat::CinXml,
            name: "cin.xml".into(),
        }],
        watch_secs: 0,
        limits: Default::default(),
    };
    let store = fresh_store(&args, dir.path(), "cin").await?;
    let index = Index::new(store.clone());
    reset_peak();
    let t = Instant::now();
    let r = import(&store, &index, "bench-cin", &cin, Options::default()).await?;
    println!(
        "{}",
        line(
            "CIN sample (259 KB), first import",
            &r,
            t.elapsed().as_secs_f64(),
            peak_mib()
        )
    );

    // The generated census.
    let census_dir = dir.path().join("census");
    std::fs::create_dir(&census_dir)?;
    let text = weft_sim::census::pupils_csv(CENSUS_SEED, args.pupils);
    let path = census_dir.join("pupils.csv");
    std::fs::write(&path, &text)?;
    let census = FileConfig {
        folder: census_dir,
        files: vec![FileSpec {
            format: FileFormat::CensusPupilsCsv,
            name: "pupils.csv".into(),
        }],
        watch_secs: 0,
        limits: Default::default(),
    };
    let store = fresh_store(&args, dir.path(), "census").await?;
    let index = Index::new(store.clone());
    let mb = text.len() as f64 / 1e6;
    reset_peak();
    let t = Instant::now();
    let cpu = cpu_secs();
    let url = args.database_url.as_deref().unwrap_or_default();
    let pg_before = super::cpu::backends_cpu_ns(&super::backends(url).await);
    let r = import(&store, &index, "bench-census", &census, Options::default()).await?;
    let first = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    let pg_after = super::cpu::backends_cpu_ns(&super::backends(url).await);
    println!(
        "{}",
        line(
            &format!("census {mb:.1} MB, first import"),
            &r,
            first,
            peak_mib()
        )
    );
    anyhow::ensure!(
        r.index_failures == 0 && r.indexed == r.records,
        "the first import indexed {} of {} records",
        r.indexed,
        r.records
    );

    reset_peak();
    let t = Instant::now();
    let r = import(&store, &index, "bench-census", &census, Options::default()).await?;
    let unchanged = t.elapsed().as_secs_f64();
    println!(
        "{}",
        line("census re-import, unchanged", &r, unchanged, peak_mib())
    );

    reset_peak();
    let t = Instant::now();
    let r = import(
        &store,
        &index,
        "bench-census",
        &census,
        Options {
            force: true,
            ..Options::default()
        },
    )
    .await?;
    println!(
        "{}",
        line(
            "census re-import, forced re-parse",
            &r,
            t.elapsed().as_secs_f64(),
            peak_mib()
        )
    );

    // The first pupil's surname changes (a school corrects it).
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if let Some(first) = lines.get_mut(1) {
        let mut fields: Vec<&str> = first.split(',').collect();
        let changed = format!("{}-Ali", fields.get(2).copied().unwrap_or_default());
        if let Some(f) = fields.get_mut(2) {
            *f = &changed;
        }
        *first = fields.join(",");
    }
    std::fs::write(&path, lines.join("\n") + "\n")?;
    reset_peak();
    let t = Instant::now();
    let r = import(&store, &index, "bench-census", &census, Options::default()).await?;
    println!(
        "{}",
        line(
            "census re-import, one pupil changed",
            &r,
            t.elapsed().as_secs_f64(),
            peak_mib()
        )
    );
    anyhow::ensure!(
        r.changed == 1,
        "expected one changed record, got {}",
        r.changed
    );
    let backend = if args.database_url.is_some() {
        ("PostgreSQL", 20_000.0)
    } else {
        ("SQLite", 5_000.0)
    };
    let rate = args.pupils as f64 / first;
    println!(
        "\nfirst import of {} pupils on {}: {:.0} records/s (target on a release build >= {:.0}/s: {})",
        args.pupils,
        backend.0,
        rate,
        backend.1,
        if rate >= backend.1 { "met" } else { "missed" }
    );
    println!(
        "first import's CPU time in this process: {cpu:.2} s ({:.0} records per CPU second; \
         the database's own CPU is not counted)",
        args.pupils as f64 / cpu.max(0.001)
    );
    if !pg_after.is_empty() {
        println!(
            "first import's PostgreSQL CPU time: {:.2} s (the backends of this benchmark's \
             connections, read from this machine's /proc; one that closed during the import is \
             missed)",
            super::cpu::backends_spent_ns(&pg_before, &pg_after) as f64 / 1e9
        );
    }
    println!(
        "unchanged re-import of {} pupils: {:.3} s (target < 1 s: {})",
        args.pupils,
        unchanged,
        if unchanged < 1.0 { "met" } else { "MISSED" }
    );
    Ok(())
}
