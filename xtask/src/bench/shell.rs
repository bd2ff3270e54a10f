//! `cargo xtask bench shell`: what `sentra-shell` costs per command.
//!
//! 1. Startup: `sentra-shell -c true` (67-rule policy, audit log written) against `sh -c true` and
//!    `bash -c true`, interleaved in one run so that machine noise hits all three alike.
//! 2. Matching: per-command rule evaluation for 10, 67 and 10,000 rules (ns/command, 10k/10 ratio),
//!    and a whole line (parse, unwrap, match) for reference.

use std::{
    hint::black_box,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sentra_ctl::{
    policy::{
        Policy,
        exec::{self, ExecFiles, LazyExecFiles},
        shell::{Query, ShellMatcher},
    },
    shell::evaluate::Evaluator,
};

use crate::vm;

#[derive(clap::Args)]
pub struct Args {
    /// Runs of each command (at least 200).
    #[arg(long, default_value_t = 300)]
    pub runs: u32,
    /// Matcher evaluations per policy size.
    #[arg(long, default_value_t = 200_000)]
    pub evaluations: u32,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.runs < 200 {
        bail!("--runs must be at least 200");
    }
    let workspace = vm::workspace_root()?;
    if cfg!(debug_assertions) {
        // `cargo xtask` builds xtask unoptimised; the matcher figures need an optimised library.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench", "shell"])
            .args(["--runs", &args.runs.to_string(), "--evaluations", &args.evaluations.to_string()])
            .env("AYA_BUILD_SKIP", "1")
            .status()
            .context("running the optimised xtask")?;
        if !status.success() {
            bail!("bench shell (release) failed");
        }
        return Ok(());
    }
    let policy = workspace.join("policies/original-67.yaml");
    let shell = super::build_binary(&workspace, "sentra-shell")?;
    startup(args.runs, &shell, &policy)?;
    matching(args.evaluations, &policy)
}

fn time_one(command: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = command.status().context("spawning")?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(elapsed)
}

struct Stats {
    median: f64,
    mean: f64,
    p90: f64,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "index of a percentile"
        )]
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().map_or(0.0, ms)
    };
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let mean = samples.iter().copied().map(ms).sum::<f64>() / samples.len().max(1) as f64;
    Stats { median: at(0.5), mean, p90: at(0.9) }
}

fn startup(runs: u32, shell: &Path, policy: &Path) -> anyhow::Result<()> {
    // `true` is a builtin: nothing to locate. `/bin/true` is a program: its file is located and
    // decided by the exec entries, which are compiled for that.
    for line in ["true", "/bin/true"] {
        startup_of(runs, shell, policy, line)?;
    }
    Ok(())
}

