//! Benchmarks. Each one measures its baseline in the same run and prints ratios.

mod exec;
mod net;
mod policy;
mod sandbox;
mod seccomp;
mod shell;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// fork+exec latency: no Sentra vs 10 rules vs 10,000 rules (in the VM, lsm backend).
    Exec(exec::Args),
    /// `sentra-shell -c true` against `sh -c true` and `bash -c true`.
    Shell(shell::Args),
    /// Policy compile time, reload latency at 10,000 rules, shell-layer evaluation per command.
    Policy(policy::Args),
    /// `connect()` latency with 0/10/10,000 CIDR entries, and the resolver's added latency (host).
    Net(net::Args),
    /// System-call-heavy work under the shipped seccomp profiles against no filter (host).
    Seccomp(seccomp::Args),
    /// The Python sandbox: start to exit of `print(1)` against plain python3, and memory per
    /// parallel sandbox (host, root).
    Sandbox(sandbox::Args),
}

pub fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Exec(args) => exec::run(&args),
        Bench::Shell(args) => shell::run(&args),
        Bench::Policy(args) => policy::run(&args),
        Bench::Net(args) => net::run(&args),
        Bench::Seccomp(args) => seccomp::run(&args),
        Bench::Sandbox(args) => sandbox::run(&args),
    }
}

/// Builds one of sentra-ctl's binaries that do not use the BPF object (release) and returns its path.
fn build_binary(workspace: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "-p", "sentra-ctl", "--bin", name])
        .env("AYA_BUILD_SKIP", "1")
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building {name} failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    Ok(target.join("release").join(name))
}
