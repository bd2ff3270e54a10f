//! `cargo xtask bench sandbox`: what the Python sandbox costs (host, as root).
//!
//! 1. Start to exit of `print(1)`: `sentra python -c 'print(1)'` under the shipped `python_sandbox`
//!    profile against `python3 -s -c 'print(1)'`, interleaved in one run so that machine noise hits
//!    both alike; the added milliseconds and the ratio.
//! 2. Memory of parallel sandboxes: ten at once, each sleeping; the runner's and the interpreter's
//!    resident memory, and the cgroup's peak as the response reports it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    /// Runs of each command (at least 50).
    #[arg(long, default_value_t = 200)]
    pub runs: u32,
    /// Sandboxes at once for the memory figure.
    #[arg(long, default_value_t = 10)]
    pub parallel: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs < 50 {
        bail!("--runs must be at least 50");
    }
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench sandbox runs as root (the sandbox creates cgroups and namespaces)");
    }
    let workspace = vm::workspace_root()?;
    let sentra = super::build_binary(&workspace, "sentra")?;
    let dir = TempDir(std::env::temp_dir().join(format!("sentra-bench-sandbox-{}", std::process::id())));
    std::fs::create_dir_all(dir.path())?;
    // The shipped sandbox sections of the default policy, as they are.
    let shipped = std::fs::read_to_string(workspace.join("policies/default.yaml"))?;
    let start = shipped.find("\nprofiles:").context("policies/default.yaml has no profiles section")?;
    let policy = dir.path().join("sandbox.yaml");
    std::fs::write(&policy, &shipped[start..])?;
    let log = dir.path().join("audit.jsonl");
    startup(args.runs, &sentra, &policy, &log)?;
    memory(args.parallel, &sentra, &policy, &log)
}

/// A directory removed when the benchmark ends.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn time_one(command: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = command.stdout(Stdio::piped()).stderr(Stdio::piped()).output().context("spawning")?;
    let elapsed = start.elapsed();
    if !output.status.success() || output.stdout != b"1\n" {
        bail!("{command:?} failed: {} {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(elapsed)
}

fn median_ms(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples.get(samples.len() / 2).copied().map_or(0.0, ms);
    let p90 = samples.get(samples.len() * 9 / 10).copied().map_or(0.0, ms);
    (median, p90)
}

fn startup(runs: u32, sentra: &Path, policy: &Path, log: &Path) -> anyhow::Result<()> {
    let mut plain = Vec::new();
    let mut sandboxed = Vec::new();
    for _ in 0..runs {
        plain.push(time_one(Command::new("/usr/bin/python3").args(["-s", "-c", "print(1)"]))?);
        sandboxed.push(time_one(
            Command::new(sentra)
                .arg("python")
                .arg("--policy")
                .arg(policy)
                .arg("--log")
                .arg(log)
                .args(["-c", "print(1)"]),
        )?);
    }
    let (plain_median, plain_p90) = median_ms(&mut plain);
    let (sandbox_median, sandbox_p90) = median_ms(&mut sandboxed);
    println!("start to exit of print(1), {runs} runs each, interleaved (median, p90):");
    println!("  python3 -s -c                  {plain_median:7.2} ms  {plain_p90:7.2} ms");
    println!("  sentra python (python_sandbox) {sandbox_median:7.2} ms  {sandbox_p90:7.2} ms");
    println!(
        "  added: {:+.2} ms (median), ratio {:.2}x  [target: adds <= 15 ms]",
        sandbox_median - plain_median,
        sandbox_median / plain_median.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

/// Resident memory of a process in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
}

/// Children of `pid` (from `/proc/PID/task/PID/children`).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn memory(parallel: u32, sentra: &Path, policy: &Path, log: &Path) -> anyhow::Result<()> {
    let runners: Vec<_> = (0..parallel)
        .map(|_| {
            Command::new(sentra)
                .arg("python")
                .arg("--json")
                .arg("--policy")
                .arg(policy)
                .arg("--log")
                .arg(log)
                .args(["-c", "import time; time.sleep(2)"])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(1200));
    let (mut runner_kib, mut python_kib, mut pythons) = (0u64, 0u64, 0u32);
    for runner in &runners {
        runner_kib += rss_kib(runner.id()).unwrap_or(0);
        for child in children(runner.id()) {
            python_kib += rss_kib(child).unwrap_or(0);
            pythons += 1;
        }
    }
    let mut peaks = Vec::new();
    for runner in runners {
        let output = runner.wait_with_output()?;
        let response: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        peaks.push(response["peak_mem_mb"].as_f64().unwrap_or(f64::NAN));
    }
    if pythons != parallel {
        bail!("{pythons} interpreters found running, {parallel} expected");
    }
    #[expect(clippy::cast_precision_loss, reason = "kibibytes of a few processes, far below 2^52")]
    let per = |kib: u64| kib as f64 / 1024.0 / f64::from(parallel);
    println!("{parallel} sandboxes at once (per sandbox):");
    println!("  runner (sentra python) resident: {:.1} MB", per(runner_kib));
    println!("  interpreter resident:            {:.1} MB", per(python_kib));
    println!("  cgroup peak (response):          {:.1} MB", peaks.iter().sum::<f64>() / f64::from(parallel));
    Ok(())
}
