//! `cargo xtask bench seccomp`: the cost of the launcher's seccomp profiles on system-call-heavy work,
//! as a ratio against the same work without a filter, measured in interleaved rounds of one run
//! (`sentra-bench seccomp`, tests/src/bin/bench.rs). On this machine: seccomp is the same on every
//! kernel that boots here.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    /// Rounds of four system calls per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub n: u32,
    /// Measurements per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let workspace = vm::workspace_root()?;
    let binaries = vm::build(&workspace, crate::arch::Arch::X86_64)?;
    let status = Command::new(&binaries.bench)
        .args(["seccomp", &args.n.to_string(), &args.rounds.to_string()])
        .status()
        .context("running sentra-bench")?;
    if !status.success() {
        bail!("sentra-bench seccomp failed");
    }
    Ok(())
}
