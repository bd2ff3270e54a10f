//! Per-generation policy settings and the generation switch.
//!
//! The kernel maps hold two policy generations side by side (every rule key starts with its generation);
//! `ACTIVE_GENERATION` says which one decides. A probe reads it once and uses it for every lookup, so a
//! decision never mixes two policies: reload fills the inactive generation, flips the index, then clears
//! the old one.

use crate::wire_enum;

/// Number of policy generations held at once (active + being loaded).
pub const GENERATIONS: u32 = 2;

wire_enum! {
    /// What happens to a decision to deny.
    Mode: "mode" {
        /// The exec fails (`lsm`) or the task is killed (`signal`).
        Enforce = 0 => "enforce",
        /// The exec goes ahead; the event records that it would have been denied.
        Audit = 1 => "audit",
    }
}

#[expect(
    clippy::derivable_impls,
    reason = "wire_enum! declares the enum; a derive cannot be added there per enum"
)]
impl Default for Mode {
    fn default() -> Self {
        Self::Enforce
    }
}

wire_enum! {
    /// A rule's (or the default's) effect.
    Effect: "effect" {
        Allow = 0 => "allow",
        Deny = 1 => "deny",
    }
}

wire_enum! {
    /// How exec enforcement is carried out in the kernel.
    Backend: "backend" {
        /// BPF LSM `bprm_check_security`: the exec fails with `EPERM`.
        Lsm = 0 => "lsm",
        /// `sched_process_exec` tracepoint: the task gets `SIGKILL` before the new image runs.
        Signal = 1 => "signal",
    }
}

/// Settings of one policy generation, in `SETTINGS[generation]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    /// [`Mode`] as `u32`.
    pub mode: u32,
    /// [`Effect`] applied when no exec rule matches, as `u32`.
    pub exec_default: u32,
    /// Userspace bookkeeping, not read by the programs: non-zero while the exec rule maps may hold
    /// entries of this generation, so that a generation known to be empty is written without first
    /// sweeping every key of the maps.
    pub dirty: u32,
    /// Non-zero once userspace has filled this generation completely.
    pub loaded: u32,
}

/// Value of `ACTIVE_GENERATION[0]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActiveGeneration {
    pub generation: u32,
    /// [`Backend`] as `u32`: which backend enforces (the other probe, if attached, only observes).
    pub backend: u32,
}

/// Indexes of `STATS` (a per-CPU array of `u64` counters).
pub mod stats {
    /// Events that could not be reserved in the ring buffer (ring full).
    pub const EVENTS_DROPPED: u32 = 0;
    /// Exec decisions made for governed tasks.
    pub const EXEC_DECISIONS: u32 = 1;
    /// Execs denied (or would-deny in audit mode).
    pub const EXEC_DENIED: u32 = 2;
    /// Probe errors inside governed cgroups (each one failed closed).
    pub const PROBE_ERRORS: u32 = 3;
    /// Probe errors by site: index `PROBE_SITE_BASE + ProbeSite as u32`.
    pub const PROBE_SITE_BASE: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = PROBE_SITE_BASE + crate::event::PROBE_SITES;
}
