//! `weft demo`: the gateway on an embedded SQLite file, against simulated partner systems on
//! loopback, with ready-made tokens printed.

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet wired")
}
