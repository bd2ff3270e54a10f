//! `cargo xtask vm-systemd`: the deployment test in a real systemd machine.
//!
//! Boots a Debian 12 userland (debootstrap, cached by `scripts/setup.sh`) with systemd as init on the
//! 6.12 kernel under qemu, with no network card. The initramfs is three concatenated archives (the
//! kernel unpacks each in turn, `init/initramfs.c`): the cached rootfs, the cached downloads the
//! installer would fetch (Node, npm, the npm cache of `OpenClaw`), and this run's files (the release build,
//! the installer and units, the scenario and a oneshot unit that runs it). The scenario
//! (`tests/systemd/scenario.sh`) prints one `SYSTEMD-TEST ok|not ok` line per check and a closing
//! `SYSTEMD-TEST DONE` line; a missing closing line is a failure.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::vm;

#[derive(clap::Args)]
pub struct VmSystemdArgs {
    /// Kernel to boot (a directory under $`SENTRA_CACHE/kernels` with BPF LSM on by default).
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Guest cores (qemu runs one host thread per core).
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Seconds before the machine is declared hung.
    #[arg(long, default_value_t = 2700)]
    pub timeout: u64,
}

/// The unit that runs the scenario once the machine is up, on the serial console, then powers off.
const TEST_UNIT: &str = "[Unit]
Description=Sentra deployment test
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/bash /root/sentra-test/scenario.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
";

pub fn run(args: &VmSystemdArgs) -> anyhow::Result<()> {
    let workspace = vm::workspace_root()?;
    let cache = vm::cache();
    let rootfs = cache.join("systemd/rootfs");
    let downloads = cache.join("downloads");
    if !rootfs.join("lib/systemd/systemd").exists() || !downloads.join("npm-cache").is_dir() {
        bail!(
            "{} or {} is missing: run scripts/setup.sh (it builds the test machine and fetches the downloads)",
            rootfs.display(),
            downloads.display()
        );
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&workspace)
        .args(["build", "--release", "-p", "sentra-ctl"])
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let out = workspace.join("target/vm");
    std::fs::create_dir_all(&out)?;
    let base = cached_archive(&rootfs, &cache.join("systemd/rootfs.cpio.gz"), "", true)?;
    let fetched = cached_archive(&downloads, &cache.join("systemd/downloads.cpio"), "root/downloads", false)?;
    let this_run = out.join("systemd-run.cpio.gz");
    pack_run(&workspace, &out.join("systemd-run.d"), &this_run)?;
    let initrd = out.join("systemd.initrd");
    concatenate(&[&base, &fetched, &this_run], &initrd)?;

    let vmlinuz = vm::find_kernel(&cache, &args.kernel)?;
    let log = out.join(format!("systemd-{}.log", args.kernel));
    eprintln!("[vm-systemd] booting {} with systemd; log {}", args.kernel, log.display());
    let started = Instant::now();
    vm::boot(
        &vmlinuz,
        &initrd,
        "console=ttyS0 panic=-1 quiet rdinit=/lib/systemd/systemd systemd.show_status=false",
        &log,
        Duration::from_secs(args.timeout),
        vm::Machine { cpus: args.cpus, memory_mb: 6144, ..vm::Machine::SMALL },
    )?;
    report(&log, started.elapsed())
}

/// Packs `dir` (below `prefix` in the archive) into `archive` unless it is newer than `dir`'s own
/// modification stamp; `gzip`: compress (the downloads are compressed already).
fn cached_archive(dir: &Path, archive: &Path, prefix: &str, gzip: bool) -> anyhow::Result<PathBuf> {
    let fresh = |a: &Path| -> Option<bool> {
        let built = std::fs::metadata(a).ok()?.modified().ok()?;
        let source = std::fs::metadata(dir).ok()?.modified().ok()?;
        Some(built > source)
    };
    if fresh(archive) == Some(true) {
        return Ok(archive.to_path_buf());
    }
    eprintln!("[vm-systemd] packing {} (once; cached)", dir.display());
    let staging;
    let root = if prefix.is_empty() {
        dir.to_path_buf()
    } else {
        // The archive's paths start with `prefix`: stage a tree of hard links (same filesystem).
        staging = archive.with_extension("d");
        let _ = std::fs::remove_dir_all(&staging);
        let target = staging.join(prefix);
        std::fs::create_dir_all(target.parent().context("prefix has no parent")?)?;
        let status = Command::new("cp").arg("-al").arg(dir).arg(&target).status()?;
        if !status.success() {
            bail!("staging {} failed", dir.display());
        }
        staging.clone()
    };
    let compress = if gzip { "| gzip -1" } else { "" };
    let tmp = archive.with_extension("tmp");
    shell(&format!(
        "cd '{}' && find . -xdev | cpio -o -H newc --quiet {compress} > '{}'",
        root.display(),
        tmp.display()
    ))?;
    std::fs::rename(&tmp, archive)?;
    if !prefix.is_empty() {
        let _ = std::fs::remove_dir_all(root);
    }
    Ok(archive.to_path_buf())
}

