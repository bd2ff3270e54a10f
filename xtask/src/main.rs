//! `cargo xtask`: VM tests on real kernels, and benchmarks.

mod bench;
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
    /// Benchmarks; each prints its figures as ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::VmTest(args) => vm::run(&args),
        Command::Bench { which } => bench::run(which),
    }
}
