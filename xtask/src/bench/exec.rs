//! `cargo xtask bench exec`: fork+exec latency without Sentra, with a 10-rule and a 10,000-rule policy,
//! the controller's memory, and the BPF map memory — inside the VM on a real kernel with BPF LSM
//! (`--backend signal` boots it without), or on this machine (`--host`, signal backend).
//!
//! The figures come from `sentra-bench exec` (tests/src/bin/bench.rs), which measures all three cases
//! in interleaved rounds of one run and prints ratios.

use std::{fmt::Write as _, process::Command};

use anyhow::{Context as _, bail};

use crate::{arch::Arch, vm};

#[derive(clap::Args)]
pub struct Args {
    /// Execs per case and round.
    #[arg(long, default_value_t = 2000)]
    pub n: u32,
    /// Rounds (the median round is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Test kernel to boot.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// `lsm` or `signal`.
    #[arg(long, default_value = "lsm")]
    pub backend: String,
    /// Run on this machine's kernel instead of a VM (signal backend).
    #[arg(long)]
    pub host: bool,
    /// The guest's architecture (`arm64`: cross-built, on Debian's arm64 kernel under emulation).
    #[arg(long, value_enum, default_value_t = Arch::X86_64)]
    pub arch: Arch,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let workspace = vm::workspace_root()?;
    if args.host && args.arch != Arch::X86_64 {
        bail!("--host runs on this machine, which is x86_64: leave out --arch or --host");
    }
    let binaries = vm::build(&workspace, args.arch)?;
    if args.host {
        let status = Command::new(&binaries.bench)
            .args(["exec", &args.n.to_string(), &args.rounds.to_string()])
            .env("SENTRA_TEST_BACKEND", "signal")
            .env("SENTRA_CTL", &binaries.sentra_ctl)
            .status()
            .context("running sentra-bench")?;
        if !status.success() {
            bail!("sentra-bench failed");
        }
        return Ok(());
    }
    let out = workspace.join("target/vm");
    std::fs::create_dir_all(&out)?;
    let mut init = vm::base_init();
    // The controller's own log (SENTRA_LOG, e.g. `sentra_ctl=debug` for each program's load time).
    if let Ok(filter) = std::env::var("SENTRA_LOG") {
        let _ = writeln!(init, "export SENTRA_LOG='{}'", filter.replace('\'', ""));
    }
    let _ = write!(
        init,
        "export SENTRA_CTL={} SENTRA_TEST_BACKEND={}\n{} exec {} {}\necho SENTRA-VM-DONE\npoweroff -f\n",
        binaries.sentra_ctl.display(),
        args.backend,
        binaries.bench.display(),
        args.n,
        args.rounds
    );
    let initrd = out.join("initrd-bench.cpio.gz");
    vm::pack(&binaries, &init, &initrd)?;
    let kernel = args.arch.kernel_dir(&args.kernel);
    let log = out.join(format!("bench-exec-{kernel}-{}.log", args.backend));
    let vmlinuz = vm::find_kernel(&vm::cache(), &kernel)?;
    eprintln!("[bench exec] booting {kernel} ({}), backend {}", vmlinuz.display(), args.backend);
    vm::boot(
        &vmlinuz,
        &initrd,
        &vm::append_for(args.arch, &args.kernel, &args.backend)?,
        &log,
        std::time::Duration::from_hours(1),
        vm::Machine { arch: args.arch, ..vm::Machine::SMALL },
    )?;
    let text = String::from_utf8_lossy(&std::fs::read(&log)?).into_owned();
    let lines: Vec<&str> =
        text.lines().filter_map(|l| l.trim_end_matches('\r').strip_prefix("BENCH ")).collect();
    if lines.is_empty() {
        bail!("the benchmark printed nothing; see {}", log.display());
    }
    println!("exec benchmark, kernel {} in qemu (TCG), {} backend", args.kernel, args.backend);
    for line in lines {
        println!("  {line}");
    }
    Ok(())
}
