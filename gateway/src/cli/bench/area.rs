//! `weft bench area`: the area report (`GET /v1/reports/area`'s work: read every imported
//! pupil and the index's links, count by school, area and term, disclosure control over the
//! whole hierarchy, the CSV) over a synthetic authority — by default 100,000 pupils with three
//! years of termly attendance and their exclusions, 60 schools, 25 postcode districts, one in
//! twenty known to social care — on SQLite or PostgreSQL.
//!
//! The pupils are written straight into the import store and the index (the rows an import of
//! a census CSV leaves: `import_records` with their `area_facts`, `source_records`,
//! `children`), in bulk: this measures the report, not the import (`weft bench import` does
//! that). The last report is timed after the facts are dropped and the source listed as the
//! migration lists one imported before them: the one report after an upgrade that derives
//! them.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use weft_sim::names;

use crate::cli::bench::ms;
use crate::foundation::domain::Purpose;
use crate::foundation::store::{insert_rows, Cell, Store};
use crate::read::area::data::{self, Catalogue};
use crate::read::area::facts::{self, Facts};
use crate::read::area::places::Areas;
use crate::read::area::{publish, table, to_csv, Access, Scope};

#[derive(Debug, Clone, Args)]
pub struct AreaArgs {
    /// A PostgreSQL server (`postgres://…`) on which a database is made for the run and dropped
    /// after; a temporary SQLite file when omitted.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Pupils on roll.
    #[arg(long, default_value_t = 100_000)]
    pub pupils: usize,
    /// Academic years of termly attendance (three terms each).
    #[arg(long, default_value_t = 3)]
    pub years: usize,
    #[arg(long, default_value_t = 60)]
    pub schools: usize,
    /// Reports to time after the first.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

const SOURCE: &str = "bench-census";
const CSC: &str = "bench-csc";
const BATCH: usize = 5_000;

pub async fn run(args: AreaArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, admin, name) = match args.database_url.as_deref() {
        None => (
            format!(
                "sqlite://{}",
                dir.path().join("weft-bench-area.db").display()
            ),
            None,
            None,
        ),
        Some(admin) => {
            let name = format!("weft_bench_area_{:016x}", rand::random::<u64>());
            let mut url = url::Url::parse(admin).context("--database-url does not parse")?;
            anyhow::ensure!(
                matches!(url.scheme(), "postgres" | "postgresql"),
                "--database-url must be postgres://…"
            );
            let mut c = PgConnection::connect(admin).await?;
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
            url.set_path(&format!("/{name}"));
            (url.to_string(), Some(admin.to_string()), Some(name))
        }
    };
    let result = measure(&args, &url).await;
    if let (Some(admin), Some(name)) = (admin, name) {
        let mut c = PgConnection::connect(&admin).await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut c)
            .await?;
    }
    result
}

