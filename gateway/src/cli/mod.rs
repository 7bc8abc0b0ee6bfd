//! The `weft` command line. Each subcommand reads its inputs, calls into the library and maps
//! the result to an exit code; no logic of its own lives here.

#[cfg(feature = "sim")]
pub mod bench;
#[cfg(feature = "sim")]
pub mod demo;
pub mod matching;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::Application;
use crate::foundation::config::{Config, Part};
use crate::foundation::error::Error;
use crate::foundation::schema::Schemas;
use crate::foundation::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Inter-agency information-sharing gateway for children's services"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Run the gateway against simulated partner systems on loopback, with ready-made tokens.
    #[cfg(feature = "sim")]
    Demo(crate::cli::demo::DemoArgs),
    /// Check a configuration file and exit.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// See, test and lint the data-sharing policy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Import a `file` source's folder now: all or nothing, applying only what changed.
    Import(ImportCmd),
    /// Work with the master child index.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Subject access: every access to a child in plain words, as JSON or as a page a family
    /// can read. Run by an IG officer, and audited as theirs.
    Sar(SarCmd),
    /// Data quality for cleaning at source: each source's records that disagree with other
    /// systems, fail an identifier check, wait for review or are likely duplicates. Run by a
    /// data administrator (or an agency's data manager), decided by policy and audited as
    /// theirs; every run records the day's counts (run it daily for counts over time).
    Quality(QualityCmd),
    /// Link or deduplicate CSV files of people, or train a matching model.
    Match {
        #[command(subcommand)]
        command: MatchCommand,
    },
    /// Measure the gateway.
    #[cfg(feature = "sim")]
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, env = "WEFT_CONFIG", default_value = "weft.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportCmd {
    /// The source's id in the configuration.
    pub source: String,
    /// Parse and compare every record even if the files are byte-identical to the last import.
    #[arg(long)]
    pub force: bool,
    /// Apply the drop even if it removes every stored record of the source, or more than its
    /// `limits.removed_percent`.
    #[arg(long)]
    pub allow_removals: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct SarCmd {
    /// The Weft child id.
    pub child: String,
    /// The IG officer producing the report, as their identity provider names them.
    #[arg(long)]
    pub user: String,
    /// Their agency's id; the partnership's IG lead (`audit.ig_lead_agencies`) sees every
    /// agency's accesses, another IG officer their own organisation's.
    #[arg(long)]
    pub agency: String,
    /// `json` or `html`.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct QualityCmd {
    /// The person producing the report, as their identity provider names them.
    #[arg(long)]
    pub user: String,
    /// Their agency's id.
    #[arg(long)]
    pub agency: String,
    /// Their role: `data_admin` (every source, with values) or `data_manager` (their own
    /// agency's sources, the fields named only), as the policy decides.
    #[arg(long, default_value = "data_admin")]
    pub role: String,
    /// Only this source's records.
    #[arg(long)]
    pub source: Option<String>,
    /// `json`, `csv` (one row per problem) or `counts` (CSV of each source's counts by day).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Write the index as CSV (source, local_id, child_id, link_method, probability,
    /// model_version), one row per source record. The export is audited under the operator.
    Export(IndexExportCmd),
}

