//! `cargo xtask`: VM tests on real kernels, release builds for each architecture, and benchmarks.

mod arch;
mod bench;
mod release;
mod systemd;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the test binaries, boot each test kernel under qemu, run the integration tests inside.
    VmTest(vm::VmTestArgs),
    /// The deployment test: install.sh, the systemd units and real `OpenClaw` agent turns in a Debian 12
    /// machine booted with systemd under qemu.
    VmSystemd(systemd::VmSystemdArgs),
    /// The binaries an installation takes, for `x86_64` and (cross-built) `arm64`, in
    /// `target/dist/<arch>/`, each checked to start on the oldest supported glibc.
    Release(release::ReleaseArgs),
    /// Benchmarks; each prints its figures as ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::VmTest(args) => vm::run(&args),
        Command::VmSystemd(args) => systemd::run(&args),
        Command::Release(args) => release::run(&args),
        Command::Bench { which } => bench::run(which),
    }
}