async fn measure(args: &AreaArgs, url: &str) -> anyhow::Result<()> {
    let store = Store::open(&secrecy::SecretString::from(url.to_string()), 4).await?;
    let backend = store.backend;
    println!(
        "weft bench area: {} pupils, {} years ({} terms), {} schools, on {:?}",
        args.pupils,
        args.years,
        args.years * 3,
        args.schools,
        backend
    );
    let started = Instant::now();
    load(&store, args).await?;
    println!("  loaded the pupils in {:.0} ms", ms(started.elapsed()));

    let cat = Catalogue {
        education: vec![(SOURCE.into(), "la-schools".into())],
        social_care: vec![(CSC.into(), "la-csc".into(), false)],
        last_pass: None,
    };
    let access = Access {
        attendance: true,
        exclusions: true,
        social_care: true,
        scope: Scope::Authority,
        rules: Vec::new(),
    };
    println!(
        "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}",
        "run", "read ms", "count ms", "csv ms", "total ms", "rows", "withheld"
    );
    for run in 0..=args.runs + 1 {
        let upgrade = run == args.runs + 1;
        if upgrade {
            sqlx::query("DELETE FROM area_facts")
                .execute(&store.pool)
                .await?;
            sqlx::query("INSERT INTO area_facts_pending (source) VALUES ($1)")
                .bind(SOURCE)
                .execute(&store.pool)
                .await?;
        }
        let t0 = Instant::now();
        let loaded = data::load(&store, &cat, &Areas::Districts).await?;
        let t1 = Instant::now();
        let t = table::build(&loaded.pupils, weft_sdc::THRESHOLD);
        let report = publish(
            &t,
            &loaded,
            &Areas::Districts,
            &access,
            Purpose::EducationWelfare,
            None,
            None,
        );
        let t2 = Instant::now();
        let csv = to_csv(&report).map_err(|e| anyhow::anyhow!("{e}"))?;
        let t3 = Instant::now();
        anyhow::ensure!(loaded.pupils.len() == args.pupils, "every pupil read");
        anyhow::ensure!(!csv.is_empty());
        println!(
            "  {:>4} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}",
            if run == 0 {
                "cold".to_string()
            } else if upgrade {
                "derive".to_string()
            } else {
                run.to_string()
            },
            format!("{:.0}", ms(t1 - t0)),
            format!("{:.0}", ms(t2 - t1)),
            format!("{:.0}", ms(t3 - t2)),
            format!("{:.0}", ms(t3 - t0)),
            report.rows.len(),
            t.suppressed
        );
    }
    Ok(())
}

/// A valid UPN for a serial number (DESIGN.md's check letter).
fn upn(serial: usize) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRTUVWXYZ";
    let digits = format!("801{:09}", serial);
    let sum: u32 = digits
        .chars()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap_or(0) * (i as u32 + 2))
        .sum();
    format!("{}{digits}", LETTERS[(sum % 23) as usize] as char)
}

/// One synthetic pupil: what a census export and a social-care return would say of them.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub upn: String,
    pub family: String,
    pub given: String,
    pub birth_date: String,
    pub sex: &'static str,
    pub postcode: String,
    pub urn: String,
    /// `(term as MIS exports write it, possible sessions, attended sessions)`.
    pub terms: Vec<(String, i64, i64)>,
    /// `(SUSP or PERM, start date)`.
    pub exclusions: Vec<(&'static str, String)>,
    pub known_to_social_care: bool,
}

/// A synthetic authority: `pupils` pupils in `schools` schools (URN 100001 on), each drawing
/// mostly from its own few of 25 postcode districts (`WT1`–`WT25`), with `years` years of termly
/// attendance ending in summer 2026 — about one in five absent enough to be persistently absent
/// in a term — suspensions and a few permanent exclusions, and one in twenty known to social care.
pub fn synthetic(pupils: usize, years: usize, schools: usize, seed: u64) -> Vec<Synthetic> {
    // Eight school years of births.
    const OLDEST_BIRTH: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(2010, 9, 1) {
        Some(d) => d,
        None => panic!("valid date"),
    };
    const SEASONS: [&str; 3] = ["Autumn", "Spring", "Summer"];
    let mut rng = StdRng::seed_from_u64(seed);
    let schools = schools.max(1);
    let first_year = 2026 - years as i32;
    (0..pupils)
        .map(|i| {
            let school = rng.gen_range(0..schools);
            // Schools draw mostly from their own districts.
            let district = (school * 25 / schools + rng.gen_range(0..3)) % 25 + 1;
            let postcode = format!(
                "WT{district} {}{}{}",
                rng.gen_range(1..10),
                (b'A' + rng.gen_range(0..26u8)) as char,
                (b'A' + rng.gen_range(0..26u8)) as char
            );
            // A pupil's own tendency to be absent, drifting a little term by term.
            let mut absence: f64 = if rng.gen_bool(0.2) {
                rng.gen_range(0.08..0.3)
            } else {
                rng.gen_range(0.0..0.09)
            };
            let mut terms = Vec::new();
            let mut exclusions = Vec::new();
            for y in 0..years as i32 {
                for (t, season) in SEASONS.iter().enumerate() {
                    let year = if t == 0 {
                        first_year + y
                    } else {
                        first_year + y + 1
                    };
                    let possible: i64 = rng.gen_range(110..=150);
                    absence = (absence + rng.gen_range(-0.02..0.02)).clamp(0.0, 0.9);
                    let attended = possible - (possible as f64 * absence).round() as i64;
                    terms.push((format!("{season} {year}"), possible, attended));
                    if rng.gen_bool(0.01 + absence / 10.0) {
                        let month = [10, 2, 5][t];
                        let kind = if rng.gen_bool(0.03) { "PERM" } else { "SUSP" };
                        exclusions.push((
                            kind,
                            format!("{year}-{month:02}-{:02}", rng.gen_range(1..28)),
                        ));
                    }
                }
            }
            // Names as the development cohort draws them ([`names`]): the index the demo
            // imports this census into learns the name frequencies the benchmarks measure.
            let female = rng.gen_bool(0.49);
            let birth = OLDEST_BIRTH + chrono::Duration::days(rng.gen_range(0..8 * 365));
            Synthetic {
                upn: upn(i + 1),
                family: names::title(&names::family_name(&mut rng)),
                given: names::title(&names::given(&mut rng, female)),
                birth_date: birth.format("%Y-%m-%d").to_string(),
                sex: if female { "female" } else { "male" },
                postcode,
                urn: format!("{}", 100_001 + school),
                terms,
                exclusions,
                known_to_social_care: rng.gen_bool(0.05),
            }
        })
        .collect()
}