/// This run's files: the release binaries, the installer and what it installs, the scenario, and
/// the unit that runs it (enabled).
fn pack_run(workspace: &Path, root: &Path, archive: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(root);
    let copy = |from: &Path, to: &str| -> anyhow::Result<()> {
        let target = root.join(to);
        std::fs::create_dir_all(target.parent().context("no parent")?)?;
        let status = Command::new("cp").arg("-a").arg(from).arg(&target).status()?;
        if !status.success() {
            bail!("copying {}", from.display());
        }
        Ok(())
    };
    let release = workspace.join("target/release");
    for binary in ["sentra-ctl", "sentra", "sentra-shell", "sentra-email"] {
        copy(&release.join(binary), &format!("root/sentra-bin/{binary}"))?;
    }
    // The installer takes himalaya from the prebuilt directory too (the machine has no network).
    copy(&crate::vm::himalaya()?, "root/sentra-bin/himalaya")?;
    for part in ["scripts", "deploy", "policies", "README.md"] {
        copy(&workspace.join(part), &format!("root/sentra-src/{part}"))?;
    }
    for file in ["scenario.sh", "fake-llm.mjs", "smtp-sink.mjs", "openclaw.json"] {
        copy(&workspace.join("tests/systemd").join(file), &format!("root/sentra-test/{file}"))?;
    }
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(units.join("multi-user.target.wants"))?;
    std::fs::write(units.join("sentra-test.service"), TEST_UNIT)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/sentra-test.service",
        units.join("multi-user.target.wants/sentra-test.service"),
    )?;
    // Nothing in the machine waits for a network it does not have, and no getty takes the serial
    // console (its vhangup would cut the scenario's output off).
    for masked in ["systemd-networkd-wait-online.service", "serial-getty@ttyS0.service", "getty@tty1.service"]
    {
        std::os::unix::fs::symlink("/dev/null", units.join(masked))?;
    }
    shell(&format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        archive.display()
    ))
}

fn concatenate(parts: &[&Path], out: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(out)?;
    for part in parts {
        let mut input = std::fs::File::open(part)?;
        std::io::copy(&mut input, &mut file)?;
        // Each archive starts on a 4-byte boundary (the kernel skips zero padding between them).
        let len = file.metadata()?.len();
        let pad = (4 - len % 4) % 4;
        file.write_all(&vec![0u8; usize::try_from(pad)?])?;
    }
    Ok(())
}

fn shell(script: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").arg("-c").arg(script).status()?;
    if !status.success() {
        bail!("`{script}` failed");
    }
    Ok(())
}

/// Prints the checks and the transcript lines; fails unless every check passed and the run finished.
fn report(log: &Path, took: Duration) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    let mut failed = 0;
    let mut done = false;
    for line in text.lines() {
        let Some(at) = line.find("SYSTEMD-TEST ") else { continue };
        let line = &line[at..];
        println!("{line}");
        if line.starts_with("SYSTEMD-TEST not ok") {
            failed += 1;
        }
        if line.starts_with("SYSTEMD-TEST DONE") {
            done = true;
        }
    }
    println!("[vm-systemd] {:.0} s; log {}", took.as_secs_f64(), log.display());
    if !done {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("the machine did not finish the scenario; the log's end:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        bail!("the deployment test did not finish");
    }
    if failed > 0 {
        bail!("{failed} deployment check(s) failed");
    }
    Ok(())
}
