//! `weft bench view`.

use clap::Args;

#[derive(Debug, Args)]
pub struct ViewArgs {}

pub async fn view(_args: ViewArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet wired")
}