/// Writes `pupils` as a school census drop (pupils, attendance and exclusions CSV, as an MIS
/// exports them) into `census`, and those known to social care as a social-care return listing
/// them into `returns` (the pupils CSV layout: UPN and names).
pub fn write_csv(
    pupils: &[Synthetic],
    census: &std::path::Path,
    returns: &std::path::Path,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(census)?;
    std::fs::create_dir_all(returns)?;
    let mut roll = String::from("UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode,URN\n");
    let mut att = String::from("UPN,Term,Sessions Possible,Sessions Attended\n");
    let mut exc = String::from("UPN,Category,StartDate\n");
    let mut known = String::from("UPN,Legal Surname,Legal Forename,DOB,Gender,Postcode\n");
    for p in pupils {
        let sex = if p.sex == "female" { "F" } else { "M" };
        let line = format!(
            "{},{},{},{},{sex},{}",
            p.upn, p.family, p.given, p.birth_date, p.postcode
        );
        let _ = writeln!(roll, "{line},{}", p.urn);
        for (term, possible, attended) in &p.terms {
            let _ = writeln!(att, "{},{term},{possible},{attended}", p.upn);
        }
        for (kind, date) in &p.exclusions {
            let _ = writeln!(exc, "{},{kind},{date}", p.upn);
        }
        if p.known_to_social_care {
            let _ = writeln!(known, "{line}");
        }
    }
    std::fs::write(census.join("pupils.csv"), roll)?;
    std::fs::write(census.join("attendance.csv"), att)?;
    std::fs::write(census.join("exclusions.csv"), exc)?;
    std::fs::write(returns.join("known.csv"), known)
}