#[derive(Debug, Args)]
pub struct IndexExportCmd {
    /// Where to write the CSV; standard output when left out.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Who is exporting, as the audit log will name them. Defaults to the login name
    /// (`USER`, then `LOGNAME`).
    #[arg(long, env = "WEFT_OPERATOR")]
    pub operator: Option<String>,
    /// Why: a data request's reference or an audit's name, kept in the audit entry.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this source's records; repeat for several.
    #[arg(long = "source")]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (schema, references, files) without starting.
    Check(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The decision for one question, with the rule that made it and its lawful basis.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        role: String,
        /// Agency id; its kind comes from the configuration.
        #[arg(long)]
        agency: String,
        /// Needed only for an agency the configuration does not list.
        #[arg(long)]
        agency_kind: Option<String>,
        #[arg(long)]
        category: String,
        #[arg(long)]
        purpose: String,
    },
    /// Evaluates one question per line of a JSON Lines file (`{"role", "agency", "category",
    /// "purpose"}`) with casbin's own enforcer and writes one JSON decision per line.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        file: PathBuf,
    },
    /// Loads the policy and refuses rules naming unknown roles, agencies, kinds, categories,
    /// purposes or lawful-basis codes.
    Lint(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole hash chain, check it against the signed checkpoints, and name the first
    /// entry that was changed, removed, reordered, rewritten, cut off, wiped or forged.
    Verify(VerifyArgs),
    /// Write the chain, its checkpoints and the public key to a new directory, for a third party
    /// to verify with `weft audit verify --export DIR --public-key FILE`. Signs a checkpoint of
    /// the head first when a signing key is configured, so the whole export is vouched for.
    Export {
        /// A directory that does not exist yet (or is empty).
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make a new audit signing key: writes it (64 hex digits) to FILE, readable by its owner
    /// only, and prints the public key.
    Keygen {
        /// Where the signing key goes; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Verify an export instead of the configured database: needs no configuration, only the
    /// public key.
    #[arg(long, requires = "public_key")]
    pub export: Option<PathBuf>,
    /// The audit public key (PEM or hex). Defaults to the configured signing key's; give it to
    /// check against a key obtained independently of the checkpoint directory.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

#[cfg(feature = "sim")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Merged views against four simulated sources that each answer after a fixed delay.
    View(crate::cli::bench::ViewArgs),
    /// Policy and consent evaluation for one view, at growing policy sizes.
    Policy(crate::cli::bench::PolicyArgs),
    /// Imports of the CIN census sample and of a generated census CSV, and re-imports.
    Import(crate::cli::bench::import::ImportArgs),
    /// Concern submissions delivered by signed webhook, and police incident to DSL inbox.
    Concerns(crate::cli::bench::concerns::ConcernsArgs),
    /// Identity matching at scale on synthetic children: search latency and deduplication.
    Match(crate::cli::bench::matching::MatchBenchArgs),
    /// The gateway's own identity search (the store-backed master child index the API uses)
    /// against an index of synthetic children on SQLite or PostgreSQL: latency and accuracy.
    Search(crate::cli::bench::search::SearchArgs),
    /// The master child index on a cohort it was not trained on, read from four SQL reporting
    /// databases through the `sql` adapter: pairs of different children linked, and recall,
    /// from the index's export against the cohort's truth.
    Index(crate::cli::bench::index::IndexArgs),
    /// The area report (counts by school, area and term under disclosure control) over a
    /// synthetic authority on SQLite or PostgreSQL.
    Area(crate::cli::bench::area::AreaArgs),
}

#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// Link the records of two CSV files; writes the pairs with their probabilities.
    Link(Box<crate::cli::matching::LinkArgs>),
    /// Find the duplicates in one CSV file; writes each record's cluster.
    Dedupe(Box<crate::cli::matching::DedupeArgs>),
    /// Estimate m and u from the data (no labels) and save the model.
    Train(Box<crate::cli::matching::TrainArgs>),
}

/// Logs go to stderr, filtered by `WEFT_LOG` (default `info`). Stdout is kept for what a user
/// asked for: the listening address, the demo's tokens, reports.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(arg) => serve(arg).await,
        #[cfg(feature = "sim")]
        Command::Demo(args) => crate::cli::demo::run(args).await,
        Command::Config {
            command: ConfigCommand::Check(arg),
        } => load(&arg).map(|c| {
            println!(
                "configuration OK: {} agencies, {} sources",
                c.agencies.len(),
                c.sources.len()
            );
        }),
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => return verify(args).await,
        Command::Audit {
            command: AuditCommand::Export { out, config },
        } => export(out, config).await,
        Command::Audit {
            command: AuditCommand::Keygen { out },
        } => keygen(&out),
        Command::Policy { command } => policy(command).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::View(args),
        } => crate::cli::bench::view(args).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Policy(args),
        } => crate::cli::bench::policy(args).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Import(args),
        } => crate::cli::bench::import::run(args).await,
        Command::Import(cmd) => return import(cmd).await,
        Command::Index {
            command: IndexCommand::Export(cmd),
        } => index_export(cmd).await,
        Command::Sar(cmd) => sar(cmd).await,
        Command::Quality(cmd) => quality(cmd).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Concerns(args),
        } => crate::cli::bench::concerns::concerns(args).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Match(args),
        } => crate::cli::bench::matching::run(&args),
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Search(args),
        } => crate::cli::bench::search::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Index(args),
        } => crate::cli::bench::index::run(args).await,
        #[cfg(feature = "sim")]
        Command::Bench {
            command: BenchCommand::Area(args),
        } => crate::cli::bench::area::run(args).await,
        Command::Match { command } => match command {
            MatchCommand::Link(args) => crate::cli::matching::run_link(&args),
            MatchCommand::Dedupe(args) => crate::cli::matching::run_dedupe(&args),
            MatchCommand::Train(args) => crate::cli::matching::run_train(&args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<Config> {
    load_for(arg, Part::ALL)
}

/// The configuration, checked only as far as a command uses it.
fn load_for(arg: &ConfigArg, parts: &[Part]) -> anyhow::Result<Config> {
    let schemas = Schemas::load()?;
    Ok(Config::load_for(&arg.config, &schemas, parts)?)
}

async fn serve(arg: ConfigArg) -> anyhow::Result<()> {
    let config = load(&arg)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let app = Application::build(config, Schemas::load()?).await?;
    // Printed first: a reader that waits for the listening line has this one already.
    if let Some(web) = app.web_addr() {
        println!("weft: browsers on https://{}", web?);
    }
    println!("weft: listening on {scheme}://{}", app.local_addr()?);
    app.run_until_stopped(shutdown_signal()).await
}

async fn verify(args: VerifyArgs) -> ExitCode {
    use crate::foundation::audit::{self, checkpoint};
    let outcome = async {
        let given = match &args.public_key {
            Some(p) => Some(checkpoint::PublicKey::load(p)?),
            None => None,
        };
        if let Some(dir) = &args.export {
            let key = given.ok_or_else(|| anyhow::anyhow!("--export needs --public-key"))?;
            return Ok::<_, anyhow::Error>((audit::verify_export(dir, &key)?, true));
        }
        let config = load_for(&args.config, &[])?;
        let store = Store::open(&config.database.url, 2).await?;
        let key = match given {
            Some(k) => Some(k),
            None => checkpoint::SigningKey::from_config(&config.audit)?.map(|k| k.public()),
        };
        let v = match (&config.audit.checkpoint_dir, &key) {
            (Some(dir), Some(key)) => audit::verify_store(&store, Some((dir, key))).await?,
            (Some(_), None) => anyhow::bail!(
                "audit.checkpoint_dir is set but there is no key to check it with: give \
                 --public-key or configure the signing key"
            ),
            (None, _) => audit::verify_store(&store, None).await?,
        };
        Ok((v, config.audit.checkpoint_dir.is_some()))
    }
    .await;
    match outcome {
        Ok((v, checkpointed)) => match &v.problem {
            None => {
                println!("{}", verified(&v, checkpointed));
                ExitCode::SUCCESS
            }
            Some(p) => {
                println!(
                    "audit chain BROKEN ({}) at entry {}: {}",
                    p.kind.as_str(),
                    p.seq,
                    p.what
                );
                ExitCode::from(3)
            }
        },
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What a clean verification vouches for, in words: what the signatures cover and what only
/// the chain does.
fn verified(v: &crate::foundation::audit::Verification, checkpointed: bool) -> String {
    let mut line = format!("audit chain OK: {} entries", v.entries);
    if !checkpointed {
        line.push_str(
            "; no checkpoints are configured, so a rewrite with recomputed hashes would not show",
        );
        return line;
    }
    match &v.sealed_at {
        Some(at) => line.push_str(&format!(
            "; {} checkpoints, the entries up to {} vouched for by the one signed at {at}",
            v.checkpoints, v.sealed
        )),
        None => line.push_str("; no checkpoint signed yet"),
    }
    if v.unsealed() > 0 {
        line.push_str(&format!(
            "; the {} newer entries are linked by the chain but not yet signed",
            v.unsealed()
        ));
    }
    line
}

async fn export(out: PathBuf, arg: ConfigArg) -> anyhow::Result<()> {
    use crate::foundation::audit::{self, checkpoint};
    use sqlx::Row;
    let config = load_for(&arg, &[])?;
    let store = Store::open(&config.database.url, 2).await?;
    let checkpointer = checkpoint::Checkpointer::from_config(&config.audit)?;
    // The export ends at a signed head when this node can sign one; otherwise at the head now.
    let upto = match &checkpointer {
        Some(c) => {
            c.checkpoint(&store).await?;
            crate::foundation::audit::checkpoint::load_dir(c.dir())?
                .last()
                .map(|(_, cp)| cp.seq)
                .unwrap_or(0)
        }
        None => sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&store.pool)
            .await?
            .try_get::<i64, _>("seq")?,
    };
    let key = checkpointer.as_ref().map(|c| c.public_key());
    let written = audit::export(
        &store,
        &out,
        upto,
        config.audit.checkpoint_dir.as_deref(),
        key.as_ref(),
    )
    .await?;
    println!(
        "exported {written} audit entries to {}{}",
        out.display(),
        if key.is_some() {
            ", with their checkpoints and the public key"
        } else {
            " (no checkpoints configured: the export can only be checked against itself)"
        }
    );
    Ok(())
}

/// The person a command acts as, named by `--user` and `--agency` (an agency of the
/// configuration): it is audited as that person, in `role`, from the client `command`.
fn person(
    config: &Config,
    user: &str,
    agency: &str,
    role: crate::foundation::domain::Role,
    command: &str,
) -> anyhow::Result<crate::pipeline::authenticate::Principal> {
    let kind = config
        .agencies
        .iter()
        .find(|a| a.id == agency)
        .map(|a| a.kind)
        .ok_or_else(|| anyhow::anyhow!("--agency: no agency {agency:?} in the configuration"))?;
    Ok(crate::pipeline::authenticate::Principal {
        user: user.to_string(),
        agency: agency.to_string(),
        agency_kind: kind,
        role,
        client: Some(command.to_string()),
    })
}

/// Closes a command's gateway: its audit writer drains before the command ends, so every
/// entry the command made is written.
async fn finish(gw: crate::gateway::Gateway, audit_task: tokio::task::JoinHandle<()>) {
    gw.auditor.close();
    drop(gw);
    let _ = audit_task.await;
}

async fn sar(cmd: SarCmd) -> anyhow::Result<()> {
    use crate::foundation::domain::Role;
    let html = match cmd.format.as_str() {
        "json" => false,
        "html" => true,
        _ => anyhow::bail!("--format: json or html"),
    };
    let config = load_for(&cmd.config, &[Part::Policy, Part::Routing, Part::Matching])?;
    let who = person(&config, &cmd.user, &cmd.agency, Role::IgOfficer, "weft sar")?;
    let (gw, audit_task) = crate::gateway::Gateway::build(config, Schemas::load()?).await?;
    let result = crate::read::sar::report(&gw, &who, &cmd.child).await;
    finish(gw, audit_task).await;
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = if html {
        crate::read::sar::html(&report).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        serde_json::to_string_pretty(&report)? + "\n"
    };
    match &cmd.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}

async fn quality(cmd: QualityCmd) -> anyhow::Result<()> {
    use crate::foundation::domain::Role;
    if !matches!(cmd.format.as_str(), "json" | "csv" | "counts") {
        anyhow::bail!("--format: json, csv or counts");
    }
    let role: Role = cmd
        .role
        .parse()
        .map_err(|e| anyhow::anyhow!("--role: {e}"))?;
    let config = load_for(&cmd.config, &[Part::Policy, Part::Routing, Part::Matching])?;
    let who = person(&config, &cmd.user, &cmd.agency, role, "weft quality")?;
    let (gw, audit_task) = crate::gateway::Gateway::build(config, Schemas::load()?).await?;
    let query = crate::read::quality::QualityQuery {
        source: cmd.source.clone(),
    };
    let result = crate::read::quality::report(&gw, &who, Ok(query)).await;
    finish(gw, audit_task).await;
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = match cmd.format.as_str() {
        "csv" => crate::read::quality::to_csv(&report).map_err(|e| anyhow::anyhow!("{e}"))?,
        "counts" => {
            crate::read::quality::history_csv(&report).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        _ => (serde_json::to_string_pretty(&report)? + "\n").into_bytes(),
    };
    match &cmd.out {
        Some(path) => {
            std::fs::write(path, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let (key, text) = crate::foundation::audit::checkpoint::SigningKey::generate()?;
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let mut f = open
        .open(out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    print!("{}", key.public().to_pem());
    Ok(())
}

async fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    use crate::pipeline::authorise::{Policy, Reference};
    use crate::read::policy::question;
    use std::io::{BufRead, Write};

    match command {
        PolicyCommand::Lint(arg) => {
            let config = load_for(&arg, &[Part::Policy])?;
            let p = Policy::from_config(&config).await?;
            println!("policy OK: {} rules", p.rules());
        }
        PolicyCommand::Explain {
            config,
            role,
            agency,
            agency_kind,
            category,
            purpose,
        } => {
            let config = load_for(&config, &[Part::Policy])?;
            let schemas = Schemas::load()?;
            let mut q = serde_json::json!({"role": role, "agency": agency, "category": category, "purpose": purpose});
            if let Some(k) = agency_kind {
                q["agency_kind"] = serde_json::Value::String(k);
            }
            let asked = question(&schemas, &config, &q).map_err(|e| anyhow::anyhow!("{e}"))?;
            let p = Policy::from_config(&config).await?;
            let d = p.decide(&asked.question());
            println!("{}", serde_json::to_string_pretty(&asked.answer(d))?);
        }
        PolicyCommand::Check { config, file } => {
            let config = load_for(&config, &[Part::Policy])?;
            let schemas = Schemas::load()?;
            // Lint first: a check against a policy the gateway would refuse proves nothing.
            Policy::from_config(&config).await?;
            let reference = Reference::load(&config.policy.model, &config.policy.policy).await?;
            let input = std::fs::File::open(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let mut out = std::io::stdout().lock();
            let mut failed = 0usize;
            for (n, line) in std::io::BufReader::new(input).lines().enumerate() {
                let line =
                    line.map_err(|e| anyhow::anyhow!("{} line {}: {e}", file.display(), n + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                let result = serde_json::from_str::<serde_json::Value>(&line)
                    .map_err(|e| format!("not JSON: {e}"))
                    .and_then(|v| {
                        question(&schemas, &config, &v).map_err(|e| match e {
                            Error::Invalid { message, errors }
                            | Error::Unprocessable { message, errors } => {
                                let detail: Vec<String> = errors
                                    .iter()
                                    .map(|e| format!("{} {}", e.pointer, e.message))
                                    .collect();
                                if detail.is_empty() {
                                    message
                                } else {
                                    detail.join("; ")
                                }
                            }
                            other => other.to_string(),
                        })
                    });
                let json = match result {
                    Ok(asked) => {
                        let d = reference.decide(&asked.question())?;
                        let mut v = serde_json::to_value(asked.answer(d))?;
                        v["line"] = serde_json::json!(n + 1);
                        v
                    }
                    Err(e) => {
                        failed += 1;
                        serde_json::json!({"line": n + 1, "error": e})
                    }
                };
                writeln!(out, "{json}")?;
            }
            anyhow::ensure!(failed == 0, "{failed} line(s) could not be evaluated");
        }
    }
    Ok(())
}

/// The operator a command-line action is attributed to: as given, else the login name.
fn operator(given: Option<String>) -> anyhow::Result<String> {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| anyhow::anyhow!("name who is exporting with --operator (or WEFT_OPERATOR)"))
}

async fn index_export(cmd: IndexExportCmd) -> anyhow::Result<()> {
    use crate::read::index_export::{index_export, Operator, Selection};
    use std::io::Write;

    let config = load_for(&cmd.config, &[])?;
    for s in &cmd.sources {
        if !config.sources.iter().any(|c| &c.id == s) {
            let known: Vec<&str> = config.sources.iter().map(|c| c.id.as_str()).collect();
            anyhow::bail!(
                "--source {s}: no such source (configured: {})",
                known.join(", ")
            );
        }
    }
    let who = Operator {
        user: operator(cmd.operator)?,
        reason: cmd.reason,
    };
    let store = Store::open(&config.database.url, 2).await?;
    let selection = Selection {
        sources: cmd.sources,
    };
    let export = index_export(&store, &who, &selection).await?;
    match &cmd.out {
        Some(path) => std::fs::write(path, &export.csv)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => std::io::stdout().lock().write_all(&export.csv)?,
    }
    eprintln!(
        "weft: exported {} records (audit entry {})",
        export.rows, export.audit_seq
    );
    Ok(())
}

/// Exit codes: 0 imported (or unchanged), 2 rejected as malformed, 3 refused for removing too
/// much (previous data kept in both), 1 anything else.
async fn import(cmd: ImportCmd) -> ExitCode {
    let outcome = async {
        let config = load_for(&cmd.config, &[Part::Matching])?;
        let file = crate::write::imports::file_source(&config.sources, &cmd.source)?.clone();
        let store = Store::open(&config.database.url, 4).await?;
        // Records are matched as the gateway would match them, with the configured model.
        let matcher = crate::pipeline::resolve::linkage::Matcher::from_config(&config.matching)?;
        let index = crate::pipeline::resolve::Index::with_matcher(store.clone(), matcher);
        let options = crate::write::imports::Options {
            force: cmd.force,
            allow_removals: cmd.allow_removals,
        };
        Ok::<_, anyhow::Error>(
            crate::write::imports::import(&store, &index, &cmd.source, &file, options).await,
        )
    }
    .await;
    match outcome {
        Ok(Ok(r)) => {
            println!(
                "{}: {} — {} records: {} added, {} changed, {} removed, {} unchanged; \
                 {} with an invalid identifier (kept, flagged)",
                r.source,
                r.outcome,
                r.records,
                r.added,
                r.changed,
                r.removed,
                r.unchanged,
                r.flagged
            );
            for w in &r.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e @ crate::write::imports::ImportFailure::Rejected(_))) => {
            eprintln!("weft: {e}");
            ExitCode::from(2)
        }
        Ok(Err(e @ crate::write::imports::ImportFailure::Removals { .. })) => {
            eprintln!("weft: {e}");
            ExitCode::from(3)
        }
        Ok(Err(e)) => {
            eprintln!("weft: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
