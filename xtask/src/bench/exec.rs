//! `cargo xtask bench exec`: see issue 3.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("bench exec is not implemented yet")
}