/// Writes the synthetic authority: one import record per pupil (as a census import leaves
/// it), the index's record and child for each, and a social-care record for one in twenty.
async fn load(store: &Store, args: &AreaArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let all = synthetic(args.pupils, args.years, args.schools, args.seed);
    for (n, chunk) in all.chunks(BATCH).enumerate() {
        let records: Vec<(String, String, String, String, bool, Facts)> = chunk
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let i = n * BATCH + j;
                let terms: Vec<serde_json::Value> = p
                    .terms
                    .iter()
                    .map(|(term, possible, attended)| {
                        json!({
                            "term": term,
                            "possible_sessions": possible,
                            "attended_sessions": attended,
                            "attendance_percent": (*attended as f64 * 1000.0 / *possible as f64).round() / 10.0,
                        })
                    })
                    .collect();
                let exclusions: Vec<serde_json::Value> = p
                    .exclusions
                    .iter()
                    .map(|(kind, date)| {
                        json!({
                            "kind": if *kind == "PERM" { "permanent" } else { "suspension" },
                            "start_date": date,
                            "reason": "PP",
                            "reasons": ["PP"],
                        })
                    })
                    .collect();
                let value = json!({
                    "record": {
                        "local_id": p.upn,
                        "identifiers": [{"kind": "upn", "value": p.upn}],
                        "demographics": {
                            "given_name": p.given,
                            "family_name": p.family,
                            "birth_date": p.birth_date,
                            "sex": p.sex,
                            "postcode": p.postcode,
                        },
                    },
                    "items": [
                        {"category": "education.enrolment", "field": "school_urn", "value": p.urn},
                        {"category": "education.enrolment", "field": "on_roll", "value": true},
                        {"category": "education.attendance", "field": "terms", "value": terms},
                        {"category": "education.exclusions", "field": "exclusions", "value": exclusions},
                    ],
                });
                // What the import derives of the record, from its parsed form.
                let counted = serde_json::from_value::<weft_adapters::file::Imported>(value.clone())
                    .and_then(|r| Facts::of(&r))?;
                let record = value.to_string();
                // The digest the import keeps: the SHA-256 of the record's JSON.
                let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(record.as_bytes()));
                Ok::<_, serde_json::Error>((p.upn.clone(), format!("c-{i}"), record, digest, p.known_to_social_care, counted))
            })
            .collect::<Result<_, serde_json::Error>>()?;
        let mut tx = store.begin_write().await?;
        insert_rows(
            &mut tx,
            store.backend,
            "children (id, created_at)",
            records
                .iter()
                .map(|(_, c, _, _, _, _)| [Cell::from(c.as_str()), Cell::from(now.as_str())]),
        )
        .await?;
        insert_rows(
            &mut tx,
            store.backend,
            "import_records (source, local_id, digest, record, imported_at)",
            records.iter().map(|(id, _, rec, digest, _, _)| {
                [
                    Cell::from(SOURCE),
                    Cell::from(id.as_str()),
                    Cell::from(digest.as_str()),
                    Cell::from(rec.as_str()),
                    Cell::from(now.as_str()),
                ]
            }),
        )
        .await?;
        let mut staging = store.staging();
        let counted: Vec<(&str, &str, &Facts)> = records
            .iter()
            .map(|(id, _, _, digest, _, f)| (id.as_str(), digest.as_str(), f))
            .collect();
        facts::insert(&mut tx, &mut staging, SOURCE, &counted).await?;
        let rows = records.iter().flat_map(|(id, child, _, _, known, _)| {
            let school = [
                Cell::from(SOURCE),
                Cell::from(id.as_str()),
                Cell::from(child.as_str()),
                Cell::from("[]"),
                Cell::from("{}"),
                Cell::from("identifier:upn"),
                Cell::from(now.as_str()),
            ];
            let csc = known.then_some([
                Cell::from(CSC),
                Cell::from(id.as_str()),
                Cell::from(child.as_str()),
                Cell::from("[]"),
                Cell::from("{}"),
                Cell::from("identifier:upn"),
                Cell::from(now.as_str()),
            ]);
            std::iter::once(school).chain(csc)
        });
        insert_rows(
            &mut tx,
            store.backend,
            "source_records (source, local_id, child_id, identifiers, demographics, link_method, updated_at)",
            rows,
        )
        .await?;
        tx.commit().await?;
        staging.finish().await;
    }
    sqlx::query(
        "INSERT INTO import_runs (id, source, started_at, finished_at, outcome, files, added, \
         changed, removed, unchanged, flagged, notes) \
         VALUES ('bench', $1, $2, $2, 'applied', '[]', $3, 0, 0, 0, 0, '[]')",
    )
    .bind(SOURCE)
    .bind(&now)
    .bind(args.pupils as i64)
    .execute(&store.pool)
    .await?;
    Ok(())
}
