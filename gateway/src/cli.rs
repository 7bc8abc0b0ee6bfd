//! The `weft` command line. Each subcommand reads its inputs, calls into the library and maps
//! the result to an exit code; no logic of its own lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::Application;
use crate::config::Config;
use crate::schema::Schemas;
use crate::store::Store;

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
    Demo(crate::demo::DemoArgs),
    /// Check a configuration file and exit.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Link or deduplicate CSV files of people, or train a matching model.
    Match {
        #[command(subcommand)]
        command: MatchCommand,
    },
    /// Measure the gateway.
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

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (schema, references, files) without starting.
    Check(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole hash chain and name the first entry that was changed, removed or reordered.
    Verify(ConfigArg),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Merged views against four simulated sources that each answer after a fixed delay.
    View(crate::bench::ViewArgs),
    /// Identity matching at scale on synthetic children: search latency and deduplication.
    Match(crate::matching::bench::MatchBenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// Link the records of two CSV files; writes the pairs with their probabilities.
    Link(Box<crate::matching::job::LinkArgs>),
    /// Find the duplicates in one CSV file; writes each record's cluster.
    Dedupe(Box<crate::matching::job::DedupeArgs>),
    /// Estimate m and u from the data (no labels) and save the model.
    Train(Box<crate::matching::job::TrainArgs>),
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
        Command::Demo(args) => crate::demo::run(args).await,
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
        Command::Bench {
            command: BenchCommand::View(args),
        } => crate::bench::view(args).await,
        Command::Bench {
            command: BenchCommand::Match(args),
        } => crate::matching::bench::run(&args),
        Command::Match { command } => match command {
            MatchCommand::Link(args) => crate::matching::job::run_link(&args),
            MatchCommand::Dedupe(args) => crate::matching::job::run_dedupe(&args),
            MatchCommand::Train(args) => crate::matching::job::run_train(&args),
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
    let schemas = Schemas::load()?;
    Ok(Config::load(&arg.config, &schemas)?)
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
        let config = load(&arg)?;
        let store = Store::open(&config.database.url, 2).await?;
        Ok::<_, anyhow::Error>(crate::audit::verify(&store).await?)
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
