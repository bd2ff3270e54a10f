//! `sentra-bench exec`: fork+exec latency of a small binary without Sentra, governed by a 10-rule policy,
//! and governed by a 10,000-rule policy; the controller's resident memory while governing and the BPF
//! map memory it holds. Run by `cargo xtask bench exec` inside the VM (and usable on the host).
//!
//! The three cases are measured in interleaved rounds in one run, and each figure is the median of its
//! rounds, so drift of the machine affects all three alike. Prints `BENCH key=value` lines.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The fixture binary, built next to this one.
fn fixture() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no parent")?.join("sentra-fixture");
    if !path.exists() {
        bail!("{} not found (cargo build -p sentra-tests --bins)", path.display());
    }
    Ok(path)
}

fn main() -> anyhow::Result<()> {
    let fixture = fixture()?;
    let fixture = s(&fixture);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("seccomp") {
        return seccomp(fixture, &args);
    }
    if args.first().map(String::as_str) != Some("exec") {
        bail!("usage: sentra-bench exec|seccomp [N] [ROUNDS]");
    }
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let backend = std::env::var("SENTRA_TEST_BACKEND").unwrap_or_else(|_| "auto".into());
    let dir = tempfile::Builder::new().prefix("sentra-bench-").tempdir_in("/tmp")?;
    let tool = dir.path().join("bin/tool");
    std::fs::create_dir_all(tool.parent().context("parent")?)?;
    std::fs::copy(fixture, &tool)?;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755))?;

    let small = write_policy(dir.path(), "p10.yaml", &policy(dir.path(), fixture, 10)?)?;
    let large = write_policy(dir.path(), "p10k.yaml", &policy(dir.path(), fixture, 10_000)?)?;

    let mut none = Vec::new();
    let mut with10 = Vec::new();
    let mut with10k = Vec::new();
    // (peak, steady) resident memory of the controller, for each policy size.
    let mut rss = [(0, 0); 2];
    let mut maps = (0, 0);
    for round in 0..rounds {
        none.push(measure(&[fixture, "bench", &n.to_string(), s(&tool), "exit", "0"])?);
        let (ns, r, m) = governed(&small, &backend, fixture, n, &tool)?;
        with10.push(ns);
        rss[0] = (rss[0].0.max(r.0), rss[0].1.max(r.1));
        maps.0 = maps.0.max(m);
        let (ns, r, m) = governed(&large, &backend, fixture, n, &tool)?;
        with10k.push(ns);
        rss[1] = (rss[1].0.max(r.0), rss[1].1.max(r.1));
        maps.1 = maps.1.max(m);
        eprintln!(
            "round {round}: none {:.0} ns, 10 rules {:.0} ns, 10k rules {:.0} ns",
            none[none.len() - 1],
            with10[with10.len() - 1],
            with10k[with10k.len() - 1]
        );
    }
    let (a, b, c) = (median(&mut none), median(&mut with10), median(&mut with10k));
    println!("BENCH execs_per_case={n} rounds={rounds} backend={backend}");
    println!("BENCH exec_ns_no_sentra={a:.0}");
    println!("BENCH exec_ns_10_rules={b:.0}");
    println!("BENCH exec_ns_10000_rules={c:.0}");
    println!("BENCH ratio_10_rules_over_none={:.3} (target <= 1.05)", b / a);
    println!("BENCH ratio_10000_over_10_rules={:.3} (target <= 1.02)", c / b);
    // Steady: while governing (median of the second half of the samples); peak: the largest sample,
    // which includes loading (the kernel's BTF parsed to find struct offsets, then freed).
    println!(
        "BENCH ctl_rss_kib_governing_10_rules={} ctl_rss_kib_governing_10000_rules={} (target <= 30720)",
        rss[0].1, rss[1].1
    );
    println!("BENCH ctl_rss_kib_peak_10_rules={} ctl_rss_kib_peak_10000_rules={}", rss[0].0, rss[1].0);
    println!(
        "BENCH bpf_map_memlock_kib_10_rules={} bpf_map_memlock_kib_10000_rules={}",
        maps.0 / 1024,
        maps.1 / 1024
    );
    // Then what Sentra's programs themselves cost, from the kernel's accounting, in runs of their own
    // (statistics add two clock reads to every program run, so they stay off while the ratios above
    // are measured).
    for (label, policy) in [("10_rules", &small), ("10000_rules", &large)] {
        let audit = policy.with_extension("jsonl");
        let mut cmd = sentra_tests::ctl_command();
        cmd.args(["run", "--policy", s(policy), "--audit-log", s(&audit), "--backend", &backend, "--"])
            .args([fixture, "bench-held", &n.to_string(), s(&tool), "exit", "0"]);
        let (programs, _) =
            sentra_tests::costs::held(cmd, "ready", "ns_per_exec=").map_err(anyhow::Error::msg)?;
        let _ = std::fs::remove_file(&audit);
        print!("{}", sentra_tests::costs::report(label, &programs, "exec", n, 300));
    }
    Ok(())
}

