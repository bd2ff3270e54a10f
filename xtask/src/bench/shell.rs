//! `cargo xtask bench shell` (issue 5): not written yet.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("bench shell is not implemented yet")
}