fn startup_of(runs: u32, shell: &Path, policy: &Path, line: &str) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("sentra-bench-shell-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let log = scratch.join("audit.jsonl");
    let sentra = || {
        let mut command = Command::new(shell);
        command
            .args(["-c", line])
            .env("SENTRA_POLICY", policy)
            .env("SENTRA_AUDIT_LOG", &log)
            .env_remove("SHELL")
            .stdin(Stdio::null());
        command
    };
    let plain = |sh: &str| {
        let mut command = Command::new(sh);
        command.args(["-c", line]).stdin(Stdio::null());
        command
    };
    let bash = ["/bin/bash", "/usr/bin/bash"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("bash");
    // Warm the page cache and the dynamic loader's.
    for _ in 0..20 {
        time_one(&mut sentra())?;
        time_one(&mut plain("/bin/sh"))?;
        time_one(&mut plain(bash))?;
    }
    let (mut s, mut sh, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        s.push(time_one(&mut sentra())?);
        sh.push(time_one(&mut plain("/bin/sh"))?);
        b.push(time_one(&mut plain(bash))?);
    }
    let records = std::fs::read_to_string(&log)?;
    let denied = records.lines().filter(|l| l.contains("\"decision\":\"denied\"")).count();
    let records = records.lines().count();
    let _ = std::fs::remove_dir_all(&scratch);
    if denied > 0 {
        bail!(
            "`{line}` was denied {denied} times under {}: the figures would not be of a run",
            policy.display()
        );
    }
    let (s, sh, b) = (stats(&mut s), stats(&mut sh), stats(&mut b));
    println!("startup of `-c {line}`, {runs} runs each, interleaved (policy {}):", policy.display());
    println!("  {:<34} {:>10} {:>10} {:>10}", "command", "median ms", "mean ms", "p90 ms");
    for (name, st) in [
        (&*format!("sentra-shell -c {line}"), &s),
        (&*format!("sh -c {line}"), &sh),
        (&*format!("{bash} -c {line}"), &b),
    ] {
        println!("  {name:<34} {:>10.3} {:>10.3} {:>10.3}", st.median, st.mean, st.p90);
    }
    println!(
        "  sentra-shell vs sh:   {:.2}x, adds {:.3} ms (median; target <= 2 ms)",
        s.median / sh.median,
        s.median - sh.median
    );
    println!(
        "  sentra-shell vs bash: {:.2}x, adds {:.3} ms (median)",
        s.median / b.median,
        s.median - b.median
    );
    println!("  audit records written: {records}");
    Ok(())
}

/// A policy of `n` generated rules with the same mix of kinds at every size, so sizes differ in
/// count only: one in 20 a catch-all arguments rule (with `catch_alls`; the original 67-rule policy
/// has 3), one in 10 an anchored-prefix executable pattern, one in 3 an executable with an arguments
/// pattern, the rest plain names.
fn generated_policy(n: usize, base: &Policy, catch_alls: bool) -> Policy {
    let mut policy = base.clone();
    policy.model.rules.clear();
    let Some(template) = base.model.rules.first().cloned() else {
        return policy;
    };
    for i in 0..n {
        let mut rule = template.clone();
        rule.id = format!("generated_{i}");
        let (executable, args) = match i {
            _ if catch_alls && i % 20 == 5 => (None, Some(format!("(^|\\s)--secret-{i}(\\s|$)"))),
            _ if i % 10 == 0 => (Some(format!("^tool{i}(-[a-z]+)?$")), None),
            _ if i % 3 == 0 => (Some(format!("^tool{i}$")), Some(format!("--flag{i}"))),
            _ => (Some(format!("^tool{i}$")), None),
        };
        rule.matcher.executable = executable;
        rule.matcher.args_pattern = args;
        policy.model.rules.push(rule);
    }
    policy
}

fn query<'a>(executable: &'a str, args: &'a str) -> Query<'a> {
    Query { executable, args, args_known: true, identity: "agent" }
}

/// Nanoseconds per evaluation of `queries` (cycled) against `matcher`, after a warm-up that compiles
/// the lazily compiled regexes.
fn per_command(matcher: &ShellMatcher, queries: &[(&str, &str)], evaluations: u32) -> f64 {
    for &(executable, args) in queries {
        black_box(matcher.evaluate(&query(executable, args)));
    }
    let start = Instant::now();
    for i in 0..evaluations {
        let (exe, args) = queries[i as usize % queries.len()];
        black_box(matcher.evaluate(&query(black_box(exe), black_box(args))));
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(evaluations)
}

pub(super) fn matching(evaluations: u32, path: &Path) -> anyhow::Result<()> {
    let base = Policy::load(path)?;
    let queries: Vec<(&str, &str)> = vec![
        ("ls", "-la /tmp"),
        ("git", "push origin main"),
        ("rm", "-rf build"),
        ("curl", "-s https://example.com"),
        ("python3", "-c print(1)"),
        ("sudo", "id"),
        ("unknown-tool", "x"),
        ("cat", "/etc/hostname"),
    ];
    println!("matching, {evaluations} evaluations per policy:");
    let matcher = ShellMatcher::new(&base)?;
    let ns = per_command(&matcher, &queries, evaluations);
    println!(
        "  original {}-rule policy: {ns:.1} ns/command over {} commands (target <= 500 ns)",
        base.model.rules.len(),
        queries.len()
    );
    // Every query names rules among the first ten, present at every size.
    let generated_queries: Vec<(&str, &str)> = vec![
        ("tool1", "-v"),
        ("tool3", "--flag3 x"),
        ("tool0-extra", "a b"),
        ("tool7", "--secret-5"),
        ("unknown-tool", "x"),
        ("tool8", "/tmp/a /tmp/b"),
    ];
    for catch_alls in [true, false] {
        let mix = if catch_alls { "with 1 in 20 catch-all" } else { "no catch-all rule" };
        let mut per_size = Vec::new();
        for n in [10_usize, 1_000, 10_000] {
            let policy = generated_policy(n, &base, catch_alls);
            let start = Instant::now();
            let matcher = ShellMatcher::new(&policy)?;
            let load = start.elapsed();
            let ns = per_command(&matcher, &generated_queries, evaluations);
            println!(
                "  generated {n:>6} rules ({mix}): {ns:>7.1} ns/command (matcher built in {:.3} ms)",
                load.as_secs_f64() * 1000.0
            );
            per_size.push(ns);
        }
        if let (Some(first), Some(last)) = (per_size.first(), per_size.last()) {
            println!("  10,000 rules / 10 rules ({mix}): {:.2}x (target <= 2x)", last / first);
        }
    }
    whole_lines(&ShellMatcher::new(&base)?, path)?;
    let start = Instant::now();
    let text = std::fs::read_to_string(path)?;
    for _ in 0..100 {
        black_box(ShellMatcher::new(&Policy::parse(path, &text)?)?);
    }
    println!("  67-rule policy parse + matcher build: {:.3} ms", start.elapsed().as_secs_f64() * 10.0);
    Ok(())
}

/// Whole lines through the evaluator (parse, unwrap, match), without and with each program's file
/// located and decided by the exec entries.
fn whole_lines(matcher: &ShellMatcher, path: &Path) -> anyhow::Result<()> {
    let evaluator = Evaluator {
        matcher,
        identity: "agent".into(),
        cwd: "/tmp".into(),
        path: None,
        files: None,
        programs: &sentra_ctl::shell::identity::SystemPrograms::default(),
        inherited: &[],
    };
    let lines = [
        "ls -la /tmp",
        "git status && git diff | head -n 20",
        "export PATH=\"/x:$PATH\"; unset Y; cat a | grep b",
    ];
    let per_line = |evaluator: &Evaluator<'_>, line: &str| {
        let rounds = 2000_u32;
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(evaluator.evaluate(black_box(line)));
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    };
    for line in lines {
        let us = per_line(&evaluator, line);
        println!("  whole line (parse + unwrap + match) {line:?}: {us:.1} us");
    }
    // The same lines with each program's file located and decided by the exec entries, as
    // sentra-shell does (gateway.yaml: directories allowed, names denied, default deny).
    // (A policy without an `exec:` section, like original-67.yaml, has nothing to compile here.)
    for name in ["gateway.yaml", "default.yaml"] {
        let policy = Policy::load(&path.with_file_name(name))?;
        let start = Instant::now();
        let rounds = 20_u32;
        for _ in 0..rounds {
            black_box(exec::compile_entries(&policy)?);
        }
        println!(
            "  exec entries of {name} compiled for the shell in {:.3} ms (once per sentra-shell that runs a program)",
            start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds)
        );
    }
    let gateway = Policy::load(&path.with_file_name("gateway.yaml"))?;
    let files = LazyExecFiles::from(ExecFiles::new(&exec::compile_entries(&gateway)?, true));
    let system_path = Some("/usr/local/bin:/usr/bin:/bin".to_string());
    let programs = sentra_ctl::shell::identity::SystemPrograms::default();
    let located = |files| Evaluator {
        matcher,
        identity: "agent".into(),
        cwd: "/tmp".into(),
        path: system_path.clone(),
        files,
        programs: &programs,
        inherited: &[],
    };
    let (resolving, plain) = (located(Some(&files)), located(None));
    // Programs each line runs: ls; git, git, head; cat, grep.
    for (line, programs) in lines.iter().zip([1.0_f64, 3.0, 2.0]) {
        let with = per_line(&resolving, line);
        let without = per_line(&plain, line);
        println!(
            "  with file resolution {line:?}: {with:.1} us ({:.1} us per program located, ratio {:.2})",
            (with - without) / programs,
            with / without
        );
    }
    Ok(())
}
