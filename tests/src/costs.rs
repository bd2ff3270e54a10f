//! What Sentra's BPF programs cost during a benchmark's loop, from the kernel's own accounting
//! ([`sentra_ctl::kernel::stats`]), for `sentra-bench exec` and the network benchmark alike.
//!
//! The governed command is held around its loop: it says it is ready and waits for a line, runs the
//! loop, prints its result and waits for its input to close. The programs' counters are read in those
//! two pauses, while the controller still runs, so the difference covers exactly the loop.

use std::{
    fmt::Write as _,
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
};

use sentra_ctl::kernel::stats::{self, ProgramCost};

/// Runs `cmd` (a `sentra-ctl run`) with run-time statistics on. The governed command prints `ready`
/// (a whole line) when it waits, and a line starting with `done` after its loop. Returns what each of
/// the run's programs did between the two, and the `done` line.
///
/// # Errors
/// Statistics cannot be turned on, the command does not follow the protocol, or it fails.
pub fn held(mut cmd: Command, ready: &str, done: &str) -> Result<(Vec<ProgramCost>, String), String> {
    let stats_on = stats::enable_run_time_stats().map_err(|e| format!("{e}"))?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting sentra-ctl run: {e}"))?;
    let root = sentra_ctl::run::pin_root_of(child.id());
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut until = |wanted: &dyn Fn(&str) -> bool| -> Result<String, String> {
        loop {
            match lines.next() {
                Some(Ok(line)) if wanted(&line) => return Ok(line),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("reading the governed command's output: {e}")),
                None => return Err("the governed command ended before its loop did".into()),
            }
        }
    };
    let outcome = (|| -> Result<(Vec<ProgramCost>, String), String> {
        until(&|line| line == ready)?;
        let before = stats::pinned(&root).map_err(|e| format!("{e}"))?;
        writeln!(stdin, "go").map_err(|e| format!("starting the loop: {e}"))?;
        let line = until(&|line| line.starts_with(done))?;
        let after = stats::pinned(&root).map_err(|e| format!("{e}"))?;
        Ok((stats::delta(&before, &after), line))
    })();
    drop(stdin);
    let status = child.wait().map_err(|e| format!("waiting for sentra-ctl run: {e}"))?;
    drop(stats_on);
    let outcome = outcome?;
    if !status.success() {
        return Err(format!("the governed loop failed ({status})"));
    }
    Ok(outcome)
}

/// `BENCH prog …` lines for every program that ran, and Sentra's total per unit of work (`per` names
/// the unit: `exec`, `connect`), with the target it is held to on a real CPU.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "means for display")]
pub fn report(label: &str, programs: &[ProgramCost], per: &str, units: u32, target_ns: u32) -> String {
    let mut text = String::new();
    for p in programs.iter().filter(|p| p.run_count > 0) {
        let _ = writeln!(
            text,
            "BENCH prog case={label} name={} runs={} ns_per_run={:.0} runs_per_{per}={:.2} verified_insns={}",
            p.name,
            p.run_count,
            p.ns_per_run().unwrap_or(0.0),
            p.run_count as f64 / f64::from(units.max(1)),
            p.verified_insns.map_or_else(|| "-".to_string(), |v| v.to_string())
        );
    }
    let total: u64 = programs.iter().map(|p| p.run_time_ns).sum();
    let _ = writeln!(
        text,
        "BENCH sentra_bpf_ns_per_{per}_{label}={:.0} (all of Sentra's programs; target <= {target_ns} on a real CPU)",
        total as f64 / f64::from(units.max(1))
    );
    text
}