/// `sentra-bench seccomp [N] [ROUNDS]`: system-call-heavy work (the fixture's `sysloop`) without a
/// filter and under each shipped profile as the launcher installs it (every filter of the profile;
/// allowed calls never leave the kernel, so the deny filter's action does not matter here).
fn seccomp(fixture: &str, args: &[String]) -> anyhow::Result<()> {
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let policy = sentra_ctl::policy::Policy::parse(
        Path::new("policies/gateway.yaml"),
        include_str!("../../../policies/gateway.yaml"),
    )?;
    let profiles = ["allow_all", "gateway", "base_restricted"];
    // The floor: one filter that allows (almost) everything (a task with any filter takes the kernel's slow
    // system-call entry, whatever the filter says).
    // (seccompiler wants two actions: the other one is for `reboot`, which the loop never calls.)
    let reboot = sentra_ctl::policy::seccomp::number("reboot").context("reboot")?;
    let allow_all: seccompiler::BpfProgram = seccompiler::SeccompFilter::new(
        std::iter::once((reboot, Vec::new())).collect(),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(1),
        std::env::consts::ARCH.try_into().map_err(|e| anyhow::anyhow!("{e:?}"))?,
    )?
    .try_into()?;
    let mut programs = vec![vec![allow_all]];
    for name in &profiles[1..] {
        let compiled = policy.seccomp_profile(name)?.compile(false)?;
        programs.push(compiled.filters.into_iter().map(|(_, p)| p).collect::<Vec<_>>());
    }
    let run = |filters: Option<&Vec<seccompiler::BpfProgram>>| -> anyhow::Result<f64> {
        let mut cmd = Command::new(fixture);
        cmd.args(["sysloop", &n.to_string()]).stdout(Stdio::piped());
        if let Some(filters) = filters.cloned() {
            // SAFETY: only prctl and seccomp, on programs prepared before the fork.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    for program in &filters {
                        seccompiler::apply_filter(program).map_err(std::io::Error::other)?;
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("ns_per_round="))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("sysloop printed {text:?}"))
    };
    let mut none = Vec::new();
    let mut with: Vec<Vec<f64>> = vec![Vec::new(); profiles.len()];
    for round in 0..rounds {
        none.push(run(None)?);
        for (i, filters) in programs.iter().enumerate() {
            with[i].push(run(Some(filters))?);
        }
        eprintln!(
            "round {round}: none {:.0} ns, gateway {:.0} ns",
            none[none.len() - 1],
            with[0][with[0].len() - 1]
        );
    }
    let base = median(&mut none);
    println!("BENCH seccomp rounds_of_4_syscalls={n} rounds={rounds}");
    println!("BENCH sysloop_ns_no_filter={base:.1}");
    let floor = median(&mut with[0]);
    for (i, name) in profiles.iter().enumerate() {
        let ns = median(&mut with[i]);
        let filters = programs[i].len();
        let instructions: usize = programs[i].iter().map(Vec::len).sum();
        println!(
            "BENCH sysloop_ns_{name}={ns:.1} ratio_{name}_over_none={:.3} ratio_{name}_over_allow_all={:.3} ({filters} filters, {instructions} BPF instructions)",
            ns / base,
            ns / floor
        );
    }
    Ok(())
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A policy with `count` exec rules: `count - 1` exact paths (real files) plus the tool's directory.
fn policy(dir: &Path, fixture: &str, count: usize) -> anyhow::Result<String> {
    let files = dir.join(format!("rules-{count}"));
    std::fs::create_dir_all(&files)?;
    let mut text = String::from("version: \"2.0\"\nmode: enforce\ndefault: deny\nexec:\n  allow:\n");
    let _ = writeln!(text, "    - {{ id: fixture, path: {fixture} }}");
    let _ = writeln!(text, "    - {{ id: tools, dir: {} }}", dir.join("bin").display());
    for i in 0..count.saturating_sub(2) {
        let file = files.join(format!("f{i}"));
        std::fs::write(&file, b"")?;
        let _ = writeln!(text, "    - {{ id: r{i}, path: {} }}", file.display());
    }
    Ok(text)
}

fn write_policy(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// Runs `sentra-fixture bench` and returns its mean ns per fork+exec+wait.
fn measure(command: &[&str]) -> anyhow::Result<f64> {
    let output = Command::new(command[0]).args(&command[1..]).output()?;
    parse_ns(&String::from_utf8_lossy(&output.stdout)).with_context(|| {
        format!("no ns_per_exec from {command:?}: {}", String::from_utf8_lossy(&output.stderr))
    })
}

fn parse_ns(stdout: &str) -> Option<f64> {
    stdout.lines().find_map(|l| l.strip_prefix("ns_per_exec=")).and_then(|v| v.trim().parse().ok())
}

/// Runs the fixture's loop under `sentra-ctl run`; samples the controller's RSS (peak, and steady:
/// the median of the second half of the samples) and map memory meanwhile.
fn governed(
    policy: &Path,
    backend: &str,
    fixture: &str,
    n: u32,
    tool: &Path,
) -> anyhow::Result<(f64, (u64, u64), u64)> {
    let audit = policy.with_extension("jsonl");
    let mut child = sentra_tests::ctl_command()
        .args(["run", "--policy", s(policy), "--audit-log", s(&audit), "--backend", backend, "--"])
        .args([fixture, "bench", &n.to_string(), s(tool), "exit", "0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut samples = Vec::new();
    let mut memlock = 0;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        samples.push(vm_rss_kib(pid));
        memlock = memlock.max(map_memlock(pid));
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_mins(30) {
            let _ = child.kill();
            bail!("governed run hung");
        }
    }
    let output = child.wait_with_output()?;
    let _ = std::fs::remove_file(&audit);
    let ns =
        parse_ns(&String::from_utf8_lossy(&output.stdout)).context("governed run printed no ns_per_exec")?;
    let peak = samples.iter().copied().max().unwrap_or(0);
    let mut late: Vec<u64> = samples[samples.len() / 2..].iter().copied().filter(|&r| r > 0).collect();
    late.sort_unstable();
    let steady = late.get(late.len() / 2).copied().unwrap_or(0);
    Ok((ns, (peak, steady), memlock))
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sum of `memlock` over the BPF map fds the process holds (fdinfo of a BPF map reports it).
fn map_memlock(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        if let Some(v) =
            text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok())
        {
            total += v;
        }
    }
    total
}
