//! `weft demo`: the gateway over HTTPS on an embedded SQLite file, against simulated partner
//! systems on loopback that speak their real protocols (FHIR R4, SQL, JSON over HTTP), seeded
//! with synthetic children. Prints ready-made tokens and requests to paste. Everything it makes
//! lives in one folder, so the audit log can be inspected and verified afterwards.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::app::Application;
use crate::dev::config::{policy_paths, DevConfig};
use crate::dev::people::people;
use crate::dev::pki::DevPki;
use crate::foundation::config::{AgencyConfig, AgencyKind, Config, SourceConfig};
use crate::foundation::schema::Schemas;
use crate::pipeline::resolve::Search;
use weft_ids::NhsNumber;
use weft_sim::{self as sim, PartnerSystems};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Folder for the demo's certificates, configuration, databases and tokens; recreated on
    /// every run.
    #[arg(long, default_value = "weft-demo")]
    pub dir: PathBuf,
    /// How many synthetic children to seed (and four more: twins, their older brother and a
    /// girl born the same day, for identity matching's hard cases).
    #[arg(long, default_value_t = 50)]
    pub children: usize,
    /// Seed of the synthetic population (the same seed gives the same children).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Pupils in the local authority's school census (the area trends page's data).
    #[arg(long, default_value_t = 3_000)]
    pub census_pupils: usize,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let pki = DevPki::generate(&dir.join("pki"))?;
    let population = sim::population::generate_with_households(args.seed, args.children);
    eprintln!("starting simulated partner systems…");
    let partners = PartnerSystems::start(&dir.join("partners"), &population, None, None).await?;

    // A local authority's school census and its social-care return, as file drops the gateway
    // imports on start: what the area trends page reports on.
    let census = crate::cli::bench::area::synthetic(
        args.census_pupils,
        3,
        (args.census_pupils / 200).clamp(1, 40),
        args.seed,
    );
    crate::cli::bench::area::write_csv(&census, &dir.join("census"), &dir.join("returns"))
        .context("writing the demo's census files")?;

    let database = format!("sqlite://{}", dir.join("weft.db").display());
    let config_path = dir.join("weft.toml");
    let config = DevConfig::new(&pki, &database, policy_paths(&dir)?)
        .set("listen", args.listen.to_string())
        .set("index.refresh_secs", 60)
        .audit_checkpoints(&dir)?
        // The local authority's IG officer is the partnership's IG lead.
        .set(
            "audit.ig_lead_agencies",
            vec![weft_sim::sources::SOCIAL_CARE_AGENCY.to_string()],
        )
        .partners(&partners.agencies, &partners.sources)
        .agency(AgencyConfig {
            id: CENSUS_AGENCY.into(),
            name: "Weftshire schools census".into(),
            kind: AgencyKind::Education,
            local_authority: Some(crate::dev::config::SIM_LOCAL_AUTHORITY.into()),
        })
        .agency(AgencyConfig {
            id: RETURNS_AGENCY.into(),
            name: "Weftshire children's social care returns".into(),
            kind: AgencyKind::SocialCare,
            local_authority: Some(crate::dev::config::SIM_LOCAL_AUTHORITY.into()),
        })
        .source(file_source(
            "school-census",
            CENSUS_AGENCY,
            "census",
            &[
                ("census_pupils_csv", "pupils.csv"),
                ("census_attendance_csv", "attendance.csv"),
                ("census_exclusions_csv", "exclusions.csv"),
            ],
        )?)
        .source(file_source(
            "csc-returns",
            RETURNS_AGENCY,
            "returns",
            &[("census_pupils_csv", "known.csv")],
        )?)
        .set("reports.alert_check_secs", 30);
    // Signing in without a password is for a demo on this machine only; the configuration check
    // refuses it on any other address.
    let config = if args.listen.ip().is_loopback() {
        config.dev_sign_in(&people().into_iter().map(|p| p.person).collect::<Vec<_>>())
    } else {
        config
    };
    std::fs::write(
        &config_path,
        format!(
            "# Written by `weft demo`; every run recreates it.\n{}",
            config.to_toml()?
        ),
    )?;
    let config = Config::load(&config_path, &Schemas::load()?)?;
    let app = Application::build(config, Schemas::load()?).await?;
    let addr = app.local_addr()?;
    let state = app.state().clone();
    let serving = tokio::spawn(app.run_until_stopped(crate::cli::shutdown_signal()));

    eprintln!("building the master child index…");
    while !state.index.is_ready() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = state.index.last_sync();
    // The children of the partners' records alone: the file imports run beside the index pass,
    // and a census adds thousands of children the partner systems never held.
    let partner_ids: Vec<&str> = partners.sources.iter().map(|s| s.id.as_str()).collect();
    let children = children_of(&state.store, &partner_ids).await?;

    let mut tokens = String::new();
    for p in people() {
        let token = pki
            .issuer
            .mint(&p.person.user, &p.person.agency, &p.person.role, 12 * 3600);
        let _ = writeln!(tokens, "export {}={token}", p.var);
    }
    let tokens_path = dir.join("tokens.env");
    std::fs::write(&tokens_path, &tokens)?;

    let scenario = population
        .scenario()
        .context("the population has a scenario child")?;
    let child_id = match NhsNumber::parse(&scenario.truth.nhs_number) {
        Ok(n) => state
            .index
            .find(&Search {
                nhs_number: Some(n),
                ..Default::default()
            })
            .await?
            .first()
            .map(|f| f.id.clone())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };

    let base = format!("https://127.0.0.1:{}", addr.port());
    let ca = pki.ca.display();
    println!(
        "\nWeft demo is running at {base}\n\
         {} source records from {} partner systems, linked into {} children ({} with an identifier \
         that failed its check, flagged); the schools census and social care returns are imported \
         from files beside them.\n\n\
         Partner systems on loopback:",
        report.records,
        partners.sources.len(),
        children,
        report.flagged_identifiers,
    );
    for s in &partners.sources {
        println!("  {:<14} {:<10} {}", s.id, s.adapter.kind(), describe(s));
    }
    println!(
        "\nOpen {base}/ in a browser and sign in as any of the demo's people (the certificate is\n\
         the demo's own: accept it, or trust {ca}).\n\n\
         Tokens for the API (valid 12 hours) are in {tokens}; load them with:\n\n  \
         source {tokens}\n\n\
         Then, for example — the DESIGN.md scenario child (14, known to social care, attendance\n\
         falling, a domestic incident overnight):\n\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $SOCIAL_WORKER\" -H 'content-type: application/json' \\\n    \
         -d '{{\"purpose\":\"safeguarding\",\"nhs_number\":\"{nhs}\"}}' {base}/v1/children/search\n\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $SOCIAL_WORKER\" \"{base}/v1/children/{child_id}?purpose=safeguarding\"\n\n  \
         # the same child as the school's DSL sees it (health and police intelligence withheld):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $DSL\" \"{base}/v1/children/{child_id}?purpose=safeguarding\"\n\n  \
         # who has looked at this child (IG officers only):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $IG_OFFICER\" \"{base}/v1/audit?child={child_id}\"\n\n  \
         # the same as a subject access report a family can read:\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $IG_OFFICER\" \"{base}/v1/children/{child_id}/access-report?format=html\"\n\n  \
         curl -s --cacert {ca} {base}/readyz\n\n  \
         # area trends under disclosure control (LA analysts; also the Area trends page):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $LA_ANALYST\" \"{base}/v1/reports/area?purpose=education_welfare&level=school&format=csv\"\n\n  \
         # the detail behind it (data administrators only):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $DATA_ADMIN\" {base}/v1/status\n\n  \
         # matches waiting for a person (twins, near-misses and records matching two children alike\n  \
         # are never linked by the matcher):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $DATA_ADMIN\" {base}/v1/matches/review\n\n  \
         # data quality: what disagrees between systems, bad identifiers, likely duplicates\n  \
         # (every source with values; the school's data manager only its own records' fields):\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $DATA_ADMIN\" \"{base}/v1/reports/quality?format=csv\"\n  \
         curl -s --cacert {ca} -H \"Authorization: Bearer $DATA_MANAGER\" {base}/v1/reports/quality\n\n\
         Afterwards: cargo run --release -- audit verify -c {config}\n\
         (checked against the signed checkpoints in {checkpoints}; `audit export` writes a copy a\n\
         third party verifies with `audit verify --export DIR --public-key FILE`)\n\
         Ctrl-C stops everything.",
        tokens = tokens_path.display(),
        nhs = scenario.truth.nhs_number,
        config = config_path.display(),
        checkpoints = dir.join("audit-checkpoints").display(),
    );

    let result = serving.await.context("gateway task")?;
    partners.shutdown().await;
    eprintln!("demo stopped");
    result
}

