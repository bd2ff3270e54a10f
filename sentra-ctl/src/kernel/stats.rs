//! What Sentra's BPF programs cost, from the kernel's own accounting: per program, how often it ran and
//! for how long (`bpf_prog_info.run_cnt` and `run_time_ns`, counted only while run-time statistics are
//! on: `BPF_ENABLE_STATS` or the `kernel.bpf_stats_enabled` sysctl, see kernel/bpf/syscall.c
//! `bpf_enable_runtime_stats`), and what the verifier had to walk to accept it (`verified_insns`,
//! 5.16+).
//!
//! The programs are found through the pins ([`super::pin`]): every attached program has a pinned link
//! named after it, so a restarted controller, or any other root process, sees the same set as the
//! controller that loaded them.

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};

use super::KernelError;

/// One attached Sentra program and its counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramCost {
    /// The program's name in the BPF object (the kernel keeps only its first 15 bytes).
    pub name: String,
    /// The kernel's program id.
    pub id: u32,
    /// Times it ran while statistics were on.
    pub run_count: u64,
    /// Nanoseconds it ran while statistics were on.
    pub run_time_ns: u64,
    /// Instructions the verifier processed to accept it (absent before 5.16).
    pub verified_insns: Option<u32>,
    /// Size of its JIT-compiled code.
    pub jited_bytes: u32,
}

impl ProgramCost {
    /// Mean nanoseconds per run, if it ran.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a mean for display; counters far below 2^52")]
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// Run-time statistics, on while this is held (the kernel counts the holders: statistics stay on
/// while any holder, or the sysctl, asks for them). Each program run then costs two clock reads more.
pub struct RunTimeStats(
    #[expect(dead_code, reason = "held for its lifetime: closing it ends the request")] OwnedFd,
);

/// Turns the kernel's run-time statistics on until the returned value is dropped.
///
/// # Errors
/// The kernel refuses (before 5.8, or without `CAP_SYS_ADMIN`).
pub fn enable_run_time_stats() -> Result<RunTimeStats, KernelError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(RunTimeStats)
        .map_err(|err| KernelError::Stats { what: "BPF_ENABLE_STATS".into(), source: Box::new(err) })
}

/// Sentra's attached programs under the pin root `root`, one entry per program, in name order. A
/// cgroup program attached to several governed cgroups (one link each) is one program.
///
/// # Errors
/// Nothing is pinned there, a link cannot be opened, or the kernel's program list cannot be read.
pub fn pinned(root: &Path) -> Result<Vec<ProgramCost>, KernelError> {
    let links = super::pin::links_dir(root);
    let entries = std::fs::read_dir(&links).map_err(|source| KernelError::Pin {
        path: links.clone(),
        what: "listing",
        source,
    })?;
    // Program id -> name (the link's file name up to `@`, which separates a cgroup link's tag).
    let mut names = BTreeMap::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| KernelError::Pin { path: links.clone(), what: "listing", source })?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let name = file.split_once('@').map_or(file.as_str(), |(name, _)| name).to_string();
        let link = PinnedLink::from_pin(entry.path()).map_err(|err| KernelError::Stats {
            what: format!("opening the pinned link {file}"),
            source: Box::new(err),
        })?;
        let info = FdLink::from(link).info().map_err(|err| KernelError::Stats {
            what: format!("the information of link {file}"),
            source: Box::new(err),
        })?;
        names.insert(info.program_id(), name);
    }
    let mut programs = Vec::with_capacity(names.len());
    for info in loaded_programs() {
        // A program can be unloaded between listing and reading it: that one is simply not Sentra's.
        let Ok(info) = info else { continue };
        if let Some(name) = names.remove(&info.id()) {
            programs.push(ProgramCost {
                name,
                id: info.id(),
                run_count: info.run_count(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                verified_insns: info.verified_instruction_count(),
                jited_bytes: info.size_jitted(),
            });
        }
    }
    if let Some((id, name)) = names.pop_first() {
        return Err(KernelError::ProgramVanished { name, id });
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(programs)
}

/// What ran between two snapshots of the same programs: counters of `after` minus those of `before`,
/// matched by program id (a program only in `after` counts from zero).
#[must_use]
pub fn delta(before: &[ProgramCost], after: &[ProgramCost]) -> Vec<ProgramCost> {
    after
        .iter()
        .map(|now| {
            let then = before.iter().find(|p| p.id == now.id);
            ProgramCost {
                run_count: now.run_count.saturating_sub(then.map_or(0, |p| p.run_count)),
                run_time_ns: now.run_time_ns.saturating_sub(then.map_or(0, |p| p.run_time_ns)),
                ..now.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(id: u32, run_count: u64, run_time_ns: u64) -> ProgramCost {
        ProgramCost {
            name: format!("p{id}"),
            id,
            run_count,
            run_time_ns,
            verified_insns: Some(10),
            jited_bytes: 64,
        }
    }

    #[test]
    fn delta_subtracts_by_id_and_counts_new_programs_from_zero() {
        let before = [cost(1, 10, 1000), cost(2, 5, 500)];
        let after = [cost(2, 7, 900), cost(1, 30, 4000), cost(3, 4, 80)];
        let d = delta(&before, &after);
        assert_eq!(d, vec![cost(2, 2, 400), cost(1, 20, 3000), cost(3, 4, 80)]);
        assert_eq!(d[1].ns_per_run(), Some(150.0));
        assert_eq!(cost(4, 0, 0).ns_per_run(), None);
    }
}
