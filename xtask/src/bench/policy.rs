//! `cargo xtask bench policy`: policy compile time for 10 and 10,000 exec rules, reload latency of a
//! 10,000-rule policy through a real controller (against a 10-rule reload measured in the same run),
//! and the shell layer's per-command evaluation (67 rules, and flatness from 10 to 10,000 rules).
//! Needs root (the controller loads BPF): on this host it runs with the signal backend.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sentra_ctl::policy::{Policy, exec};

use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    /// Compilations per policy size (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub compiles: u32,
    /// Reloads per policy size (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub reloads: u32,
    /// Shell-layer matcher evaluations per policy size.
    #[arg(long, default_value_t = 200_000)]
    pub evaluations: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let workspace = vm::workspace_root()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if cfg!(debug_assertions) {
        // `cargo xtask` builds xtask unoptimised; compile and match timings need an optimised library.
        let status = Command::new(&cargo)
            .current_dir(&workspace)
            .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench", "policy"])
            .args(["--compiles", &args.compiles.to_string(), "--reloads", &args.reloads.to_string()])
            .args(["--evaluations", &args.evaluations.to_string()])
            .status()
            .context("running the optimised xtask")?;
        if !status.success() {
            bail!("bench policy (release) failed");
        }
        return Ok(());
    }
    let status = Command::new(&cargo)
        .current_dir(&workspace)
        .args(["build", "--quiet", "--release", "-p", "sentra-ctl", "--bin", "sentra-ctl"])
        .status()?;
    if !status.success() {
        bail!("building sentra-ctl failed");
    }
    let ctl = workspace.join("target/release/sentra-ctl");
    let dir = std::env::temp_dir().join(format!("sentra-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(args, &dir, &ctl, &workspace);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(args: &Args, dir: &Path, ctl: &Path, workspace: &Path) -> anyhow::Result<()> {
    let files = dir.join("bin");
    std::fs::create_dir_all(&files)?;
    for i in 0..10_000 {
        std::fs::write(files.join(format!("f{i}")), b"")?;
    }
    let small_a = write(dir, "p10a.yaml", &policy(&files, 10, "a"))?;
    let small_b = write(dir, "p10b.yaml", &policy(&files, 10, "b"))?;
    let large_a = write(dir, "p10ka.yaml", &policy(&files, 10_000, "a"))?;
    let large_b = write(dir, "p10kb.yaml", &policy(&files, 10_000, "b"))?;

    let c10 = compile_ms(&small_a, args.compiles)?;
    let c10k = compile_ms(&large_a, args.compiles)?;
    println!("policy compile (parse + validate + resolve paths):");
    println!("  10 rules      {c10:9.3} ms");
    println!("  10,000 rules  {c10k:9.3} ms   ({:.1} µs per rule)", c10k * 1000.0 / 10_000.0);

    let daemon = Daemon::start(ctl, dir, &small_a)?;
    let r10 = daemon.reloads(&small_b, &small_a, args.reloads)?;
    daemon.reload(&large_a)?;
    let r10k = daemon.reloads(&large_b, &large_a, args.reloads)?;
    daemon.stop()?;
    println!(
        "policy reload through the controller: `sentra-ctl policy reload` until its reply (read, validate, compile, fill the inactive generation, flip), of which the kernel part until the flip; after the reply the controller waits for running programs and clears the old generation:"
    );
    for (label, r) in [("10 rules    ", r10), ("10,000 rules", r10k)] {
        println!(
            "  {label}  {:9.3} ms until enforced and replied, {:9.3} ms kernel until the flip, then {:9.3} ms clearing the old",
            r.0, r.1, r.2
        );
    }
    println!(
        "  ratio 10,000 / 10 rules: {:.2} until replied (target for 10,000 rules: < 50 ms), {:.2} kernel until the flip",
        r10k.0 / r10.0,
        r10k.1 / r10.1
    );

    println!("shell layer, per-command evaluation:");
    super::shell::matching(args.evaluations, &workspace.join("policies/original-67.yaml"))
}

fn policy(files: &Path, count: usize, tag: &str) -> String {
    let mut text = String::from("version: \"2.0\"\nmode: enforce\ndefault: deny\nexec:\n  allow:\n");
    text.push_str("    - { id: shells, dir: /usr/bin }\n");
    for i in 0..count.saturating_sub(1) {
        let _ = writeln!(text, "    - {{ id: {tag}{i}, path: {} }}", files.join(format!("f{i}")).display());
    }
    text
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn compile_ms(path: &Path, times: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(path)?;
    let mut samples = Vec::new();
    for _ in 0..times.max(1) {
        let start = Instant::now();
        let policy = Policy::parse(path, &text)?;
        let compiled = exec::compile(&policy)?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(!compiled.table.rules.is_empty());
    }
    Ok(median(samples))
}

struct Daemon {
    child: Child,
    ctl: PathBuf,
    run_dir: PathBuf,
    pin_root: PathBuf,
}

impl Daemon {
    fn start(ctl: &Path, dir: &Path, policy: &Path) -> anyhow::Result<Self> {
        let run_dir = dir.join("run");
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/sentra-bench-{}", std::process::id()));
        let child = Command::new(ctl)
            .env("SENTRA_RUN_DIR", &run_dir)
            .env("SENTRA_PIN_ROOT", &pin_root)
            .arg("daemon")
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(dir.join("audit.jsonl"))
            .args(["--cgroup", &format!("bench-{}", std::process::id())])
            .stderr(Stdio::null())
            .spawn()
            .context("starting the controller")?;
        let deadline = Instant::now() + Duration::from_mins(1);
        while std::os::unix::net::UnixStream::connect(run_dir.join("ctl.sock")).is_err() {
            if Instant::now() > deadline {
                bail!("the controller did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child, ctl: ctl.to_path_buf(), run_dir, pin_root })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.ctl);
        cmd.env("SENTRA_RUN_DIR", &self.run_dir).env("SENTRA_PIN_ROOT", &self.pin_root);
        cmd
    }

    /// Reloads `policy`; returns (ms until the reply, the controller's ms until the flip, its ms
    /// clearing the old generation after the reply).
    fn reload(&self, policy: &Path) -> anyhow::Result<(f64, f64, f64)> {
        let start = Instant::now();
        let out = self.command().args(["policy", "reload"]).arg(policy).output()?;
        let total = start.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!("reload failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        // Served once the clearing that follows the reload's reply is done.
        let status = self.command().args(["status", "--json"]).output()?;
        let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
        let retire = status["last_retire_ms"].as_f64().unwrap_or(f64::NAN);
        Ok((total, body["flip_ms"].as_f64().unwrap_or(f64::NAN), retire))
    }

    /// Alternates between two policies `times` times, each time as new text; medians of the three
    /// figures.
    fn reloads(&self, a: &Path, b: &Path, times: u32) -> anyhow::Result<(f64, f64, f64)> {
        let (mut total, mut flip, mut retire) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..times.max(1) {
            // Each reload gets text never loaded before (a new comment), as an edited policy does:
            // the parsed-policy cache must not answer for it.
            let source = if i % 2 == 0 { a } else { b };
            let fresh = source.with_extension(format!("{i}.yaml"));
            let text = std::fs::read_to_string(source)?;
            write(
                fresh.parent().context("policy directory")?,
                &fresh.file_name().context("policy name")?.to_string_lossy(),
                &format!("{text}# reload {i} of bench {}\n", std::process::id()),
            )?;
            let (whole, until_flip, clearing) = self.reload(&fresh)?;
            total.push(whole);
            flip.push(until_flip);
            retire.push(clearing);
        }
        Ok((median(total), median(flip), median(retire)))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let out = self.command().arg("stop").output()?;
        if !out.status.success() {
            let _ = self.command().args(["stop", "--force"]).output();
        }
        let _ = self.child.wait();
        Ok(())
    }
}
