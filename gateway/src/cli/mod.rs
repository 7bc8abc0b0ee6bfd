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
    /// Walk the whole hash chain and name the first entry that was changed, removed or reordered.
    Verify(ConfigArg),
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
            command: AuditCommand::Verify(arg),
        } => return verify(arg).await,
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
    println!("weft: listening on {scheme}://{}", app.local_addr()?);
    app.run_until_stopped(shutdown_signal()).await
}

async fn verify(arg: ConfigArg) -> ExitCode {
    let outcome = async {
        let config = load_for(&arg, &[])?;
        let store = Store::open(&config.database.url, 2).await?;
        Ok::<_, anyhow::Error>(crate::foundation::audit::verify(&store).await?)
    }
    .await;
    match outcome {
        Ok(v) => match v.problem {
            None => {
                println!("audit chain OK: {} entries", v.entries);
                ExitCode::SUCCESS
            }
            Some(p) => {
                println!("audit chain BROKEN at entry {}: {}", p.seq, p.what);
                ExitCode::from(3)
            }
        },
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
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
                            Error::Invalid { message, errors } => {
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
