//! `cargo xtask bench net`: `connect()` latency to a local listener without Sentra, with 10 and with
//! 10,000 CIDR entries, and the controller's resolver against the upstream queried directly — on this
//! machine's kernel (cgroup `sock_addr` programs load here), inside a network namespace the
//! benchmark creates. The measuring code is `sentra_tests::netbench`, run through the network test
//! binary so that the VM runner and this driver ship the same client.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    /// Connects per case and round (at least 5000 for the figures).
    #[arg(long, default_value_t = 5000)]
    pub n: u32,
    /// Rounds (the median round is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// DNS queries per case and round.
    #[arg(long, default_value_t = 2000)]
    pub queries: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let workspace = vm::workspace_root()?;
    let binaries = vm::build(&workspace, crate::arch::Arch::X86_64)?;
    let net_tests = binaries
        .tests
        .iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("net-")))
        .context("the network test binary (tests/tests/net.rs) was not built")?;
    let status = Command::new(net_tests)
        .args(["netprobe_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env("SENTRA_NETBENCH", format!("{},{},{}", args.n, args.rounds, args.queries))
        .env("SENTRA_CTL", &binaries.sentra_ctl)
        .env("SENTRA_TEST_BACKEND", "signal")
        .status()
        .context("running the network benchmark")?;
    if !status.success() {
        bail!("the network benchmark failed");
    }
    Ok(())
}
