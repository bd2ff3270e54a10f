//! The current task: governed or not, and the event header.

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use sentra_common::{
    event::{EVENT_VERSION, EventHeader, EventKind, ProbeSite},
    exec::GovernedCgroup,
    offsets::KernelOffsets,
};

use crate::{kernel, maps::GOVERNED};

/// Deepest cgroup level looked at; governed cgroups are created well above it.
const MAX_CGROUP_LEVEL: i32 = 32;

/// How a program finds the current task's cgroup ancestors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// A cgroup program (`sock_addr`): `bpf_get_current_ancestor_cgroup_id` is always there
    /// (Linux 5.7, `sock_addr_func_proto`), and kernel reads are not.
    Cgroup,
    /// A tracing or LSM program: the helper only since Linux 5.14 (`bpf_tracing_func_proto`); before,
    /// the loader sets `cgroup_parent_walk` and the walk reads the cgroup's parents instead. The
    /// branch not taken is dead code to the verifier (`KERNEL_OFFSETS` is frozen read-only data), so
    /// an older kernel never sees the helper call it would refuse.
    Tracing,
}

/// Whether the current task is in a governed cgroup or one of its descendants.
///
/// Walks the task's cgroup ancestors (level 1 up to its own level) and looks each up in `GOVERNED`, so
/// a cgroup created under a governed one later is governed without userspace knowing of it. The root
/// (level 0) is never governed.
#[inline(always)]
pub fn is_governed() -> bool {
    // Fast path: the task's own cgroup.
    // SAFETY: helper without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: map lookup with a stack key.
    if unsafe { GOVERNED.get(own) }.is_some() {
        return true;
    }
    if kernel::offsets().cgroup_parent_walk != 0 {
        return innermost_by_parents().is_some();
    }
    let mut level = 1;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: helper without pointer arguments; returns 0 past the task's own level
        // (kernel/bpf/helpers.c, bpf_get_current_ancestor_cgroup_id → cgroup_ancestor).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            return false;
        }
        // SAFETY: as above.
        if unsafe { GOVERNED.get(id) }.is_some() {
            return true;
        }
        level += 1;
    }
    false
}

/// The entry of the innermost governed cgroup holding the current task, if any.
///
/// A launch cgroup (below a governed one, with its own network profile) must decide for its tasks, so
/// unlike [`is_governed`] the walk does not stop at the first governed ancestor: it keeps the deepest.
#[inline(always)]
pub fn governing(program: Program) -> Option<GovernedCgroup> {
    // SAFETY: helper without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: map lookup with a stack key; the value is copied out.
    if let Some(entry) = unsafe { GOVERNED.get(own) } {
        return Some(*entry);
    }
    if program == Program::Tracing && kernel::offsets().cgroup_parent_walk != 0 {
        return innermost_by_parents();
    }
    let mut found = None;
    let mut level = 1;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: as in `is_governed`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            break;
        }
        // SAFETY: as above.
        if let Some(entry) = unsafe { GOVERNED.get(id) } {
            found = Some(*entry);
        }
        level += 1;
    }
    found
}

/// The innermost governed cgroup above the current task's own, found by reading its cgroup's parents
/// (`task->cgroups->dfl_cgrp`, then `cgrp->self.parent->cgroup`), each cgroup's id being its kernfs
/// node's (kernel/cgroup/cgroup.c, `cgroup_id`). Going up, the first governed cgroup met is the
/// innermost. A read that fails ends the walk as "not governed": every task on the host passes
/// through here, and a kernel whose structures cannot be read must not have them all refused.
#[inline(always)]
fn innermost_by_parents() -> Option<GovernedCgroup> {
    let off = kernel::offsets();
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let css_set = kernel::read_ptr(task, off.task_cgroups, ProbeSite::None).ok()?;
    let mut cgroup = kernel::read_ptr(css_set, off.css_set_dfl_cgrp, ProbeSite::None).ok()?;
    let mut level = 0;
    while level < MAX_CGROUP_LEVEL {
        // The root's `self.parent` is null: `read_ptr` fails there and the walk ends.
        let parent = kernel::read_ptr(cgroup, off.cgroup_parent, ProbeSite::None).ok()?;
        cgroup = kernel::read_ptr(parent, off.css_cgroup, ProbeSite::None).ok()?;
        let node = kernel::read_ptr(cgroup, off.cgroup_kn, ProbeSite::None).ok()?;
        let id: u64 = kernel::read(node, off.kernfs_node_id, ProbeSite::None).ok()?;
        // SAFETY: map lookup with a stack key; the value is copied out.
        if let Some(entry) = unsafe { GOVERNED.get(id) } {
            return Some(*entry);
        }
        level += 1;
    }
    None
}

/// Fills an event header for the current task.
#[inline(always)]
pub fn fill_header(header: &mut EventHeader, off: &KernelOffsets, backend: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    header.kind = EventKind::Exec as u32;
    header.version = EVENT_VERSION;
    // SAFETY: helpers without pointer arguments.
    header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid, lower the tid")]
    {
        header.pid = (pid_tgid >> 32) as u32;
        header.tid = pid_tgid as u32;
        header.uid = uid_gid as u32;
        header.gid = (uid_gid >> 32) as u32;
    }
    header.backend = backend;
    // SAFETY: as above.
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() };
    // Best effort: the header is informational, not part of any decision (no site).
    header.start_ns = process_start(task, off);
    let parent = kernel::read_ptr(task, off.task_real_parent, ProbeSite::None);
    header.ppid =
        parent.and_then(|parent| kernel::read::<u32>(parent, off.task_tgid, ProbeSite::None)).unwrap_or(0);
    header.parent_start_ns = parent.map_or(0, |parent| process_start(parent, off));
}

/// When `task`'s process started: its thread group leader's `start_boottime`, which `de_thread`
/// (fs/exec.c) hands to a thread that execs, so it stays the same for the life of the process and is
/// what `/proc/<pid>/stat` reports (fs/proc/array.c, `do_task_stat`). 0 when it cannot be read.
#[inline(always)]
fn process_start(task: u64, off: &KernelOffsets) -> u64 {
    kernel::read_ptr(task, off.task_group_leader, ProbeSite::None)
        .and_then(|leader| kernel::read::<u64>(leader, off.task_start_boottime, ProbeSite::None))
        .unwrap_or(0)
}