const CENSUS_AGENCY: &str = "weftshire-schools";
const RETURNS_AGENCY: &str = "weftshire-csc-returns";

/// A `file` source reading `folder` (beside the configuration), watched so the gateway imports
/// it on start.
fn file_source(
    id: &str,
    agency: &str,
    folder: &str,
    files: &[(&str, &str)],
) -> anyhow::Result<SourceConfig> {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|(format, name)| serde_json::json!({"format": format, "name": name}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "id": id,
        "agency": agency,
        "adapter": {"kind": "file", "folder": folder, "files": files, "watch_secs": 10},
    }))?)
}

fn describe(s: &weft_sim::Source) -> String {
    match &s.adapter {
        weft_adapters::AdapterConfig::Fhir(c) => format!("FHIR R4 at {}", c.base_url),
        weft_adapters::AdapterConfig::Sql(c) => {
            let scheme = c.url.split(':').next().unwrap_or("sql");
            format!("{scheme} reporting database")
        }
        weft_adapters::AdapterConfig::HttpJson(c) => format!("JSON API at {}", c.record_url),
        weft_adapters::AdapterConfig::File(c) => format!("files in {}", c.folder.display()),
    }
}

/// The children the records of `sources` are linked to.
async fn children_of(
    store: &crate::foundation::store::Store,
    sources: &[&str],
) -> anyhow::Result<i64> {
    use sqlx::Row;
    if sources.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "SELECT COUNT(DISTINCT child_id) AS n FROM source_records WHERE source IN ({})",
        crate::foundation::store::placeholders(1, sources.len())
    );
    let query = sources
        .iter()
        .fold(sqlx::query(&sql), |q, source| q.bind(*source));
    Ok(query.fetch_one(&store.pool).await?.try_get("n")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::resolve::Index;
    use weft_adapters::{Demographics, Identifier, SourceRecord};

    fn rec(id: &str, nhs: &str, given: &str) -> SourceRecord {
        SourceRecord {
            local_id: id.into(),
            identifiers: vec![Identifier::new("nhs_number", nhs)],
            demographics: Demographics {
                given_name: Some(given.into()),
                family_name: Some("Banner".into()),
                birth_date: Some("2016-06-21".into()),
                ..Demographics::default()
            },
            score: None,
            restricted: false,
        }
    }

    /// The banner counts the children of the partners' records, not those a file import adds.
    #[tokio::test]
    async fn the_banner_counts_the_children_of_the_partners_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = crate::foundation::store::test_store(dir.path()).await;
        let index = Index::new(store.clone());
        let records = [
            ("health", "h1", "9000000009", "Ada"),
            ("census", "c1", "9000000009", "Ada"),
            ("census", "c2", "9434765919", "Bea"),
            ("returns", "r1", "9434765870", "Cy"),
        ];
        for (source, id, nhs, given) in records {
            index.upsert(source, &rec(id, nhs, given)).await.unwrap();
        }
        let children = |sources: &'static [&'static str]| children_of(&store, sources);
        assert_eq!(children(&["health"]).await.unwrap(), 1);
        assert_eq!(children(&["health", "census"]).await.unwrap(), 2);
        assert_eq!(children(&["health", "census", "returns"]).await.unwrap(), 3);
    }
}
