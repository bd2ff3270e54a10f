//! `cargo xtask vm-test`.

#[derive(clap::Args)]
pub struct VmTestArgs {}

pub fn run(_args: &VmTestArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
